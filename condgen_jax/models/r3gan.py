"""R3GAN's class-conditional generator and discriminator (flax linen).

Huang, Gokaslan, Kuleshov & Tompkin 2024, "The GAN is dead; long live the
GAN! A Modern GAN Baseline" (config E): ConvNeXt-style residual networks
without any normalisation, trained with the relativistic pairing loss and
zero-centred R1 and R2 penalties (`losses.gan`). Each stage is a transition
layer (resampling and a 1x1 conv to the stage's width) and `blocks`
residual blocks

  x + Conv1x1(LReLU(GroupedConv3x3(LReLU(Conv1x1_expand(x))))),

an inverted bottleneck of expansion `expansion` (2) whose 3x3 conv is
grouped, `group_size` (16) channels per group (their cardinality). The
branch's last conv starts at zero and the others are scaled by
L^(-1/(2(m-1))) = L^(-1/4) (L blocks in the network, m = 3 convs per
branch): the fix-up initialisation of their sec. 4, so every block starts
as the identity and the network's variance does not grow with depth.
Resampling is bilinear. Conditioning as theirs: the generator's input is
z concatenated with a linear embedding of the one-hot class; the
discriminator's logit is the projection <embed(c), h> / sqrt(dim) of its
last features h (Miyato & Koyama 2018). The generator's output is linear
(no tanh), as theirs.

Deviations, for MNIST on CPUs: the generator's basis is a Dense to
`base` x `base` (7 x 7 for 28 x 28 images, theirs 4 x 4), its widths and
block counts are small (`configs/r3gan.py`), and the discriminator's basis
is a flatten and Dense rather than their 4 x 4 depthwise conv.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from condgen_jax.nn import conditioning

LEAKY_SLOPE = 0.2


def _scaled(init, scale: float):
  def fn(key, shape, dtype=jnp.float32):
    return init(key, shape, dtype) * scale
  return fn


class ResidualBlock(nn.Module):
  """x + the inverted-bottleneck branch (module doc); `scale` multiplies
  the initial kernels of the first two convs, the last starts at zero."""
  width: int
  expansion: int = 2
  group_size: int = 16
  scale: float = 1.0
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    hidden = self.width * self.expansion
    groups = max(hidden // self.group_size, 1)
    init = _scaled(nn.initializers.lecun_normal(), self.scale)
    h = nn.Conv(hidden, (1, 1), kernel_init=init, dtype=self.dtype,
                name="expand")(x)
    h = nn.leaky_relu(h, LEAKY_SLOPE)
    h = nn.Conv(hidden, (3, 3), padding="SAME", feature_group_count=groups,
                kernel_init=init, dtype=self.dtype, name="grouped")(h)
    h = nn.leaky_relu(h, LEAKY_SLOPE)
    h = nn.Conv(self.width, (1, 1), kernel_init=nn.initializers.zeros,
                dtype=self.dtype, name="project")(h)
    return x + h


def _resize(x, size):
  return jax.image.resize(x, (x.shape[0], size[0], size[1], x.shape[3]),
                          "bilinear")


def fixup_scale(total_blocks: int, convs_per_branch: int = 3) -> float:
  """L^(-1/(2(m-1))) of Huang et al. 2024, sec. 4."""
  return float(total_blocks) ** (-1.0 / (2 * (convs_per_branch - 1)))


class Generator(nn.Module):
  """[z; embed(c)] -> Dense -> base x base x widths[0] -> stages, each
  upsampling x2 (but the first) -> 1x1 conv to C. `widths` from the lowest
  resolution; image side = base * 2^(len(widths) - 1)."""
  image_shape: tuple[int, int, int]
  num_classes: int
  widths: tuple[int, ...] = (128, 64, 32)
  blocks: int = 1
  expansion: int = 2
  group_size: int = 16
  embed_dim: int = 32
  dtype: Any = None

  @nn.compact
  def __call__(self, z, c, *, train: bool = False, ref: Any = None):
    del train, ref
    h_img, w_img, channels = self.image_shape
    up = 2 ** (len(self.widths) - 1)
    if h_img % up or w_img % up:
      raise ValueError(f"R3GAN's generator with {len(self.widths)} stages "
                       f"needs H and W divisible by {up}; got image_shape "
                       f"{tuple(self.image_shape)}.")
    scale = fixup_scale(self.blocks * len(self.widths))
    onehot = conditioning.condition_vector(c, self.num_classes)
    e = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                 name="embed")(onehot.astype(z.dtype))
    h = jnp.concatenate([z, e], axis=-1)
    bh, bw = h_img // up, w_img // up
    h = nn.Dense(bh * bw * self.widths[0], dtype=self.dtype, name="basis")(h)
    h = nn.leaky_relu(h.reshape(-1, bh, bw, self.widths[0]), LEAKY_SLOPE)
    for i, width in enumerate(self.widths):
      if i:
        h = _resize(h, (h.shape[1] * 2, h.shape[2] * 2))
        h = nn.Conv(width, (1, 1), dtype=self.dtype, name=f"transition{i}")(h)
      for j in range(self.blocks):
        h = ResidualBlock(width, self.expansion, self.group_size, scale,
                          self.dtype, name=f"block{i}_{j}")(h)
    out = nn.Conv(channels, (1, 1), dtype=self.dtype, name="to_image")(h)
    return out.astype(jnp.float32)


class Discriminator(nn.Module):
  """1x1 conv from C -> stages (widths from the highest resolution), each
  but the first a 1x1 conv to its width and a bilinear downsample x2 ->
  flatten -> Dense(features) -> LReLU -> logit + projection. Returns the
  GAN family's dict (no class heads: R3GAN conditions by projection)."""
  image_shape: tuple[int, int, int]
  num_classes: int
  widths: tuple[int, ...] = (32, 64, 128)
  blocks: int = 1
  expansion: int = 2
  group_size: int = 16
  features: int = 128
  dtype: Any = None

  @nn.compact
  def __call__(self, x, c, *, train: bool = False,
               update_stats: bool | None = None):
    del train, update_stats
    scale = fixup_scale(self.blocks * len(self.widths))
    h = nn.Conv(self.widths[0], (1, 1), dtype=self.dtype, name="from_image")(
        x)
    for i, width in enumerate(self.widths):
      if i:
        h = nn.Conv(width, (1, 1), dtype=self.dtype, name=f"transition{i}")(h)
        h = _resize(h, (h.shape[1] // 2, h.shape[2] // 2))
      for j in range(self.blocks):
        h = ResidualBlock(width, self.expansion, self.group_size, scale,
                          self.dtype, name=f"block{i}_{j}")(h)
    h = h.reshape(h.shape[0], -1)
    features = nn.leaky_relu(
        nn.Dense(self.features, dtype=self.dtype, name="basis")(h),
        LEAKY_SLOPE)
    logit = nn.Dense(1, dtype=self.dtype, name="logit")(features)[:, 0]
    onehot = conditioning.condition_vector(c, self.num_classes)
    embed = nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                     name="embed")(onehot.astype(features.dtype))
    logit = logit + jnp.sum(embed * features, -1) / jnp.sqrt(
        float(self.features))
    return {"logit": logit.astype(jnp.float32), "class_logits": None,
            "twin_class_logits": None, "code_means": None,
            "features": features.astype(jnp.float32)}
