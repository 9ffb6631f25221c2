"""Streaming TFDS datasets (`condgen_jax/data/streaming.py`), offline.

`tfds.testing.mock_data` fakes `tfds.data_source` (array_record): random
examples of the real features, the same ones for a given index at every
read. The runs are tiny MLP CVAEs on 8x8 images; the packaged configs'
networks are checked at their resolutions by shape only (`jax.eval_shape`).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from condgen_jax import api
from condgen_jax import families
from condgen_jax.configs import celeb_a as celeb_a_config
from condgen_jax.configs import cifar10 as cifar10_config
from condgen_jax.configs import common
from condgen_jax.data import images as images_lib
from condgen_jax.data import streaming
from condgen_jax.runner import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_EXAMPLES = 24  # per split of the mocked datasets
ATTRIBUTES = ("Male", "Young", "Eyeglasses")


@pytest.fixture
def mock_tfds():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    yield


def _config(dataset="tfds:cifar10", **changes):
  c = common.base_config("cvae")
  c.update(dict(dataset=dataset, image_size=8, batch_size=8,
                hidden=(16,), latent_dim=2, steps_per_call=1,
                num_steps=10, log_every=5, checkpoint_every=5,
                sample_every=0, samples_per_class=2,
                tfds_dir="/tmp/condgen-no-such-tfds-dir"))
  if dataset == "tfds:celeb_a":
    c.update(dict(attributes=",".join(ATTRIBUTES),
                  condition_kind="attributes"))
  c.update(changes)
  return c


def _params(workdir):
  leaves = jax.tree.leaves(api.load(workdir).state.params)
  return [np.asarray(x) for x in leaves]


# ----------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "cifar10"}, "Unknown dataset 'cifar10'"),
    ({"dataset": "tfds:"}, "'tfds:NAME'"),
    ({"dataset": "digits", "image_size": 32}, "image_size=32 applies to"),
    ({"dataset": "digits", "image_size": 0, "attributes": "Male"},
     "attributes='Male'"),
    ({"attributes": "Male"}, "--config.condition_kind=attributes"),
    ({"condition_kind": "attributes"}, "--config.attributes=Male"),
    ({"eval_every": 5, "best_metric": "fid"}, "best_metric='fid' needs"),
])
def test_bad_settings_are_one_clear_error(changes, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(
      "[", r"\[")):
    train.resolve(_config(**changes))


def test_unknown_attribute_is_named(mock_tfds):
  with pytest.raises(ValueError, match="no binary attribute 'Smile'"):
    train.setup(_config("tfds:celeb_a", attributes="Male,Smile"))


def test_unbuilt_dataset_says_how_to_build_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    streaming.load_dataset(train.resolve(_config(tfds_dir=str(tmp_path))))


# ----------------------------------------------------------------------------
# Images, order and shards.


def test_center_crop_resize():
  image = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
  # the central 4x4 square: rows 1..4
  np.testing.assert_array_equal(streaming.center_crop_resize(image, 4),
                                image[1:5])
  flat = np.full((10, 7, 1), 200, np.uint8)
  out = streaming.center_crop_resize(flat, 3)
  assert out.shape == (3, 3, 1) and np.all(out == 200)
  rgb = np.random.default_rng(0).integers(0, 256, (218, 178, 3), np.uint8)
  expected = np.asarray(Image.fromarray(rgb[20:198]).resize(
      (16, 16), Image.BICUBIC))
  np.testing.assert_array_equal(streaming.center_crop_resize(rgb, 16),
                                expected)


def test_each_epoch_is_a_new_permutation_fixed_by_the_seed():
  n = 10
  order = streaming.example_order(n, seed=3)
  epochs = [[order[e * n + i] for i in range(n)] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert epochs[0] != epochs[1] != epochs[2]
  again = streaming.example_order(n, seed=3)
  assert [again[i] for i in range(3 * n)] == sum(epochs, [])
  other = streaming.example_order(n, seed=4)
  assert [other[i] for i in range(n)] != epochs[0]


def test_two_processes_read_disjoint_rows_of_the_same_batches():
  n, batch = 24, 8
  order = streaming.example_order(n, seed=0)
  bounds = [streaming.even_bounds(p, 2, batch) for p in range(2)]
  assert bounds == [(0, 4), (4, 8)]
  mesh = train.parallel.make_mesh()  # this process alone: every row
  assert streaming.process_bounds(mesh, batch) == (0, batch)
  seen = []
  for step in range(n // batch):  # one epoch
    parts = [streaming.batch_indices(order, step, batch, lo, hi)
             for lo, hi in bounds]
    assert not set(parts[0]) & set(parts[1])
    # together they are the batch one process reads alone
    whole = streaming.batch_indices(order, step, batch, 0, batch)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    seen += list(whole)
  assert sorted(seen) == list(range(n))  # every example once per epoch


# ----------------------------------------------------------------------------
# Runs.


def test_cifar10_trains_resumes_exactly_samples_and_evaluates(
    mock_tfds, tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(_config(), straight)
  train.train_and_evaluate(_config(num_steps=6), resumed)
  train.train_and_evaluate(_config(), resumed)
  for a, b in zip(_params(straight), _params(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  assert (straight / "samples" / "step_00000010.png").exists()
  trained = api.load(straight)
  ds = trained.dataset
  assert ds.image_shape == (8, 8, 3) and ds.num_classes == 10
  assert ds.test_images.shape == (NUM_EXAMPLES, 8, 8, 3)
  images, labels = trained.sample([3, 3, 7])
  assert images.shape == (3, 8, 8, 3) and list(labels) == [3, 3, 7]
  results = trained.evaluate(num_per_class=1)
  assert "no reference classifier" in results["note"]
  assert "fid" not in results and np.isfinite(results["test_neg_elbo"])


def test_celeb_a_conditions_on_attributes_and_resumes_exactly(mock_tfds,
                                                             tmp_path):
  workdir, resumed = tmp_path / "w", tmp_path / "resumed"
  train.train_and_evaluate(_config("tfds:celeb_a", num_steps=4), workdir)
  train.train_and_evaluate(_config("tfds:celeb_a", num_steps=3), resumed)
  train.train_and_evaluate(_config("tfds:celeb_a", num_steps=4), resumed)
  for a, b in zip(_params(workdir), _params(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  trained = api.load(workdir)
  ds = trained.dataset
  assert ds.attribute_names == ATTRIBUTES
  assert ds.num_classes == (2, 2, 2) and ds.image_shape == (8, 8, 3)
  # the labels are the test examples' attributes, read independently
  source = tfds.data_source("celeb_a", split="test",
                            data_dir="/tmp/condgen-no-such-tfds-dir")
  expected = [[int(bool(source[i]["attributes"][a])) for a in ATTRIBUTES]
              for i in range(NUM_EXAMPLES)]
  np.testing.assert_array_equal(ds.test_labels, expected)
  grid = workdir / "samples" / "step_00000004.png"
  assert images_lib.grid_rows(ds.num_classes) == 2 and grid.exists()
  images, labels = trained.sample(["Male=yes,Young=no,Eyeglasses=1"] * 2)
  assert images.shape == (2, 8, 8, 3)
  assert labels.tolist() == [[1, 0, 1]] * 2


# One process of a two-process run (JAX_* name the coordinator and rank):
# steps 1 and 2 of the stream of settings argv[2], gathered from both.
_PROCESS = """
import json
import sys
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils
from condgen_jax.core import parallel
assert parallel.maybe_initialize_distributed()
from condgen_jax.data import streaming
s = ml_collections.ConfigDict(json.loads(sys.argv[2]))
with tfds.testing.mock_data(num_examples=int(sys.argv[3])):
  source = streaming.BatchSource(streaming.load_dataset(s), s.batch_size,
                                 s.seed, parallel.make_mesh())
  source.seek(1)
  batches = source.next(2)
  np.savez(f"{sys.argv[1]}/{jax.process_index()}.npz",
           bounds=(source.lo, source.hi),
           **{k: multihost_utils.process_allgather(v, tiled=True)
              for k, v in batches.items()})
