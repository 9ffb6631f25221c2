"""Conditioning layers: ways to feed a condition c to a network.

A condition is integer class labels `[B]` (turned into one-hot vectors of
`num_classes`), integer attributes `[B, A]` with `num_classes` a tuple of the
A attributes' sizes (one-hot per attribute, concatenated: a Dense layer on
that vector is the sum of one embedding per attribute, so a combination never
seen in training still has a representation), or a float vector `[B, K]`
(codes), see `condition_vector`. Every layer works for any H, W and channel
count.

- `Concat`: [x, c] for dense inputs (Mirza & Osindero 2014).
- `Vectorize`: c tiled over H x W, stacked as extra channels (Reed et al. 2016).
- `FiLM`: per-channel gamma(c) * x + beta(c) (Perez et al. 2018).
- `EmbedChannel`: learned embedding of c -> Dense(H*W) -> one extra channel.
- `Projection`: <embed(c), phi(x)>, the projection discriminator term
  (Miyato & Koyama 2018).
- `FiLMConvStack`: (conv -> norm -> FiLM -> activation) x N.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from condgen_jax.nn import kernels as kernels_lib


CONDITIONINGS = ("vectorize", "film", "embed_channel")


def condition_size(num_classes) -> int:
  """Length of the condition vector: `num_classes`, or the sum of the
  attributes' sizes."""
  if isinstance(num_classes, int):
    return num_classes
  return sum(num_classes)


def condition_vector(c, num_classes):
  """Integer labels `[B]` -> float one-hot `[B, num_classes]`; integer
  attributes `[B, A]` with `num_classes` = (size_1, ..., size_A) -> the
  attributes' one-hots concatenated, `[B, sum(sizes)]`; float vectors
  `[B, condition_size(num_classes)]` as they are."""
  c = jnp.asarray(c)
  k = condition_size(num_classes)
  if jnp.issubdtype(c.dtype, jnp.integer):
    if isinstance(num_classes, int):
      return jax.nn.one_hot(c, num_classes, dtype=jnp.float32)
    if c.ndim != 2 or c.shape[-1] != len(num_classes):
      raise ValueError(f"Attributes of sizes {tuple(num_classes)} must have "
                       f"shape [batch, {len(num_classes)}]; got {c.shape}.")
    return jnp.concatenate(
        [jax.nn.one_hot(c[:, i], n, dtype=jnp.float32)
         for i, n in enumerate(num_classes)], axis=-1)
  if c.ndim != 2 or c.shape[-1] != k:
    raise ValueError(f"A float condition must have shape [batch, {k}]; got "
                     f"{c.shape}.")
  return c


class Concat(nn.Module):
  """Flattens x and appends the condition vector: [B, ...] -> [B, D + K]."""
  num_classes: int

  @nn.compact
  def __call__(self, x, c):
    c = condition_vector(c, self.num_classes)
    return jnp.concatenate([x.reshape(x.shape[0], -1), c.astype(x.dtype)], -1)


class Vectorize(nn.Module):
  """Tiles the condition over H x W as K extra channels: [B,H,W,C+K]."""
  num_classes: int

  @nn.compact
  def __call__(self, x, c):
    c = condition_vector(c, self.num_classes).astype(x.dtype)
    b, h, w, _ = x.shape
    maps = jnp.broadcast_to(c[:, None, None, :], (b, h, w, c.shape[-1]))
    return jnp.concatenate([x, maps], axis=-1)


