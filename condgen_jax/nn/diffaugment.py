"""Differentiable augmentation of every image a GAN's discriminator sees.

DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training") augments real AND generated images with the
same kind of random, differentiable transforms, before D, in D's and in G's
updates (G's gradient flows through the transform). The official policy
'color,translation,cutout' is, per example and in this order:

- brightness: x + b, b ~ U[-0.5, 0.5);
- saturation: (x - m_c) * s + m_c, s ~ U[0, 2), m_c the mean over the
  channels at each pixel (the identity for 1-channel images);
- contrast: (x - m) * c + m, c ~ U[0.5, 1.5), m the image's mean over its
  pixels and channels;
- translation: a shift of up to 1/8 of each side (round(H/8) pixels, an
  integer drawn uniformly in [-round(H/8), round(H/8)]), the uncovered
  pixels 0 (out[i, j] = x[i + t_r, j + t_c] where that is inside, else 0);
- cutout: a square of half each side (round(H/2) x round(W/2)) set to 0,
  centred at a uniformly drawn pixel (clipped at the border).

The ranges are the official code's, which feeds D images in [-1, 1]: 0,
the value of the padding and of the cut square, is mid-grey there. The
GAN family feeds D [-1, 1] images (the conv models, and cgan_mlp with
g_output='tanh') or [0, 1] ones (cgan_mlp with g_output='sigmoid'); these
ops are applied unchanged in either range (in [0, 1], 0 is black and the
brightness shift is relatively twice as large).

ADA (Karras et al. 2020, "Training Generative Adversarial Networks with
Limited Data") applies each transform of its pipeline with a probability p
per example and adapts p to D's overfitting (`ada_adjust`). Here ADA's
pipeline is these five DiffAugment ops (each with its own Bernoulli(p)
draw), not the paper's 18 (flips, 90-degree rotations, integer translation,
isotropic / anisotropic scaling, arbitrary rotation, fractional
translation, brightness, contrast, luma flip, hue, saturation, image-space
filtering, additive noise, cutout), as StudioGAN's "ADA" runs with a
pipeline of its own.

Every function is pure: the draws come from an explicit key (one
`jax.random.fold_in` per op), the images are `[B, H, W, C]`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# config.augment of the GAN family: off, DiffAugment, ADA.
MODES = ("none", "diffaugment", "ada")
OPS = ("brightness", "saturation", "contrast", "translation", "cutout")
# The policy names of the official code and the ops each stands for.
POLICY_OPS = {"color": ("brightness", "saturation", "contrast"),
              "translation": ("translation",), "cutout": ("cutout",)}
POLICIES = ("color", "translation", "cutout", "color,translation",
            "color,cutout", "translation,cutout", "color,translation,cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def policy_ops(policy: str) -> tuple[str, ...]:
  """The ops of a comma-separated policy, in `OPS` order; ValueError names
  an unknown part."""
  parts = [p for p in policy.split(",") if p]
  bad = [p for p in parts if p not in POLICY_OPS]
  if bad or not parts:
    raise ValueError(f"Unknown DiffAugment policy {policy!r}; expected "
                     f"comma-separated parts of {tuple(POLICY_OPS)}.")
  chosen = {op for p in parts for op in POLICY_OPS[p]}
  return tuple(op for op in OPS if op in chosen)


def _round_half_up(x: float) -> int:
  return int(x + 0.5)  # the official code's int(size * ratio + 0.5)


def translation_limits(h: int, w: int) -> tuple[int, int]:
  return (_round_half_up(h * TRANSLATION_RATIO),
          _round_half_up(w * TRANSLATION_RATIO))


def cutout_size(h: int, w: int) -> tuple[int, int]:
  return _round_half_up(h * CUTOUT_RATIO), _round_half_up(w * CUTOUT_RATIO)


# ----------------------------------------------------------------------------
# The ops, each at given draws.


def brightness(x, shift):
  """x + shift, `shift` `[B]`."""
  return x + shift[:, None, None, None]


def saturation(x, factor):
  """(x - mean over channels) * factor + that mean, `factor` `[B]`."""
  if x.shape[-1] == 1:
    return x  # the channel mean is the pixel itself
  mean = jnp.mean(x, axis=-1, keepdims=True)
  return (x - mean) * factor[:, None, None, None] + mean


def contrast(x, factor):
  """(x - image mean) * factor + image mean, `factor` `[B]`."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * factor[:, None, None, None] + mean


