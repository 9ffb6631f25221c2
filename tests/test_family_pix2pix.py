"""pix2pix on digits: each player's loss against numpy, the test metrics,
colorization's shapes, and a run through train, resume and evaluate."""

import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from condgen_jax.data import datasets as data
from condgen_jax.families import pix2pix as pix2pix_training
from condgen_jax.evaluation import sampling
from condgen_jax.runner import train
from experiments.configs import pix2pix as pix2pix_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {"dataset": "digits", "batch_size": 16, "g_channels": (8, 16, 16),
        "d_channels": (8, 16), "log_every": 5, "checkpoint_every": 5,
        "sample_every": 10, "samples_per_class": 2}


def _config(**overrides):
  c = pix2pix_config.get_config()
  c.update({**TINY, **overrides})
  return c


def _state(config, image_shape=(8, 8, 1)):
  """The initial state, initialised by one compiled call (op-by-op
  initialisation of the conv nets takes seconds)."""
  return jax.jit(functools.partial(pix2pix_training.create_state, config,
                                   image_shape, 10))(jax.random.key(0))


def _softplus(x):
  return np.logaddexp(0.0, x)


def _batch(ds, n=16):
  images = data.to_float(ds.train_images[:n], ds.max_value)
  return {"image": images, "label": ds.train_labels[:n]}


def test_each_players_loss_against_numpy(digits):
  config = _config()
  state = _state(config, (8, 8, 1))
  step = jax.jit(pix2pix_training.make_train_step(config, (8, 8, 1), 10))
  batch = _batch(digits)
  new, m = step(state, batch, jax.random.key(1))
  g, d = pix2pix_training.make_models(config, (8, 8, 1))
  y = 2 * np.asarray(batch["image"]) - 1
  x = y.copy()
  x[:, :4] = -1  # only the bottom-left quadrant is given
  x[:, 4:, 4:] = -1
  g_apply, d_apply = jax.jit(g.apply), jax.jit(d.apply)
  fake = g_apply({"params": state.g_params}, x,
                 rngs={"dropout": jax.random.fold_in(jax.random.key(1), 0)})
  real_l = np.asarray(d_apply({"params": state.d_params}, x, y), np.float64)
  fake_l = np.asarray(d_apply({"params": state.d_params}, x, fake),
                      np.float64)
  np.testing.assert_allclose(
      m["d_loss"], 0.5 * np.mean(_softplus(-real_l) + _softplus(fake_l)),
      rtol=1e-5)
  after = np.asarray(d_apply({"params": new.d_params}, x, fake), np.float64)
  l1 = np.mean(np.abs(np.asarray(fake) - y))
  np.testing.assert_allclose(m["g_adv_loss"], np.mean(_softplus(-after)),
                             rtol=1e-5)
  np.testing.assert_allclose(m["l1"], l1 / 2, rtol=1e-5)
  np.testing.assert_allclose(m["g_loss"], m["g_adv_loss"] + 100 * l1,
                             rtol=1e-5)
  assert int(new.step) == 1


def test_a_hundred_steps_lower_the_l1(digits):
  config = _config()
  state = _state(config, (8, 8, 1))
  step = jax.jit(pix2pix_training.make_train_step(config, (8, 8, 1), 10))
  l1 = []
  for _ in range(100):  # one batch, fitted
    state, m = step(state, _batch(digits), jax.random.key(1))
    l1.append(float(m["l1"]))
  assert np.mean(l1[-5:]) < 0.85 * l1[0]


def test_evaluate_reports_l1_of_the_missing_pixels_and_patch_metrics(digits):
  config = _config()
  state = _state(config, (8, 8, 1))
  rng = jax.random.key(4)
  out = pix2pix_training.evaluate(config, state, digits, rng)
  sample = pix2pix_training.make_sample_fn(config, (8, 8, 1), 10)
  y = digits.test_images / np.float32(16.0)
  cond = np.zeros_like(y)
  cond[:, 4:, :4] = y[:, 4:, :4]
  fake = np.asarray(sample(state, cond, jax.random.fold_in(rng, 0)))
  missing = np.ones((8, 8), bool)
  missing[4:, :4] = False
  np.testing.assert_allclose(out["test_l1"],
                             np.mean(np.abs(fake - y)[:, missing]),
                             rtol=1e-5)
  assert out["num_patches"] == 16 and out["num_test_examples"] == 360
  for key in ("test_d_real", "test_d_fake", "test_patch_accuracy"):
    assert 0.0 <= out[key] <= 1.0
  assert pix2pix_training.evaluate(config, state, digits, rng) == out


def test_colorization_maps_gray_to_color():
  config = _config(dataset="colored_digits", image_task="colorize")
  train.validate_config(config)
  state = _state(config, (8, 8, 3))
  assert state.g_params["down0"]["kernel"].shape == (4, 4, 1, 8)  # gray in
  assert state.g_params["up0"]["kernel"].shape[-1] == 3  # color out
  assert state.d_params["conv0"]["kernel"].shape == (4, 4, 1 + 3, 8)
  sample = jax.jit(pix2pix_training.make_sample_fn(config, (8, 8, 3), 10))
  x = sample(state, np.zeros((2, 8, 8, 1), np.float32), jax.random.key(2))
  assert x.shape == (2, 8, 8, 3)


def _cli(module, *args):
  r = subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.returncode == 0, r.stderr[-2000:]


def _flags(steps):
  return ["--config=experiments/configs/pix2pix.py",
          f"--config.num_steps={steps}", "--config.g_channels=(8,16,16)",
          "--config.d_channels=(8,16)",
          *(f"--config.{k}={v}" for k, v in TINY.items()
            if k not in ("g_channels", "d_channels"))]


@pytest.mark.slow
def test_train_resume_and_evaluate_through_the_clis(tmp_path, digits):
  workdir = tmp_path / "w"
  _cli("train", f"--workdir={workdir}", *_flags(5))
  _cli("train", f"--workdir={workdir}", *_flags(10))
  straight = train.train_and_evaluate(_config(num_steps=10),
                                      tmp_path / "straight", digits)
  run, resumed, step = train.restore_run(workdir, dataset=digits)
  assert step == 10
  for a, b in zip(jax.tree.leaves((straight.g_params, straight.d_params)),
                  jax.tree.leaves((resumed.g_params, resumed.d_params)),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  assert (workdir / "samples" / "step_00000010.png").exists()
  x, labels = sampling.sample_per_class(run, resumed, 2, seed=3)
  assert x.shape == (20, 8, 8, 1) and labels.tolist() == sorted(labels)
  _cli("evaluate", f"--workdir={workdir}", "--num_per_class=5",
       "--parzen=false")
  result = json.loads((workdir / "eval.json").read_text())
  assert result["model"] == "pix2pix" and result["step"] == 10
  assert 0 < result["test_l1"] < 1 and result["num_patches"] == 16
  assert 0 <= result["test_patch_accuracy"] <= 1
  assert result["num_fake"] == 50
