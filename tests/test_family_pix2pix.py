"""pix2pix on digits: each player's loss against numpy, under the default
and other GAN objectives, the test metrics, colorization's shapes, and a
run through train, resume and evaluate."""

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
from condgen_jax.losses import gan_objectives
from condgen_jax.runner import train
from condgen_jax.configs import pix2pix as pix2pix_config

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


class _Pairs:
  """The first step's (x, y, G(x)) of a batch, recomputed outside the step
  (the default quadrant task: only the bottom-left quadrant is given), and
  D's patch logits on them under any D parameters."""

  def __init__(self, config, state, batch, rng):
    g, d = pix2pix_training.make_models(config, (8, 8, 1))
    self.y = 2 * np.asarray(batch["image"]) - 1
    self.x = self.y.copy()
    self.x[:, :4] = -1
    self.x[:, 4:, 4:] = -1
    self.fake = jax.jit(g.apply)(
        {"params": state.g_params}, self.x,
        rngs={"dropout": jax.random.fold_in(rng, 0)})  # step 0's key
    self._d = jax.jit(d.apply)

  def logits(self, d_params):
    """(D(x, y), D(x, G(x))), float64 [B, h, w]."""
    return tuple(np.asarray(self._d({"params": d_params}, self.x, y),
                            np.float64) for y in (self.y, self.fake))


def test_each_players_loss_against_numpy(digits):
  config = _config()
  state = _state(config, (8, 8, 1))
  step = jax.jit(pix2pix_training.make_train_step(config, (8, 8, 1), 10))
  batch = _batch(digits)
  new, m = step(state, batch, jax.random.key(1))
  pairs = _Pairs(config, state, batch, jax.random.key(1))
  y, fake = pairs.y, pairs.fake
  real_l, fake_l = pairs.logits(state.d_params)
  np.testing.assert_allclose(
      m["d_loss"], 0.5 * np.mean(_softplus(-real_l) + _softplus(fake_l)),
      rtol=1e-5)
  _, after = pairs.logits(new.d_params)
  l1 = np.mean(np.abs(np.asarray(fake) - y))
  np.testing.assert_allclose(m["g_adv_loss"], np.mean(_softplus(-after)),
                             rtol=1e-5)
  np.testing.assert_allclose(m["l1"], l1 / 2, rtol=1e-5)
  np.testing.assert_allclose(m["g_loss"], m["g_adv_loss"] + 100 * l1,
                             rtol=1e-5)
  assert int(new.step) == 1


def test_gan_loss_sets_the_patch_losses_hinge_and_minimax(digits):
  # The same batch, key and initial state; only the objective differs.
  batch, rng = _batch(digits), jax.random.key(1)
  state = _state(_config(gan_loss="minimax"), (8, 8, 1))
  metrics = {}
  for name in ("minimax", "hinge"):
    step = jax.jit(pix2pix_training.make_train_step(
        _config(gan_loss=name), (8, 8, 1), 10))
    metrics[name] = step(state, batch, rng)[1]
  r, f = _Pairs(_config(), state, batch, rng).logits(state.d_params)
  expected = {"minimax": np.mean(_softplus(-r) + _softplus(f)),
              "hinge": np.mean(np.maximum(0, 1 - r) + np.maximum(0, 1 + f))}
  for name, m in metrics.items():
    np.testing.assert_allclose(m["d_adv_loss"], expected[name], rtol=1e-5)
    np.testing.assert_allclose(m["d_loss"], 0.5 * expected[name], rtol=1e-5)
  assert abs(expected["minimax"] - expected["hinge"]) > 1e-2


def test_every_objective_the_gan_family_takes_validates():
  for name in (*gan_objectives.BUILTINS,
               "tests.test_gan_objectives:relativistic_average_hinge"):
    train.resolve(_config(gan_loss=name))
  with pytest.raises(ValueError, match="Unknown gan_loss 'vanilla'"):
    train.resolve(_config(gan_loss="vanilla"))
  with pytest.raises(ValueError, match="real_label_smoothing=0.1 applies"):
    train.resolve(_config(gan_loss="hinge", real_label_smoothing=0.1))


@pytest.mark.parametrize("overrides", [
    {"gan_loss": "wasserstein_gp", "r1_gamma": 2.0},
    {"gan_loss": "wasserstein", "clip_value": 0.05},
    {"gan_loss": "relativistic_average"},
], ids=lambda o: o["gan_loss"])
def test_penalties_clipping_and_relativistic_g_on_patches(digits, overrides):
  config = _config(**overrides)
  state = _state(config, (8, 8, 1))
  batch, rng = _batch(digits), jax.random.key(1)
  new, m = jax.jit(pix2pix_training.make_train_step(config, (8, 8, 1), 10))(
      state, batch, rng)
  pairs = _Pairs(config, state, batch, rng)
  r, f = pairs.logits(state.d_params)
  assert all(np.isfinite(float(v)) for v in m.values())
  name = overrides["gan_loss"]
  if name == "wasserstein_gp":  # both penalties of the critic's patch mean
    np.testing.assert_allclose(m["d_adv_loss"], np.mean(f) - np.mean(r),
                               rtol=1e-4, atol=1e-6)
    assert m["gradient_penalty"] > 0 and m["r1_penalty"] > 0
    np.testing.assert_allclose(
        m["d_loss"], 0.5 * (m["d_adv_loss"] + 10.0 * m["gradient_penalty"]
                            + 1.0 * m["r1_penalty"]), rtol=1e-5)
  elif name == "wasserstein":  # D's weights clipped after Adam's step
    largest = lambda params: max(float(np.max(np.abs(p)))  # noqa: E731
                                 for p in jax.tree.leaves(params))
    assert largest(state.d_params) > 0.1
    assert largest(new.d_params) <= 0.05 + 1e-7  # u' = clip(p + u) - p
    np.testing.assert_allclose(m["wasserstein_estimate"],
                               np.mean(r) - np.mean(f), rtol=1e-4, atol=1e-6)
  else:  # G's loss reads the updated D's logits on the real pairs too
    r, f = pairs.logits(new.d_params)
    np.testing.assert_allclose(
        m["g_adv_loss"], np.mean(_softplus(-(f - r.mean()))
                                 + _softplus(r - f.mean())), rtol=1e-5)


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
  train.resolve(config)
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
