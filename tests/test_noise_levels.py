"""Tests of condgen_jax.diffusion.noise_levels: training-time samplers and
loss weightings, against numpy formulas."""

import jax
import numpy as np
import pytest

from condgen_jax.diffusion import noise_levels
from condgen_jax.diffusion import schedules

SD = 0.5  # EDM's sigma_data


def _cosine_ab(t):
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  return np.clip(f(t) / f(0.0), 1e-5, 1.0)


def test_logit_normal_and_log_normal_transform_a_standard_normal():
  key = jax.random.key(3)
  z = np.asarray(jax.random.normal(key, (1000,)), np.float64)
  t = np.asarray(noise_levels.logit_normal_times(key, 1000, 0.5, 2.0))
  np.testing.assert_allclose(t, 1 / (1 + np.exp(-(0.5 + 2.0 * z))),
                             rtol=1e-5)
  sig = np.asarray(noise_levels.log_normal_sigmas(key, 1000, -1.2, 1.2))
  np.testing.assert_allclose(sig, np.exp(-1.2 + 1.2 * z), rtol=1e-5)
  # the defaults are Esser et al.'s (0, 1): logit(t) has mean 0, std 1
  t = np.asarray(noise_levels.sample_times("logit_normal", key, 100_000,
                                           objective="flow_matching"))
  logit = np.log(t / (1 - t))
  assert abs(logit.mean()) < 0.02 and abs(logit.std() - 1) < 0.02


@pytest.mark.parametrize("objective", ["eps", "flow_matching"])
def test_log_normal_times_reach_the_drawn_sigma(objective):
  key = jax.random.key(0)
  sig = np.asarray(noise_levels.log_normal_sigmas(key, 512), np.float64)
  t = np.asarray(noise_levels.sample_times(
      "log_normal", key, 512, objective=objective,
      alpha_bar_fn=schedules.cosine_alpha_bar), np.float64)
  if objective == "flow_matching":
    reached = t / (1 - t)
  else:
    ab = _cosine_ab(t)
    reached = np.sqrt((1 - ab) / ab)
  np.testing.assert_allclose(reached, sig, rtol=2e-3)
  assert np.all((t > 0) & (t < 1))


def test_uniform_times_are_the_plain_uniform_draw():
  key = jax.random.key(7)
  np.testing.assert_array_equal(
      noise_levels.sample_times("uniform", key, 9, objective="eps"),
      jax.random.uniform(key, (9,)))
  with pytest.raises(ValueError, match="time sampler 'beta'"):
    noise_levels.sample_times("beta", key, 9, objective="eps")


def _alpha_sigma(objective, t):
  if objective == "flow_matching":
    return 1 - t, t
  ab = _cosine_ab(t)
  return np.sqrt(ab), np.sqrt(1 - ab)


def test_min_snr_weights_are_hang_et_al_s():
  """eq. 9-10 of Hang et al. 2023: eps min(SNR, g) / SNR, v
  min(SNR, g) / (SNR + 1)."""
  t = np.linspace(0.02, 0.98, 25)
  a, s = _alpha_sigma("eps", t)
  snr = a ** 2 / s ** 2
  for objective, expected in [("eps", np.minimum(snr, 5) / snr),
                              ("v", np.minimum(snr, 5) / (snr + 1))]:
    np.testing.assert_allclose(
        noise_levels.loss_weight("min_snr", objective, a, s, gamma=5.0),
        expected, rtol=1e-5)
  np.testing.assert_array_equal(
      noise_levels.loss_weight("none", "eps", a, s), np.ones_like(t))


@pytest.mark.parametrize("weighting", ["none", "min_snr", "edm"])
@pytest.mark.parametrize("objective", ["eps", "v", "flow_matching", "edm"])
def test_weighted_loss_is_the_x0_weight_times_the_x0_error(objective,
                                                           weighting):
  """For a random prediction: objective's squared error * loss_weight =
  w(x0) ||x0_hat - x0||^2, x0_hat converted from the prediction in numpy."""
  rng = np.random.RandomState(0)
  t = rng.uniform(0.02, 0.98, 6)
  x0, eps, pred = (rng.randn(6, 5) for _ in range(3))
  a, s = _alpha_sigma(objective, t)
  a, s = a[:, None], s[:, None]
  x = a * x0 + s * eps
  sig = s / a
  c_skip = SD ** 2 / (sig ** 2 + SD ** 2)
  c_out = sig * SD / np.sqrt(sig ** 2 + SD ** 2)
  if objective == "eps":
    target, x0_hat = eps, (x - s * pred) / a
  elif objective == "v":
    target, x0_hat = a * eps - s * x0, a * x - s * pred
  elif objective == "flow_matching":
    target, x0_hat = eps - x0, x - t[:, None] * pred
  else:
    target = (x0 - c_skip * x / a) / c_out
    x0_hat = c_skip * x / a + c_out * pred
  own = np.sum((pred - target) ** 2, -1)
  x0_err = np.sum((x0_hat - x0) ** 2, -1)
  snr = (a ** 2 / s ** 2)[:, 0]
  w_x0 = {"none": own / x0_err, "min_snr": np.minimum(snr, 5.0),
          "edm": (sig[:, 0] ** 2 + SD ** 2) / (sig[:, 0] * SD) ** 2}
  weight = np.asarray(noise_levels.loss_weight(
      weighting, objective, a[:, 0], s[:, 0], gamma=5.0), np.float64)
  np.testing.assert_allclose(own * weight, w_x0[weighting] * x0_err,
                             rtol=1e-4)


def test_bad_weighting_is_named():
  with pytest.raises(ValueError, match="loss weighting 'snr'"):
    noise_levels.loss_weight("snr", "eps", np.ones(2), np.ones(2))
