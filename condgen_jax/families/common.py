"""Pieces the model families share: the [-1, 1] image range, the mean of
per-example values over the test split, and the state and update of two
players (a generator G and a discriminator D).

- `to_signed` / `to_unit`: images in [0, 1] to the [-1, 1] range of the
  models with tanh outputs (diffusion, the conv GANs, pix2pix) and back.
- `test_split_mean`: what the families' `evaluate` functions report, the
  mean over the test split of per-example values computed batch by batch.
- `TwoPlayerState`, `optimizer_step`, `chain_transform`: the parameters and
  optimiser states of G and D, and one optimiser update of one player
  (the GAN family and pix2pix).
- `KERNELS_OPTION`: the `kernels` key of every family whose networks take
  an `nn.kernels.Kernels`.
- `compute_dtype`, `layer_kernels`, `check_precision`: mixed precision
  (the runner's `compute_dtype` key): the dtype the networks compute in,
  the layer implementations that compute in it, the check of `kernels`
  against it. The networks return float32 whatever they compute in.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from condgen_jax.core import options
from condgen_jax.nn import kernels as kernels_lib

KERNELS_OPTION = options.choice(
    "auto", kernels_lib.KERNELS,
    "layer implementations (`kernels.resolve`): 'auto' = the XLA:CPU "
    "kernels on CPU, stock flax layers elsewhere and with compute_dtype="
    "'bfloat16'; the same function")

# `compute_dtype` (declared with the runner's keys) -> the networks' `dtype`:
# None leaves flax's own (float32 inputs and params compute in float32), so
# a float32 run builds the very networks it built before the key existed.
_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def compute_dtype(s):
  """The dtype the networks of settings `s` compute their matmuls and
  convolutions in (flax `dtype=`): None for 'float32', `jnp.bfloat16` for
  'bfloat16'. Parameters stay float32 either way (`param_dtype`)."""
  return _DTYPES[s.compute_dtype]


def check_precision(s) -> None:
  """ValueError when `s.kernels` names the XLA:CPU kernels ('cpu') with a
  bfloat16 `compute_dtype`: they are written for float32, so bfloat16
  runs use the stock flax layers ('auto' picks them)."""
  if compute_dtype(s) is not None and s.kernels == "cpu":
    raise ValueError(f"config.kernels='cpu' computes in float32 only; with "
                     f"compute_dtype={s.compute_dtype!r} use kernels='auto' "
                     "or 'stock' (the stock flax layers).")


def layer_kernels(s) -> kernels_lib.Kernels:
  """The layer implementations of settings `s`: `kernels.resolve(s.kernels)`
  in float32; in bfloat16 the stock flax layers, the convolutions computing
  in bfloat16 and batch norm in float32 (statistics and output)."""
  dtype = compute_dtype(s)
  if dtype is None:
    return kernels_lib.resolve(s.kernels)
  return kernels_lib.Kernels(
      conv=functools.partial(nn.Conv, dtype=dtype),
      strided_conv=functools.partial(nn.Conv, dtype=dtype),
      conv_transpose=functools.partial(nn.ConvTranspose, dtype=dtype),
      batch_norm=functools.partial(nn.BatchNorm, dtype=jnp.float32))


def to_signed(images):
  """Images in [0, 1] mapped to [-1, 1]: `2x - 1` (numpy or jax arrays)."""
  return 2.0 * images - 1.0


def to_unit(x, clip: bool = True):
  """Values in [-1, 1] mapped to [0, 1]: `(x + 1) / 2`.

  With `clip`, the result is clipped to [0, 1] and cast to float32, the
  images a family's `sample` returns (a generator's or sampler's output can
  leave [-1, 1] slightly); without it, `(x + 1) / 2` as it is.
  """
  x = (x + 1.0) / 2.0
  return jnp.clip(x, 0.0, 1.0).astype(jnp.float32) if clip else x


def test_split_mean(fn: Callable[..., dict], dataset, batch_size: int,
                    rng=None, *, with_labels: bool = True
                    ) -> tuple[dict, int]:
  """(means, n): values of `fn` summed over the test split, divided by its
  number of examples n.

  The test images (and labels) are cut into consecutive batches of
  `batch_size`, the last one shorter when n is not a multiple of it (no
  padding). Batch i is passed as `fn(images, labels, key)`: `labels` only
  `with_labels`, `key = jax.random.fold_in(rng, i)` only when `rng` is
  given. `fn` returns {name: array}, typically per-example values `[B]`
  (a batch's sum, a scalar, works the same). Every array is summed in
  float64 on the host and the batches' sums are added in order as Python
  floats, so

    means[name] = (sum_i sum_j float64(fn(batch_i)[name])_j) / n

  (float64 so that a test split of many examples sums float32 values
  without losing their precision). `means` keeps the order of the names as
  `fn` returns them (a jitted function returns its dicts sorted by name).
  """
  images, labels = dataset.split("test")
  n = len(images)
  sums = {}
  for i, start in enumerate(range(0, n, batch_size)):
    args = [images[start:start + batch_size]]
    if with_labels:
      args.append(labels[start:start + batch_size])
    if rng is not None:
      args.append(jax.random.fold_in(rng, i))
    for key, value in fn(*args).items():
      sums[key] = sums.get(key, 0.0) + float(
          np.sum(np.asarray(value, np.float64)))
  return {key: total / n for key, total in sums.items()}, n


test_split_mean.__test__ = False  # a helper, not a test, where imported


@struct.dataclass
class TwoPlayerState:
  """Both players' parameters and optimiser states.

  `step` counts training steps (one update of each player per step, or of
  D `n_critic` times); `g_params` / `d_params` are G's and D's parameters,
  `g_opt_state` / `d_opt_state` their optimiser states. `g_tx` / `d_tx`,
  the optimisers, are static (not pytree leaves, so not saved in
  checkpoints); `d_tx` usually chains the objective's `d_transform` after
  D's optimiser (`chain_transform`).

  pix2pix's state is this class. The GAN family's `GANState` extends it
  with the norm statistics, the EMA of G and the virtual-batch-norm
  reference; a subclass keeps a family's checkpoint paths to its own fields
  (orbax restores by the state's tree, and these five paths are the whole
  of pix2pix's checkpoints).
  """
  step: jax.Array
  g_params: Any
  d_params: Any
  g_opt_state: Any
  d_opt_state: Any
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)


def optimizer_step(tx: optax.GradientTransformation, grads, opt_state,
                   params):
  """(new params, new opt_state): one update of one player,
  `params + tx.update(grads, opt_state, params)`."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def chain_transform(tx: optax.GradientTransformation,
                    transform: optax.GradientTransformation | None
                    ) -> optax.GradientTransformation:
  """`tx` followed by `transform` (e.g. wasserstein's weight clipping,
  `Objective.d_transform`), or `tx` itself when `transform` is None."""
  return tx if transform is None else optax.chain(tx, transform)
