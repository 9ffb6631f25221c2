import json
import subprocess
import sys

import numpy as np
import pytest

from condgen_jax.tools import benchmark
from conftest import ROOT, tiny_cvae_config


def test_matmul_peak_is_positive():
  peak = benchmark.matmul_peak_gflops(n=256, repeats=2)
  assert peak["numpy_gflops"] > 0 and peak["jax_gflops"] > 0


def test_report_fields_and_flops(digits):
  config = tiny_cvae_config(steps_per_call=4)
  report = benchmark.benchmark(config, min_seconds=0.2, dataset=digits,
                               peak={"numpy_gflops": 10.0,
                                     "jax_gflops": 20.0})
  assert report["peak_gflops"] == 20.0
  assert report["peak_matmul_size"] is None  # given, not measured
  assert report["steps_per_call"] == 4
  # FLOPs of one step: the dense layers' forward + backward, at least
  # 2 * batch * params * 2 multiply-adds (+ the Bernoulli/KL terms).
  dense_macs = (74 * 64 + 64 * 32 + 32 * 8) + (14 * 32 + 32 * 64 + 64 * 64)
  assert report["flops_per_step"] > 2 * 32 * dense_macs * 2
  np.testing.assert_allclose(
      report["fraction_of_peak"],
      report["flops_per_step"] / (report["step_ms"] / 1e3) / 1e9 / 20.0,
      rtol=0.02)
  assert report["images_per_s"] > 0 and report["compile_s"] > 0


def test_cli_prints_one_json_line():
  r = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark",
       "--config=experiments/configs/cgan_mlp.py", "--config.dataset=digits",
       "--config.batch_size=16", "--min_seconds=0.2", "--peak_size=512"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  lines = [l for l in r.stdout.splitlines() if l.strip()]
  assert len(lines) == 1
  report = json.loads(lines[0])
  assert report["config"] == "cgan_mlp.py"
  assert report["overrides"] == {"dataset": "digits", "batch_size": 16}
  assert report["peak_matmul_size"] == 512
  for key in ("compile_s", "step_ms", "images_per_s", "flops_per_step",
              "achieved_gflops", "peak_gflops", "fraction_of_peak",
              "device_kind", "device_count"):
    assert key in report


@pytest.mark.parametrize("flag, message", [
    ("--peak_size=0", "error: --peak_size must be >= 1; got 0."),
    ("--sample_nfe=-1", "error: --sample_nfe must be >= 0; got -1."),
    ("--samplers=unipc", "error: --samplers=unipc needs --sample_nfe > 0 "
     "(the NFE they are timed at).")])
def test_bad_flags_are_one_error_line(flag, message):
  r = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark",
       "--config=experiments/configs/cgan_mlp.py", "--config.dataset=digits",
       flag], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [message]
  assert not r.stdout.strip()


def test_sampling_speed_sets_the_nfe_of_families_that_have_one(digits):
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  from test_family_diffusion import tiny_config  # pylint: disable=g-import-not-at-top
  run = train.setup(tiny_config(nfe=7), digits)
  calls = []
  make = run.family.make_sample_fn

  class Spy:  # the family, recording the nfe each sampler is built with
    OPTIONS = run.family.OPTIONS

    def __getattr__(self, name):
      return getattr(run.family, name)

    def make_sample_fn(self, config, *args):
      calls.append(config.nfe)
      return make(config, *args)

  import dataclasses  # pylint: disable=g-import-not-at-top
  spied = dataclasses.replace(run, family=Spy())
  out = benchmark.sampling_speed(spied, run.state, batch_size=8, nfe=2,
                                 min_seconds=0.05)
  assert calls == [2] and run.settings.nfe == 7
  assert out["sample_nfe"] == 2 and out["sample_batch_size"] == 8
  assert out["sample_images_per_s"] > 0
  out = benchmark.sampling_speed(spied, run.state, batch_size=8, nfe=3,
                                 min_seconds=0.05, sampler="unipc")
  assert calls[-1] == 3 and out["sample_images_per_s"] > 0
  with pytest.raises(ValueError, match="sampler 'dpm'"):
    benchmark.sampling_speed(spied, run.state, batch_size=8, nfe=3,
                             sampler="dpm")
  cvae = train.setup(tiny_cvae_config(), digits)
  out = benchmark.sampling_speed(cvae, cvae.state, batch_size=8,
                                 min_seconds=0.05)
  assert out["sample_nfe"] is None and out["sample_images_per_s"] > 0
