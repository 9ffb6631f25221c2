"""The families' shared pieces (`condgen_jax.families.common`) against
numpy: the [-1, 1] image range, the test-split mean (batches, keys,
float64 sums), one player's optimiser update; and the two players' state
trees, which are the paths of the families' checkpoints."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from condgen_jax.data import datasets as data_lib
from condgen_jax.families import common
from condgen_jax.families import gan
from condgen_jax.families import pix2pix

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "before_layout"


def test_to_signed_maps_unit_images_to_minus_one_one():
  x = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype(np.float32)
  want = np.float32(2.0) * x - np.float32(1.0)
  np.testing.assert_array_equal(np.asarray(common.to_signed(jnp.asarray(x))),
                                want)
  # numpy in, numpy out: the host-side mapping is the same arithmetic
  got = common.to_signed(x)
  assert isinstance(got, np.ndarray) and got.dtype == np.float32
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(common.to_signed(np.array([0.0, 0.5, 1.0])),
                                [-1.0, 0.0, 1.0])


def test_to_unit_maps_back_clipped_to_float32():
  x = np.random.default_rng(1).uniform(-1.5, 1.5, size=(64,))
  x = x.astype(np.float32)
  got = common.to_unit(jnp.asarray(x))
  assert got.dtype == jnp.float32
  half = (x + np.float32(1.0)) / np.float32(2.0)
  np.testing.assert_array_equal(np.asarray(got), np.clip(half, 0.0, 1.0))
  assert float(jnp.min(got)) == 0.0 and float(jnp.max(got)) == 1.0


def test_to_unit_without_clip_keeps_values_outside_the_range():
  x = np.array([-1.5, -1.0, 0.0, 1.0, 1.5], np.float32)
  got = np.asarray(common.to_unit(jnp.asarray(x), clip=False))
  np.testing.assert_array_equal(got, [-0.25, 0.0, 0.5, 1.0, 1.25])
  # an image in [0, 1] round-trips through [-1, 1]
  y = np.random.default_rng(2).uniform(size=(10,)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(common.to_unit(common.to_signed(jnp.asarray(y)))), y,
      atol=1e-7)


def _dataset(n_test=7, shape=(2, 2, 1)):
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, size=(n_test,) + shape, dtype=np.uint8)
  labels = (np.arange(n_test) % 3).astype(np.int32)
  return data_lib.Dataset(
      name="tiny", train_images=images[:3], train_labels=labels[:3],
      test_images=images, test_labels=labels,
      class_names=("a", "b", "c"), max_value=255.0)


def test_test_split_mean_sums_batches_in_float64_over_the_split():
  ds = _dataset(n_test=7)
  values = np.float32(1e8) + np.arange(7, dtype=np.float32) * np.float32(
      3.0)  # float32 sums of these lose the low digits
  calls = []

  def fn(images, labels, key):
    start = sum(len(c[0]) for c in calls)
    calls.append((images, labels, key))
    v = jnp.asarray(values[start:start + len(images)])
    return {"value": v, "square": v * v / np.float32(1e16)}

  rng = jax.random.key(5)
  means, n = common.test_split_mean(fn, ds, 3, rng)
  assert n == 7
  # consecutive batches of 3, the last one shorter, with their labels and
  # key i = fold_in(rng, i)
  assert [len(c[0]) for c in calls] == [3, 3, 1]
  np.testing.assert_array_equal(np.concatenate([c[0] for c in calls]),
                                ds.test_images)
  np.testing.assert_array_equal(np.concatenate([c[1] for c in calls]),
                                ds.test_labels)
  for i, (_, _, key) in enumerate(calls):
    np.testing.assert_array_equal(
        jax.random.key_data(key),
        jax.random.key_data(jax.random.fold_in(rng, i)))
  # each batch summed in float64, the batches added in order, divided by n
  want = 0.0
  for start in range(0, 7, 3):
    want += float(np.sum(values[start:start + 3].astype(np.float64)))
  assert means["value"] == want / 7
  assert want / 7 != float(np.sum(values)) / 7  # float32 would differ
  sq = (values * values / np.float32(1e16)).astype(np.float64)
  want_sq = 0.0
  for start in range(0, 7, 3):
    want_sq += float(np.sum(sq[start:start + 3]))
  assert means["square"] == want_sq / 7
  assert list(means) == ["value", "square"]


def test_test_split_mean_without_labels_or_key():
  ds = _dataset(n_test=5)
  seen = []

  def fn(*args):
    seen.append(len(args))
    (images,) = args
    # a batch's total (a scalar), as a jitted sum returns it
    return {"pixels": jnp.sum(jnp.asarray(images, jnp.float32))}

  means, n = common.test_split_mean(fn, ds, 2, with_labels=False)
  assert n == 5 and seen == [1, 1, 1]
  want = sum(float(np.sum(ds.test_images[s:s + 2].astype(np.float64)))
             for s in range(0, 5, 2)) / 5
  assert means == {"pixels": want}


def test_test_split_mean_integer_counts_are_exact():
  ds = _dataset(n_test=7)
  means, n = common.test_split_mean(
      lambda images, labels: {"zero": jnp.sum(labels == 0)}, ds, 4)
  assert means["zero"] == int(np.sum(ds.test_labels == 0)) / n


def test_optimizer_step_is_one_update_of_the_optimiser():
  params = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
  grads = {"w": np.array([0.5, 0.25, -1.0], np.float32)}
  tx = optax.sgd(0.1)
  new, opt_state = common.optimizer_step(tx, grads, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(new["w"]),
                             params["w"] - 0.1 * grads["w"], rtol=1e-7)
  # Adam's first step moves each weight by lr * sign(g), and counts it
  tx = optax.adam(0.01)
  new, opt_state = common.optimizer_step(tx, grads, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(new["w"]),
                             params["w"] - 0.01 * np.sign(grads["w"]),
                             rtol=1e-6)
  assert int(opt_state[0].count) == 1


def test_chain_transform_applies_the_transform_after_the_optimiser():
  tx = optax.sgd(1.0)
  assert common.chain_transform(tx, None) is tx
  clipped = common.chain_transform(tx, optax.clip(0.3))
  params = {"w": np.zeros(3, np.float32)}
  grads = {"w": np.array([0.1, -0.5, 2.0], np.float32)}
  new, _ = common.optimizer_step(clipped, grads, clipped.init(params),
                                 params)
  np.testing.assert_allclose(np.asarray(new["w"]),
                             np.clip(-grads["w"], -0.3, 0.3), rtol=1e-7)


def _leaf_fields(cls):
  return [f.name for f in dataclasses.fields(cls)
          if f.metadata.get("pytree_node", True)]


PLAYERS = ["step", "g_params", "d_params", "g_opt_state", "d_opt_state"]
GAN_EXTRA = ["g_stats", "d_stats", "ema_params", "vbn_ref"]


def test_two_player_state_fields():
  assert _leaf_fields(common.TwoPlayerState) == PLAYERS
  assert pix2pix.Pix2PixState is common.TwoPlayerState
  assert issubclass(gan.GANState, common.TwoPlayerState)
  assert _leaf_fields(gan.GANState) == PLAYERS + GAN_EXTRA
  state = common.TwoPlayerState(
      step=jnp.zeros((), jnp.int32), g_params={"a": jnp.ones(2)},
      d_params={"b": jnp.ones(3)}, g_opt_state=(), d_opt_state=(),
      g_tx=optax.sgd(1.0), d_tx=optax.sgd(1.0))
  paths = [jax.tree_util.keystr(p)
           for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  assert paths == [".step", ".g_params['a']", ".d_params['b']"]  # no tx


@pytest.mark.parametrize("run, cls", [
    ("pix2pix", pix2pix.Pix2PixState), ("acgan", gan.GANState),
    ("cgan_conv", gan.GANState), ("infogan", gan.GANState)])
def test_state_fields_are_the_committed_checkpoints_paths(run, cls):
  """orbax restores a checkpoint by the state's tree: the committed runs'
  top-level paths are the state's leaf fields, no more and no fewer."""
  steps = FIXTURE / run / "checkpoints"
  if not steps.exists():
    pytest.skip(f"no committed checkpoint of {run}")
  step = max(p for p in steps.iterdir() if p.name.isdigit())
  tree = json.loads((step / "default" / "_METADATA").read_text())
  top = {meta["key_metadata"][0]["key"]
         for meta in tree["tree_metadata"].values()}
  assert top == set(_leaf_fields(cls))
