import gzip
import hashlib
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from condgen_jax.data import datasets as data

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_digits_shapes_and_split(digits):
  assert digits.image_shape == (8, 8, 1)
  assert digits.num_classes == 10
  assert len(digits.train_labels) + len(digits.test_labels) == 1797
  assert len(digits.test_labels) == 360  # every 5th example
  assert digits.train_images.dtype == np.uint8
  assert digits.train_labels.dtype == np.int32
  assert digits.train_images.max() == 16
  assert set(np.unique(digits.test_labels)) == set(range(10))


def _write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(5, 3, 4), dtype=np.uint8)
  _write_idx(tmp_path / "x.gz", images)
  np.testing.assert_array_equal(data.read_idx(tmp_path / "x.gz"), images)


def test_fake_idx_folder_loads(tmp_path):
  rng = np.random.default_rng(0)
  folder = tmp_path / "mnist"
  folder.mkdir()
  for split, n in (("train", 7), ("test", 3)):
    images_file, labels_file = data.IDX_FILES[split]
    _write_idx(folder / images_file, rng.integers(0, 256, (n, 28, 28)))
    _write_idx(folder / labels_file, rng.integers(0, 10, (n,)))
  ds = data.load_idx("mnist", folder)
  assert ds.train_images.shape == (7, 28, 28, 1)
  assert ds.test_labels.shape == (3,)
  assert data.find_idx_dir("mnist", str(tmp_path)) == folder


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match=r"'cifar'.*digits"):
    data.load_dataset("cifar")


def test_missing_data_says_how_to_provide_it(tmp_path, monkeypatch):
  monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="CONDGEN_DATA_DIR"):
    data.load_dataset("fashion_mnist", str(tmp_path / "none"),
                      tfds_dir=str(tmp_path / "tfds"))


def test_epoch_permutation_is_a_seeded_permutation():
  key = jax.random.key(3)
  p0 = np.asarray(data.epoch_permutation(key, 0, 100))
  assert sorted(p0.tolist()) == list(range(100))
  np.testing.assert_array_equal(p0, data.epoch_permutation(key, 0, 100))
  assert not np.array_equal(p0, data.epoch_permutation(key, 1, 100))


def test_get_batch_takes_the_steps_slice_of_the_permutation():
  images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * 20
  labels = np.arange(10, dtype=np.int32)
  perm = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], np.int32)
  # 10 examples, batch 3: 3 steps per epoch; step 4 is the 2nd batch of epoch 1.
  batch = data.get_batch(images, labels, perm, 4, 3, 200.0)
  np.testing.assert_array_equal(batch["label"], [6, 5, 4])
  np.testing.assert_allclose(batch["image"][:, 0, 0, 0], [0.6, 0.5, 0.4])


def test_mnist_idx_files(mnist_dir):
  ds = data.load_idx("mnist", mnist_dir)
  assert ds.train_images.shape == (60000, 28, 28, 1)
  assert ds.test_images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(ds.test_labels[:8], [7, 2, 1, 0, 4, 1, 4, 9])
  assert np.bincount(ds.train_labels).tolist()[:2] == [5923, 6742]


def _fingerprints(images, labels):
  return sorted(hashlib.sha1(x.tobytes()).hexdigest() + str(y)
                for x, y in zip(images, labels))


# One process of `test_four_processes_build_once_and_read_the_same`: loads
# MNIST (building it into an empty TFDS folder) and the digits reference
# classifier (training it into an empty cache); prints digests of both.
_FIRST_USE = """
import hashlib, json, sys
import jax
import numpy as np
from condgen_jax.data import datasets as data
from condgen_jax.evaluation import classifier
data_dir, tfds_dir, cache_dir = sys.argv[1:]
ds = data.load_dataset("mnist", data_dir, tfds_dir=tfds_dir)
h = hashlib.sha1()
for split in ("train", "test"):
  for a in ds.split(split):
    h.update(np.ascontiguousarray(a).tobytes())
c = classifier.load_or_train_classifier("digits", cache_dir, num_steps=20)
g = hashlib.sha1()
for leaf in jax.tree.leaves(c.params):
  g.update(np.asarray(leaf).tobytes())
print(json.dumps({"data": h.hexdigest(), "source": ds.source,
                  "classifier": g.hexdigest()}))
"""


