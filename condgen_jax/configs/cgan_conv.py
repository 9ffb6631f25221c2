"""Conditional DCGAN on MNIST (Radford et al. 2016, conditioned).

  python -m experiments.train --config=experiments/configs/cgan_conv.py \
      --workdir=/tmp/cgan_conv [--config.d_conditioning=vectorize]
      [--config.gan_loss=hinge --config.spectral_norm=True]

Generator conditioning: concat | film; discriminator conditioning:
vectorize | embed_channel | film | projection.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("cgan_conv")
  c.num_steps = 15_000  # ~29 min on one core of a 2-core AVX-512 host
  c.z_prior = "normal"
  c.g_conditioning = "concat"
  c.d_conditioning = "projection"
  return c
