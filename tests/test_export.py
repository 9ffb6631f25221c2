"""condgen_jax/tools/export.py and experiments/export.py: a trained run's
sampler as a `jax.export` artifact that jax alone runs.

The trained runs are the committed tiny workdirs of
tests/fixtures/before_layout (3 steps on digits, as tests/test_api.py)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import condgen_jax as cg
from condgen_jax import api
from condgen_jax import families
from condgen_jax.core import parallel
from condgen_jax.runner import train as train_lib
from condgen_jax.tools import export
from conftest import tiny_cvae_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "before_layout"


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "experiments.export", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def library_samples(run, conditions, key, **changes):
  """The family's own sampler, compiled here, on the same inputs."""
  s = train_lib.replace(run.settings, **changes) if changes else run.settings
  ds = run.dataset
  fn = run.family.make_sample_fn(s, ds.image_shape, ds.num_classes)
  return np.asarray(jax.jit(fn)(run.state, conditions, key))


# Runs in a fresh interpreter with jax and numpy only: argv = artifact,
# labels .npy, output folder, then key seeds (writes images<seed>.npy).
JAX_ONLY = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    path, labels, out, *seeds = sys.argv[1:]
    exp = jax.export.deserialize(bytearray(open(path, "rb").read()))
    for seed in seeds:
      key_data = jax.random.key_data(jax.random.key(int(seed)))
      images = exp.call(np.load(labels), key_data)
      np.save(f"{out}/images{seed}.npy", np.asarray(images))
    assert "condgen_jax" not in sys.modules, "condgen_jax was imported"
