"""GAN layers: maxout, minibatch discrimination, virtual batch norm.

Backend-neutral, built from stock flax layers; the XLA:CPU implementations
that the models can be given instead live in `condgen_jax.nn.kernels`.

- `Maxout`: max over k affine pieces (Goodfellow et al. 2013), the hidden unit
  of the original GAN / CGAN discriminators.
- `MinibatchDiscrimination`: appends batch-similarity features so that D can
  see a collapsed batch (Salimans et al. 2016, sec. 3.2).
- `VirtualBatchNorm`: normalises with the statistics of a fixed reference
  batch (Salimans et al. 2016, sec. 3.4).
- `spectral_norm`: wraps a layer in flax's `nn.SpectralNorm` (Miyato et al.
  2018) or returns it unchanged.
- `SubPixelConv`: x2 upsampling by a convolution and depth-to-space (Shi et
  al. 2016); `depth_to_space`, `space_to_depth`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any


class Maxout(nn.Module):
  """h_j = max_k (x W_{.,j,k} + b_{j,k}), j < features, k < num_pieces.

  Goodfellow et al. 2013, "Maxout Networks", eq. 1. One
  Dense(features * num_pieces) named "dense" whose output column j * k_max + k
  is piece k of unit j; `[..., D] -> [..., features]`. `dtype`: the
  Dense's computation dtype (None: that of its inputs and float32 params).
  """
  features: int
  num_pieces: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    if self.features < 1 or self.num_pieces < 1:
      raise ValueError(f"Maxout needs features >= 1 and num_pieces >= 1; got "
                       f"{self.features} and {self.num_pieces}.")
    y = nn.Dense(self.features * self.num_pieces, dtype=self.dtype,
                 name="dense")(x)
    y = y.reshape(y.shape[:-1] + (self.features, self.num_pieces))
    return jnp.max(y, axis=-1)


class MinibatchDiscrimination(nn.Module):
  """Appends o(x_i)_b = sum_j exp(-||M_{i,b} - M_{j,b}||_1): [B,D] -> [B,D+nk].

  Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 3.2:
  M_i = x_i T reshaped to `[num_kernels, kernel_dim]`, with T a learned
  `[D, num_kernels * kernel_dim]` tensor; the sum runs over the whole
  minibatch, j = i included (as in the paper, so each o >= 1). The new
  features are permutation-equivariant over the batch. Inputs of more than
  two axes are flattened first. Run real and generated batches separately.
  """
  num_kernels: int
  kernel_dim: int
  kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.05)

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    t = self.param("T", self.kernel_init,
                   (x.shape[-1], self.num_kernels * self.kernel_dim))
    m = (x @ t.astype(x.dtype)).reshape(-1, self.num_kernels, self.kernel_dim)
    l1 = jnp.sum(jnp.abs(m[:, None] - m[None, :]), axis=-1)  # [B, B, nk]
    o = jnp.sum(jnp.exp(-l1), axis=1)  # [B, nk]
    return jnp.concatenate([x, o], axis=-1)


class VirtualBatchNorm(nn.Module):
  """Batch norm with the statistics of a fixed reference batch.

  Salimans et al. 2016, sec. 3.4. Called as `vbn(x, ref)`, where `ref` holds
  the activations of the reference batch at this same layer (the network runs
  its fixed reference inputs alongside every batch, through the same
  parameters):

    y = scale * (x - mu) / sqrt(var + epsilon) + bias,

  with mu, var per feature (last axis) over all other axes of `ref`.
  `include_example=True` is the paper's exact variant: example i is
  normalised with the statistics of ref U {x_i}, i.e. moments weighted
  N/(N+1) for the reference batch and 1/(N+1) for the example (its moments
  over its non-feature axes). The default uses the reference batch only.
  Normalise the reference batch with `vbn(ref, ref)`. Gradients flow through
  the statistics (they are functions of the parameters), as in the paper.
  """
  epsilon: float = 1e-5
  include_example: bool = False
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, ref):
    if x.shape[1:] != ref.shape[1:]:
      raise ValueError(f"x and ref must agree on all but the batch axis; got "
                       f"{x.shape} and {ref.shape}.")
    features = x.shape[-1]
    axes = tuple(range(ref.ndim - 1))
    mean = jnp.mean(ref, axis=axes)
    mean_sq = jnp.mean(jnp.square(ref), axis=axes)
    if self.include_example:
      n = ref.shape[0]
      ex_axes = tuple(range(1, x.ndim - 1))
      ex_mean = jnp.mean(x, axis=ex_axes) if ex_axes else x  # [B, F]
      ex_mean_sq = jnp.mean(jnp.square(x), axis=ex_axes) if ex_axes \
          else jnp.square(x)
      mean = (n * mean + ex_mean) / (n + 1)
      mean_sq = (n * mean_sq + ex_mean_sq) / (n + 1)
      shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (features,)
      mean, mean_sq = mean.reshape(shape), mean_sq.reshape(shape)
    var = jnp.maximum(mean_sq - jnp.square(mean), 0.0)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      y = y * self.param("scale", nn.initializers.ones, (features,))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (features,))
    return y


def spectral_norm(layer: nn.Module, enabled: bool, name: str | None = None):
  """`nn.SpectralNorm(layer)` when enabled (call with `update_stats=`), else a
  wrapper that accepts and ignores `update_stats`, so call sites are uniform.

  Miyato et al. 2018. flax keeps the power-iteration vector u and sigma in
  the 'batch_stats' collection; apply with `mutable=['batch_stats']` and
  `update_stats=True` while training.
  """
  if enabled:
    return nn.SpectralNorm(layer, name=name)
  return lambda *args, update_stats=False, **kwargs: layer(*args, **kwargs)


class SubPixelConv(nn.Module):
  """x2 (`scale`) upsampling by sub-pixel convolution (Shi et al. 2016).

  Conv(features * scale^2, kernel_size) at the input resolution, then
  depth-to-space: [B, H, W, C] -> [B, scale*H, scale*W, features]. With
  kernel_size 3 and scale 2 it spans every stride-2 transposed convolution
  of kernel size <= 4 (each output phase reads a 2x2 input neighbourhood), but
  its weight gradient is a plain convolution: XLA:CPU runs a transposed
  convolution's weight gradient (a window-dilated convolution) 10-50x slower.
  """
  features: int
  scale: int = 2
  kernel_size: int = 3
  use_bias: bool = True
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x):
    s = self.scale
    y = self.conv(self.features * s * s, (self.kernel_size,) * 2,
                  padding="SAME", use_bias=self.use_bias, name="conv")(x)
    return depth_to_space(y, s)


def depth_to_space(x, scale: int):
  """[B, H, W, s*s*C] -> [B, s*H, s*W, C]; channel (i*s + j)*C + c goes to
  pixel (s*h + i, s*w + j)."""
  b, h, w, c = x.shape
  out = c // (scale * scale)
  x = x.reshape(b, h, w, scale, scale, out).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * scale, w * scale, out)


def space_to_depth(x, scale: int):
  """[B, s*H, s*W, C] -> [B, H, W, s*s*C], the inverse of `depth_to_space`."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // scale, scale, w // scale, scale, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // scale, w // scale,
                                               scale * scale * c)
