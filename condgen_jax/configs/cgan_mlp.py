"""Conditional GAN with MLPs on MNIST (Mirza & Osindero 2014).

  python -m experiments.train --config=experiments/configs/cgan_mlp.py \
      --workdir=/tmp/cgan_mlp

Generator: z (100) -> 200, y -> 1000, joint 1200 -> 784 pixels.
Discriminator: maxout 240x5 (x), 50x5 (y), joint 240x4, dropout 0.5. The
paper trained with SGD + momentum (`--config.optimizer=sgd`); Adam (2e-4,
b1 0.5) here. See `get_config` for the generator's departures from it.
Every GAN key, its default and allowed values: `condgen_jax.families.gan.OPTIONS`.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("cgan_mlp")
  c.num_steps = 45_000  # ~25 min on one core of a 2-core AVX-512 host
  c.batch_size = 100  # the paper's
  # Samples from an EMA of G's weights. This G has no batch norm, so the
  # average needs no statistics of its own (the conv GANs' batch-norm G
  # sampled no better from one: docs/gan_quality.md).
  c.ema_decay = 0.999
  # Departures from the paper's G (docs/gan_quality.md, "CGAN-MLP"): with its U[0, 1]
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
