"""Streaming TFDS image datasets: `--config.dataset=tfds:NAME`.

Any TFDS image dataset built as array_record (`tfds build NAME
--file_format=array_record`, or `--config.download=True`) is read by
`tfds.data_source` with random access and never held in memory:

- the training split is a `StreamingDataset` whose `train_reader` maps an
  example's index to its (image, label); `BatchSource` reads, per step, only
  this process's share of the global batch, in background threads (grain),
  and hands the compiled step a global array sharded over the mesh's data
  axis (`jax.make_array_from_process_local_data`);
- the test split kept in memory is its first `NUM_TEST_EXAMPLES` examples
  (the family's test metrics and image-conditioned grids read it).

Images are center-cropped to a square and resized (PIL, bicubic) to
`config.image_size`, and stay uint8 until the step turns the batch into
floats on the device. Labels are the dataset's `label` (a ClassLabel:
`tfds:cifar10`, `tfds:imagenet2012`), or with `config.attributes` the
binary attributes named there, one condition attribute of two values
('no', 'yes') each, labels `[N, A]` (`tfds:celeb_a` with
`condition_kind='attributes'`).

Exact resume: the batch of step t is a pure function of (seed, t). The
example order is grain's `MapDataset.range(N).seed(seed).shuffle().repeat()`:
one permutation per epoch (seeded by seed + epoch), concatenated; step t
takes the positions t*B .. (t+1)*B - 1 of that stream (B the global batch
size), and the process whose devices hold rows [lo, hi) of the batch reads
positions t*B + lo .. t*B + hi - 1 (`process_bounds`). So the iterator's
position is the train state's step, already in every checkpoint, and a run
resumed at step t reads what an unbroken run reads there, on any number of
processes.

Evaluation of streaming datasets has no reference classifier (FID,
class accuracy, CAS, Parzen are skipped with a note; see
`condgen_jax.evaluation.evaluate`): only the family's own test metrics, on
the bounded test subset.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from condgen_jax.core import parallel
from condgen_jax.data import colored
from condgen_jax.data import datasets as data_lib

PREFIX = "tfds:"
# Test examples kept in memory for evaluation and sample grids: the first
# ones of the split (bounded, so a large test split costs no memory).
NUM_TEST_EXAMPLES = 2_000
# The split evaluation reads, where a dataset's labelled held-out split is
# not called 'test'.
TEST_SPLIT = {"imagenet2012": "validation"}
ATTRIBUTE_VALUES = ("no", "yes")
# Host threads reading and resizing examples, and how many steps of
# batches they may read ahead.
NUM_THREADS = min(16, os.cpu_count() or 1)
PREFETCH_STEPS = 16


def is_streaming(dataset) -> bool:
  """Whether `dataset` (a name or a `Dataset`) is a streaming TFDS set."""
  if isinstance(dataset, data_lib.Dataset):
    return isinstance(dataset, StreamingDataset)
  return isinstance(dataset, str) and dataset.startswith(PREFIX)


def check_dataset_name(key: str, value) -> None:
  """The check of `config.dataset`: an in-memory set or 'tfds:NAME'."""
  if value in data_lib.DATASETS:
    return
  if isinstance(value, str) and value.startswith(PREFIX) and (
      value[len(PREFIX):].strip()):
    return
  raise ValueError(f"Unknown {key} {value!r}; expected one of "
                   f"{data_lib.DATASETS} or 'tfds:NAME' (a TFDS image "
                   "dataset, streamed).")


def parse_attributes(text: str) -> tuple[str, ...]:
  """'Male,Young' -> ('Male', 'Young'); ValueError on a repeated name."""
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  for i, name in enumerate(names):
    if name in names[:i]:
      raise ValueError(f"config.attributes names {name!r} twice: {text!r}.")
  return names


def check_settings(s, sample_metrics=()) -> None:
  """ValueError for the settings a streaming (or in-memory) dataset cannot
  take: `image_size` and `attributes` are for tfds: datasets only; with
  `attributes` the condition must be 'attributes', and 'attributes' needs
  them; streaming sets have no reference classifier, so no
  `best_metric` among `sample_metrics` when `eval_every > 0`."""
  if not is_streaming(s.dataset):
    for key in ("image_size", "attributes"):
      if s[key]:
        raise ValueError(f"config.{key}={s[key]!r} applies to streaming "
                         f"datasets ('tfds:NAME') only, not {s.dataset!r}.")
    return
  names = parse_attributes(s.attributes)
  if names and s.condition_kind != "attributes":
    raise ValueError(f"config.attributes={s.attributes!r} makes the labels "
                     f"of {s.dataset} attributes: set "
                     "--config.condition_kind=attributes (got "
                     f"{s.condition_kind!r}).")
  if s.condition_kind == "attributes" and not names:
    raise ValueError(f"config.condition_kind='attributes' on {s.dataset} "
                     "needs the binary attributes to condition on, e.g. "
                     "--config.attributes=Male,Young,Eyeglasses.")
  if s.eval_every and s.best_metric in sample_metrics:
    raise ValueError(f"config.best_metric={s.best_metric!r} needs a "
                     f"reference classifier, which streaming {s.dataset} "
                     "has not; use a metric of the model's family or ''.")


# ----------------------------------------------------------------------------
# Reading examples.


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, C) -> (size, size, C): the central square crop, resized
  with PIL's bicubic filter (antialiased when shrinking); unchanged when it
  is already size x size."""
  image = np.asarray(image, np.uint8)
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  image = image[top:top + side, left:left + side]
  if side == size:
    return image
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.uint8)
  return out[..., None] if channels == 1 else out


