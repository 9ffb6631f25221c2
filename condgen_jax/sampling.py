"""Class-conditional sampling from a trained run."""

from __future__ import annotations

import jax
import numpy as np

from condgen_jax import images as images_lib
from condgen_jax import parallel


def sample_per_class(run, state, num_per_class: int, seed: int = 0,
                     batch_size: int = 1000):
  """`num_per_class` samples of every class, in class order.

  Returns (images float32 [N, H, W, C] in [0, 1], labels int32 [N]). The
  output depends only on the state and `seed`.
  """
  if num_per_class <= 0:
    raise ValueError(f"num_per_class must be positive; got {num_per_class}.")
  ds = run.dataset
  labels = images_lib.class_rows(ds.num_classes, num_per_class)
  fn = jax.jit(run.family.make_sample_fn(run.config, ds.image_shape,
                                         ds.num_classes),
               out_shardings=parallel.replicated(run.mesh))
  key = jax.random.key(seed)
  batch_size = max(run.mesh.size,
                   batch_size - batch_size % run.mesh.size)
  out = []
  for i, start in enumerate(range(0, len(labels), batch_size)):
    chunk = labels[start:start + batch_size]
    pad = (-len(chunk)) % batch_size  # one compiled shape for every chunk
    padded = np.concatenate([chunk, np.zeros(pad, np.int32)])
    images = fn(state, parallel.replicate_host_array(padded, run.mesh),
                jax.random.fold_in(key, i))
    out.append(parallel.to_host(images)[:len(chunk)])
  return np.concatenate(out).astype(np.float32), labels
