import json

import fsspec
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations import memory

from condgen_jax.core import checkpointing
from condgen_jax.data import images
from condgen_jax.evaluation import sampling
from condgen_jax.runner import train


def _config(**kw):
  c = ml_collections.ConfigDict({"model": "cvae", "dataset": "digits",
                                 "seed": 0, "batch_size": 32,
                                 "learning_rate": 1e-3, "num_steps": 10,
                                 "log_every": 5, "hidden": (8, 4),
                                 "allow_config_change": False})
  c.update(kw)
  return c


def test_config_changes_ignore_observer_keys_and_keys_new_to_the_library():
  old = json.loads(_config().to_json())
  assert checkpointing.config_changes(
      old, _config(num_steps=99, log_every=1, new_key=3)) == {}
  assert checkpointing.config_changes(
      old, _config(seed=1, hidden=(8, 8))) == {"hidden": ([8, 4], [8, 8]),
                                               "seed": (0, 1)}
  new = _config()
  del new["learning_rate"]
  assert checkpointing.config_changes(old, new) == {
      "learning_rate": (1e-3, "<absent>")}
  # None is unset: dropping an unset key is no change, setting one is
  old = json.loads(_config(mask=None).to_json())
  assert checkpointing.config_changes(old, _config()) == {}
  assert checkpointing.config_changes(old, _config(mask=2)) == {
      "mask": (None, 2)}


def test_check_workdir_refuses_a_file_and_a_changed_config(tmp_path):
  (tmp_path / "f").write_text("x")
  with pytest.raises(ValueError, match="is a file, not a folder"):
    checkpointing.check_workdir(tmp_path / "f", _config())
  checkpointing.write_config(tmp_path, _config())
  assert checkpointing.check_workdir(tmp_path, _config(num_steps=50)) == {}
  with pytest.raises(ValueError, match=r"\(seed: 0 -> 4\)"):
    checkpointing.check_workdir(tmp_path, _config(seed=4))
  with pytest.raises(ValueError, match="model='cvae'"):
    checkpointing.check_workdir(tmp_path, _config(model="acgan",
                                                  allow_config_change=True))
  assert checkpointing.check_workdir(
      tmp_path, _config(seed=4, allow_config_change=True)) == {"seed": (0, 4)}


def test_a_key_new_to_the_library_is_compared_as_its_default(tmp_path):
  # config.json written before `width` existed: that run used width's
  # default (16), so asking for 32 on resume is a change, 16 is not. A
  # value the old config.json holds (seed 0) wins over its default.
  checkpointing.write_config(tmp_path, _config())
  defaults = {"width": 16, "seed": 5, "unused": object()}
  assert checkpointing.check_workdir(tmp_path, _config(width=16),
                                     defaults) == {}
  with pytest.raises(ValueError, match=r"\(width: 16 -> 32\)"):
    checkpointing.check_workdir(tmp_path, _config(width=32), defaults)
  assert checkpointing.config_changes(
      json.loads(_config().to_json()), _config(width=(1, 2)),
      {"width": (1, 3)}) == {"width": ([1, 3], [1, 2])}


def test_write_config_appends_the_history_and_never_rewrites_it(tmp_path):
  checkpointing.write_config(tmp_path, _config())
  checkpointing.write_config(tmp_path, _config(num_steps=20))  # a resume
  checkpointing.write_config(tmp_path, _config(seed=2), step=10,
                             changes={"seed": (0, 2)})
  lines = (tmp_path / "config_history.jsonl").read_text().splitlines()
  records = [json.loads(l) for l in lines]
  assert [r["step"] for r in records] == [0, 10]
  assert records[0]["config"]["seed"] == 0 and "changes" not in records[0]
  assert records[1]["changes"] == {"seed": [0, 2]}
  assert checkpointing.read_config(tmp_path).seed == 2
  assert not list(tmp_path.glob(".*.tmp"))


