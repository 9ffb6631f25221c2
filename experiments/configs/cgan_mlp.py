"""Conditional GAN with MLPs on MNIST (Mirza & Osindero 2014).

  python -m experiments.train --config=experiments/configs/cgan_mlp.py \
      --workdir=/tmp/cgan_mlp

Generator: z (100) -> 200, y -> 1000, joint 1200 -> 784 pixels.
Discriminator: maxout 240x5 (x), 50x5 (y), joint 240x4, dropout 0.5. The
paper trained with SGD + momentum (`--config.optimizer=sgd`); Adam (2e-4,
b1 0.5) here. See `get_config` for the generator's departures from it.
Every GAN key is documented in `condgen_jax.gan_training`.
"""

from experiments.configs import common


def gan_keys(c):
  """The GAN keys shared by every GAN config, at their defaults."""
  c.gan_loss = "non_saturating"  # minimax | non_saturating | least_squares |
  #                                wasserstein | wasserstein_gp | hinge
  c.z_dim = 100
  c.z_prior = "uniform"  # uniform ([0,1]) | uniform_signed ([-1,1]) | normal
  c.n_critic = 1
  c.real_label_smoothing = 0.0  # minimax / non_saturating only
  c.gp_weight = 10.0  # wasserstein_gp
  c.clip_value = 0.01  # wasserstein (weight clipping)
  c.ema_decay = 0.0  # 0 = sample with the raw generator weights
  c.feature_matching = 0.0  # weight of the feature-matching G term
  c.g_adv_weight = 1.0
  c.real_class_weight = 1.0  # acgan: -log q(c|x) on real data (D)
  c.fake_class_weight = 1.0  # acgan: -log q(c|G(z,c)) (G; D if d_fake_class)
  c.d_fake_class = True
  c.optimizer = "adam"  # adam | rmsprop | sgd (decayed, with momentum)
  c.momentum = 0.5  # sgd
  c.g_learning_rate = 2e-4
  c.d_learning_rate = 2e-4
  c.adam_b1 = 0.5
  c.adam_b2 = 0.999
  # Model keys (conv models; cgan_mlp has the paper's fixed layers).
  c.g_conditioning = "concat"  # concat | film
  c.d_conditioning = "projection"  # vectorize | embed_channel | film |
  #                                  projection | none (acgan only)
  c.g_width = 64
  c.g_upsample = "pixel_shuffle"  # transpose | pixel_shuffle (the same
  #   function class as stride-2 transposed convs, ~7-19x faster weight
  #   gradients on XLA:CPU)
  c.d_width = 64
  c.d_kernel_size = 4
  c.g_norm = "batch"  # batch | layer | none
  c.d_norm = "none"  # none | batch | layer
  c.spectral_norm = False
  c.minibatch_discrimination = False
  c.mbd_kernels = 50
  c.mbd_kernel_dim = 5
  c.dropout_rate = 0.5  # cgan_mlp discriminator
  c.g_dropout_rate = 0.0  # cgan_mlp generator
  c.g_activation = "relu"  # cgan_mlp generator: relu | leaky_relu (0.2)
  c.g_output = "sigmoid"  # cgan_mlp generator: sigmoid ([0, 1]) | tanh
  c.virtual_batch_norm = False  # conv generators only
  c.vbn_batch_size = 64
  return c


def get_config():
  c = gan_keys(common.base_config("cgan_mlp"))
  c.num_steps = 30_000
  c.batch_size = 100  # the paper's
  c.g_norm = "none"  # the paper's G has no normalisation
  # Departures from the paper's G (README, "CGAN-MLP"): with its U[0, 1]
  # noise, ReLU and sigmoid pixels, G ignores z within a few hundred steps
  # (one image per class), here and in an independent plain-JAX
  # implementation; N(0, I) noise, LeakyReLU(0.2) and tanh pixels in [-1, 1]
  # together keep z in use. G dropout is off: that combination was measured
  # without it. `--config.z_prior=uniform --config.g_activation=relu
  # --config.g_output=sigmoid --config.g_dropout_rate=0.5` is the paper's G.
  c.z_prior = "normal"
  c.g_activation = "leaky_relu"
  c.g_output = "tanh"
  c.g_dropout_rate = 0.0
  return c