def translate(x, shifts):
  """out[b, i, j] = x[b, i + t_r, j + t_c] where inside the image, else 0;
  `shifts` int `[B, 2]` (t_r, t_c). A gather, so the gradient w.r.t. x
  moves with the pixels."""
  b, h, w, c = x.shape
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = jnp.clip(jnp.arange(h)[None, :] + shifts[:, :1] + 1, 0, h + 1)
  cols = jnp.clip(jnp.arange(w)[None, :] + shifts[:, 1:] + 1, 0, w + 1)
  out = jnp.take_along_axis(padded, rows[:, :, None, None], axis=1)
  out = jnp.take_along_axis(out, cols[:, None, :, None], axis=2)
  return out.reshape(b, h, w, c)


def cutout_mask(shape, offsets):
  """`[B, H, W, 1]` float: 0 inside the cut square, 1 elsewhere; the
  square of `cutout_size` starts at offsets - size // 2 (int `[B, 2]`)."""
  _, h, w, _ = shape
  size = cutout_size(h, w)
  start = offsets - jnp.array([size[0] // 2, size[1] // 2])
  i = jnp.arange(h)[None, :]
  j = jnp.arange(w)[None, :]
  in_rows = (i >= start[:, :1]) & (i < start[:, :1] + size[0])
  in_cols = (j >= start[:, 1:]) & (j < start[:, 1:] + size[1])
  cut = in_rows[:, :, None] & in_cols[:, None, :]
  return jnp.where(cut, 0.0, 1.0)[..., None]


def cutout(x, offsets):
  """x with the `cutout_mask` square set to 0."""
  return x * cutout_mask(x.shape, offsets).astype(x.dtype)


# ----------------------------------------------------------------------------
# Draws and the whole augmentation.


def draw(key, shape, ops=OPS) -> dict:
  """The random parameters of `ops` for images of `shape` `[B, H, W, C]`:
  {op: `[B]` floats, or `[B, 2]` ints for translation and cutout}, each
  drawn from `jax.random.fold_in(key, OPS.index(op))`."""
  b, h, w, _ = shape
  params = {}
  for op in ops:
    k = jax.random.fold_in(key, OPS.index(op))
    if op == "brightness":
      params[op] = jax.random.uniform(k, (b,)) - 0.5
    elif op == "saturation":
      params[op] = jax.random.uniform(k, (b,)) * 2.0
    elif op == "contrast":
      params[op] = jax.random.uniform(k, (b,)) + 0.5
    elif op == "translation":
      lim = translation_limits(h, w)
      kr, kc = jax.random.split(k)
      params[op] = jnp.stack(
          [jax.random.randint(kr, (b,), -lim[0], lim[0] + 1),
           jax.random.randint(kc, (b,), -lim[1], lim[1] + 1)], -1)
    elif op == "cutout":
      size = cutout_size(h, w)
      kr, kc = jax.random.split(k)
      params[op] = jnp.stack(
          [jax.random.randint(kr, (b,), 0, h + (1 - size[0] % 2)),
           jax.random.randint(kc, (b,), 0, w + (1 - size[1] % 2))], -1)
    else:
      raise ValueError(f"Unknown DiffAugment op {op!r}; expected one of "
                       f"{OPS}.")
  return params


_APPLY = {"brightness": brightness, "saturation": saturation,
          "contrast": contrast, "translation": translate, "cutout": cutout}


def apply(x, params: dict, masks: dict | None = None):
  """The ops of `params` (in `OPS` order) at those draws; with `masks`
  ({op: bool `[B]`}), op is applied to the examples where its mask is True
  and the others pass through unchanged (bit for bit)."""
  for op in OPS:
    if op not in params:
      continue
    y = _APPLY[op](x, params[op])
    if masks is not None:
      y = jnp.where(masks[op][:, None, None, None], y, x)
    x = y
  return x


def augment(key, x, policy: str = "color,translation,cutout", p=None):
  """`x` `[B, H, W, C]` augmented by `policy`'s ops at draws from `key`.

  p None: every op on every example (DiffAugment). p a probability
  (a float, or a traced scalar, ADA's): each op applied to each example
  with probability p, independently (p = 0 returns x exactly; p = 1 applies
  all). Differentiable in x."""
  ops = policy_ops(policy)
  params = draw(jax.random.fold_in(key, 0), x.shape, ops)
  if p is None:
    return apply(x, params)
  b = x.shape[0]
  masks = {op: jax.random.uniform(
      jax.random.fold_in(jax.random.fold_in(key, 1), OPS.index(op)), (b,))
           < p for op in ops}
  return apply(x, params, masks)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """What the GAN family applies to every image D sees: `mode` 'none'
  (identity), 'diffaugment' (every op, always) or 'ada' (each op with the
  train state's probability p). `__call__(key, x, p)`; p is read by 'ada'
  only."""
  mode: str = "none"
  policy: str = "color,translation,cutout"

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"Unknown augment {self.mode!r}; expected one of "
                       f"{MODES}.")
    policy_ops(self.policy)

  @property
  def active(self) -> bool:
    return self.mode != "none"

  def __call__(self, key, x, p=None):
    if self.mode == "none":
      return x
    if self.mode == "diffaugment":
      return augment(key, x, self.policy)
    return augment(key, x, self.policy, p)


# ----------------------------------------------------------------------------
# ADA's adaptive probability.


def ada_init() -> dict:
  """ADA's state in the train state: p = 0 and the sign accumulator of
  D's real outputs since the last adjustment."""
  return {"ada_p": jnp.zeros((), jnp.float32),
          "ada_sign_sum": jnp.zeros((), jnp.float32),
          "ada_count": jnp.zeros((), jnp.float32)}


def ada_adjust(p, sign_sum, count, *, target: float, kimg: float):
  """p + sign(r_t - target) * count / (kimg * 1000), clipped to [0, 1].

  Karras et al. 2020, sec. 3: r_t = E[sign(D_train)] = sign_sum / count
  over the `count` real images seen since the last adjustment (batch size x
  interval); p can thus go from 0 to 1 in kimg thousand images."""
  r_t = sign_sum / jnp.maximum(count, 1.0)
  step = jnp.sign(r_t - target) * count / (kimg * 1000.0)
  return jnp.clip(p + step, 0.0, 1.0)


def ada_accumulate(state: dict, sign_mean, n: int) -> dict:
  """`state` after a batch of n real images whose D outputs have mean sign
  `sign_mean`: the signs are summed until the next adjustment."""
  return {**state, "ada_sign_sum": state["ada_sign_sum"] + sign_mean * n,
          "ada_count": state["ada_count"] + n}


def ada_update(state: dict, adjust, *, target: float, kimg: float) -> dict:
  """`state` with p adjusted (`ada_adjust`) and the accumulator reset where
  `adjust` (a traced bool: every `ada_interval` steps), else as it is."""
  new_p = ada_adjust(state["ada_p"], state["ada_sign_sum"],
                     state["ada_count"], target=target, kimg=kimg)
  zero = jnp.zeros((), jnp.float32)
  keep = lambda new, old: jnp.where(adjust, new, old).astype(jnp.float32)
  return {**state, "ada_p": keep(new_p, state["ada_p"]),
          "ada_sign_sum": keep(zero, state["ada_sign_sum"]),
          "ada_count": keep(zero, state["ada_count"])}
