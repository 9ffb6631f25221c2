import json
import shutil

import jax
import numpy as np
import pytest

from condgen_jax.core import checkpointing
from condgen_jax.runner import train
from conftest import tiny_cvae_config
from condgen_jax.configs import cvae_sop
from test_family_diffusion import tiny_config as tiny_diffusion_config


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
  # wall_s sums the two commands; each command's hardware is recorded
  records = [json.loads(l) for l in
             (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  walls = [r["wall_s"] for r in records]
  assert all(b > a for a, b in zip(walls, walls[1:]))
  sessions = [json.loads(l) for l in
              (tmp_path / "b" / train.SESSIONS_FILE).read_text().splitlines()]
  assert [s["step"] for s in sessions] == [0, 48]
  assert sessions[1]["hardware"]["platform"] == "cpu"
  # resumed at 48 again: the command that started at 48 kept no step
  train.record_session(tmp_path / "b", 48)
  sessions = (tmp_path / "b" / train.SESSIONS_FILE).read_text().splitlines()
  assert [json.loads(s)["step"] for s in sessions] == [0, 48]


def test_logged_wall_s(tmp_path):
  path = tmp_path / "metrics.jsonl"
  assert train.logged_wall_s(path, 10) == 0.0
  path.write_text('{"step": 10, "wall_s": 5.0}\n{"step": 20, "wall_s": 9.5}\n'
                  '{"step": 30, "loss": 1.0}\n')
  assert train.logged_wall_s(path, 5) == 0.0
  assert train.logged_wall_s(path, 25) == 9.5
  # a record without the key (an older log) keeps the last value
  assert train.logged_wall_s(path, 30) == 9.5
  # a torn last line (a kill mid-write) is skipped
  path.write_text(path.read_text() + '{"step": 40, "wall')
  assert train.logged_wall_s(path, 40) == 9.5


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
    state, _, _ = train.train_steps(run, state, start, stop, perm)
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


def _poison_params_after(monkeypatch, bad_step: int):
  """Makes the update from `bad_step` to `bad_step + 1` write NaN params
  (the metrics of that step, computed before it, stay finite)."""
  from condgen_jax.families import cvae as vae_training
  original = vae_training.make_train_step

  def make(*args):
    step_fn = original(*args)

    def train_step(state, batch, rng):
      new, metrics = step_fn(state, batch, rng)
      params = jax.tree.map(
          lambda p: jax.numpy.where(state.step == bad_step, jax.numpy.nan, p),
          new.params)
      return new.replace(params=params), metrics
    return train_step
  monkeypatch.setattr(vae_training, "make_train_step", make)


@pytest.mark.parametrize("bad_step,match", [
    # NaN params from step 25: the loss of step 26 on is NaN; stopped at the
    # next boundary (log at 30), before the save at 30.
    (25, r"non-finite \w+=nan at step 30 \(steps 21-30"),
    # NaN params written by the last step before the save at 40: its loss
    # was finite, the state check before the save stops it.
    (39, r"non-finite values in the state at step 40 \(\.params\["),
])
def test_nan_stops_before_any_save_and_names_the_kept_checkpoint(
    tmp_path, digits, monkeypatch, bad_step, match):
  config = tiny_cvae_config(num_steps=40, checkpoint_every=20, log_every=10,
                            sample_every=0)
  _poison_params_after(monkeypatch, bad_step)
  with pytest.raises(FloatingPointError, match=match) as info:
    train.train_and_evaluate(config, tmp_path, digits)
  assert f"latest checkpoint, step 20 in {tmp_path}" in str(info.value)
  mngr = checkpointing.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.all_steps() == [20]
  _, state, _ = train.restore_run(tmp_path, dataset=digits)
  assert all(np.isfinite(x).all() for x in _params(state))


def test_nan_before_the_first_save_says_none_is_kept(tmp_path, digits,
                                                     monkeypatch):
  _poison_params_after(monkeypatch, 3)
  with pytest.raises(FloatingPointError,
                     match="no checkpoint has been saved"):
    train.train_and_evaluate(tiny_cvae_config(num_steps=20), tmp_path,
                             digits)
  assert not list((tmp_path / "checkpoints").iterdir())


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
  with pytest.raises(ValueError, match=r"hidden: \[64, 32\] -> \[128, 32\]"):
    train.train_and_evaluate(wider, tmp_path, digits)
  wider.allow_config_change = True
  with pytest.raises(ValueError, match="does not fit"):
    train.train_and_evaluate(wider, tmp_path, digits)
  assert (tmp_path / "checkpoints" / "10").is_dir()  # nothing set aside


@pytest.mark.parametrize("key,value,match", [
    ("model", "vqvae", "'vqvae'"), ("dataset", "cifar10", "'cifar10'"),
    ("num_steps", 0, "num_steps"), ("log_every", -1, "log_every"),
    ("prng_impl", "mt19937", "prng_impl='mt19937'")])
def test_validate_config(key, value, match):
  config = tiny_cvae_config()
  config[key] = value
  with pytest.raises(ValueError, match=match):
    train.resolve(config)


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


def _fake_evaluation(monkeypatch):
  """Periodic evaluation without a classifier: fid = -step, so every
  evaluation is the best so far and is saved under best/."""
  monkeypatch.setattr(train.evaluation, "evaluate_state",
                      lambda run, state, **kw: {"fid": -float(state.step)})


def _logged_steps(path):
  return [json.loads(l)["step"] for l in path.read_text().splitlines()]


def test_kill_between_the_best_and_the_regular_save_then_resume(
    tmp_path, digits, monkeypatch):
  """A kill after best/20 and before checkpoints/20 is saved: the same
  command finishes, with the params of an uninterrupted run."""
  _fake_evaluation(monkeypatch)
  config = tiny_cvae_config(num_steps=30, eval_every=10, checkpoint_every=10,
                            log_every=10, best_metric="fid")
  straight = train.train_and_evaluate(config, tmp_path / "a", digits)
  killed = tmp_path / "b"
  train.train_and_evaluate(tiny_cvae_config(
      num_steps=20, eval_every=10, checkpoint_every=10, log_every=10,
      best_metric="fid"), killed, digits)
  shutil.rmtree(killed / "checkpoints" / "20")  # the save the kill prevented
  assert (killed / "best" / "20").exists()
  resumed = train.train_and_evaluate(config, killed, digits)
  _assert_bit_identical(straight, resumed)
  assert _logged_steps(killed / "metrics.jsonl") == [10, 20, 30]
  assert _logged_steps(killed / "eval_metrics.jsonl") == [10, 20, 30]
  _, best, step = train.restore_run(killed, best=True, dataset=digits)
  assert step == 30 and int(best.step) == 30


def _truncate_largest_file(folder):
  biggest = max((p for p in folder.rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:biggest.stat().st_size // 2])


def _remove_metadata(folder):
  (folder / "default" / "_METADATA").unlink()


@pytest.mark.parametrize("damage", [_truncate_largest_file, _remove_metadata])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, digits, capsys, damage):
  config = tiny_cvae_config(num_steps=30, checkpoint_every=10)
  straight = train.train_and_evaluate(config, tmp_path / "a", digits)
  workdir = tmp_path / "b"
  train.train_and_evaluate(tiny_cvae_config(num_steps=20,
                                            checkpoint_every=10),
                           workdir, digits)
  damage(workdir / "checkpoints" / "20")
  capsys.readouterr()
  resumed = train.train_and_evaluate(config, workdir, digits)
  err = capsys.readouterr().err
  assert "skipped checkpoint 20: " in err
  assert "restored step 10 instead" in err
  _assert_bit_identical(straight, resumed)
  # the damaged checkpoint is kept, out of orbax's way
  assert (workdir / "skipped_checkpoints" / "checkpoints_20").is_dir()
  assert _logged_steps(workdir / "metrics.jsonl") == [10, 20, 30]


def test_a_changed_seed_is_refused_untouched_then_allowed_and_recorded(
    tmp_path, digits):
  train.train_and_evaluate(tiny_cvae_config(num_steps=20), tmp_path, digits)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  changed = tiny_cvae_config(num_steps=30, seed=3, batch_size=16)
  with pytest.raises(ValueError,
                     match=r"batch_size: 32 -> 16; seed: 0 -> 3"):
    train.train_and_evaluate(changed, tmp_path, digits)
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  assert after == before
  # num_steps and the intervals may change freely
  train.train_and_evaluate(tiny_cvae_config(num_steps=30, log_every=5),
                           tmp_path, digits)
  changed.allow_config_change = True
  state = train.train_and_evaluate(
      tiny_cvae_config(num_steps=40, seed=3, batch_size=16,
                       allow_config_change=True), tmp_path, digits)
  assert int(state.step) == 40
  history = [json.loads(l) for l in
             (tmp_path / "config_history.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [0, 30]
  assert history[0]["config"]["seed"] == 0
  assert history[1]["changes"] == {"batch_size": [32, 16], "seed": [0, 3]}
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 3


@pytest.mark.parametrize("key,value,match", [
    ("learning_rate", 0.0, "learning_rate must be finite and > 0; got 0.0"),
    ("learning_rate", -10.0, "learning_rate must be finite and > 0"),
    ("learning_rate", float("nan"), "learning_rate must be finite"),
    ("latent_dim", 0, "latent_dim must be an integer >= 1; got 0"),
    ("hidden", (64, 0), "hidden must be a non-empty sequence"),
    ("best_metric", "loss", "Unknown best_metric 'loss' for model 'cvae'"),
    ("best_metric", "test_class_acc", "Unknown best_metric 'test_class_acc'"),
    ("best_metric", "test_iw_nll", "Unknown best_metric 'test_iw_nll'"),
    ("max_to_keep", 0, "max_to_keep must be an integer >= 1"),
    ("eval_num_per_class", 0, "eval_num_per_class must be an integer >= 1"),
])
def test_values_are_checked_before_anything_is_written(tmp_path, key, value,
                                                       match):
  config = tiny_cvae_config()
  config[key] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_iw_nll_is_a_valid_best_metric_with_iw_samples():
  train.resolve(tiny_cvae_config(best_metric="test_iw_nll",
                                         iw_samples=5))


def test_an_attribute_run_resumes_exactly_and_never_trains_held_out(tmp_path):
  from condgen_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  kw = dict(dataset="colored_digits", condition_kind="attributes",
            checkpoint_every=24, log_every=24)
  straight = train.train_and_evaluate(tiny_cvae_config(num_steps=48, **kw),
                                      tmp_path / "a")
  train.train_and_evaluate(tiny_cvae_config(num_steps=24, **kw),
                           tmp_path / "b")
  resumed = train.train_and_evaluate(tiny_cvae_config(num_steps=48, **kw),
                                     tmp_path / "b")
  _assert_bit_identical(straight, resumed)
  # every batch of a whole epoch: no held-out (digit, color) combination
  run = train.setup(tiny_cvae_config(num_steps=48, **kw))
  assert run.labels.shape == (len(run.dataset.train_labels), 2)
  perm = data.epoch_permutation(run.rngs["data"], 0, run.labels.shape[0])
  seen = set()
  for step in range(run.steps_per_epoch):
    batch = data.get_batch(run.images, run.labels, perm, step, 32,
                           run.dataset.max_value)
    seen |= set(map(tuple, np.asarray(batch["label"]).tolist()))
  assert len(seen) == 50 and not seen & set(data.colored.DEFAULT_HELD_OUT)
  # the sample grid: one row per digit, one column per color
  grid = train.sample_grid(run, run.state, 10, run.rngs["sample"])
  assert grid.shape == (60, 8, 8, 3)


def tiny_attribute_config(model, **overrides):
  """A few steps of `model` at tiny widths on colored_digits, conditioned
  on (digit, color) with the default combinations held out."""
  if model == "acgan":
    from condgen_jax.configs import acgan  # pylint: disable=g-import-not-at-top
    c = acgan.get_config()
    c.update(g_width=8, d_width=8, z_dim=8, batch_size=32)
  else:
    c = tiny_diffusion_config()
  c.update(dataset="colored_digits", condition_kind="attributes",
           sample_every=0, **overrides)
  return c


@pytest.mark.slow
@pytest.mark.parametrize("model", ["acgan", "diffusion"])
def test_gan_and_diffusion_attribute_runs_resume_exactly(tmp_path, model):
  """4 steps straight == 2 steps, stop, resume to 4: every leaf of the
  state (params, optimiser states, EMA, norm statistics) bit-identical."""
  kw = dict(checkpoint_every=2, log_every=2)
  straight = train.train_and_evaluate(
      tiny_attribute_config(model, num_steps=4, **kw), tmp_path / "a")
  train.train_and_evaluate(tiny_attribute_config(model, num_steps=2, **kw),
                           tmp_path / "b")
  resumed = train.train_and_evaluate(
      tiny_attribute_config(model, num_steps=4, **kw), tmp_path / "b")
  assert int(resumed.step) == 4
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_attributes_need_a_family_and_a_dataset_that_have_them(tmp_path):
  c = cvae_sop.get_config()
  c.condition_kind = "attributes"
  with pytest.raises(ValueError, match="not supported by model 'cvae_sop'; "
                     r"it takes \('image',\)"):
    train.resolve(c)
  with pytest.raises(ValueError, match="no attributes to condition on"):
    train.setup(tiny_cvae_config(condition_kind="attributes"))


def test_condition_kind_and_held_out_name_the_run(tmp_path):
  kw = dict(dataset="colored_digits", num_steps=2, checkpoint_every=2,
            log_every=2)
  train.train_and_evaluate(tiny_cvae_config(**kw), tmp_path)
  for key, value in (("condition_kind", "attributes"), ("held_out", "")):
    with pytest.raises(ValueError, match=f"holds a run with {key}="):
      train.train_and_evaluate(
          tiny_cvae_config(**kw, allow_config_change=True, **{key: value}),
          tmp_path)
  # a config.json from before the keys existed ran at their defaults
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  del old["condition_kind"], old["held_out"]
  path.write_text(json.dumps(old))
  train.train_and_evaluate(tiny_cvae_config(**{**kw, "num_steps": 4}),
                           tmp_path)


class _DiskFull:
  """Makes writes of one workdir file fail with ENOSPC from its `after`-th
  write on (appends to it, or its atomic rewrite's temporary file)."""

  def __init__(self, monkeypatch, name: str, after: int = 0):
    import errno  # pylint: disable=g-import-not-at-top
    from etils import epath  # pylint: disable=g-import-not-at-top
    self.writes = 0
    cls = type(epath.Path("/"))
    real_open, real_write_text = cls.open, cls.write_text

    def fail(path):
      if path.name in (name, f".{name}.tmp"):
        self.writes += 1
        if self.writes > after:
          raise OSError(errno.ENOSPC, "No space left on device")

    def open_(path, mode="r", *args, **kwargs):
      if "a" in mode or "w" in mode:
        fail(path)
      return real_open(path, mode, *args, **kwargs)

    def write_text(path, *args, **kwargs):
      fail(path)
      return real_write_text(path, *args, **kwargs)

    monkeypatch.setattr(cls, "open", open_)
    monkeypatch.setattr(cls, "write_text", write_text)


def _checkpoint_full(monkeypatch, step):
  import errno  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  real = ocp.CheckpointManager.save

  def save(self, at, *args, **kwargs):
    if at == step:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, at, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)


@pytest.fixture(scope="module")
def straight_30(tmp_path_factory, digits):
  config = tiny_cvae_config(num_steps=30, checkpoint_every=10, log_every=10,
                            sample_every=0)
  return train.train_and_evaluate(config, tmp_path_factory.mktemp("s30"),
                                  digits)


@pytest.mark.parametrize("target, named", [
    ("checkpoint", "cannot write checkpoint 20 in "),
    ("metrics.jsonl", "cannot write {workdir}/metrics.jsonl: No space left"),
    ("config.json", "cannot write {workdir}/config.json: No space left"),
])
def test_a_full_disk_stops_the_run_naming_the_file_and_keeps_what_it_wrote(
    tmp_path, digits, monkeypatch, straight_30, target, named):
  """A write failing with ENOSPC stops the run with a `WriteError` naming
  the file; the checkpoint before it and every file written stay intact;
  the same command, once space is back, resumes and finishes as a run that
  never failed. config.json is rewritten at each start: the second start
  fails there, with step 10 saved by the first."""
  config = tiny_cvae_config(num_steps=30, checkpoint_every=10, log_every=10,
                            sample_every=0)
  workdir = tmp_path / "run"
  with monkeypatch.context() as patch:
    if target == "checkpoint":
      _checkpoint_full(patch, 20)
    elif target == "metrics.jsonl":
      _DiskFull(patch, "metrics.jsonl", after=1)  # steps 10 and 20 fail
    else:
      config.num_steps = 10
      train.train_and_evaluate(config, workdir, digits)
      config.num_steps = 30
      _DiskFull(patch, "config.json")
    with pytest.raises(checkpointing.WriteError) as e:
      train.train_and_evaluate(config, workdir, digits)
  assert named.format(workdir=workdir) in str(e.value)
  assert "\n" not in str(e.value)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == ["10"]
  assert json.loads((workdir / "config.json").read_text())["num_steps"] in (
      10, 30)
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    assert json.loads(line)["step"] in (10, 20)
  resumed = train.train_and_evaluate(config, workdir, digits)
  assert int(resumed.step) == 30
  _assert_bit_identical(straight_30, resumed)


def test_a_write_error_is_one_line_and_exit_2(capsys):
  import errno  # pylint: disable=g-import-not-at-top
  from condgen_jax.core import runtime  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    with runtime.user_errors():
      with checkpointing.writing("/w/eval.json"):
        raise OSError(errno.EIO, "Input/output error")
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      "error: WriteError: [Errno 5] cannot write /w/eval.json: Input/output "
      "error\n")
