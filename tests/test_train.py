import json

import jax
import numpy as np
import pytest

from condgen_jax import checkpointing
from condgen_jax import train
from conftest import tiny_cvae_config


def _params(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _assert_bit_identical(a, b):
  for x, y in zip(_params(a), _params(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("steps_per_call", [1, 4])
def test_resume_is_exact(tmp_path, digits, steps_per_call):
  """N steps straight == N/2 steps, stop, resume to N: bit-identical params.

  N = 2 * 48 crosses epochs (44 steps of 32 per digits epoch)."""
  config = tiny_cvae_config(num_steps=96, checkpoint_every=48,
                            steps_per_call=steps_per_call)
  straight = train.train_and_evaluate(config, tmp_path / "a", digits)
  half = tiny_cvae_config(num_steps=48, checkpoint_every=48,
                          steps_per_call=steps_per_call)
  train.train_and_evaluate(half, tmp_path / "b", digits)
  resumed = train.train_and_evaluate(config, tmp_path / "b", digits)
  assert int(resumed.step) == 96
  _assert_bit_identical(straight, resumed)
  # the metrics log has every logged step once
  steps = [json.loads(l)["step"] for l in
           (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == 96


def test_workdir_contents(tmp_path, digits):
  config = tiny_cvae_config(num_steps=20, log_every=10, sample_every=10)
  train.train_and_evaluate(config, tmp_path, digits)
  records = [json.loads(l) for l in
             (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [10, 20]
  for key in ("loss", "neg_elbo", "reconstruction", "kl", "images_per_s"):
    assert np.isfinite(records[-1][key])
  assert (tmp_path / "samples" / "step_00000010.png").exists()
  assert (tmp_path / "samples" / "step_00000020.png").exists()
  assert json.loads((tmp_path / "config.json").read_text())["model"] == "cvae"
  assert any((tmp_path / "tensorboard").iterdir())
  run, state, step = train.restore_run(tmp_path, dataset=digits)
  assert step == 20 and int(state.step) == 20


def test_training_is_compiled_once(tmp_path, digits):
  config = tiny_cvae_config(num_steps=30, log_every=7, steps_per_call=3)
  run = train.setup(config, digits)
  traces = []
  original = run.family.make_train_step

  def counting(*args):
    step = original(*args)

    def wrapped(state, batch, rng):
      traces.append(1)
      return step(state, batch, rng)
    return wrapped

  run.family = type("F", (), {"make_train_step": staticmethod(counting)})
  perm = jax.numpy.arange(len(digits.train_labels))
  state = run.state
  for start, stop in [(0, 7), (7, 14), (14, 21)]:
    state, _ = train.train_steps(run, state, start, stop, perm)
  # one trace of the 3-step call (a scan body) + one of the 1-step call
  assert len(traces) == 1 + 1
  assert set(run.step_fns) == {1, 3}


def test_next_boundary():
  config = tiny_cvae_config(num_steps=100, log_every=30, checkpoint_every=50,
                            sample_every=0, eval_every=0)
  assert train.next_boundary(0, config, 44) == 30
  assert train.next_boundary(30, config, 44) == 44
  assert train.next_boundary(44, config, 44) == 50
  assert train.next_boundary(90, config, 44) == 100


def test_nan_stops_with_step_and_term_and_keeps_checkpoint(tmp_path, digits):
  config = tiny_cvae_config(num_steps=20, checkpoint_every=10)
  train.train_and_evaluate(config, tmp_path, digits)
  bad = tiny_cvae_config(num_steps=40, checkpoint_every=10,
                         learning_rate=float("nan"))
  with pytest.raises(FloatingPointError, match=r"Non-finite \w+=nan at step 30"):
    train.train_and_evaluate(bad, tmp_path, digits)
  mngr = checkpointing.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.latest_step() == 20
  _, state, _ = train.restore_run(tmp_path, dataset=digits)
  assert all(np.isfinite(x).all() for x in _params(state))


def test_foreign_workdir_is_refused_untouched(tmp_path, digits):
  (tmp_path / "config.json").write_text(json.dumps(
      {"model": "acgan", "dataset": "digits"}))
  before = sorted(p.name for p in tmp_path.iterdir())
  with pytest.raises(ValueError, match="model='acgan'.*model='cvae'"):
    train.train_and_evaluate(tiny_cvae_config(), tmp_path, digits)
  assert sorted(p.name for p in tmp_path.iterdir()) == before
  assert "acgan" in (tmp_path / "config.json").read_text()


def test_checkpoint_of_another_shape_is_a_clear_error(tmp_path, digits):
  train.train_and_evaluate(tiny_cvae_config(num_steps=10), tmp_path, digits)
  wider = tiny_cvae_config(num_steps=20, hidden=(128, 32))
  with pytest.raises(ValueError, match="does not fit"):
    train.train_and_evaluate(wider, tmp_path, digits)


@pytest.mark.parametrize("key,value,match", [
    ("model", "vqvae", "'vqvae'"), ("dataset", "cifar10", "'cifar10'"),
    ("num_steps", 0, "num_steps"), ("log_every", -1, "log_every"),
    ("prng_impl", "mt19937", "prng_impl='mt19937'")])
def test_validate_config(key, value, match):
  config = tiny_cvae_config()
  config[key] = value
  with pytest.raises(ValueError, match=match):
    train.validate_config(config)


def test_prng_impl_keys_a_run_whose_fused_steps_match_single_steps(
    tmp_path, digits):
  config = tiny_cvae_config(num_steps=8, prng_impl="philox4x32")
  run = train.setup(config, digits)
  assert "philox4x32" in str(jax.random.key_impl(run.rngs["step"]))
  fused = train.train_and_evaluate(
      tiny_cvae_config(num_steps=8, prng_impl="philox4x32", steps_per_call=4),
      tmp_path / "fused", digits)
  single = train.train_and_evaluate(
      tiny_cvae_config(num_steps=8, prng_impl="philox4x32", steps_per_call=1),
      tmp_path / "single", digits)
  threefry = train.train_and_evaluate(
      tiny_cvae_config(num_steps=8, steps_per_call=1), tmp_path / "t", digits)
  _assert_bit_identical(fused, single)
  assert any(not np.array_equal(a, b)
             for a, b in zip(_params(single), _params(threefry)))


def test_steps_per_call_auto():
  mlp = tiny_cvae_config(steps_per_call=0)
  conv = tiny_cvae_config(steps_per_call=0, architecture="conv")
  assert train.resolve_steps_per_call(mlp, "cpu") == 16
  assert train.resolve_steps_per_call(conv, "cpu") == 1
  assert train.resolve_steps_per_call(conv, "gpu") == 8
  assert train.resolve_steps_per_call(tiny_cvae_config(steps_per_call=5)) == 5
  assert train.loop_unroll(conv, 4, "cpu") == 4
  assert train.loop_unroll(mlp, 4, "cpu") == 1


def test_corrupt_checkpoint_is_a_clear_error_and_is_kept(tmp_path, digits):
  train.train_and_evaluate(tiny_cvae_config(num_steps=10), tmp_path, digits)
  data_files = [p for p in (tmp_path / "checkpoints" / "10").rglob("*")
                if p.is_file() and p.stat().st_size > 0 and "d" in p.parts]
  assert data_files
  for p in data_files:
    p.write_bytes(b"\0garbage" * 4)
  before = {p: p.read_bytes() for p in data_files}
  with pytest.raises(ValueError, match="does not fit.*corrupt"):
    train.restore_run(tmp_path, dataset=digits)
  with pytest.raises(ValueError, match="corrupt"):
    train.train_and_evaluate(tiny_cvae_config(num_steps=20), tmp_path, digits)
  assert {p: p.read_bytes() for p in data_files} == before
