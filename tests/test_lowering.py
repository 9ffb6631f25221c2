"""Every family's programs lower for accelerators, checked on a CPU host.

`jax.export` lowers (no compile) each family's train step and sampler for
'cuda' and 'tpu' with the settings of the tiny digits runs of
tests/fixtures/before_layout (8x8x1 images, batch 16); the StableHLO must
not call back into the host nor hold the project's XLA:CPU kernels or
anything else CPU-only. `kernels='auto'` must mean the stock layers off
CPU, and the process-wide CPU defaults of `core.runtime` (applied by the
conftest) must leave programs for other platforms as plain JAX makes them.
"""

import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from condgen_jax import families
from condgen_jax.core import checkpointing
from condgen_jax.core import runtime
from condgen_jax.nn import kernels as kernels_lib
from condgen_jax.runner import train as train_lib
from condgen_jax.tools import export as export_lib

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "before_layout"
FAMILIES = ("cvae", "cgan_mlp", "acgan", "diffusion", "cvae_sop", "pix2pix")
ACCELERATORS = ("cuda", "tpu")

# custom_call targets that any backend implements: sharding annotations
# and the shape checks of shape-polymorphic exports.
ALLOWED_CUSTOM_CALLS = frozenset({
    "Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape",
    "shape_assertion", "annotate_device_placement"})
# The functions of the XLA:CPU kernels (`nn.kernels.CPU`), as the export's
# debug locations name them.
CPU_KERNEL_FUNCTIONS = (
    "_channel_sum", "batch_norm_train", "_batch_norm_fwd", "taps_conv",
    "_taps_forward", "thin_input_conv", "stride2_conv", "_stride2_s2d",
    "subpixel_kernel")


def custom_call_targets(text: str) -> set[str]:
  """The custom_call targets of a StableHLO module, pretty or generic."""
  return (set(re.findall(r"custom_call\s*@([\w.$-]+)", text))
          | set(re.findall(r'call_target_name\s*=\s*"([^"]+)"', text)))


def cpu_only_problems(text: str) -> list[str]:
  """What in module `text` would not run, or not run as intended, off CPU:
  custom calls outside `ALLOWED_CUSTOM_CALLS` (host callbacks such as
  xla_ffi_python_cpu_callback among them) and the project's CPU kernels."""
  problems = [f"custom_call @{t}" for t in sorted(custom_call_targets(text))
              if t not in ALLOWED_CUSTOM_CALLS]
  if "callback" in text:
    problems.append("a host callback")
  problems += [f"CPU kernel {name}" for name in CPU_KERNEL_FUNCTIONS
               if f'loc("{name}"' in text]
  return problems


def without_locations(text: str) -> str:
  """A module's text without its debug locations (`#loc` definitions and
  every ` loc(...)`), which name Python files, lines and the functions a
  shared lowering was first traced in."""
  lines = [line for line in text.splitlines() if not line.startswith("#loc")]
  out, text = [], "\n".join(lines)
  i = 0
  while (j := text.find(" loc(", i)) >= 0:
    out.append(text[i:j])
    depth, k = 0, j + len(" loc")
    while True:  # to the parenthesis closing this loc(
      depth += {"(": 1, ")": -1}.get(text[k], 0)
      k += 1
      if depth == 0:
        break
    i = k
  out.append(text[i:])
  return "".join(out)


@functools.lru_cache(maxsize=None)
def fixture_settings(name: str):
  return train_lib.resolve(checkpointing.read_config(FIXTURE / name))


def lower_family(s, image_shape, num_classes, platform: str):
  """(train step, sampler) of settings `s` exported for `platform` from
  abstract inputs: the state's shapes, a batch of `s.batch_size`."""
  family = families.get_family(s.model)
  key = jax.random.key(0)
  state = jax.eval_shape(
      lambda k: family.create_state(s, image_shape, num_classes, k), key)
  b = s.batch_size
  batch = {"image": jax.ShapeDtypeStruct((b, *image_shape), jnp.float32),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
  if s.condition_kind == "image":
    shape = tuple(family.image_condition(s).shape(image_shape))
    conditions = jax.ShapeDtypeStruct((b, *shape), jnp.float32)
  else:
    conditions = batch["label"]
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype)
  lower = functools.partial(jax.export.export, platforms=(platform,))
  step = lower(jax.jit(family.make_train_step(s, image_shape, num_classes)))(
      state, batch, rng)
  sample = lower(jax.jit(family.make_sample_fn(s, image_shape, num_classes)))(
      state, conditions, rng)
  return step, sample


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("name", FAMILIES)
def test_train_step_and_sampler_lower_without_cpu_only_calls(
    digits, name, platform):
  s = export_lib.platform_settings(fixture_settings(name), (platform,))
  assert s.get("kernels", "stock") == "stock"
  step, sample = lower_family(s, digits.image_shape, digits.num_classes,
                              platform)
  for exported in (step, sample):
    assert exported.platforms == (platform,)
    assert cpu_only_problems(exported.mlir_module()) == []
  assert sample.out_avals[0].shape == (s.batch_size, *digits.image_shape)
  assert sample.out_avals[0].dtype == jnp.float32
  assert "loss" in step.out_tree.unflatten(step.out_avals)[1]


