"""Attribute-conditioned diffusion on CelebA, 64x64, streamed from TFDS.

  python -m experiments.train --config=experiments/configs/celeb_a.py \
      --workdir=/tmp/celeb_a [--config.attributes=Male,Young,Eyeglasses]
  python -m experiments.sample --workdir=/tmp/celeb_a \
      --cond=Male=yes,Young=no,Eyeglasses=yes --out=/tmp/faces.npz

Each binary attribute of `attributes` is one condition attribute with the
values 'no' and 'yes' (`condition_kind='attributes'`: one label embedding
per attribute, `models.md`); the sample grid has a row per value of the
first and a column group per combination of the others. The 218x178
images are center-cropped to 178x178 and resized to 64x64 as they are read
(`condgen_jax.data.streaming`, docs/data.md; `tfds build celeb_a
--file_format=array_record` needs the manual download TFDS describes).

The U-Net is sized for one GPU: 2x2 patches (64x64x3 -> 32x32x12), widths
(128, 256, 256, 256) over 32 -> 16 -> 8 -> 4, two residual blocks per
level, attention at 4x4, 32 GroupNorm groups (38 M parameters); Adam
2e-4, EMA 0.9999, batch 64, 150,000 steps (about 60 epochs of the 162,770
training images). No reference classifier for streamed sets: the test loss
(on the first 2,000 test images) is the metric.
"""

from condgen_jax.configs import cifar10


def get_config():
  c = cifar10.get_config()  # the same U-Net and optimiser
  c.dataset = "tfds:celeb_a"
  c.attributes = "Male,Young,Eyeglasses"
  c.condition_kind = "attributes"
  c.image_size = 64
  c.batch_size = 64
  c.num_steps = 150_000
  c.patch_size = 2
  return c
