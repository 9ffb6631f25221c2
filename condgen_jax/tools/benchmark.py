"""Training-step speed, as a fraction of the machine's measured matmul peak.

`benchmark(config)` compiles the run's fused training call (`steps_per_call`
steps), times it on device-resident data, reads its FLOPs from XLA's cost
analysis and measures an fp32 n x n matmul (n = 4096 by default) in the
same process (the faster of numpy's BLAS and XLA's dot) as the peak to
compare with. Speed is stated as that ratio, since bare times vary between
machines.
`sampling_speed` times the model's sampler (for the diffusion family at a
given NFE) in images/s.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from condgen_jax.core import parallel
from condgen_jax.data import datasets as data_lib
from condgen_jax.data import streaming
from condgen_jax.runner import train


def best_time(fn, repeats: int = 5) -> float:
  """The shortest of `repeats` wall times of `fn()`, in seconds."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def matmul_peak_gflops(n: int = 4096, repeats: int = 5) -> dict:
  """fp32 n x n matmul GFLOP/s: numpy's BLAS and XLA's dot, best of repeats."""
  flops = 2.0 * n ** 3
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, n), dtype=np.float32)
  b = rng.standard_normal((n, n), dtype=np.float32)
  np_s = best_time(lambda: a @ b, repeats)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  dot = jax.jit(jnp.dot)
  dot(ja, jb).block_until_ready()
  jax_s = best_time(lambda: dot(ja, jb).block_until_ready(), repeats)
  return {"numpy_gflops": flops / np_s / 1e9, "jax_gflops": flops / jax_s / 1e9}


def step_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan")))


def sampling_speed(run, state, *, batch_size: int = 256, nfe: int = 20,
                   min_seconds: float = 2.0, sampler: str | None = None
                   ) -> dict:
  """Images/s of the run's sampler on one batch of `batch_size` conditions
  (compiled first); `nfe` (and `sampler`, None = the run's) apply to
  families with that option (the diffusion family; guidance as
  configured)."""
  has_nfe = "nfe" in getattr(run.family, "OPTIONS", {})
  run = train.with_sampling_options(run, nfe=nfe if has_nfe else None,
                                    sampler=sampler)
  ds = run.dataset
  fn = jax.jit(run.family.make_sample_fn(run.settings, ds.image_shape,
                                         ds.num_classes))
  labels = jnp.arange(batch_size, dtype=jnp.int32) % ds.num_classes
  key = jax.random.key(0)
  fn(state, labels, key).block_until_ready()
  calls, t = 0, time.perf_counter()
  while calls < 1 or time.perf_counter() - t < min_seconds:
    fn(state, labels, jax.random.fold_in(key, calls)).block_until_ready()
    calls += 1
  elapsed = time.perf_counter() - t
  return {"sample_batch_size": batch_size,
          "sample_nfe": nfe if has_nfe else None,
          "sample_images_per_s": round(calls * batch_size / elapsed, 1)}


def benchmark(config, *, min_seconds: float = 5.0, warmup_calls: int = 2,
              dataset=None, peak: dict | None = None, peak_size: int = 4096,
              sample_nfe: int | None = None,
              samplers: tuple[str, ...] = ()) -> dict:
  """Times `config`'s training call; returns the JSON-able report. With
  `sample_nfe`, also the sampler's images/s (`sampling_speed`), and with
  `samplers` each named sampler's at that nfe ('sampler_images_per_s'). The peak is
  `peak`, else measured on `peak_size` x `peak_size` matrices (the report's
  `peak_matmul_size`, None for a given `peak`). In-memory datasets only:
  the step of a streaming one ('tfds:NAME') waits on the host's reads."""
  if streaming.is_streaming(dataset or config.dataset):
    raise ValueError(f"benchmark times the step on in-memory data; "
                     f"{config.dataset!r} is streamed. Use one of "
                     f"{data_lib.DATASETS}.")
  run = train.setup(config, dataset)
  k = train.resolve_steps_per_call(config)
  t = time.perf_counter()
  compiled = run.steps(k)
  compile_s = time.perf_counter() - t
  # XLA's cost analysis counts a while loop's body once, so the FLOPs of one
  # step come from the single-step program.
  flops_per_step = step_flops(run.steps(1))
  perm = jax.jit(lambda: jnp.arange(len(run.dataset.train_labels)),
                 out_shardings=parallel.replicated(run.mesh))()
  state = run.state

  def call(state):
    return compiled(state, run.images, run.labels, perm, run.rngs["step"])

  for _ in range(warmup_calls):
    state, metrics = call(state)
  jax.block_until_ready(metrics)
  calls, t = 0, time.perf_counter()
  while True:
    state, metrics = call(state)
    calls += 1
    if calls % 4 == 0 or calls < 4:
      jax.block_until_ready(metrics)
      elapsed = time.perf_counter() - t
      if elapsed >= min_seconds and calls >= 3:
        break
  jax.block_until_ready(state)
  elapsed = time.perf_counter() - t
  step_s = elapsed / (calls * k)
  measured_size = None if peak else peak_size
  peak = peak or matmul_peak_gflops(peak_size)
  peak_gflops = max(peak.values())
  achieved = flops_per_step / step_s / 1e9
  device = jax.devices()[0]
  report = {
      "model": config.model, "dataset": config.dataset,
      "prng_impl": str(jax.random.key_impl(run.rngs["step"])),
      "batch_size": int(config.batch_size), "steps_per_call": k,
      "compile_s": round(compile_s, 3),
      "step_ms": round(step_s * 1e3, 3),
      "images_per_s": round(config.batch_size / step_s, 1),
      "flops_per_step": flops_per_step,
      "achieved_gflops": round(achieved, 2),
      "peak_gflops": round(peak_gflops, 2),
      "peak_numpy_gflops": round(peak["numpy_gflops"], 2),
      "peak_jax_gflops": round(peak["jax_gflops"], 2),
      "peak_matmul_size": measured_size,
      "fraction_of_peak": round(achieved / peak_gflops, 4),
      "device_kind": device.device_kind, "platform": device.platform,
      "device_count": jax.device_count(),
      "timed_steps": calls * k,
  }
  if sample_nfe is not None:
    report.update(sampling_speed(run, state, nfe=sample_nfe))
    report["sampler_images_per_s"] = {
        name: sampling_speed(run, state, nfe=sample_nfe, sampler=name)[
            "sample_images_per_s"] for name in samplers}
  return report
