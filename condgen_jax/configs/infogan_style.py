"""AC-GAN with only the class term on generated samples ("InfoGAN-style").

  python -m experiments.train --config=experiments/configs/infogan_style.py \
      --workdir=/tmp/infogan_style

-log q(c|G(z,c)) trains both G and the class head; real labels are never
used by D (real_class_weight=0): the mutual-information reading of AC-GAN by
Shu et al. 2017, with the code c being the class label.
"""

from condgen_jax.configs import acgan


def get_config():
  c = acgan.get_config()
  c.real_class_weight = 0.0
  c.fake_class_weight = 1.0
  c.d_fake_class = True
  return c
