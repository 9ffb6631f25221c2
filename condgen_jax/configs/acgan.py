"""AC-GAN on MNIST (Odena et al. 2017).

  python -m experiments.train --config=experiments/configs/acgan.py \
      --workdir=/tmp/acgan

The discriminator is unconditional (d_conditioning='none') with a class
head; both class terms train D (d_fake_class=True), the term on generated
samples trains G. `--config.d_fake_class=False` gives the variant whose
classifier is trained on real data only; see infogan_style.py for the
term-on-generated-samples-only variant.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("acgan")
  c.num_steps = 15_000  # ~29 min on one core of a 2-core AVX-512 host
  c.z_prior = "normal"
  c.d_conditioning = "none"
  c.real_class_weight = 1.0
  c.fake_class_weight = 1.0
  c.d_fake_class = True
  return c
