r"""Times the families on whatever accelerator JAX finds; writes one JSON.

  python -m experiments.accelerator_check --out=accel.json \
      [--families=cvae,cgan_mlp,acgan,diffusion,cvae_sop,pix2pix] \
      [--steps=64] [--epochs=acgan,diffusion] [--dataset=mnist] \
      [--peak_size=8192] [--workdir_root=DIR]

For each config of --families (condgen_jax/configs/NAME.py) at its own
batch size: the runner's compiled training call (`Run.steps`, the steps a
call fuses on this backend), timed over --steps steps after a warm-up call,
in float32 and, when the config has a `compute_dtype` key, in bfloat16
(else a note says why not): step time, images/s, the step's FLOPs (XLA's
cost analysis) and the fraction of the device's measured bf16 matmul peak
(a jnp.dot of two --peak_size square bf16 matrices) they reach. Then each
config of --epochs trains for one epoch of --dataset through the library's
runner (`condgen_jax.api.train`, compile and sample grid included), is
loaded back and sampled (10 per class; the sampler's images/s at batch 256).
The JSON is rewritten after each item, so a run cut short keeps what it
measured. See docs/accelerators.md.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

from absl import app
from absl import flags

from condgen_jax.core import runtime

FAMILIES = ("cvae", "cgan_mlp", "acgan", "diffusion", "cvae_sop", "pix2pix")

_OUT = flags.DEFINE_string("out", None, "Output JSON file.")
_FAMILIES = flags.DEFINE_list("families", list(FAMILIES),
                              "Configs whose training step is timed.")
_STEPS = flags.DEFINE_integer("steps", 64, "Timed training steps per "
                              "config and dtype (after one warm-up call).")
_EPOCHS = flags.DEFINE_list("epochs", ["acgan", "diffusion"],
                            "Configs trained for one epoch ('' = none).")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset for every config "
                               "(default: each config's, MNIST).")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", None, "n of the n x n bf16 "
                                  "matmul timed as the peak (default 8192; "
                                  "1024 on CPU).")
_WORKDIR_ROOT = flags.DEFINE_string("workdir_root", None, "Where the epoch "
                                    "runs' workdirs go (default: a "
                                    "temporary folder).")
flags.mark_flags_as_required(["out"])


def matmul_peak_tflops(n: int, dtype) -> float:
  """TFLOP/s of an n x n jnp.dot in `dtype`, best of 5 after a warm-up."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from condgen_jax.tools import benchmark  # pylint: disable=g-import-not-at-top
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  seconds = benchmark.best_time(lambda: dot(a, b).block_until_ready())
  return 2.0 * n ** 3 / seconds / 1e12


def get_config(name: str):
  """condgen_jax/configs/NAME.py's config, on --dataset when given."""
  import importlib  # pylint: disable=g-import-not-at-top
  try:
    module = importlib.import_module(f"condgen_jax.configs.{name}")
  except ModuleNotFoundError:
    raise ValueError(f"no config {name!r} in condgen_jax/configs/.") from None
  config = module.get_config()
  if _DATASET.value:
    config.dataset = _DATASET.value
  return config


