"""Data parallelism: 1 vs 4 CPU devices, 2 processes vs 1, and SIGKILL safety.

Each run is a subprocess, since the device count is fixed at JAX start-up.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from condgen_jax.configs import common
from condgen_jax.core import parallel
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


def _losses(workdir):
  return [json.loads(l)["loss"] for l in
          (workdir / "metrics.jsonl").read_text().splitlines()]


def test_fsdp_on_four_devices_matches_one(reference, tmp_path, digits):
  """Parameters and optimizer state sharded over 4 devices: the same losses
  and parameters as the replicated 1-device run; checkpoints saved and the
  last sample grid drawn from the sharded state; the checkpoint restores
  here, on one device."""
  out = _finish(_train(tmp_path, "--config.num_steps=20",
                       "--config.checkpoint_every=10",
                       "--config.param_sharding=fsdp", devices=4))
  assert "error" not in out.lower()
  assert json.loads((tmp_path / "config.json").read_text())[
      "param_sharding"] == "fsdp"
  assert (tmp_path / "samples" / "step_00000020.png").exists()
  np.testing.assert_allclose(_losses(tmp_path), _losses(reference),
                             rtol=1e-5)
  _assert_close(reference, tmp_path, digits)


def _state_bytes(state) -> tuple[int, int]:
  """(bytes of `state` in all, bytes of its shards on the first device)."""
  leaves = jax.tree.leaves(state)
  return (sum(x.nbytes for x in leaves),
          sum(s.data.nbytes for x in leaves for s in x.addressable_shards
              if s.device == jax.devices()[0]))


def runner_steps(model: str, steps: int, out=None, **config) -> dict:
  """`steps` steps of `model` on digits through the runner's `setup` and
  compiled step (no checkpoints, logs or samples): each step's metrics, the
  final state's float leaves and its `_state_bytes` before and after. Run
  in this process and, with 4 devices, by `_RUNNER_STEPS` (which saves the
  result to `out`)."""
  c = common.base_config(model)
  c.update(dataset="digits", **config)
  run = train.setup(c)
  result = {"devices": jax.device_count(), "init": _state_bytes(run.state)}
  perm = parallel.replicate_host_array(
      np.arange(len(run.dataset.train_labels), dtype=np.int32), run.mesh)
  state, metrics = run.state, []
  for _ in range(steps):  # the first call donates run.state
    state, m = run.steps(1)(state, run.images, run.labels, perm,
                            run.rngs["step"])
    metrics.append(parallel.to_host(m))
  result["trained"] = _state_bytes(state)
  result["metrics"] = {k: [float(m[k]) for m in metrics] for k in metrics[0]}
  leaves = parallel.to_host([x for x in jax.tree.leaves(state)
                             if jnp.issubdtype(x.dtype, jnp.floating)])
  if out is not None:
    np.savez(out, *leaves)
    pathlib.Path(out).with_suffix(".json").write_text(json.dumps(result))
  return {**result, "leaves": leaves}


_RUNNER_STEPS = """
import sys
sys.path.insert(0, "tests")
import test_parallel
for model, steps, out, config in {jobs!r}:
  test_parallel.runner_steps(model, steps, out=out, **config)
