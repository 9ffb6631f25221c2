"""A class-conditional U-Net for diffusion and flow matching.

The network of Ho et al. 2020 ("Denoising Diffusion Probabilistic Models",
App. B), at small widths: residual blocks (GroupNorm -> SiLU -> conv, twice)
at each of `len(channels)` resolutions, `num_res_blocks` per level on the way
down and `num_res_blocks + 1` on the way up (each one fed the matching skip
connection), strided-conv downsampling, nearest-resize + conv upsampling,
optional single-head self-attention at the lowest resolution and in the
middle.

Conditioning: the time t in [0, 1] gets the sinusoidal embedding of
Vaswani et al. 2017 (of `time_scale * t`, so t = i / 1000 sees the integer
timesteps of Ho et al.) and an MLP; the class label gets a learned embedding
(`nn.Embed` with `num_classes + 1` rows: label `num_classes` is the learned
null, "unconditional" label of classifier-free guidance, Ho & Salimans 2022).
A condition of A attributes (`num_classes` the tuple of their sizes K_a,
labels `[B, A]`) gets one such embedding per attribute, `K_a + 1` rows with
row K_a the attribute's null, summed: a combination never seen in training
still has one. The unconditional input of guidance is every attribute at
its null, (K_1, ..., K_A), so only the sum of the null rows is learned: one
null vector for the whole condition. The condition's embedding is added to
the time's, and every residual block applies the sum through
`conditioning.FiLM` after its second norm (the scale-shift norm of Dhariwal &
Nichol 2021), identity at initialisation.

`patch_size` p > 1 folds each p x p patch into channels first
(`layers.space_to_depth`, 28x28x1 -> 14x14x4 for p = 2) and unfolds the
output at the end (`layers.depth_to_space`), as the patches of Peebles &
Xie 2023's DiT: the top level then runs at (H/p, W/p) with the same
widths, which on XLA:CPU is both fewer FLOPs and faster per FLOP (wider
convolutions at fewer positions). H and W must be divisible by p.

The spatial size need not be divisible by 2 ** (levels - 1): strided convs
round up and each upsampling resizes to its skip connection's exact size
(28 -> 14 -> 7 for MNIST with three levels, 8 -> 4 -> 2 for digits).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from condgen_jax.nn import conditioning
from condgen_jax.nn import layers


def sinusoidal_embedding(t, dim: int, max_period: float = 10_000.0):
  """[B] -> [B, dim]: [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / half).

  Vaswani et al. 2017, sec. 3.5, as used for diffusion timesteps by Ho et
  al. 2020. `dim` must be even.
  """
  if dim % 2:
    raise ValueError(f"sinusoidal_embedding needs an even dim; got {dim}.")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                  / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ResBlock(nn.Module):
  """x + conv(SiLU(FiLM(GN(conv(SiLU(GN(x)))), emb))), 1x1 conv on the skip
  when the width changes. The second conv starts at zero, so the block
  starts as (a projection of) the identity."""
  features: int
  num_groups: int
  dtype: Any = None  # of the convs and FiLM (None: float32)

  @nn.compact
  def __call__(self, x, emb):
    h = nn.GroupNorm(num_groups=self.num_groups, name="norm1")(x)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype,
                name="conv1")(nn.silu(h))
    h = nn.GroupNorm(num_groups=self.num_groups, use_bias=False,
                     use_scale=False, name="norm2")(h)
    h = conditioning.FiLM(emb.shape[-1], kernel_init=nn.initializers.zeros,
                          dtype=self.dtype, name="film")(h, nn.silu(emb))
    h = nn.Conv(self.features, (3, 3), kernel_init=nn.initializers.zeros,
                dtype=self.dtype, name="conv2")(nn.silu(h))
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="skip")(x)
    return x + h


class SelfAttention(nn.Module):
  """x + W_o softmax(q k^T / sqrt(C)) v over the H*W positions, single head
  (Ho et al. 2020 use one head at 16x16); the output projection starts at
  zero. With a `dtype`, the projections and both products compute in it,
  the softmax in float32."""
  num_groups: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = nn.GroupNorm(num_groups=self.num_groups, name="norm")(x)
    q, k, v = jnp.split(nn.Dense(3 * c, dtype=self.dtype, name="qkv")(
        y.reshape(b, h * w, c)), 3, axis=-1)
    scores = jnp.einsum("bqc,bkc->bqk", q, k).astype(jnp.float32)
    weights = jax.nn.softmax(scores / math.sqrt(c), axis=-1)
    y = jnp.einsum("bqk,bkc->bqc", weights.astype(v.dtype), v)
    y = nn.Dense(c, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                 name="out")(y)
    return x + y.reshape(b, h, w, c)


def condition_embedding(num_classes, labels, dim: int, dtype: Any = None):
  """Labels `[B]` -> their learned embeddings `[B, dim]` ('label_embed',
  `num_classes + 1` rows, the last the null); attributes `[B, A]` -> the sum
  of one such embedding per attribute ('label_embed_0', ...), in `dtype`
  (None: float32). Call inside a compact module."""
  if isinstance(num_classes, tuple):
    return sum(nn.Embed(k + 1, dim, dtype=dtype,
                        name=f"label_embed_{a}")(labels[:, a])
               for a, k in enumerate(num_classes))
  return nn.Embed(num_classes + 1, dim, dtype=dtype,
                  name="label_embed")(labels)


class UNet(nn.Module):
  """eps / v / velocity prediction: (x [B,H,W,C], t [B], labels [B]) ->
  [B,H,W,C]. Labels are ints in [0, num_classes]; num_classes is the null
  label. With a tuple `num_classes` (attribute sizes), labels are `[B, A]`,
  attribute a in [0, num_classes[a]], its size its null. `dtype`: the
  computation dtype of the convs, dense layers and embeddings (None:
  float32); parameters, GroupNorm statistics and the output are float32."""
  num_classes: int | tuple[int, ...]
  channels: Sequence[int] = (32, 64, 128)
  num_res_blocks: int = 2
  attention: bool = True
  num_groups: int = 8
  embed_dim: int | None = None  # default 4 * channels[0]
  time_scale: float = 1000.0
  patch_size: int = 1
  dtype: Any = None

  @nn.compact
  def __call__(self, x, t, labels):
    channels = tuple(self.channels)
    bad = [c for c in channels if c % self.num_groups]
    if bad:
      raise ValueError(f"UNet channels {channels} must all be divisible by "
                       f"num_groups={self.num_groups}; {bad} are not.")
    p = self.patch_size
    if p < 1 or x.shape[1] % p or x.shape[2] % p:
      raise ValueError(f"UNet patch_size={p} must be >= 1 and divide the "
                       f"image size {x.shape[1]}x{x.shape[2]}.")
    out_channels = x.shape[-1]
    if p > 1:
      x = layers.space_to_depth(x, p)
    dim = self.embed_dim or 4 * channels[0]
    temb = sinusoidal_embedding(self.time_scale * jnp.asarray(t), channels[0])
    dtype = self.dtype
    temb = nn.Dense(dim, dtype=dtype, name="time_dense1")(temb)
    temb = nn.Dense(dim, dtype=dtype, name="time_dense2")(nn.silu(temb))
    emb = temb + condition_embedding(self.num_classes, labels, dim, dtype)
    block = lambda f, name: ResBlock(f, self.num_groups, dtype, name=name)
    attend = lambda name: SelfAttention(self.num_groups, dtype, name=name)
    last = len(channels) - 1

    h = nn.Conv(channels[0], (3, 3), dtype=dtype, name="conv_in")(x)
    skips = [h]
    for level, f in enumerate(channels):
      for i in range(self.num_res_blocks):
        h = block(f, f"down{level}_block{i}")(h, emb)
        if self.attention and level == last:
          h = attend(f"down{level}_attn{i}")(h)
        skips.append(h)
      if level != last:
        h = nn.Conv(f, (3, 3), strides=(2, 2), dtype=dtype,
                    name=f"down{level}_pool")(h)
        skips.append(h)

    h = block(channels[-1], "mid_block0")(h, emb)
    if self.attention:
      h = attend("mid_attn")(h)
    h = block(channels[-1], "mid_block1")(h, emb)

    for level in reversed(range(len(channels))):
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(channels[level], f"up{level}_block{i}")(h, emb)
        if self.attention and level == last:
          h = attend(f"up{level}_attn{i}")(h)
      if level:
        target = skips[-1].shape
        h = jax.image.resize(h, (h.shape[0], target[1], target[2],
                                 h.shape[3]), method="nearest")
        h = nn.Conv(channels[level], (3, 3), dtype=dtype,
                    name=f"up{level}_upsample")(h)

    h = nn.silu(nn.GroupNorm(num_groups=self.num_groups, name="norm_out")(h))
    h = nn.Conv(out_channels * p * p, (3, 3), dtype=dtype,
                kernel_init=nn.initializers.zeros, name="conv_out")(h)
    h = h.astype(jnp.float32)
    return layers.depth_to_space(h, p) if p > 1 else h


def num_params(params) -> int:
  return sum(int(p.size) for p in jax.tree.leaves(params))