def time_train_step(config, steps: int, peak_tflops: float, dataset=None
                    ) -> dict:
  """The runner's compiled training call of `config`, timed over about
  `steps` steps (whole calls) after one warm-up call."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from condgen_jax.core import parallel  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  from condgen_jax.tools import benchmark  # pylint: disable=g-import-not-at-top
  run = train.setup(config, dataset)
  k = max(1, min(train.resolve_steps_per_call(run.settings), steps))
  t = time.perf_counter()
  compiled = run.steps(k)
  compile_s = time.perf_counter() - t
  flops = benchmark.step_flops(run.steps(1))  # a loop's body counts once
  perm = jax.jit(lambda: jnp.arange(len(run.dataset.train_labels)),
                 out_shardings=parallel.replicated(run.mesh))()
  state, metrics = compiled(run.state, run.images, run.labels, perm,
                            run.rngs["step"])
  jax.block_until_ready(metrics)
  calls = max(1, steps // k)
  t = time.perf_counter()
  for _ in range(calls):
    state, metrics = compiled(state, run.images, run.labels, perm,
                              run.rngs["step"])
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t) / (calls * k)
  tflops = flops / step_s / 1e12
  return {"batch_size": int(run.settings.batch_size), "steps_per_call": k,
          "timed_steps": calls * k, "compile_s": round(compile_s, 2),
          "step_ms": round(step_s * 1e3, 3),
          "images_per_s": round(run.settings.batch_size / step_s, 1),
          "flops_per_step": flops, "achieved_tflops": round(tflops, 3),
          "fraction_of_bf16_peak": round(tflops / peak_tflops, 4),
          "loss": float(metrics["loss"])}


def train_one_epoch(name: str, root: pathlib.Path) -> dict:
  """Trains config `name` for one epoch into root/NAME through the
  library's runner, then loads and samples it."""
  import condgen_jax as cg  # pylint: disable=g-import-not-at-top
  from condgen_jax.data import datasets as data_lib  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  from condgen_jax.tools import benchmark  # pylint: disable=g-import-not-at-top
  config = get_config(name)
  s = train.resolve(config)
  dataset = train.run_dataset(s)
  steps = data_lib.steps_per_epoch(len(dataset.train_labels), s.batch_size)
  config.num_steps = steps
  config.log_every = 0
  config.checkpoint_every = 0
  config.sample_every = 0
  config.eval_every = 0
  workdir = root / name
  t = time.perf_counter()
  cg.train(config, workdir, dataset)
  epoch_s = time.perf_counter() - t
  last = train.read_jsonl(workdir / "metrics.jsonl")[-1]
  model = cg.load(workdir, dataset=dataset)
  t = time.perf_counter()
  images, _ = model.sample(num_per_class=10)
  sample_s = time.perf_counter() - t
  nfe = model.settings.nfe if "nfe" in model.settings else 20
  speed = benchmark.sampling_speed(model, model.state, batch_size=256,
                                   nfe=nfe, min_seconds=2.0)
  return {"dataset": dataset.name, "batch_size": int(s.batch_size),
          "steps": steps, "epoch_s": round(epoch_s, 2),
          "epoch_images_per_s": round(steps * s.batch_size / epoch_s, 1),
          "last_metrics": {k: v for k, v in last.items()
                           if isinstance(v, (int, float))},
          "sample_s": round(sample_s, 2),
          "samples_in_unit_range": bool(0.0 <= images.min()
                                        and images.max() <= 1.0),
          **speed}


def main(argv):
  runtime.start(argv)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from condgen_jax.core import hardware  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    if _STEPS.value <= 0:
      raise ValueError(f"--steps must be positive; got {_STEPS.value}.")
    families = [f for f in _FAMILIES.value if f]
    epochs = [f for f in _EPOCHS.value if f]
    configs = {name: get_config(name) for name in families + epochs}
    for config in configs.values():
      train.resolve(config)  # bad names and values before any work
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    n = _PEAK_SIZE.value or (1024 if device.platform == "cpu" else 8192)
    peak = matmul_peak_tflops(n, jnp.bfloat16)
    report = {
        "platform": device.platform, "device_kind": device.device_kind,
        "device_count": jax.device_count(), "jax_version": jax.__version__,
        "hardware": hardware.describe(),
        "peak": {"matmul_size": n, "bf16_tflops": round(peak, 2),
                 "fp32_tflops": round(matmul_peak_tflops(n, jnp.float32),
                                      2)},
        "train_steps": {}, "epochs": {}, "notes": []}

    def save():
      tmp = out.parent / f".{out.name}.tmp"
      tmp.write_text(json.dumps(report, indent=1) + "\n")
      tmp.replace(out)

    save()
    for name in families:
      result = {"float32": time_train_step(configs[name], _STEPS.value, peak)}
      if "compute_dtype" in configs[name]:
        bf16 = get_config(name)
        bf16.compute_dtype = "bfloat16"
        result["bfloat16"] = time_train_step(bf16, _STEPS.value, peak)
      else:
        result["bfloat16"] = None
        note = ("bfloat16 not timed: the configs have no compute_dtype key "
                "in this version")
        if note not in report["notes"]:
          report["notes"].append(note)
      report["train_steps"][name] = result
      save()
      print(f"{name}: {result['float32']['images_per_s']} images/s fp32",
            flush=True)
    root = (pathlib.Path(_WORKDIR_ROOT.value) if _WORKDIR_ROOT.value
            else pathlib.Path(tempfile.mkdtemp(prefix="accelerator_check_")))
    for name in epochs:
      report["epochs"][name] = train_one_epoch(name, root)
      save()
      print(f"{name}: one epoch in {report['epochs'][name]['epoch_s']} s",
            flush=True)
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