@dataclasses.dataclass(frozen=True)
class ExampleReader:
  """Index -> (uint8 image (size, size, C), int32 label or [A] attributes)
  of one split of a TFDS data source; safe to call from many threads."""
  source: Any  # a tfds data source: len() and [index] -> feature dict
  image_size: int
  attributes: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.source)

  def __call__(self, index) -> tuple[np.ndarray, np.ndarray]:
    example = self.source[int(index)]
    image = center_crop_resize(example["image"], self.image_size)
    if self.attributes:
      values = example["attributes"]
      label = np.array([bool(values[n]) for n in self.attributes], np.int32)
    else:
      label = np.int32(example["label"])
    return image, label


def read_all(reader: Callable, indices) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of `indices`, read in `NUM_THREADS` threads (grain)."""
  ds = grain.MapDataset.source(list(indices)).map(reader)
  examples = list(ds.to_iter_dataset(grain.ReadOptions(
      num_threads=NUM_THREADS, prefetch_buffer_size=64)))
  return (np.stack([e[0] for e in examples]),
          np.stack([e[1] for e in examples]).astype(np.int32))


@dataclasses.dataclass(frozen=True)
class StreamingDataset(data_lib.Dataset):
  """A `Dataset` whose training split stays on disk: `train_images` /
  `train_labels` are empty (they give the image shape and label layout),
  `train_reader` reads example i of the `num_train`; the test split is the
  first `NUM_TEST_EXAMPLES` test examples, in memory."""
  train_reader: Any = None
  num_train: int = 0


def tfds_dir(s) -> str:
  return str(pathlib.Path(s.tfds_dir or os.environ.get("TFDS_DATA_DIR")
                          or data_lib.DEFAULT_TFDS_DIR).expanduser())


def _data_source(name: str, split: str, directory: str, download: bool):
  """`tfds.data_source(name, split)`; an unknown name is one ValueError, a
  dataset not built as array_record one FileNotFoundError saying how."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=directory,
                            download=download)
  except registered.DatasetNotFoundError:
    raise ValueError(f"Unknown TFDS dataset {name!r} in config.dataset="
                     f"'{PREFIX}{name}'; tfds.list_builders() lists the "
                     "known ones.") from None
  except (NotImplementedError, FileNotFoundError, AssertionError,
          OSError) as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise FileNotFoundError(
        f"TFDS dataset {name!r} (split {split!r}) is not readable in "
        f"{directory!r} ({first}). Build it there as array_record (`tfds "
        f"build {name} --data_dir={directory} --file_format=array_record`), "
        "set --config.tfds_dir, or pass --config.download=True.") from None


