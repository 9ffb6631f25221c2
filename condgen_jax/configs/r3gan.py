"""R3GAN on MNIST (Huang et al. 2024, "The GAN is dead; long live the GAN!
A Modern GAN Baseline"), class-conditional:

  python -m experiments.train --config=experiments/configs/r3gan.py \
      --workdir=/tmp/r3gan

The relativistic pairing loss (`gan_loss=relativistic_pairing`) with
zero-centred R1 and R2 penalties, and their ConvNeXt-style residual
networks without normalisation (`condgen_jax.models.r3gan`): G's stages at
7, 14, 28 of widths 128, 64, 32, D's mirrored, one block per stage, 16
channels per group, fix-up initialisation. As the paper: Adam with
beta1 = 0, beta2 = 0.99, learning rate 2e-4 for both players, an EMA of G,
z ~ N(0, I). Deviations, sized for MNIST on a 2-core CPU within the GAN
rows' budget (15,000 steps of 64): one block per stage (theirs 2-4) and
widths a quarter or less of their CIFAR-10 networks'; gamma = 0.05 for R1
and R2 held fixed (their CIFAR-10 value, which they anneal), and the
learning rate is not annealed.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("r3gan")
  c.num_steps = 15_000
  c.batch_size = 64
  c.z_prior = "normal"
  c.z_dim = 64
  c.adam_b1 = 0.0
  c.adam_b2 = 0.99
  c.r1_gamma = 0.05
  c.r2_gamma = 0.05
  c.ema_decay = 0.999
  return c