""")


def test_a_cpu_export_runs_with_jax_alone_and_matches_the_library(tmp_path):
  out = tmp_path / "cvae.jax"
  r = run_cli(f"--workdir={FIXTURE / 'cvae'}", f"--out={out}",
              "--platforms=cpu")
  assert r.returncode == 0, r.stderr[-2000:]
  info = json.loads(pathlib.Path(f"{out}.json").read_text())
  assert info["platforms"] == ["cpu"] and info["model"] == "cvae"
  assert info["step"] == 3
  assert info["inputs"][0]["shape"] == ["N"]
  assert info["inputs"][0]["dtype"] == "int32"
  assert info["inputs"][1]["shape"] == [2]
  assert info["inputs"][1]["dtype"] == "uint32"
  assert info["outputs"][0]["shape"] == ["N", 8, 8, 1]
  assert info["outputs"][0]["dtype"] == "float32"
  assert info["class_names"] == [str(d) for d in range(10)]

  labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 7, 7], np.int32)
  np.save(tmp_path / "labels.npy", labels)
  r = subprocess.run(
      [sys.executable, "-c", JAX_ONLY, str(out), str(tmp_path / "labels.npy"),
       str(tmp_path), "3", "4"],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
  assert r.returncode == 0, r.stderr[-2000:]
  images = np.load(tmp_path / "images3.npy")
  assert images.shape == (12, 8, 8, 1) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0

  run = cg.load(FIXTURE / "cvae")
  expected = library_samples(run, labels, jax.random.key(3))
  np.testing.assert_allclose(images, expected, atol=1e-5)
  # The key matters (the comparison above is not of constant images).
  assert np.abs(np.load(tmp_path / "images4.npy") - expected).max() > 0.05


def test_sampling_options_and_a_fixed_batch_are_baked_in(tmp_path):
  out = tmp_path / "diffusion.jax"
  info = export.write_export(FIXTURE / "diffusion", out, platforms="cpu",
                             num=4, nfe=2, guidance_scale=0.0)
  assert info["sampling"]["nfe"] == 2
  assert info["sampling"]["guidance_scale"] == 0.0
  assert info["inputs"][0]["shape"] == [4]
  assert info["outputs"][0]["shape"] == [4, 8, 8, 1]
  exp = jax.export.deserialize(bytearray(out.read_bytes()))
  assert exp.in_avals[0].shape == (4,)
  labels = np.array([1, 2, 3, 4], np.int32)
  key = jax.random.key(11)
  images = np.asarray(exp.call(labels, jax.random.key_data(key)))
  run = cg.load(FIXTURE / "diffusion")
  np.testing.assert_allclose(
      images, library_samples(run, labels, key, nfe=2, guidance_scale=0.0),
      atol=1e-5)
  # This 3-step model's images saturate at 0 or 1 whatever the options, so
  # the program shows them: as trained (nfe=4, guidance 0.75) it differs.
  as_trained, _ = export.export_sampler(run, ("cpu",), num=4)
  assert as_trained.mlir_module() != exp.mlir_module()


def test_an_image_conditioned_run_takes_condition_images(tmp_path):
  out = tmp_path / "sop.jax"
  info = export.write_export(FIXTURE / "cvae_sop", out)
  assert info["condition_kind"] == "image"
  assert info["inputs"][0]["shape"] == ["N", 8, 8, 1]
  assert info["inputs"][0]["dtype"] == "float32"
  exp = jax.export.deserialize(bytearray(out.read_bytes()))
  run = cg.load(FIXTURE / "cvae_sop")
  targets = np.asarray(run.dataset.split("test")[0][:3], np.float32)
  conditions = np.asarray(run.family.image_condition(run.settings)
                          .from_images(targets / run.dataset.max_value),
                          np.float32)
  key = jax.random.key(2)
  np.testing.assert_allclose(
      np.asarray(exp.call(conditions, jax.random.key_data(key))),
      library_samples(run, conditions, key), atol=1e-5)



def test_an_attribute_run_takes_attribute_rows():
  # An untrained cvae on colored digits, conditioned on (digit, color).
  s = train_lib.resolve(tiny_cvae_config(dataset="colored_digits",
                                         condition_kind="attributes"))
  ds = train_lib.run_dataset(s)
  family = families.get_family(s.model)
  state = family.create_state(s, ds.image_shape, ds.num_classes,
                              jax.random.key(0))
  run = api.Trained(s, family, ds, parallel.make_mesh(), state, 0)
  exp, info = export.export_sampler(run, ("cpu",))
  assert info["inputs"][0]["shape"] == ["N", 2]
  assert info["attribute_names"] == ["digit", "color"]
  rows = np.array([[7, 0], [3, 2], [0, 5]], np.int32)
  key = jax.random.key(5)
  np.testing.assert_allclose(
      np.asarray(exp.call(rows, jax.random.key_data(key))),
      library_samples(run, rows, key), atol=1e-5)

def test_a_cuda_and_tpu_export_is_written(tmp_path):
  out = tmp_path / "acgan.jax"
  info = export.write_export(FIXTURE / "acgan", out, platforms="cuda,tpu")
  assert info["platforms"] == ["cuda", "tpu"]
  # 'auto' kernels resolve to the stock layers for accelerators.
  assert info["settings"]["kernels"] == "stock"
  exp = jax.export.deserialize(bytearray(out.read_bytes()))
  assert exp.platforms == ("cuda", "tpu")
  assert "callback" not in exp.mlir_module()
  with pytest.raises(ValueError, match="platform"):
    exp.call(np.zeros((2,), np.int32),
             jax.random.key_data(jax.random.key(0)))  # not lowered for cpu


def test_a_bad_flag_is_one_error_line_and_exit_2(tmp_path):
  r = run_cli(f"--workdir={FIXTURE / 'cvae'}", f"--out={tmp_path / 'x.jax'}",
              "--platforms=cpu,gpu")
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
      "error: unknown platform 'gpu'; expected some of ('cpu', 'cuda', "
      "'rocm', 'tpu'), comma-separated.")
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workdir, kwargs, error, message", [
    ("cvae", {"platforms": "cpu,gpu"}, ValueError, "unknown platform"),
    ("cvae", {"num": 0}, ValueError, "--num must be positive"),
    ("cvae", {"nfe": 2}, ValueError, "--nfe does not apply"),
    ("diffusion", {"sampler": "rk4"}, ValueError, "sampler"),
    ("none", {}, FileNotFoundError, "config.json"),
])
def test_bad_arguments_raise_before_anything_is_written(
    tmp_path, workdir, kwargs, error, message):
  with pytest.raises(error, match=message):
    export.write_export(FIXTURE / workdir, tmp_path / "sub" / "x.jax",
                        **kwargs)
  assert list(tmp_path.iterdir()) == []


def test_parse_platforms():
  assert export.parse_platforms("cpu, CUDA,tpu") == ("cpu", "cuda", "tpu")
  assert export.parse_platforms(["rocm"]) == ("rocm",)
  for bad in ("", "cpu,cpu", "gpu", "cuda,metal"):
    with pytest.raises(ValueError):
      export.parse_platforms(bad)
