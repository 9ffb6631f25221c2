"""pix2pix (Isola et al. 2017) on a paired task derived from MNIST: the
given quadrants of a digit -> the whole digit, or a gray digit -> its
colored_mnist color.

  python -m experiments.train --config=experiments/configs/pix2pix.py \
      --workdir=/tmp/pix2pix [--config.quadrants_given=2] \
      [--config.dataset=colored_mnist --config.image_task=colorize]

U-Net G (3 stride-2 levels on MNIST padded to 32x32), PatchGAN D (14x14
patches on 28x28), L1 weight 100, Adam 2e-4 with beta1 = 0.5 as in the
paper. `experiments.evaluate` reports `test_l1` (mean |y - G(x)| over the
pixels to predict, [0, 1] units) and D's patch outputs and accuracy.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("pix2pix")
  c.condition_kind = "image"
  c.image_task = "quadrants"  # 'quadrants' | 'colorize' (colored_*)
  c.quadrants_given = 1  # 1 | 2 | 3
  c.num_steps = 5_000
  c.batch_size = 64
  c.learning_rate = 2e-4
  c.adam_b1 = 0.5
  c.l1_weight = 100.0
  c.g_channels = (32, 64, 128)
  c.d_channels = (32, 64)
  c.dropout_rate = 0.5
  c.best_metric = "test_l1"
  return c
