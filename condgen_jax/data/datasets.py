"""Datasets: scikit-learn `digits`, MNIST and Fashion-MNIST as in-memory arrays.

Every dataset comes back as a `Dataset` of uint8 images `(N, H, W, C)` and int32
labels; `to_float` maps pixels to [0, 1]. `colored_digits` / `colored_mnist`
are `digits` / MNIST drawn in six colors (`condgen_jax.data.colored`): RGB images
labelled by digit, with `attributes` (digit, color) per example. The sets are
small, so training keeps them on the device and draws batches there
(`epoch_permutation`, `get_batch`).

MNIST / Fashion-MNIST are looked for in this order:

1. an already built TFDS dataset (array_record) in `tfds_dir`, read with
   `tfds.data_source` (no tensorflow needed);
2. the official IDX `.gz` files in `data_dir/<name>/` or `data_dir/`, else in
   `$CONDGEN_DATA_DIR/<name>/`. With tensorflow installed they are built into
   `tfds_dir` by TFDS (`manual_dir`, no network) and read as in 1; without it
   they are parsed directly with numpy. Both give the same examples and labels
   (TFDS stores them in another order);
3. a TFDS download, only when `download=True`.

If none works, `load_dataset` raises one `FileNotFoundError` saying how to
provide the data. Nothing is ever downloaded unless asked for.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from condgen_jax.core import locking
from condgen_jax.data import colored

DATASETS = ("digits", "mnist", "fashion_mnist", "colored_digits",
            "colored_mnist")
COLORED_SOURCE = {"colored_digits": "digits", "colored_mnist": "mnist"}

CLASS_NAMES = {
    "digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}
CLASS_NAMES.update({k: CLASS_NAMES[v] for k, v in COLORED_SOURCE.items()})

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATA_DIR_ENV = "CONDGEN_DATA_DIR"
DEFAULT_TFDS_DIR = "~/tensorflow_datasets"


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A labelled image dataset held in host memory.

  The labels are the condition the models see: class labels `[N]` with
  `class_names` the classes' names, or (`conditioned_on_attributes`)
  attributes `[N, A]` with `class_names` one tuple of names per attribute;
  `num_classes` is then the tuple of the attributes' sizes.
  """
  name: str
  train_images: np.ndarray  # uint8 (N, H, W, C)
  train_labels: np.ndarray  # int32 (N,) or (N, A)
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple  # of str, or of one tuple of str per attribute
  max_value: float  # pixel value that maps to 1.0
  source: str = ""  # where the data was read from
  # per-example attributes beyond the label (colored_*: digit and color)
  attributes: colored.Attributes | None = None

  def __post_init__(self):
    for split in ("train", "test"):
      images, labels = self.split(split)
      if len(images) != len(labels):
        raise ValueError(f"{self.name}: {len(images)} {split} images but "
                         f"{len(labels)} labels.")
      check_labels(labels, self.num_classes, f"{self.name} {split} labels")
      if self.attributes is not None and (
          len(self.attributes.split(split)) != len(labels)):
        raise ValueError(f"{self.name}: {len(labels)} {split} labels but "
                         f"{len(self.attributes.split(split))} attribute "
                         "rows.")

  @property
  def num_classes(self) -> int | tuple[int, ...]:
    if self.class_names and isinstance(self.class_names[0], tuple):
      return tuple(len(names) for names in self.class_names)
    return len(self.class_names)

  @property
  def attribute_names(self) -> tuple[str, ...] | None:
    """The attributes' names when they are the labels, else None."""
    if isinstance(self.num_classes, tuple):
      return self.attributes.names
    return None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])

  def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "train":
      return self.train_images, self.train_labels
    if name == "test":
      return self.test_images, self.test_labels
    raise ValueError(f"Unknown split {name!r}; expected 'train' or 'test'.")


def labelled_by(ds: Dataset, attribute: str) -> Dataset:
  """`ds` with one of its attributes as the label (e.g. colored_mnist's
  'color', to train a classifier of it)."""
  names = ds.attributes.names if ds.attributes is not None else ()
  if attribute not in names:
    raise ValueError(f"{ds.name} has no attribute {attribute!r}; its "
                     f"attributes are {names}.")
  i = names.index(attribute)
  return dataclasses.replace(
      ds, train_labels=ds.attributes.train[:, i],
      test_labels=ds.attributes.test[:, i],
      class_names=ds.attributes.class_names[i])


def conditioned_on_attributes(ds: Dataset) -> Dataset:
  """`ds` with all its attributes `[N, A]` as the labels (the condition)."""
  if ds.attributes is None:
    raise ValueError(f"dataset {ds.name!r} has no attributes to condition "
                     f"on; the datasets with attributes are "
                     f"{tuple(COLORED_SOURCE)}.")
  return dataclasses.replace(
      ds, train_labels=ds.attributes.train, test_labels=ds.attributes.test,
      class_names=ds.attributes.class_names)