def load_dataset(s) -> StreamingDataset:
  """The streaming dataset of settings `s` (`s.dataset` = 'tfds:NAME')."""
  name = s.dataset[len(PREFIX):].strip()
  directory = tfds_dir(s)
  train = _data_source(name, "train", directory, s.download)
  test = _data_source(name, TEST_SPLIT.get(name, "test"), directory,
                      s.download)
  features = train.dataset_info.features
  if "image" not in features:
    raise ValueError(f"tfds:{name} has no 'image' feature to stream; its "
                     f"features are {tuple(features)}.")
  shape = tuple(features["image"].shape)
  size = s.image_size
  if not size:
    if shape[0] is None or shape[0] != shape[1]:
      raise ValueError(f"tfds:{name}'s images are {shape}, not one square "
                       "size: set --config.image_size (e.g. 32 or 64).")
    size = shape[0]
  attributes = parse_attributes(s.attributes)
  if attributes:
    known = tuple(features["attributes"]) if "attributes" in features else ()
    for attribute in attributes:
      if attribute not in known:
        raise ValueError(f"tfds:{name} has no binary attribute "
                         f"{attribute!r}; it has {known}.")
    class_names = (ATTRIBUTE_VALUES,) * len(attributes)
  else:
    if "label" not in features or not hasattr(features["label"], "names"):
      raise ValueError(f"tfds:{name} has no class 'label'; condition on its "
                       "attributes with --config.attributes=NAME,... and "
                       "--config.condition_kind=attributes.")
    class_names = tuple(features["label"].names)
  channels = shape[2] if len(shape) == 3 and shape[2] else 3
  reader = ExampleReader(train, size, attributes)
  test_images, test_labels = read_all(
      ExampleReader(test, size, attributes),
      range(min(NUM_TEST_EXAMPLES, len(test))))
  empty_labels = np.zeros((0, len(attributes)) if attributes else (0,),
                          np.int32)
  attrs = None
  if attributes:
    attrs = colored.Attributes(attributes, class_names, empty_labels,
                               test_labels)
  return StreamingDataset(
      s.dataset, np.zeros((0, size, size, channels), np.uint8),
      empty_labels, test_images, test_labels, class_names, 255.0,
      f"{PREFIX}{directory}", attrs, train_reader=reader,
      num_train=len(train))


# ----------------------------------------------------------------------------
# Batches: step t's batch a pure function of (seed, t), each process reading
# its rows.


def example_order(num_examples: int, seed: int):
  """Position in the training stream -> example index: grain's shuffle, a
  new permutation per epoch (seed + epoch), repeated without end."""
  return grain.MapDataset.range(num_examples).seed(
      seed % 2**32).shuffle().repeat()


def process_bounds(mesh, batch_size: int) -> tuple[int, int]:
  """The rows [lo, hi) of a global batch that this process's devices hold
  under the mesh's batch sharding: the rows this process reads."""
  index_map = parallel.batch_sharded(mesh).addressable_devices_indices_map(
      (batch_size,))
  rows = sorted({(i[0].start or 0, batch_size if i[0].stop is None
                  else i[0].stop) for i in index_map.values()})
  lo, hi = rows[0][0], rows[-1][1]
  if sum(b - a for a, b in rows) != hi - lo:
    raise ValueError(f"process {jax.process_index()} holds rows {rows} of "
                     "the batch, not one contiguous block.")
  return lo, hi


def even_bounds(process_index: int, process_count: int,
                batch_size: int) -> tuple[int, int]:
  """[lo, hi) of process `process_index` when every process holds the same
  number of devices, in order (what `process_bounds` gives then)."""
  per = batch_size // process_count
  return process_index * per, (process_index + 1) * per


def batch_indices(order, step: int, batch_size: int, lo: int,
                  hi: int) -> np.ndarray:
  """The example indices of rows [lo, hi) of the batch of global `step`."""
  start = step * batch_size
  return np.array([order[start + p] for p in range(lo, hi)], np.int64)