def test_nonfinite_leaves_names_each_bad_leaf():
  tree = {"a": jnp.ones(3), "b": {"c": jnp.array([1.0, jnp.nan]),
                                  "d": jnp.array([jnp.inf])},
          "step": jnp.int32(3), "key": jax.random.key(0)}
  assert checkpointing.nonfinite_leaves(tree) == ["['b']['c']", "['b']['d']"]
  assert checkpointing.nonfinite_leaves({"a": jnp.ones(2)}) == []


def test_save_refuses_a_nonfinite_state_and_skips_a_saved_step(tmp_path):
  mngr = checkpointing.manager(tmp_path / "c")
  good = {"w": jnp.arange(3.0)}
  assert checkpointing.save(mngr, 1, good)
  assert not checkpointing.save(mngr, 1, {"w": jnp.zeros(3)})
  with pytest.raises(checkpointing.NonFiniteError,
                     match=r"at step 2 \(\['w'\]\)"):
    checkpointing.save(mngr, 2, {"w": jnp.array([0.0, jnp.nan, 1.0])})
  mngr.close()
  assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["1"]
  state, step, skipped = checkpointing.restore_newest(tmp_path / "c", good)
  assert step == 1 and skipped == []
  np.testing.assert_array_equal(state["w"], [0.0, 1.0, 2.0])


def test_restore_newest_skips_a_damaged_checkpoint_and_set_aside_keeps_it(
    tmp_path):
  mngr = checkpointing.manager(tmp_path / "c", max_to_keep=None)
  for step in (1, 2):
    checkpointing.save(mngr, step, {"w": jnp.full(4, float(step))})
  mngr.close()
  files = [p for p in (tmp_path / "c" / "2").rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:10])  # a torn write
  target = {"w": jnp.zeros(4)}
  state, step, skipped = checkpointing.restore_newest(tmp_path / "c", target)
  assert step == 1 and [s for s, _ in skipped] == [2]
  assert "Checkpoint 2" in skipped[0][1]
  np.testing.assert_array_equal(state["w"], np.ones(4))
  moved = checkpointing.set_aside(tmp_path, tmp_path / "c", skipped)
  assert moved == [str(tmp_path / "skipped_checkpoints" / "c_2")]
  assert not (tmp_path / "c" / "2").exists()
  with pytest.raises(ValueError, match="No checkpoint in .* restores"):
    checkpointing.restore_newest(tmp_path / "c", {"w": jnp.zeros(5)})


def test_a_failed_read_is_skipped_without_asyncio_log_noise(
    tmp_path, caplog, monkeypatch):
  """orbax reads a checkpoint's arrays concurrently; when the step is
  removed mid-read (a training run's max_to_keep) it raises the first
  failure and leaves the other reads' futures unretrieved, which asyncio
  logs as errors when they are freed. The reader falls back to step 1 and
  nothing is logged, then or later."""
  import asyncio  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top
  import logging  # pylint: disable=g-import-not-at-top
  mngr = checkpointing.manager(tmp_path / "c", max_to_keep=None)
  for step in (1, 2):
    checkpointing.save(mngr, step, {"w": jnp.full(4, float(step))})
  mngr.close()
  read = checkpointing.ocp.CheckpointManager.restore

  def restore_while_removed(mngr, step, *args, **kwargs):
    if step != 2:
      return read(mngr, step, *args, **kwargs)
    loop = asyncio.new_event_loop()
    reads = [loop.create_future() for _ in range(3)]
    for r in reads:
      r.set_exception(ValueError(
          f'NOT_FOUND: Metadata at "w/.zarray" in OCDBT database at local '
          f'file "{mngr.directory}/2/default/" does not exist'))
    loop.close()
    raise reads[0].exception()

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, "restore",
                      restore_while_removed)
  with caplog.at_level(logging.WARNING):
    state, step, skipped = checkpointing.restore_newest(
        tmp_path / "c", {"w": jnp.zeros(4)})
    gc.collect()
  assert step == 1 and [s for s, _ in skipped] == [2]
  assert "does not exist" in skipped[0][1]
  np.testing.assert_array_equal(state["w"], np.ones(4))
  assert [r.getMessage()[:60] for r in caplog.records] == []