def test_the_runners_fused_steps_lower_for_accelerators(digits):
  # The k-step function the training loop compiles: batches drawn on the
  # device from the epoch's permutation, k steps in a lax.scan.
  s = export_lib.platform_settings(fixture_settings("acgan"), ACCELERATORS)
  run = train_lib.setup(s, digits)
  fn = train_lib.make_multi_step(run, 2)
  perm = jax.ShapeDtypeStruct((len(digits.train_labels),), jnp.int32)
  for platform in ACCELERATORS:
    exported = jax.export.export(fn, platforms=(platform,))(
        run.abstract_state, run.images, run.labels, perm, run.rngs["step"])
    assert cpu_only_problems(exported.mlir_module()) == []


def test_the_check_finds_host_callbacks_and_cpu_kernels(digits):
  def with_callback(x):
    return jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct((3,),
                                                               jnp.float32), x)
  text = jax.jit(with_callback).lower(jnp.zeros(3)).as_text()
  assert "custom_call @xla_ffi_python_cpu_callback" in cpu_only_problems(text)
  # The settings as this CPU host resolves 'auto' by itself, unchanged by
  # `platform_settings`: the XLA:CPU kernels end up in the cuda program.
  s = fixture_settings("acgan")
  assert s.kernels == "auto"
  step, sample = lower_family(s, digits.image_shape, digits.num_classes,
                              "cuda")
  found = cpu_only_problems(step.mlir_module())
  assert "CPU kernel batch_norm_train" in found
  assert "CPU kernel taps_conv" in found
  assert any(p.startswith("CPU kernel") for p in
             cpu_only_problems(sample.mlir_module()))


def test_auto_kernels_are_the_stock_ones_off_cpu(digits):
  assert kernels_lib.resolve("auto", "cuda") is kernels_lib.STOCK
  assert kernels_lib.resolve("auto", "tpu") is kernels_lib.STOCK
  assert kernels_lib.resolve("auto", "cpu") is kernels_lib.CPU
  assert kernels_lib.resolve_name("auto", ("cpu", "cuda")) == "stock"
  assert kernels_lib.resolve_name("auto", ("cpu",)) == "cpu"
  assert kernels_lib.resolve_name("cpu", ("tpu",)) == "cpu"  # as asked
  assert kernels_lib.resolve_name("auto") == "cpu"  # this host's backend
  with pytest.raises(ValueError, match="Unknown kernels"):
    kernels_lib.resolve_name("fast", ("cuda",))
  s = fixture_settings("pix2pix")
  auto = export_lib.platform_settings(s, ("tpu",))
  stock = train_lib.replace(s, kernels="stock")
  assert auto.kernels == "stock"
  assert export_lib.platform_settings(s, ("cpu",)).kernels == "cpu"
  _, a = lower_family(auto, digits.image_shape, digits.num_classes, "tpu")
  _, b = lower_family(stock, digits.image_shape, digits.num_classes, "tpu")
  assert without_locations(a.mlir_module()) == without_locations(
      b.mlir_module())


# One random program, exported for each platform. Run here (with the
# conftest's `runtime.apply_cpu_defaults()`) and in a plain subprocess.
RANDOM_PROGRAM = """
import jax
import jax.numpy as jnp

def draw(key_data):
  key = jax.random.wrap_key_data(key_data)
  return (jax.random.normal(key, (16,)),
          jax.random.bernoulli(jax.random.fold_in(key, 1), 0.3, (16,)))

def modules():
  arg = jax.ShapeDtypeStruct((2,), jnp.uint32)
  return {p: jax.export.export(jax.jit(draw), platforms=(p,))(arg)
          .mlir_module() for p in ("cpu", "cuda", "tpu")}
"""




def test_the_cpu_defaults_leave_accelerator_programs_alone(tmp_path):
  namespace = {}
  code = compile(RANDOM_PROGRAM, "<string>", "exec")
  exec(code, namespace)  # pylint: disable=exec-used
  here = {p: without_locations(t) for p, t in namespace["modules"]().items()}
  env = {**os.environ, "CONDGEN_KEEP_XLA_FLAGS": "1"}
  env.pop("XLA_FLAGS", None)
  r = subprocess.run(
      [sys.executable, "-c", RANDOM_PROGRAM + "\nimport json, sys\n"
       "json.dump(modules(), sys.stdout)"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  plain = {p: without_locations(t) for p, t in json.loads(r.stdout).items()}
  for platform in ACCELERATORS:
    assert here[platform] == plain[platform], platform
  # On CPU the unrolled threefry replaces JAX's rolled loop: the comparison
  # sees the defaults where they apply.
  assert "stablehlo.while" in plain["cpu"]
  assert "stablehlo.while" not in here["cpu"]
  assert here["cpu"] != plain["cpu"]


def test_the_xla_flags_runtime_adds_are_cpu_flags(monkeypatch):
  assert runtime.CPU_FLAGS
  assert all(f.startswith("--xla_cpu_") for f in runtime.CPU_FLAGS)
  monkeypatch.delenv("CONDGEN_KEEP_XLA_FLAGS", raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=0")
  added = set(runtime.set_default_xla_flags().split()) - {
      "--xla_gpu_autotune_level=0"}
  assert added and all(f.startswith("--xla_cpu_") for f in added)
