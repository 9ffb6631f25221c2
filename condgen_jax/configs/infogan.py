"""InfoGAN on MNIST (Chen et al. 2016), trained without labels.

  python -m experiments.train --config=experiments/configs/infogan.py \
      --workdir=/tmp/infogan

G's input: 62 noise variables U[-1, 1], a 10-way categorical code (uniform)
and 2 continuous codes U[-1, 1]. The networks are the paper's (Table 1 of
its appendix): G is FC 1024 -> FC 7x7x128 -> ConvT 64 -> ConvT 1, batch
norm and ReLU between; D is Conv 64 -> Conv 128 (batch norm) -> FC 1024
(batch norm), LeakyReLU between, and shares that body with the Q
network (FC 128, batch norm, LeakyReLU, then the categorical logits and
the continuous codes' means). G and Q minimise the mutual-information
bound -log Q(c|G(z, c)) (cross-entropy) and -log N(c'; mu, 1) for the
continuous codes (unit std), both at weight 1; D's LeakyReLUs have slope
0.01 and every kernel starts from N(0, 0.02) (init='dcgan'); learning
rates 1e-3 (G) and 2e-4 (D), batch 128: the settings of the authors' code
(openai/InfoGAN) for MNIST. Real images are used unlabelled
(real_class_weight=0, d_conditioning='none'). The runner's
`matched_class_accuracy` maps each code to the digit it draws (the paper:
5 % error); docs/gan_quality.md has what each setting measured.

One addition to the paper: Q reads the categorical code from randomly
rotated (±20°), stretched (0.8-1.2 per axis) and shifted (±2 px) copies of
the generated images (code_augmentation=True, `condgen_jax.nn.augmentation`),
in G's and Q's categorical term only. Without it the code need not be
the digit: in five runs of six two codes each drew a mix of the same two
digits (7 and 9, or 4 and 9); set it False for the paper's objective.
With it every code drew one digit by step 2,000 in the runs measured, so
the run is 2,500 steps, half the authors' 5,000 (50 epochs of 100
updates).
"""

from condgen_jax.configs import acgan


def get_config():
  c = acgan.get_config()
  c.code_prior = "uniform"
  c.real_class_weight = 0.0
  c.fake_class_weight = 1.0
  c.d_fake_class = True
  c.continuous_codes = 2
  c.continuous_code_weight = 1.0
  c.code_augmentation = True
  c.q_hidden = 128
  c.q_norm = "batch"
  c.g_hidden = 1024
  c.d_hidden = 1024
  c.z_dim = 62
  c.z_prior = "uniform_signed"
  c.d_norm = "batch"
  c.d_leaky_slope = 0.01
  c.init = "dcgan"
  c.g_learning_rate = 1e-3
  c.d_learning_rate = 2e-4
  c.batch_size = 128
  c.num_steps = 2_500
  return c