def test_check_writable_refuses_an_immutable_workdir_and_file(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  (tmp_path / "metrics.jsonl").write_text("")
  checkpointing.check_writable(tmp_path)
  if subprocess.run(["chattr", "+i", str(tmp_path / "metrics.jsonl")],
                    capture_output=True).returncode:
    pytest.skip("chattr +i is not supported here")
  try:
    with pytest.raises(PermissionError, match="metrics.jsonl is not writable"):
      checkpointing.check_writable(tmp_path)
  finally:
    subprocess.run(["chattr", "-i", str(tmp_path / "metrics.jsonl")])


@pytest.fixture
def remote(monkeypatch):
  """s3:// paths served by fsspec's in-memory filesystem through epath."""
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  fsspec.register_implementation("s3", memory.MemoryFileSystem, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  monkeypatch.setattr(train, "_summary_writer", lambda folder: None)
  memory.MemoryFileSystem.store.clear()
  yield checkpointing.as_path("s3://bucket/run")
  memory.MemoryFileSystem.store.clear()
  epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_workdir_files_go_through_epath_to_a_remote_path(remote):
  assert str(remote) == "s3://bucket/run"  # not pathlib's "s3:/bucket/run"
  assert not checkpointing.is_local(remote)
  config = _config()
  assert checkpointing.check_workdir(remote, config) == {}
  checkpointing.write_config(remote, config)
  assert checkpointing.read_config(remote).seed == 0
  with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
    checkpointing.check_workdir(remote, _config(seed=1))
  writer = train.MetricWriter(remote)
  for step in (5, 10):
    writer.write(step, {"loss": float(step)})
  writer.close()
  with (remote / "metrics.jsonl").open("a") as f:
    f.write('{"step": 1')  # a torn line
  train.truncate_metrics_log(remote / "metrics.jsonl", 5)
  assert (remote / "metrics.jsonl").read_text() == (
      '{"step": 5, "loss": 5.0}\n')
  images.save_grid(np.zeros((4, 8, 8, 1)), remote / "samples" / "g.png", 2)
  out = sampling.output_path(remote / "new" / "s")
  sampling.save_npz(out, images=np.ones((2, 3)))
  names = {p.name for p in remote.iterdir()}
  assert {"config.json", "config_history.jsonl", "metrics.jsonl", "samples",
          "new"} <= names
  assert (remote / "new" / "s").exists()  # the exact name, no ".npz" added
  with (remote / "new" / "s").open("rb") as f:
    np.testing.assert_array_equal(np.load(f)["images"], np.ones((2, 3)))


def test_readers_take_the_newest_complete_checkpoint_while_a_run_saves(
    tmp_path):
  """`load` and `restore_state` on a workdir being trained (a checkpoint
  every 2 steps, the 2 newest kept, so saves and deletions are always in
  flight): every read restores a complete checkpoint, newer or equal each
  time, and the restored model samples."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from condgen_jax import api  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
       "--config=experiments/configs/cvae.py", "--config.dataset=digits",
       "--config.batch_size=32", "--config.hidden=(32,16)",
       "--config.latent_dim=4", "--config.sample_every=0",
       "--config.log_every=0", "--config.num_steps=400",
       "--config.checkpoint_every=2", "--config.max_to_keep=2"],
      cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 240
    while time.time() < deadline and not any(
        p.name.isdigit() for p in (workdir / "checkpoints").glob("*")):
      time.sleep(0.05)
    trained = api.load(workdir)
    steps = [trained.step]
    while proc.poll() is None:
      state, step = train.restore_state(workdir, trained.state)
      assert step >= steps[-1]
      steps.append(step)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
  finally:
    proc.kill()
    proc.wait()
  assert len(set(steps)) >= 3, steps  # read while it saved, repeatedly
  newest = dataclasses.replace(trained, state=state, step=step)
  samples, labels = newest.sample(num_per_class=2)
  assert samples.shape == (20, 8, 8, 1) and np.isfinite(samples).all()
  assert labels.tolist() == sorted(list(range(10)) * 2)
  print(f"{len(steps)} reads during training, steps {steps[0]}..{steps[-1]}"
        f" ({len(set(steps))} distinct); {os.cpu_count()} cores")
