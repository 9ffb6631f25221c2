"""pix2pix networks (Isola et al. 2017): a U-Net generator and a PatchGAN
discriminator, sized by their channel lists.

Generator G(x): an encoder of stride-2 4x4 convolutions (LeakyReLU 0.2,
instance norm but on the first and the innermost layer), a decoder of
stride-2 4x4 transposed convolutions (ReLU, instance norm) whose output at
each level is concatenated with the encoder's at the same resolution (the
U-Net skips), and tanh: images in [-1, 1]. Dropout 0.5 on the three
innermost decoder layers is G's only noise, at training and at test time,
as in the paper. The input is padded (with -1, black) to a multiple of
2^depth and the output cropped back, so any H x W works (MNIST's 28 -> 32).
Isola et al. normalise with the statistics of each test batch of one image,
i.e. instance normalisation, used here at every batch size.

Discriminator D(x, y): [x, y] stacked as channels, 4x4 convolutions of
stride 2 but the last of stride 1 (LeakyReLU 0.2, instance norm but on the
first), then a stride-1 4x4 convolution to one channel: logits `[B, h, w]`,
one per patch, each judging whether its receptive field of y is real given
x (the PatchGAN; the paper's 70x70 is channels (64, 128, 256, 512)).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from condgen_jax.nn import kernels as kernels_lib

# The decoder layers nearest the bottleneck that use dropout (C-D in the
# paper's CD512-CD1024-CD1024-C1024-...).
DROPOUT_LAYERS = 3


def _pads(size: int, multiple: int) -> tuple[int, int]:
  total = -size % multiple
  return total // 2, total - total // 2


class UNetGenerator(nn.Module):
  """G(x): `[B, H, W, C_in]` in [-1, 1] -> `[B, H, W, out_channels]`."""
  out_channels: int
  channels: Sequence[int] = (32, 64, 128)
  dropout_rate: float = 0.5
  kernels: kernels_lib.Kernels = kernels_lib.STOCK  # carry the convs' dtype

  @nn.compact
  def __call__(self, x):
    depth = len(self.channels)
    (top, bottom), (left, right) = (_pads(x.shape[1], 2 ** depth),
                                    _pads(x.shape[2], 2 ** depth))
    h = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                constant_values=-1.0)
    skips = []
    for i, f in enumerate(self.channels):
      if i:
        h = nn.leaky_relu(h, 0.2)
      h = self.kernels.strided_conv(f, (4, 4), strides=(2, 2),
                                    padding="SAME", name=f"down{i}")(h)
      if 0 < i < depth - 1:
        h = nn.InstanceNorm(name=f"down_norm{i}")(h)
      skips.append(h)
    for i in reversed(range(depth)):
      h = nn.relu(h)
      f = self.channels[i - 1] if i else self.out_channels
      h = self.kernels.conv_transpose(f, (4, 4), strides=(2, 2),
                                      padding="SAME", name=f"up{i}")(h)
      if i:
        h = nn.InstanceNorm(name=f"up_norm{i}")(h)
        if i >= depth - DROPOUT_LAYERS:
          h = nn.Dropout(self.dropout_rate, deterministic=False)(h)
        h = jnp.concatenate([h, skips[i - 1]], axis=-1)
    h = h[:, top:h.shape[1] - bottom, left:h.shape[2] - right]
    return jnp.tanh(h).astype(jnp.float32)


class PatchDiscriminator(nn.Module):
  """D(x, y): per-patch logits `[B, h, w]` of y being real given x."""
  channels: Sequence[int] = (32, 64)
  kernels: kernels_lib.Kernels = kernels_lib.STOCK

  @nn.compact
  def __call__(self, x, y):
    h = jnp.concatenate([x, y], axis=-1)
    last = len(self.channels) - 1
    for i, f in enumerate(self.channels):
      if i == last and last > 0:
        h = self.kernels.conv(f, (4, 4), padding="SAME", name=f"conv{i}")(h)
      else:
        h = self.kernels.strided_conv(f, (4, 4), strides=(2, 2),
                                      padding="SAME", name=f"conv{i}")(h)
      if i:
        h = nn.InstanceNorm(name=f"norm{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    logits = self.kernels.conv(1, (4, 4), padding="SAME", name="logits")(h)
    return logits[..., 0].astype(jnp.float32)
