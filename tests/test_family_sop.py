"""Structured output prediction on digits quadrants: the loss, the test
NCLL against numpy, sampling, the config's checks, and a run through
train, resume, sample and evaluate as a user runs them."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.data import datasets as data
from condgen_jax.evaluation import sampling
from condgen_jax.models import sop
from condgen_jax.families import sop as sop_training
from condgen_jax.runner import train
from condgen_jax.configs import cvae_sop

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"dataset": "digits", "batch_size": 32, "hidden": (32,),
        "latent_dim": 4, "iw_samples": 20, "log_every": 10,
        "checkpoint_every": 10, "sample_every": 10, "samples_per_class": 2}


def _config(**overrides):
  c = cvae_sop.get_config()
  c.update({**TINY, **overrides})
  return c


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def test_masked_log_likelihood_by_hand():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
  y = (rng.random((2, 4, 4, 1)) > 0.5).astype(np.float32)
  mask = np.zeros((4, 4, 1), np.float32)
  mask[:2] = 1
  expected = np.sum(mask * (y * _log_sigmoid(logits)
                            + (1 - y) * _log_sigmoid(-logits)), (1, 2, 3))
  np.testing.assert_allclose(
      sop_training.masked_log_likelihood(logits, y, mask), expected,
      rtol=1e-6)


@pytest.mark.parametrize("network", ["cvae", "baseline"])
def test_short_digits_training_lowers_the_loss(digits, network):
  config = _config(network=network)
  state = sop_training.create_state(config, (8, 8, 1), 10, jax.random.key(0))
  step = jax.jit(sop_training.make_train_step(config, (8, 8, 1), 10),
                 donate_argnums=0)
  images = data.to_float(digits.train_images[:256], 16.0)
  losses = []
  for i in range(120):
    sl = slice((i * 32) % 256, (i * 32) % 256 + 32)
    state, metrics = step(state, {"image": images[sl],
                                  "label": digits.train_labels[sl]},
                          jax.random.key(1))
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:5])
  if network == "cvae":
    np.testing.assert_allclose(metrics["neg_elbo"],
                               metrics["reconstruction"] + metrics["kl"],
                               rtol=1e-5)


def test_the_baseline_ncll_is_the_bernoulli_nll_of_the_missing_pixels(
    digits):
  config = _config(network="baseline", binarize=False, quadrants_given=2)
  state = sop_training.create_state(config, (8, 8, 1), 10, jax.random.key(3))
  out = sop_training.evaluate(config, state, digits, jax.random.key(0),
                              batch_size=100)
  y = digits.test_images / np.float32(16.0)
  x = y.copy()
  x[:, :, 4:] = 0.0  # the left half is given
  model = sop_training.make_model(config, (8, 8, 1))
  logits = np.asarray(model.apply({"params": state.params}, jnp.asarray(x),
                                  method=sop.StructuredCVAE.logits),
                      np.float64)
  ll = y * _log_sigmoid(logits) + (1 - y) * _log_sigmoid(-logits)
  expected = -np.sum(ll[:, :, 4:], (1, 2, 3)).mean()
  np.testing.assert_allclose(out["test_ncll"], expected, rtol=1e-5)
  assert out["num_test_examples"] == 360 and "iw_samples" not in out


def test_the_cvae_ncll_is_importance_sampled_and_deterministic(digits):
  config = _config()
  state = sop_training.create_state(config, (8, 8, 1), 10, jax.random.key(0))
  out = sop_training.evaluate(config, state, digits, jax.random.key(0))
  np.testing.assert_allclose(out["test_neg_elbo"],
                             out["test_reconstruction"] + out["test_kl"],
                             rtol=1e-6)
  # 48 pixels to predict, logits near 0: about 48 log 2 nats
  assert 25 < out["test_ncll"] < 45
  assert out["test_ncll"] <= out["test_neg_elbo"] + 0.05
  assert out["iw_samples"] == 20
  assert sop_training.evaluate(config, state, digits,
                               jax.random.key(0)) == out


def test_samples_keep_the_given_quadrants(digits):
  config = _config(quadrants_given=3)
  state = sop_training.create_state(config, (8, 8, 1), 10, jax.random.key(0))
  sample = jax.jit(sop_training.make_sample_fn(config, (8, 8, 1), 10))
  y = digits.test_images[:5] / np.float32(16.0)
  cond = y.copy()
  cond[:, 4:, 4:] = 0.0
  x = np.asarray(sample(state, cond, jax.random.key(1)))
  given = np.ones((8, 8), bool)
  given[4:, 4:] = False
  np.testing.assert_array_equal(x[:, given], y[:, given])
  assert 0 < x[:, 4:, 4:].min() and x[:, 4:, 4:].max() < 1


@pytest.mark.parametrize("overrides,fragment", [
    ({"condition_kind": "label"}, r"it takes \('image',\)"),
    ({"image_task": "colorize"}, "needs a colored dataset"),
    ({"network": "gsnn"}, "Unknown network 'gsnn'"),
    ({"best_metric": "test_l1"}, "Unknown best_metric 'test_l1'"),
])
def test_bad_configs_are_one_value_error(overrides, fragment):
  with pytest.raises(ValueError, match=fragment):
    train.resolve(_config(**overrides))


def _cli(module, *args, ok=True):
  r = subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  if ok:
    assert r.returncode == 0, r.stderr[-2000:]
  return r


def _flags(steps):
  return ["--config=experiments/configs/cvae_sop.py",
          f"--config.num_steps={steps}", "--config.hidden=(32,)",
          "--config.latent_dim=4", "--config.iw_samples=10",
          *(f"--config.{k}={v}" for k, v in TINY.items()
            if k not in ("hidden", "latent_dim", "iw_samples"))]


@pytest.mark.slow
def test_train_resume_sample_and_evaluate_through_the_clis(tmp_path,
                                                           digits):
  workdir = tmp_path / "w"
  _cli("train", f"--workdir={workdir}", *_flags(10))
  _cli("train", f"--workdir={workdir}", *_flags(20))
  straight = train.train_and_evaluate(_config(num_steps=20, iw_samples=10),
                                      tmp_path / "straight", digits)
  _, resumed, step = train.restore_run(workdir, dataset=digits)
  assert step == 20
  for a, b in zip(jax.tree.leaves(straight.params),
                  jax.tree.leaves(resumed.params), strict=True):
    np.testing.assert_array_equal(a, b)
  # the training grid: one row per class of input | output | target
  assert (workdir / "samples" / "step_00000020.png").exists()
  out = tmp_path / "s.npz"
  _cli("sample", f"--workdir={workdir}", "--num_per_class=2", f"--out={out}",
       f"--png={tmp_path / 's.png'}")
  s = np.load(out)
  assert s["images"].shape == (20, 8, 8, 1)
  assert s["conditions"].shape == s["targets"].shape == (20, 8, 8, 1)
  np.testing.assert_array_equal(s["labels"], np.repeat(np.arange(10), 2))
  np.testing.assert_array_equal(s["conditions"][:, 4:, :4],
                                s["targets"][:, 4:, :4])
  assert (tmp_path / "s.png").exists()
  np.savez(tmp_path / "c.npz", cond=s["conditions"][:3])
  _cli("sample", f"--workdir={workdir}", f"--cond_file={tmp_path / 'c.npz'}",
       f"--out={tmp_path / 'c_out.npz'}", f"--png={tmp_path / 'c.png'}")
  c = np.load(tmp_path / "c_out.npz")
  np.testing.assert_array_equal(c["images"][:, 4:, :4],
                                s["conditions"][:3, 4:, :4])
  _cli("evaluate", f"--workdir={workdir}", "--num_per_class=5",
       "--parzen=false")
  result = json.loads((workdir / "eval.json").read_text())
  assert result["iw_samples"] == 10 and result["num_test_examples"] == 360
  assert 0 < result["test_ncll"] < 60
  assert result["num_fake"] == 50 and 0 <= result["class_accuracy"] <= 1
  r = _cli("sample", f"--workdir={workdir}", "--cond=3",
           f"--out={tmp_path / 'x.npz'}", ok=False)
  errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
  assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
  assert "takes its conditions from --cond_file" in errors[0]
  assert not (tmp_path / "x.npz").exists()
  run, state, _ = train.restore_run(workdir, dataset=digits)
  with pytest.raises(ValueError, match=r"float images \[N, 8, 8, 1\]"):
    sampling.sample_conditions(run, state, np.zeros((2, 8, 8, 3)))
