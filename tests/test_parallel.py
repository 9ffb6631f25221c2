"""Data parallelism: 1 vs 4 CPU devices, 2 processes vs 1, and SIGKILL safety.

Each run is a subprocess, since the device count is fixed at JAX start-up.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from condgen_jax.families import diffusion as diffusion_training
from condgen_jax.runner import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config=experiments/configs/cvae.py", "--config.dataset=digits",
        "--config.batch_size=32", "--config.hidden=(32,16)",
        "--config.latent_dim=4", "--config.log_every=10",
        "--config.sample_every=0"]


def _env(devices=1, **extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_") or "CACHE" in k}
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env.update(extra)
  return env


# A GAN run as small: the Mirza & Osindero MLPs on digits.
TINY_GAN = ["--config=experiments/configs/cgan_mlp.py",
            "--config.dataset=digits", "--config.batch_size=32",
            "--config.log_every=10", "--config.sample_every=0"]


def _train(workdir, *args, devices=1, base=TINY, **popen):
  cmd = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}",
         *base, *args]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(devices, **popen.pop(
      "extra_env", {})), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **popen)


def _finish(proc, timeout=300):
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-3000:]
  return out


def _params(workdir, digits):
  _, state, step = train.restore_run(workdir, dataset=digits)
  params = getattr(state, "params", None) or (state.g_params, state.d_params)
  return step, [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """20 steps on one device, one process."""
  workdir = tmp_path_factory.mktemp("one_device")
  _finish(_train(workdir, "--config.num_steps=20",
                 "--config.checkpoint_every=10"))
  return workdir


def _assert_close(a, b, digits):
  step_a, pa = _params(a, digits)
  step_b, pb = _params(b, digits)
  assert step_a == step_b == 20
  for x, y in zip(pa, pb, strict=True):
    np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5)


def test_four_devices_match_one(reference, tmp_path, digits):
  out = _finish(_train(tmp_path, "--config.num_steps=20",
                       "--config.checkpoint_every=10", devices=4))
  assert "error" not in out.lower()
  _assert_close(reference, tmp_path, digits)


TINY_DIFFUSION = ["--config=experiments/configs/diffusion.py",
                  "--config.dataset=digits", "--config.batch_size=32",
                  "--config.channels=(8,)", "--config.num_res_blocks=1",
                  "--config.attention=False", "--config.log_every=3",
                  "--config.sample_every=0", "--config.num_steps=6",
                  "--config.checkpoint_every=6"]


def test_four_devices_match_one_for_the_diffusion_family(tmp_path, digits):
  one, four = tmp_path / "one", tmp_path / "four"
  procs = [_train(one, base=TINY_DIFFUSION),
           _train(four, base=TINY_DIFFUSION, devices=4)]
  for proc in procs:
    _finish(proc)
  (run, a, step_a), (_, b, step_b) = (train.restore_run(w, dataset=digits)
                                      for w in (one, four))
  assert int(step_a) == int(step_b) == 6
  # The same batches, noise and timesteps, split over 4 devices: the losses
  # agree to float tolerance, and so does the function the params compute.
  # The params themselves are not compared: a conv bias in front of a
  # GroupNorm has a zero gradient up to float noise, which Adam scales up
  # to steps of the learning rate in a direction set by summation order.
  losses = [[json.loads(l)["loss"] for l in
             (w / "metrics.jsonl").read_text().splitlines()]
            for w in (one, four)]
  assert len(losses[0]) == 2
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
  labels = np.arange(10, dtype=np.int32)
  samples = [np.asarray(diffusion_training.sample_with(
      run.settings, state, labels, jax.random.key(3), digits.image_shape,
      nfe=4)) for state in (a, b)]
  assert samples[0].std() > 0.05
  np.testing.assert_allclose(samples[0], samples[1], atol=2e-4)


def test_philox_on_four_cpu_devices_is_a_clear_error(tmp_path):
  proc = _train(tmp_path, "--config.num_steps=5",
                "--config.prng_impl=philox4x32", devices=4)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert ("prng_impl='philox4x32' does not compile on a mesh of 4 CPU "
          "devices") in out
  assert not (tmp_path / "checkpoints").exists()


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  proc = _train(tmp_path, "--config.num_steps=5", "--config.batch_size=30",
                devices=4)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 2
  assert "batch_size=30 is not divisible by the 4 devices" in out


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(reference, tmp_path, digits):
  port = _free_port()
  procs = [_train(tmp_path, "--config.num_steps=20",
                  "--config.checkpoint_every=10",
                  extra_env={"JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                             "JAX_NUM_PROCESSES": "2",
                             "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  for p in procs:
    _finish(p)
  _assert_close(reference, tmp_path, digits)


def _latest(workdir):
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*")
           if p.name.isdigit()]
  return max(steps, default=-1)


def test_sigkill_at_any_moment_then_resume_finishes(tmp_path, digits):
  """Kill -9 the run three times while it trains and saves (a checkpoint every
  3 steps, so saves are often in flight), re-run the same command, and reach
  the params of an uninterrupted run."""
  args = ["--config.num_steps=120", "--config.checkpoint_every=3"]
  rng = np.random.default_rng(0)
  for target in (12, 45, 80):
    proc = _train(tmp_path, *args, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and _latest(tmp_path) < target:
      time.sleep(0.01)
    time.sleep(float(rng.uniform(0.0, 0.2)))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target <= _latest(tmp_path) < 120  # it was killed mid-run
  _finish(_train(tmp_path, *args))
  straight = tmp_path.parent / (tmp_path.name + "_straight")
  _finish(_train(straight, *args))
  step, killed = _params(tmp_path, digits)
  _, clean = _params(straight, digits)
  assert step == 120
  for x, y in zip(killed, clean, strict=True):
    np.testing.assert_array_equal(x, y)


def _logged_steps(path):
  import json  # pylint: disable=g-import-not-at-top
  return [json.loads(l)["step"] for l in path.read_text().splitlines()]


def test_sigkill_with_periodic_evaluation_then_resume_finishes(
    tmp_path, digits):
  """Kill -9 while the run trains, evaluates and keeps best checkpoints
  (evaluation every 6 steps, regular saves every 4: best and regular saves
  of one step at 12, 24, ...), re-run the same command: it finishes with
  the params of an uninterrupted run, each step logged once. The runner's
  evaluation and best-checkpoint path is the same for every family; the GAN
  (two players, two optimisers) is run, the CVAE's kill path is the test
  above."""
  base = TINY_GAN
  args = ["--config.num_steps=48", "--config.checkpoint_every=4",
          "--config.eval_every=6", "--config.eval_num_per_class=5",
          "--config.log_every=6", "--config.best_metric=fid"]
  cache = {"CONDGEN_CACHE_DIR": os.environ.get(
      "CONDGEN_CACHE_DIR", str(tmp_path.parent / "classifier_cache"))}
  # the reference classifier is trained (and cached) by the straight run
  straight = tmp_path.parent / (tmp_path.name + "_straight")
  _finish(_train(straight, *args, base=base, extra_env=cache), timeout=600)
  rng = np.random.default_rng(1)
  killed = 0
  for target in (6, 18, 30):
    proc = _train(tmp_path, *args, base=base, extra_env=cache,
                  start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and _latest(tmp_path) < target:
      time.sleep(0.01)
    time.sleep(float(rng.uniform(0.0, 0.5)))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed += proc.returncode == -signal.SIGKILL
  assert killed == 3
  assert _latest(tmp_path) < 48
  _finish(_train(tmp_path, *args, base=base, extra_env=cache))
  step, resumed = _params(tmp_path, digits)
  _, clean = _params(straight, digits)
  assert step == 48
  for x, y in zip(resumed, clean, strict=True):
    np.testing.assert_array_equal(x, y)
  assert _logged_steps(tmp_path / "metrics.jsonl") == list(range(6, 49, 6))
  assert _logged_steps(tmp_path / "eval_metrics.jsonl") == list(
      range(6, 49, 6))
