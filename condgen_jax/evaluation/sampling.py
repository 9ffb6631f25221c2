"""Conditional sampling from a trained run: per class, per attribute
combination, or per condition image (`condition_kind='image'`: the
conditions of test images, or images given)."""

from __future__ import annotations

import io

import jax
import numpy as np
from etils import epath

from condgen_jax.data import datasets as data_lib
from condgen_jax.data import images as images_lib
from condgen_jax.core import parallel


def sample_per_class(run, state, num_per_class: int, seed: int = 0,
                     batch_size: int = 1000):
  """`num_per_class` samples of every class, in class order.

  Returns (images float32 [N, H, W, C] in [0, 1], labels int32 [N]; for a
  model conditioned on attributes, every combination `num_per_class` times
  and labels [N, A]; for a model conditioned on images, one sample for
  each of the first `num_per_class` test images of every class
  (`test_targets`), from its condition, and their labels). The output
  depends only on the state and `seed`.
  """
  if num_per_class <= 0:
    raise ValueError(f"num_per_class must be positive; got {num_per_class}.")
  spec = image_condition(run)
  if spec is not None:
    targets, labels = test_targets(run.dataset, num_per_class)
    return sample_conditions(run, state, spec.from_images(targets), seed,
                             batch_size), labels
  labels = images_lib.class_rows(run.dataset.num_classes, num_per_class)
  return sample_labels(run, state, labels, seed, batch_size), labels


def image_condition(run):
  """The run's `image_conditions.ImageCondition`, or None for a run not
  conditioned on images."""
  if run.settings.condition_kind != "image":
    return None
  return run.family.image_condition(run.settings)


def test_targets(ds, per_class: int):
  """The first `per_class` test images of every class of a labelled
  dataset (all of a class that has fewer), in class order: (float32 images
  in [0, 1], int32 labels). The targets whose conditions image-conditioned
  runs are sampled and evaluated on."""
  images, labels = ds.split("test")
  labels = np.asarray(labels)
  index = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                          for c in range(ds.num_classes)])
  return (np.asarray(data_lib.to_float(images[index], ds.max_value),
                     np.float32), labels[index].astype(np.int32))


def sample_conditions(run, state, conditions, seed: int = 0,
                      batch_size: int = 1000):
  """One sample per condition image of a run conditioned on images (float
  `[N, *condition shape]` in [0, 1]): float32 images [N, H, W, C] in [0, 1],
  a pure function of (state, conditions, seed)."""
  spec = image_condition(run)
  if spec is None:
    raise ValueError(f"the run of model {run.settings.model!r} is not "
                     "conditioned on images (condition_kind='image').")
  conditions = spec.check(conditions, run.dataset.image_shape)
  return _sample_batches(run, state, conditions, seed, batch_size)


def _value_index(value: str, names, what: str) -> int:
  value = value.strip()
  if value in names:
    return list(names).index(value)
  if value.isdigit() and int(value) < len(names):
    return int(value)
  raise ValueError(f"{what} {value!r} is not one of {tuple(names)} (or an "
                   f"index below {len(names)}).")


def parse_condition(ds, text: str) -> np.ndarray:
  """A condition of `ds` from text: a class ('7', 'Sneaker' or its index) for
  labels; 'NAME=VALUE,...' naming every attribute once for attributes
  ('digit=7,color=red'). Returns int32 `[]` or `[A]`."""
  names = ds.attribute_names
  if names is None:
    return np.int32(_value_index(text, ds.class_names, "class"))
  values = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, value = part.partition("=")
    name = name.strip()
    if not sep or name not in names or name in values:
      raise ValueError(f"condition {text!r}: expected NAME=VALUE once for "
                       f"each attribute {names}; got {part!r}.")
    values[name] = _value_index(value, ds.class_names[names.index(name)],
                                name)
  if len(values) != len(names):
    missing = [n for n in names if n not in values]
    raise ValueError(f"condition {text!r} does not give {missing}; every "
                     f"attribute of {names} is needed.")
  return np.array([values[n] for n in names], np.int32)


def sample_labels(run, state, labels, seed: int = 0, batch_size: int = 1000):
  """One sample per entry of `labels` (ints in [0, num_classes); rows of
  attributes [N, A] for a model conditioned on attributes): float32
  images [N, H, W, C] in [0, 1], a pure function of (state, labels, seed)."""
  ds = run.dataset
  labels = np.asarray(labels)
  ndim = 2 if isinstance(ds.num_classes, tuple) else 1
  if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != ndim:
    raise ValueError(f"labels must be a {ndim}-D integer array; got dtype "
                     f"{labels.dtype}, shape {labels.shape}.")
  data_lib.check_labels(labels, ds.num_classes)
  return _sample_batches(run, state, labels.astype(np.int32), seed,
                         batch_size)


def _sample_batches(run, state, conditions, seed: int, batch_size: int):
  """The family's samples of `conditions` (labels, attribute rows or
  condition images), in chunks of one compiled shape."""
  ds = run.dataset
  fn = jax.jit(run.family.make_sample_fn(run.settings, ds.image_shape,
                                         ds.num_classes),
               out_shardings=parallel.replicated(run.mesh))
  key = jax.random.key(seed)
  batch_size = max(run.mesh.size,
                   batch_size - batch_size % run.mesh.size)
  out = []
  for i, start in enumerate(range(0, len(conditions), batch_size)):
    chunk = conditions[start:start + batch_size]
    pad = (-len(chunk)) % batch_size  # one compiled shape for every chunk
    padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                             chunk.dtype)])
    images = fn(state, parallel.replicate_host_array(padded, run.mesh),
                jax.random.fold_in(key, i))
    out.append(parallel.to_host(images)[:len(chunk)])
  return np.concatenate(out).astype(np.float32)


def latent_traversal(run, state, code: int, num_values: int,
                     seed: int = 0):
  """A family's latent traversal (InfoGAN, `families.gan.latent_traversal`):
  (images [K * num_values, H, W, C], labels int32, values) with continuous
  code `code` at `num_values` points from -2 to 2. ValueError when the
  family or the run has no continuous codes."""
  fn = getattr(run.family, "latent_traversal", None)
  if fn is None:
    raise ValueError(f"model {run.settings.model!r} has no latent codes to "
                     "traverse (InfoGAN runs do).")
  if num_values < 2:
    raise ValueError(f"a traversal needs at least 2 values; got {num_values}.")
  ds = run.dataset
  values = np.linspace(-2.0, 2.0, num_values).astype(np.float32)
  images = fn(run.settings, state, ds.image_shape, ds.num_classes, code=code,
              values=values, seed=seed)
  labels = images_lib.class_rows(ds.num_classes, num_values)
  return parallel.to_host(images).astype(np.float32), labels, values


def output_path(path, flag: str = "") -> epath.Path:
  """`path` as an epath.Path, checked before anything is computed: OSError
  (naming `flag` when given) when it is a folder or a folder above it is a
  file. Nothing is created: `save_npz` (and `images.save_grid`) make its
  missing folders."""
  path = epath.Path(path)
  name = f"{flag}={path}" if flag else str(path)
  if path.is_dir():
    raise IsADirectoryError(f"{name} is a folder; give a file name.")
  parent = path.parent
  while not parent.exists() and parent.parent != parent:
    parent = parent.parent
  if parent.exists() and not parent.is_dir():
    raise NotADirectoryError(f"{name}: {parent} is a file, not a folder.")
  return path


def save_npz(path, **arrays) -> None:
  """`np.savez` to exactly `path` (numpy would append '.npz' to a name
  without it), written atomically; missing folders are created."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(path)