"""

# Each (model, steps, config): CGAN-MLP (two players, two Adam states, ~5.7
# M floats, nearly all in large matrices) and a small UNet (convolutions,
# GroupNorm, 16 channels so that its kernels are sharded).
_FSDP_RUNS = (
    ("cgan_mlp", 5, {"batch_size": 32}),
    ("diffusion", 3, {"batch_size": 32, "channels": (16,),
                      "num_res_blocks": 1, "attention": False}),
)


def test_fsdp_gan_and_diffusion_on_four_devices_match_one(tmp_path):
  """The train state sharded over 4 devices: the same metrics and state
  after a few steps as on one device, and each device holds about a
  quarter of CGAN-MLP's state before and after training."""
  jobs = [(model, steps, str(tmp_path / f"{model}.npz"),
           {**config, "param_sharding": "fsdp"})
          for model, steps, config in _FSDP_RUNS]
  proc = subprocess.Popen([sys.executable, "-c",
                           _RUNNER_STEPS.format(jobs=jobs)],
                          cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  # meanwhile, on 1 device
  ones = [runner_steps(*job[:2], **job[3]) for job in jobs]
  _finish(proc)
  for (model, _, out, _), one in zip(jobs, ones):
    four = json.loads(pathlib.Path(out).with_suffix(".json").read_text())
    assert (one["devices"], four["devices"]) == (1, 4)
    assert one["init"][0] == one["init"][1] == four["init"][0]
    assert sorted(one["metrics"]) == sorted(four["metrics"])
    for k, values in one["metrics"].items():
      np.testing.assert_allclose(four["metrics"][k], values, rtol=1e-4,
                                 atol=1e-5, err_msg=f"{model}: {k}")
    with np.load(out) as f:
      leaves = [f[f"arr_{i}"] for i in range(len(f.files))]
    assert len(leaves) == len(one["leaves"])
    for x, y in zip(leaves, one["leaves"], strict=True):
      # The UNet's biases are not compared: a conv bias in front of a
      # GroupNorm has a zero gradient up to float noise, which Adam scales
      # up (test_four_devices_match_one_for_the_diffusion_family).
      if model != "diffusion" or x.ndim > 1:
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5,
                                   err_msg=model)
    for total, device0 in (four["init"], four["trained"]):
      if model == "cgan_mlp":
        assert total > 2e7
        # ~1% of the bytes are replicated leaves: biases, counts, the step
        assert 0.25 <= device0 / total < 0.3, (device0, total)
      else:  # many small leaves, replicated
        assert device0 / total < 0.5, (device0, total)


def _spec(shape, dtype=np.float32, devices=4):
  mesh = jax.sharding.AbstractMesh((devices,), (parallel.DATA_AXIS,))
  tree = {"x": jax.ShapeDtypeStruct(shape, dtype)}
  return parallel.state_shardings(tree, mesh, "fsdp")["x"].spec


@pytest.mark.parametrize("shape, spec", [
    ((512, 256), P("data")),  # the largest dimension
    ((74, 32), P(None, "data")),  # 74 is not divisible by 4
    ((3, 3, 64, 64), P(None, None, "data")),  # equal ones: the first
    ((1024,), P("data")),  # the smallest sharded size
    ((1000, 3), P("data")),
    ((1023, 3), P()),  # no dimension divisible by 4
    ((16, 16), P()),  # 256 elements: small, replicated
    ((1020,), P()),
    ((256,), P()),
    ((), P()),
])
def test_fsdp_rule_shards_the_largest_divisible_dimension(shape, spec):
  assert _spec(shape) == spec


def test_fsdp_rule_replicates_keys_one_device_and_replicated_mode():
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), 4096))
  assert _spec(keys.shape, keys.dtype) == P()
  assert _spec((512, 256), devices=1) == P()
  one = jax.sharding.Mesh(np.array(jax.devices()[:1]), (parallel.DATA_AXIS,))
  tree = {"w": jnp.zeros((512, 256)), "b": jnp.zeros(())}
  for mode in parallel.PARAM_SHARDINGS:
    shardings = parallel.state_shardings(tree, one, mode)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings))
  mesh = jax.sharding.AbstractMesh((4,), (parallel.DATA_AXIS,))
  shardings = parallel.state_shardings(tree, mesh, "replicated")
  assert [s.spec for s in jax.tree.leaves(shardings)] == [P(), P()]
  with pytest.raises(ValueError, match="param_sharding 'zero3'"):
    parallel.state_shardings(tree, mesh, "zero3")
  config = common.base_config("cvae")
  config.param_sharding = "zero3"
  with pytest.raises(ValueError, match="param_sharding 'zero3'"):
    train.resolve(config)


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


def _two_processes(workdir, *args, ranks=(0, 1)):
  """The same training command as processes `ranks` of a 2-process run."""
  port = _free_port()
  return [_train(workdir, *args,
                 extra_env={"JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                            "JAX_NUM_PROCESSES": "2",
                            "JAX_PROCESS_ID": str(i)}) for i in ranks]


