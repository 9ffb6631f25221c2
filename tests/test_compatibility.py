"""Runs and checkpoints written by the code before the layout by role.

`tests/fixtures/before_layout/` holds, for every family, a tiny run on
`digits` trained and sampled by the flat-module code (its `make.py` says
how): its digests, samples and, but for the 26 MB CGAN-MLP, its workdir.
The same commands must train the same parameters, and the committed
checkpoints must restore and sample the same images: bit for bit on the
kind of host that wrote the fixture, to float tolerance on another (XLA:CPU
picks its kernels by the vector units).
"""

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "before_layout"


def _load(name):
  spec = importlib.util.spec_from_file_location(name, FIXTURE / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules.setdefault(name, module)
  spec.loader.exec_module(module)
  return module


golden = _load("golden")
make = _load("make")
DIGESTS = json.loads((FIXTURE / "digests.json").read_text())
SAME_HOST = DIGESTS["host"] == golden.host_signature()


def _run(args):
  r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]


def _check(got: dict, expected: dict, what: str):
  if SAME_HOST:
    assert got["sha256"] == expected["sha256"], f"{what} differ in bits"
    return
  assert sorted(got["stats"]) == sorted(expected["stats"]), what
  for k, (s, s2) in expected["stats"].items():
    np.testing.assert_allclose(got["stats"][k], [s, s2], rtol=1e-4,
                               atol=1e-4, err_msg=f"{what}: {k}")


@pytest.mark.slow
@pytest.mark.parametrize("family", tuple(make.RUNS))
def test_the_same_command_trains_the_same_parameters(family, tmp_path):
  workdir = tmp_path / family
  _run(make.train_command(family, workdir))
  params = golden.checkpoint_params(workdir / "checkpoints")
  _check(golden.digest(params), DIGESTS["runs"][family]["params"],
         f"{family} parameters")
  if (FIXTURE / family / "checkpoints").exists():
    # the digest covers every leaf: the committed checkpoint agrees with it
    old = golden.checkpoint_params(FIXTURE / family / "checkpoints")
    assert sorted(old) == sorted(params)


@pytest.mark.slow
@pytest.mark.parametrize("family", tuple(
    f for f in make.RUNS if (FIXTURE / f / "checkpoints").exists()))
def test_a_checkpoint_from_before_samples_the_same_images(family, tmp_path):
  workdir = tmp_path / family
  shutil.copytree(FIXTURE / family, workdir)
  out = tmp_path / "samples.npz"
  _run(make.sample_command(workdir, out))
  images = golden.load_samples(out)
  expected = golden.load_samples(FIXTURE / family / "samples.npz")
  if SAME_HOST:
    np.testing.assert_array_equal(images, expected)
  else:
    np.testing.assert_allclose(images, expected, atol=1e-4)
  _check(golden.digest({"images": images}),
         DIGESTS["runs"][family]["samples"], f"{family} samples")