def test_four_processes_build_once_and_read_the_same(mnist_dir, tmp_path):
  """Four processes started together on an empty TFDS folder and an empty
  classifier cache: one builds each, the others wait and read the result
  (unlocked, TFDS's rename of its temporary folder fails in all but one).
  The data they read is the numpy parse of the IDX files, as sets of
  (image, label) pairs: TFDS stores them in another order."""
  pytest.importorskip("tensorflow")
  tfds_dir, cache = tmp_path / "tfds", tmp_path / "cache"
  procs = [subprocess.Popen(
      [sys.executable, "-c", _FIRST_USE, str(mnist_dir.parent),
       str(tfds_dir), str(cache)], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for _ in range(4)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    outs.append(out)
  trained = sum("trained in" in out for out in outs)
  results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
  assert trained == 1, outs
  assert all(r == results[0] for r in results), results
  assert results[0]["source"].startswith("tfds:")
  via_tfds = data.load_dataset("mnist", str(mnist_dir.parent),
                               tfds_dir=str(tfds_dir))
  via_numpy = data.load_idx("mnist", mnist_dir)
  for split in ("train", "test"):
    a, b = via_tfds.split(split), via_numpy.split(split)
    assert a[0].shape == b[0].shape
    assert not np.array_equal(a[1], b[1])  # reordered...
    assert _fingerprints(*a) == _fingerprints(*b)  # ...same examples
  # Fashion-MNIST's IDX files share MNIST's names: built into the same
  # TFDS folder, the two must not mix.
  if (mnist_dir.parent / "fashion_mnist").exists():
    fashion = data.load_dataset("fashion_mnist", str(mnist_dir.parent),
                                tfds_dir=str(tfds_dir))
    numpy_fashion = data.load_idx("fashion_mnist",
                                  mnist_dir.parent / "fashion_mnist")
    assert _fingerprints(*fashion.split("test")) == _fingerprints(
        *numpy_fashion.split("test"))


def test_labels_outside_the_class_range_are_refused(digits):
  labels = digits.train_labels.copy()
  labels[5] = 12
  with pytest.raises(ValueError, match=r"train labels must be in \[0, 10\); "
                     r"found 12"):
    data.Dataset("digits", digits.train_images, labels, digits.test_images,
                 digits.test_labels, digits.class_names, 16.0)


def test_attributes_as_the_condition():
  ds = data.load_dataset("colored_digits")
  view = data.conditioned_on_attributes(ds)
  assert view.num_classes == (10, 6) and view.attribute_names == ("digit",
                                                                   "color")
  np.testing.assert_array_equal(view.train_labels, ds.attributes.train)
  assert ds.num_classes == 10 and ds.attribute_names is None
  color = data.labelled_by(ds, "color")
  np.testing.assert_array_equal(color.test_labels, ds.attributes.test[:, 1])
  assert color.num_classes == 6
  data.check_labels(np.array([[9, 5]]), (10, 6))
  with pytest.raises(ValueError, match=r"attribute 1\) must be in \[0, 6\)"):
    data.check_labels(np.array([[9, 6]]), (10, 6))
  with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
    data.check_labels(np.array([9]), (10, 6))
  with pytest.raises(ValueError, match="no attributes to condition on"):
    data.conditioned_on_attributes(data.load_dataset("digits"))


def test_binarize_draws_each_pixel_from_its_bernoulli():
  x = np.array([0.0, 1.0, 0.25, 0.75], np.float32)
  draws = np.stack([np.asarray(data.binarize(x, jax.random.key(i)))
                    for i in range(400)])
  assert set(np.unique(draws)) <= {0.0, 1.0}
  np.testing.assert_array_equal(draws[:, :2], np.tile([0.0, 1.0], (400, 1)))
  # 400 draws: the frequency's std is at most 0.025; 0.1 is four of them
  np.testing.assert_allclose(draws[:, 2:].mean(0), [0.25, 0.75], atol=0.1)
  np.testing.assert_array_equal(data.binarize(x, jax.random.key(3)),
                                data.binarize(x, jax.random.key(3)))


def test_a_killed_builds_folder_is_not_a_built_dataset(tmp_path):
  """TFDS builds into `incomplete.*` and renames it when done: what a
  builder killed before the rename left is never read (and the next build,
  under the lock, starts over beside it)."""
  left = tmp_path / "mnist" / "incomplete.ABC123_3.0.1"
  left.mkdir(parents=True)
  (left / "dataset_info.json").write_text("{}")
  (left / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  assert not data.tfds_is_built("mnist", str(tmp_path))
  done = tmp_path / "mnist" / "3.0.1"
  done.mkdir()
  (done / "dataset_info.json").write_text("{}")
  assert not data.tfds_is_built("mnist", str(tmp_path))  # no records yet
  (done / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  assert data.tfds_is_built("mnist", str(tmp_path))