def test_two_processes_match_one(reference, tmp_path, digits):
  procs = _two_processes(tmp_path, "--config.num_steps=20",
                         "--config.checkpoint_every=10")
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
  _finish_like_a_straight_run(
      tmp_path, tmp_path.parent / (tmp_path.name + "_straight"), args, 120,
      digits)


def _finish_like_a_straight_run(workdir, straight, args, steps, digits):
  """Finishes the interrupted run in `workdir` with the same command, trains
  `straight` uninterrupted, and checks both reach `steps` with bit-identical
  params."""
  _finish(_train(workdir, *args))
  _finish(_train(straight, *args))
  step, resumed = _params(workdir, digits)
  _, clean = _params(straight, digits)
  assert step == steps
  for x, y in zip(resumed, clean, strict=True):
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


# A run of ~3,000 tiny steps (a few seconds of training) whose only periodic
# checkpoint is the last: what a SIGTERM saves is all a resume can start from.
PREEMPTIBLE = ["--config.num_steps=3000", "--config.checkpoint_every=0",
               "--config.log_every=50"]
_STOPPED = re.compile(r"stopped by SIGTERM: saved the checkpoint of step "
                      r"(\d+) in (\S+); the same command resumes from it\.")


def _sigterm(procs, workdir, after_step, delay):
  """SIGTERM `procs[0]` `delay` seconds after the run logged a step past
  `after_step` (with `after_step=None`, `delay` seconds after the start:
  while JAX starts or the step compiles); waits for every process. Returns
  their outputs and the seconds from the signal to the last exit."""
  deadline = time.time() + 240
  if after_step is not None:
    log = workdir / "metrics.jsonl"
    while time.time() < deadline and not (
        log.exists() and any(s > after_step for s in _logged_steps(log))):
      time.sleep(0.01)
  time.sleep(delay)
  start = time.monotonic()
  procs[0].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=240)[0] for p in procs]
  return outs, time.monotonic() - start


def test_sigterm_at_random_moments_saves_and_resumes_bit_identically(
    tmp_path, digits):
  """SIGTERM three times (once during start-up, twice while training): each
  time the run saves the step it reached and exits with 143, naming it;
  the same command then resumes, and the finished run has the params of one
  never stopped. The seconds from signal to exit are printed."""
  rng = np.random.default_rng(2)
  workdir, stops = tmp_path / "stopped", []
  for after in (None, 0, 1):
    after_step = None if after is None else stops[-1][0]
    delay = 2.0 if after is None else float(rng.uniform(0.0, 0.5))
    proc = _train(workdir, *PREEMPTIBLE)
    (out,), seconds = _sigterm([proc], workdir, after_step, delay)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    match = _STOPPED.search(out)
    assert match, out[-3000:]
    step = int(match.group(1))
    assert (pathlib.Path(match.group(2)) / str(step)).exists()
    stops.append((step, seconds))
  steps = [s for s, _ in stops]
  assert steps[0] == 0  # stopped before training: the initial state
  assert 0 < steps[1] < steps[2] < 3000, stops
  print(f"SIGTERM -> exit (step, seconds): {stops}")
  _finish_like_a_straight_run(workdir, tmp_path / "straight", PREEMPTIBLE,
                              3000, digits)
  logged = _logged_steps(workdir / "metrics.jsonl")
  assert logged == list(range(50, 3001, 50))  # each logged step once


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """The processes agree on the stop at each call: both save the same step
  and exit with 143."""
  procs = _two_processes(tmp_path, *PREEMPTIBLE, ranks=(1, 0))
  # process 1, which writes nothing, gets the signal; process 0 saves too
  outs, seconds = _sigterm(procs, tmp_path, 0, 0.2)
  print(f"two processes: SIGTERM -> exit {seconds:.2f} s")
  for proc, out in zip(procs, outs):
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
  steps = {int(_STOPPED.search(out).group(1)) for out in outs}
  assert len(steps) == 1, outs
  step = steps.pop()
  # the one checkpoint, saved by both together (the resume is the same as
  # a single process's, tested above)
  assert 0 < step < 3000 and _latest(tmp_path) == step