def check_labels(labels, num_classes, what: str = "labels") -> None:
  """ValueError naming the first label outside [0, num_classes); with a
  tuple of attribute sizes, labels are `[N, A]`, checked per attribute."""
  labels = np.asarray(labels)
  if isinstance(num_classes, tuple):
    if labels.ndim != 2 or labels.shape[1] != len(num_classes):
      raise ValueError(f"{what} must have shape [N, {len(num_classes)}] "
                       f"(one column per attribute); got {labels.shape}.")
    for i, n in enumerate(num_classes):
      check_labels(labels[:, i], n, f"{what} (attribute {i})")
    return
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)][0]
    raise ValueError(f"{what} must be in [0, {num_classes}); found {bad}.")


def to_float(images, max_value: float):
  """uint8 pixels -> float32 in [0, 1] (works on numpy and jax arrays)."""
  return images.astype(jnp.float32) / max_value


def binarize(x, rng):
  """Dynamic binarisation: each pixel x in [0, 1] -> Bernoulli(x), drawn
  anew at every call (the usual protocol of VAEs on MNIST)."""
  return jax.random.bernoulli(rng, x).astype(x.dtype)


def load_dataset(name: str, data_dir: str | None = None, *,
                 tfds_dir: str | None = None, download: bool = False,
                 held_out=colored.DEFAULT_HELD_OUT) -> Dataset:
  """Loads `name` (one of `DATASETS`); see the module docstring for sources.

  `held_out`: the (digit, color) combinations a colored_* dataset keeps out
  of its training split (`condgen_jax.data.colored`)."""
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}.")
  if name in COLORED_SOURCE:
    base = load_dataset(COLORED_SOURCE[name], data_dir, tfds_dir=tfds_dir,
                        download=download)
    images, attributes = colored.colored(base, held_out=held_out)
    labels = {s: attributes.split(s)[:, 0] for s in ("train", "test")}
    return Dataset(name, images["train"], labels["train"], images["test"],
                   labels["test"], CLASS_NAMES[name], 255.0,
                   f"colored:{base.source}", attributes)
  if name == "digits":
    return _load_digits()
  return _load_tfds_or_idx(name, data_dir, tfds_dir, download)


# ----------------------------------------------------------------------------
# digits: scikit-learn's 8x8 handwritten digits, shipped with the package.


def _load_digits() -> Dataset:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = d.images.astype(np.uint8)[..., None]  # values 0..16
  labels = d.target.astype(np.int32)
  test = np.arange(len(labels)) % 5 == 0  # deterministic 80/20 split
  return Dataset("digits", images[~test], labels[~test], images[test],
                 labels[test], CLASS_NAMES["digits"], 16.0, "sklearn")