class FiLM(nn.Module):
  """y = gamma(c) * x + beta(c), per channel.

  Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning
  Layer". gamma and beta come from one Dense layer on the condition, its
  bias starting at (1, 0): gamma = 1 + dgamma(c), beta = dbeta(c). The
  kernel starts as `kernel_init`: LeCun normal (Dense's default), so each
  class modulates the features from the first step; `zeros` makes the
  layer the identity at initialisation (the U-Net's choice). In a DCGAN
  discriminator the identity start left the condition unused for the first
  thousands of steps: class accuracy of the samples 0.23 after 2,000 steps
  on MNIST, against 0.74 with the LeCun start (docs/findings.md, "How the
  defaults got there").
  """
  num_classes: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Any = None  # the Dense's computation dtype (None: float32)

  @nn.compact
  def __call__(self, x, c):
    c = condition_vector(c, self.num_classes)
    channels = x.shape[-1]

    def bias_init(key, shape, dtype=jnp.float32):
      del key
      return jnp.concatenate([jnp.ones(shape[0] // 2, dtype),
                              jnp.zeros(shape[0] // 2, dtype)])

    gamma_beta = nn.Dense(2 * channels, kernel_init=self.kernel_init,
                          bias_init=bias_init, dtype=self.dtype,
                          name="gamma_beta")(c)
    gamma, beta = jnp.split(gamma_beta.astype(x.dtype), 2, axis=-1)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (channels,)
    return gamma.reshape(shape) * x + beta.reshape(shape)


class EmbedChannel(nn.Module):
  """A learned class embedding projected to one extra image channel.

  c -> embedding (size `embed_dim`, default 50) -> Dense(H*W) -> [B, H, W, 1],
  concatenated to x: [B, H, W, C] -> [B, H, W, C + 1].
  """
  num_classes: int
  embed_dim: int = 50
  dtype: Any = None  # the layers' computation dtype (None: float32)

  @nn.compact
  def __call__(self, x, c):
    c = jnp.asarray(c)
    if jnp.issubdtype(c.dtype, jnp.integer) and isinstance(self.num_classes,
                                                           int):
      e = nn.Embed(self.num_classes, self.embed_dim, dtype=self.dtype,
                   name="embed")(c)
    else:  # a condition vector: a bias-free Dense is the same map.
      e = nn.Dense(self.embed_dim, use_bias=False, dtype=self.dtype,
                   name="embed")(condition_vector(c, self.num_classes))
    b, h, w, _ = x.shape
    channel = nn.Dense(h * w, dtype=self.dtype, name="to_channel")(
        e).reshape(b, h, w, 1)
    return jnp.concatenate([x, channel.astype(x.dtype)], axis=-1)


class Projection(nn.Module):
  """The projection term <embed(c), features> of Miyato & Koyama 2018.

  Added to an unconditional discriminator logit: D(x, c) = psi(phi(x)) +
  <embed(c), phi(x)>. Returns `[B]`.

  The embedding starts Glorot-uniform over its [K, F] kernel, as in the
  authors' code (`EmbedID(..., initialW=GlorotUniform())`): each entry is
  then about as large as psi's weights (std ~ sqrt(2 / F)), so at the
  start the condition's term is no larger than the unconditional one. The
  Dense default (LeCun over the K inputs, std 1 / sqrt(K)) made it about
  sqrt(F / K) times larger, ~25x for MNIST's 6,272 features: D's logit was
  a random per-class offset, and class accuracy of the samples trailed by
  about 1,000 steps (docs/findings.md, "How the defaults got there").
  """
  num_classes: int
  dtype: Any = None  # the embedding's computation dtype (None: float32)

  @nn.compact
  def __call__(self, features, c):
    c = condition_vector(c, self.num_classes)
    e = nn.Dense(features.shape[-1], use_bias=False,
                 kernel_init=nn.initializers.xavier_uniform(),
                 dtype=self.dtype, name="embed")(c)
    return jnp.sum(e.astype(features.dtype) * features, axis=-1)


def image_conditioning(name: str, num_classes: int,
                       dtype: Any = None) -> nn.Module:
  """The input-side conditioning layer named `name` (not FiLM, which acts
  inside a conv stack); `dtype`: its layers' computation dtype."""
  if name == "vectorize":
    return Vectorize(num_classes)
  if name == "embed_channel":
    return EmbedChannel(num_classes, dtype=dtype)
  raise ValueError(f"Unknown input conditioning {name!r}; expected "
                   "'vectorize' or 'embed_channel'.")


def _conv_layer(kernels: kernels_lib.Kernels, transpose: bool, stride: int,
                dtype: Any = None):
  """The layer of one conv of a stack: the injected kernels at strides 1
  and 2 ('SAME' padding), stock flax (computing in `dtype`) otherwise."""
  if transpose:
    return (kernels.conv_transpose if stride == 2 else
            functools.partial(nn.ConvTranspose, dtype=dtype))
  return {1: kernels.conv, 2: kernels.strided_conv}.get(
      stride, functools.partial(nn.Conv, dtype=dtype))


class FiLMConvStack(nn.Module):
  """(Conv -> norm -> FiLM(c) -> activation) for each entry of `features`.

  norm: 'batch' (needs `train` and the `batch_stats` collection), 'layer'
  (stateless) or 'none'. Norm layers have no affine parameters of their own:
  FiLM supplies the scale and shift. `kernels`: the conv implementations
  (`condgen_jax.nn.kernels`), the same function; they carry their own
  computation dtype, `dtype` is that of FiLM and of the stock convs of
  other strides (None: float32).
  """
  num_classes: int
  features: Sequence[int]
  strides: Sequence[int] | None = None
  kernel_size: int = 3
  norm: str = "layer"
  activation: Callable = nn.relu
  transpose: bool = False
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None

  @nn.compact
  def __call__(self, x, c, *, train: bool = False):
    strides = self.strides or (1,) * len(self.features)
    if len(strides) != len(self.features):
      raise ValueError("strides and features must have the same length.")
    for i, (f, s) in enumerate(zip(self.features, strides)):
      conv_cls = _conv_layer(self.kernels, self.transpose, s, self.dtype)
      x = conv_cls(f, (self.kernel_size,) * 2, strides=(s, s), padding="SAME",
                   use_bias=self.norm == "none", name=f"conv{i}")(x)
      x = normalization(self.norm, train, name=f"norm{i}")(x)
      x = FiLM(self.num_classes, dtype=self.dtype, name=f"film{i}")(x, c)
      x = self.activation(x)
    return x


def normalization(kind: str, train: bool, name: str | None = None,
                  affine: bool = False, batch_norm=nn.BatchNorm):
  """A normalisation layer by name: 'batch', 'layer' or 'none'.
  `batch_norm`: the implementation of 'batch' (`kernels.Kernels`)."""
  if kind == "batch":
    return batch_norm(use_running_average=not train, use_scale=affine,
                      use_bias=affine, momentum=0.9, name=name)
  if kind == "layer":
    return nn.LayerNorm(use_scale=affine, use_bias=affine, name=name)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"Unknown norm {kind!r}; expected 'batch', 'layer' or "
                   "'none'.")
