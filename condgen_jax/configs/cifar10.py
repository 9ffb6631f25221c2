"""Class-conditional diffusion on CIFAR-10, 32x32, streamed from TFDS.

  python -m experiments.train --config=experiments/configs/cifar10.py \
      --workdir=/tmp/cifar10 [--config.tfds_dir=DIR]

CIFAR-10 is read by `tfds.data_source` from an array_record build in
`tfds_dir` (`tfds build cifar10 --file_format=array_record`, or
`--config.download=True`), one batch at a time on the host
(`condgen_jax.data.streaming`, docs/data.md).

The U-Net is sized for one GPU: no patches at 32x32, widths (128, 256, 256,
256) over 32 -> 16 -> 8 -> 4, two residual blocks per level, attention at
4x4, 32 GroupNorm groups (38 M parameters, about Ho et al.'s
35.7 M CIFAR-10 model); Adam 2e-4 with EMA 0.9999 as Ho et al., batch 128,
200,000 steps (512 epochs). Evaluation of a streamed dataset has no
reference classifier (no FID): the family's test loss on the first 2,000
test images is the metric, also for keeping the best checkpoint.
"""

from condgen_jax.configs import common


def get_config():
  c = common.base_config("diffusion")
  c.dataset = "tfds:cifar10"
  c.image_size = 32
  c.batch_size = 128
  c.num_steps = 200_000
  c.patch_size = 1
  c.channels = (128, 256, 256, 256)
  c.num_res_blocks = 2
  c.num_groups = 32
  c.learning_rate = 2e-4
  c.ema_decay = 0.9999
  c.log_every = 1_000
  c.checkpoint_every = 5_000
  c.sample_every = 5_000
  c.best_metric = "test_loss"
  return c