# ----------------------------------------------------------------------------
# MNIST and Fashion-MNIST.


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Parses one (optionally gzipped) IDX file into a numpy array."""
  opener = gzip.open if str(path).endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise ValueError(f"{path} is not a readable gzip file ({e}); replace it "
                     "with the official IDX .gz file.") from None
  if len(data) < 4:
    raise ValueError(f"{path} is too short to be an IDX file.")
  zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file.")
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big")
                for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_idx_dir(name: str, data_dir: str | None) -> pathlib.Path | None:
  """The first folder holding all four IDX files of `name`, or None."""
  candidates = []
  if data_dir:
    candidates += [pathlib.Path(data_dir) / name, pathlib.Path(data_dir)]
  if os.environ.get(DATA_DIR_ENV):
    candidates.append(pathlib.Path(os.environ[DATA_DIR_ENV]) / name)
  files = [f for pair in IDX_FILES.values() for f in pair]
  for folder in candidates:
    folder = folder.expanduser()
    if all((folder / f).exists() for f in files):
      return folder
  return None


def check_idx_files(folder) -> None:
  """ValueError naming the first of the four IDX files in `folder` whose
  header does not read (not gzip, truncated, not IDX), before TFDS or numpy
  parse them."""
  for pair in IDX_FILES.values():
    for file in pair:
      path = pathlib.Path(folder) / file
      try:
        with gzip.open(path, "rb") as f:
          header = f.read(4)
      except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip file ({e}); replace "
                         "it with the official IDX .gz file.") from None
      if len(header) < 4 or header[:3] != b"\0\0\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")


def load_idx(name: str, folder: str | os.PathLike) -> Dataset:
  """Reads the four official IDX files of `name` from `folder` with numpy."""
  folder = pathlib.Path(folder)
  arrays = {}
  for split, (images_file, labels_file) in IDX_FILES.items():
    images = read_idx(folder / images_file)[..., None]
    labels = read_idx(folder / labels_file).astype(np.int32)
    if len(images) != len(labels):
      raise ValueError(f"{folder}: {split} images and labels differ in length.")
    arrays[split] = (images, labels)
  return Dataset(name, *arrays["train"], *arrays["test"], CLASS_NAMES[name],
                 255.0, f"idx:{folder}")


def _has_tensorflow() -> bool:
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  except ImportError:
    return False
  return True


def _read_tfds(name: str, tfds_dir: str, download: bool = False) -> Dataset:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  sources = tfds.data_source(name, data_dir=tfds_dir, download=download)
  arrays = []
  for split in ("train", "test"):
    source = sources[split]
    records = source.__getitems__(range(len(source)))
    arrays.append(np.stack([r["image"] for r in records]).astype(np.uint8))
    arrays.append(np.array([r["label"] for r in records], np.int32))
  return Dataset(name, *arrays, CLASS_NAMES[name], 255.0, f"tfds:{tfds_dir}")


def build_tfds(name: str, manual_dir: str | os.PathLike, tfds_dir: str) -> None:
  """Builds TFDS `name` (array_record) from IDX files, without the network."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=tfds_dir,
                         file_format=tfds.core.FileFormat.ARRAY_RECORD)
  # A download (and extraction) folder per dataset: MNIST and Fashion-MNIST
  # files share their names, and TFDS would reuse one's extracted files for
  # the other if they shared the default `tfds_dir/downloads`.
  download_dir = pathlib.Path(tfds_dir).expanduser() / "downloads" / name
  builder.download_and_prepare(
      download_dir=str(download_dir),
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


def tfds_is_built(name: str, tfds_dir: str) -> bool:
  """Whether a version folder of `name` (e.g. mnist/3.0.1) is complete. TFDS
  builds into `incomplete.*` and renames it when done: a build that was
  killed leaves only such a folder, which is never read."""
  root = pathlib.Path(tfds_dir).expanduser() / name
  versions = [v for v in root.glob("*") if v.is_dir()
              and not v.name.startswith("incomplete")]
  return any((v / "dataset_info.json").exists()
             and any(v.glob("*.array_record*")) for v in versions)


def _load_tfds_or_idx(name, data_dir, tfds_dir, download) -> Dataset:
  tfds_dir = str(pathlib.Path(
      tfds_dir or os.environ.get("TFDS_DATA_DIR") or DEFAULT_TFDS_DIR
  ).expanduser())
  if tfds_is_built(name, tfds_dir):
    return _read_tfds(name, tfds_dir)
  idx_dir = find_idx_dir(name, data_dir)
  if idx_dir is not None:
    check_idx_files(idx_dir)
    if _has_tensorflow():
      # Several processes may start on an empty `tfds_dir` at once: one
      # builds (TFDS writes into a temporary folder and renames it when
      # complete), the others wait for it and read what it built.
      with locking.exclusive(pathlib.Path(tfds_dir) / f".{name}.build.lock"):
        if not tfds_is_built(name, tfds_dir):
          build_tfds(name, idx_dir, tfds_dir)
      return _read_tfds(name, tfds_dir)
    return load_idx(name, idx_dir)
  if download:
    return _read_tfds(name, tfds_dir, download=True)
  looked = [str(pathlib.Path(data_dir) / name)] if data_dir else []
  if os.environ.get(DATA_DIR_ENV):
    looked.append(str(pathlib.Path(os.environ[DATA_DIR_ENV]) / name))
  raise FileNotFoundError(
      f"Dataset {name!r} not found. Looked for a built TFDS dataset in "
      f"{tfds_dir!r} and for the IDX files {sorted(IDX_FILES['train'])} + "
      f"{sorted(IDX_FILES['test'])} in {looked or 'no folder'}. Provide it by "
      f"one of: --config.data_dir=FOLDER (holding {name}/ with the four .gz "
      f"files), the environment variable {DATA_DIR_ENV}=FOLDER, or "
      "--config.download=True to let tensorflow-datasets fetch it.")


# ----------------------------------------------------------------------------
# Device-side batching: reproducible epochs from a JAX key.


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  if batch_size > num_examples:
    raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} "
                     "training examples.")
  return num_examples // batch_size


def epoch_permutation(key: jax.Array, epoch, num_examples: int) -> jax.Array:
  """The example order of `epoch`: a pure function of (key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def get_batch(images, labels, permutation, step, batch_size: int,
              max_value: float):
  """The batch of global `step` within its epoch's `permutation` (traceable)."""
  spe = permutation.shape[0] // batch_size
  start = (step % spe) * batch_size
  idx = jax.lax.dynamic_slice_in_dim(permutation, start, batch_size)
  return {"image": to_float(images[idx], max_value), "label": labels[idx]}
