"""Random affine warps of image batches, differentiable in the images.

InfoGAN's categorical code (`families.gan`, code_augmentation=True) is read
by Q from warped copies of the generated images: a code that Q must still
recover after a random rotation, stretch and shift cannot be carried by
slant, width or position, the style factors that otherwise split one digit
over two codes. Clustering by mutual information relies on the same
invariance (IIC, Ji et al. 2019; IMSAT, Hu et al. 2017).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The warp's ranges: rotation in degrees, per-axis scale, shift in pixels.
MAX_ROTATION = 20.0
SCALE_RANGE = (0.8, 1.2)
MAX_SHIFT = 2.0


def affine_matrices(key, n: int):
  """(A `[n, 2, 2]`, t `[n, 2]`): the output pixel p (row, col, from the
  image centre) reads the input at A p + t; A = R(theta) diag(1/s_r, 1/s_c)
  with theta ~ U(±MAX_ROTATION degrees), s ~ U(SCALE_RANGE) per axis (s > 1
  enlarges) and t ~ U(±MAX_SHIFT) per axis."""
  k_rot, k_scale, k_shift = jax.random.split(key, 3)
  theta = jax.random.uniform(k_rot, (n,), minval=-1.0, maxval=1.0) * (
      MAX_ROTATION * math.pi / 180.0)
  scale = jax.random.uniform(k_scale, (n, 2), minval=SCALE_RANGE[0],
                             maxval=SCALE_RANGE[1])
  shift = jax.random.uniform(k_shift, (n, 2), minval=-MAX_SHIFT,
                             maxval=MAX_SHIFT)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rotation = jnp.stack([jnp.stack([cos, -sin], -1),
                        jnp.stack([sin, cos], -1)], -2)
  return rotation / scale[:, None, :], shift


def warp(images, matrices, shifts, fill: float):
  """`images` `[B, H, W, C]` resampled bilinearly at A p + t (see
  `affine_matrices`); the image is surrounded by `fill`, so points within
  a pixel of its edge blend the two."""
  _, h, w, c = images.shape
  rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                            jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2,
                            indexing="ij")
  grid = jnp.stack([rows.ravel(), cols.ravel()], 0)  # [2, H*W]

  def one(image, a, t):
    src = a @ grid + t[:, None]
    r = src[0] + (h - 1) / 2
    q = src[1] + (w - 1) / 2
    channels = [jax.scipy.ndimage.map_coordinates(
        image[..., k], [r, q], order=1, mode="constant", cval=fill)
                for k in range(c)]
    return jnp.stack(channels, -1).reshape(h, w, c)

  return jax.vmap(one)(images, matrices, shifts)


def random_affine(key, images, fill: float):
  """`images` warped by independent random affine maps
  (`affine_matrices`); `fill` is the background value (-1 for tanh images)."""
  matrices, shifts = affine_matrices(key, images.shape[0])
  return warp(images, matrices, shifts, fill)