"""


def test_two_processes_assemble_the_batches_of_one(mock_tfds, tmp_path):
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") or "CACHE" in k}
  s = train.resolve(_config())
  keys = ("dataset", "tfds_dir", "download", "image_size", "attributes",
          "batch_size", "seed")
  args = [str(tmp_path), json.dumps({k: s[k] for k in keys}),
          str(NUM_EXAMPLES)]
  procs = [subprocess.Popen(
      [sys.executable, "-c", _PROCESS, *args], cwd=ROOT,
      env={**env, "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
           "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  # meanwhile, the same steps in this process alone
  source = streaming.BatchSource(streaming.load_dataset(s), s.batch_size,
                                 s.seed, train.parallel.make_mesh())
  source.seek(1)
  expected = {k: np.asarray(v) for k, v in source.next(2).items()}
  for proc in procs:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
  for i, bounds in enumerate([(0, 4), (4, 8)]):
    got = np.load(tmp_path / f"{i}.npz")
    assert got["bounds"].tolist() == list(bounds)  # half the rows each
    assert got["image"].shape == (2, 8, 8, 8, 3)
    for key in ("image", "label"):
      np.testing.assert_array_equal(got[key], expected[key])


# ----------------------------------------------------------------------------
# The packaged configs' networks at their resolutions.


@pytest.mark.parametrize("module, shape, classes", [
    (cifar10_config, (32, 32, 3), 10),
    (celeb_a_config, (64, 64, 3), (2, 2, 2)),
])
@pytest.mark.parametrize("model", ["config", "cgan_conv"])
def test_networks_take_the_configs_resolutions(module, shape, classes,
                                               model):
  c = module.get_config()
  if model == "config":  # the config's model, at tiny widths
    c.update({"channels": (8, 8, 8, 8)[:len(c.channels)], "num_groups": 4,
              "num_res_blocks": 1, "nfe": 2})
  else:
    values = {k: v for k, v in c.items() if k in train.OPTIONS}
    c = common.base_config(model)
    c.update({**values, "g_width": 8, "d_width": 8, "z_dim": 4,
              "best_metric": ""})
  s = train.resolve(ml_collections.ConfigDict(c.to_dict()))
  family = families.get_family(s.model)
  key = jax.random.key(0)
  state = jax.eval_shape(
      lambda k: family.create_state(s, shape, classes, k), key)
  # init runs the networks once at `shape` (G and D; the U-Net)
  assert jax.tree.leaves(state)
  labels = (np.zeros((4, len(classes)), np.int32) if isinstance(classes, tuple)
            else np.zeros((4,), np.int32))
  sample = family.make_sample_fn(s, shape, classes)
  out = jax.eval_shape(sample, state, jax.ShapeDtypeStruct(
      labels.shape, np.int32), key)
  assert out.shape == (4, *shape)
