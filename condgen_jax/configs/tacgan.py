"""TAC-GAN on MNIST (Gong et al. 2019, "Twin Auxiliary Classifiers GAN").

  python -m experiments.train --config=experiments/configs/tacgan.py \
      --workdir=/tmp/tacgan

AC-GAN (acgan.py) whose class head is trained on real data only
(d_fake_class=False), plus a twin class head q_mi trained on generated
samples; G minimises -log q(c|G(z,c)) - twin_class_weight *
(-log q_mi(c|G(z,c))), which removes AC-GAN's pull towards easily
classified samples (notebooks/03_acgan_bias.ipynb).
"""

from condgen_jax.configs import acgan


def get_config():
  c = acgan.get_config()
  c.d_fake_class = False
  c.twin_class_head = True
  c.twin_class_weight = 1.0
  return c