class BatchSource:
  """This process's part of every training batch, read ahead in threads.

  `seek(step)` positions it; each `next(k)` returns the batches of the next
  k steps as global arrays {'image': uint8 [k, B, H, W, C], 'label':
  int32 [k, B] or [k, B, A]}, sharded over the data axis (dimension 1).
  """

  def __init__(self, dataset: StreamingDataset, batch_size: int, seed: int,
               mesh):
    self.reader = dataset.train_reader
    self.batch_size = batch_size
    self.max_value = dataset.max_value
    self.mesh = mesh
    self.order = example_order(dataset.num_train, seed)
    self.steps_per_epoch = data_lib.steps_per_epoch(dataset.num_train,
                                                    batch_size)
    self.lo, self.hi = process_bounds(mesh, batch_size)
    self.sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
    self.image_shape = dataset.image_shape
    self.label_shape = dataset.train_labels.shape[1:]
    self._iter, self._next = None, None

  def host_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of this process's rows of step `step`, read now."""
    return read_all(self.reader, batch_indices(
        self.order, step, self.batch_size, self.lo, self.hi))

  def _example(self, i: int):
    """Element i of this process's stream: row lo + i % b of step i // b."""
    b = self.hi - self.lo
    step, row = divmod(i, b)
    return self.reader(self.order[step * self.batch_size + self.lo + row])

  def seek(self, step: int) -> None:
    """The next batch `next` returns is that of `step`."""
    if self._next == step:
      return
    b = self.hi - self.lo
    ds = grain.MapDataset.range(step * b, 2**62).map(self._example)
    self._iter = iter(ds.to_iter_dataset(grain.ReadOptions(
        num_threads=NUM_THREADS,
        prefetch_buffer_size=PREFETCH_STEPS * b)).batch(b))
    self._next = step

  def next(self, k: int) -> dict:
    """The global batches of the next k steps, [k, B, ...]."""
    if self._iter is None:
      raise RuntimeError("BatchSource.next before seek.")
    parts = [next(self._iter) for _ in range(k)]
    self._next += k
    images = np.stack([p[0] for p in parts])
    labels = np.stack([p[1] for p in parts]).astype(np.int32)
    return {
        "image": jax.make_array_from_process_local_data(
            self.sharding, images, (k, self.batch_size, *self.image_shape)),
        "label": jax.make_array_from_process_local_data(
            self.sharding, labels, (k, self.batch_size, *self.label_shape)),
    }

  def abstract_batches(self, k: int) -> dict:
    """The shapes, dtypes and shardings of `next(k)`."""
    return {
        "image": jax.ShapeDtypeStruct((k, self.batch_size, *self.image_shape),
                                      np.uint8, sharding=self.sharding),
        "label": jax.ShapeDtypeStruct((k, self.batch_size, *self.label_shape),
                                      np.int32, sharding=self.sharding),
    }

  def feeding(self, compiled: Callable, k: int) -> Callable:
    """`compiled(state, batches, rng)` with the in-memory call's signature
    `(state, images, labels, permutation, rng)` (the runner's
    `train_steps` makes either): the batches are the next k of this
    source; images, labels and permutation are ignored."""
    def call(state, images, labels, permutation, rng):
      del images, labels, permutation
      return compiled(state, self.next(k), rng)
    return call


def batch_source(s, dataset, mesh) -> BatchSource | None:
  """The run's `BatchSource`, or None for an in-memory dataset."""
  if not is_streaming(dataset):
    return None
  return BatchSource(dataset, s.batch_size, s.seed, mesh)


def jit_steps(train_step: Callable, k: int, state_sharding,
              source: BatchSource, unroll: int = 1) -> Callable:
  """jit of k training steps on host batches `[k, B, ...]` (`source`'s):
  `(state, batches, rng) -> (state, the last step's metrics)`, each step
  `train_step(state, batch, rng)` on its float batch."""
  replicated = parallel.replicated(source.mesh)
  batch_sharding = parallel.batch_sharded(source.mesh)

  def one_step(state, batch, rng):
    batch = {"image": data_lib.to_float(batch["image"], source.max_value),
             "label": batch["label"]}
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return train_step(state, batch, rng)

  def steps(state, batches, rng):
    if k == 1:
      return one_step(state, jax.tree.map(lambda x: x[0], batches), rng)
    state, metrics = jax.lax.scan(lambda st, b: one_step(st, b, rng), state,
                                  batches, unroll=unroll)
    return state, jax.tree.map(lambda m: m[-1], metrics)

  return jax.jit(steps, donate_argnums=0,
                 in_shardings=(state_sharding, source.sharding, replicated),
                 out_shardings=(state_sharding, replicated))
