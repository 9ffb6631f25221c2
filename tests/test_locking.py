"""File locks: first-use builds and the workdir lock, across processes."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from condgen_jax.core import locking

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Holds a lock until killed; prints "held" once it has it.
_HOLDER = """
import sys, time
from condgen_jax.core import locking
kind, path = sys.argv[1:]
if kind == "workdir":
  locking.WorkdirLock(path).acquire()
  print("held", flush=True)
  time.sleep(600)
with locking.exclusive(path):
  print("held", flush=True)
  time.sleep(600)
"""


def _hold(kind, path):
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, str(path)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_holder_of_a_workdir_is_refused_naming_the_first(tmp_path):
  first = locking.WorkdirLock(tmp_path / "run")
  first.acquire()
  try:
    record = json.loads((tmp_path / "run" / locking.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()
    with pytest.raises(locking.WorkdirInUseError) as e:
      locking.WorkdirLock(tmp_path / "run").acquire()
    message = str(e.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()} since " in (
        message)
    assert record["since"] in message and "\n" not in message
    # the refused one wrote nothing: the holder's record is intact
    assert json.loads((tmp_path / "run" / locking.LOCK_FILE).read_text()) == (
        record)
  finally:
    first.release()
  with locking.WorkdirLock(tmp_path / "run"):  # free again
    pass


@pytest.mark.parametrize("kind", ["workdir", "exclusive"])
def test_a_lock_whose_holder_was_killed_never_blocks(tmp_path, kind):
  path = tmp_path / ("run" if kind == "workdir" else "build.lock")
  proc = _hold(kind, path)
  try:
    if kind == "workdir":
      with pytest.raises(locking.WorkdirInUseError, match=f"pid {proc.pid} "):
        locking.WorkdirLock(path).acquire()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  start = time.monotonic()
  if kind == "workdir":
    with locking.WorkdirLock(path):
      pass
  else:
    with locking.exclusive(path):
      pass
  assert time.monotonic() - start < 5


def test_exclusive_waits_for_the_holder(tmp_path):
  proc = _hold("exclusive", tmp_path / "build.lock")
  start, taken = time.monotonic(), []

  def take():
    with locking.exclusive(tmp_path / "build.lock"):
      taken.append(time.monotonic())

  waiter = threading.Thread(target=take)
  try:
    waiter.start()
    time.sleep(1.0)
    assert not taken  # still waiting for the holder
  finally:
    proc.send_signal(signal.SIGTERM)
    proc.wait()
  waiter.join(timeout=10)
  assert taken and taken[0] - start >= 1.0


def test_train_on_a_workdir_in_use_stops_before_writing(tmp_path):
  workdir = tmp_path / "run"
  with locking.WorkdirLock(workdir):
    before = sorted(os.listdir(workdir))
    r = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
         "--config=experiments/configs/cvae.py", "--config.dataset=digits",
         "--config.num_steps=5"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: --workdir ")
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in (
        lines[0])
    assert sorted(os.listdir(workdir)) == before == [locking.LOCK_FILE]
