"""The diffusion / flow-matching terms of `condgen_jax.losses` against numpy."""

import jax
import numpy as np
import pytest

from condgen_jax.diffusion import schedules
from condgen_jax import losses


def _arrays(seed=0, shape=(3, 4, 4, 2)):
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(-1, 1, shape).astype(np.float32)
  eps = rng.standard_normal(shape).astype(np.float32)
  pred = rng.standard_normal(shape).astype(np.float32)
  t = rng.uniform(0, 1, shape[:1]).astype(np.float32)
  return x0, eps, pred, t


def test_linear_schedule_is_ho_et_al_on_the_grid_and_log_linear_between():
  betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
  alpha_bar = np.cumprod(1.0 - betas)
  i = np.array([1, 2, 10, 500, 999, 1000])
  np.testing.assert_allclose(schedules.linear_alpha_bar(i / 1000),
                             alpha_bar[i - 1], rtol=2e-5)
  assert float(schedules.linear_alpha_bar(0.0)) == 1.0
  mid = np.exp(0.5 * (np.log(alpha_bar[99]) + np.log(alpha_bar[100])))
  np.testing.assert_allclose(schedules.linear_alpha_bar(100.5 / 1000), mid,
                             rtol=2e-5)


def test_cosine_schedule_formula_and_floor():
  t = np.array([0.0, 0.1, 0.5, 0.9, 0.99], np.float64)
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  np.testing.assert_allclose(schedules.cosine_alpha_bar(t), f(t) / f(0.0),
                             rtol=1e-5)
  assert float(schedules.cosine_alpha_bar(0.0)) == 1.0
  assert float(schedules.cosine_alpha_bar(1.0)) == pytest.approx(1e-5)
  assert np.all(np.diff(np.asarray(schedules.cosine_alpha_bar(
      np.linspace(0, 1, 101)))) <= 0)


def test_diffuse_and_eps_loss():
  x0, eps, pred, t = _arrays()
  ab = np.asarray(schedules.cosine_alpha_bar(t))[:, None, None, None]
  np.testing.assert_allclose(schedules.diffuse(x0, eps, ab[:, 0, 0, 0]),
                             np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses.ddpm_eps_loss(pred, eps),
                             ((pred - eps) ** 2).sum((1, 2, 3)), rtol=1e-5)
  assert losses.ddpm_eps_loss(pred, eps).shape == (3,)


def test_v_prediction_loss_and_the_v_identities():
  x0, eps, pred, t = _arrays(1)
  ab = np.asarray(schedules.linear_alpha_bar(t))
  a, s = np.sqrt(ab)[:, None, None, None], np.sqrt(1 - ab)[:, None, None, None]
  v = a * eps - s * x0
  np.testing.assert_allclose(schedules.v_target(x0, eps, ab), v, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(losses.v_prediction_loss(pred, x0, eps, ab),
                             ((pred - v) ** 2).sum((1, 2, 3)), rtol=1e-5)
  x_t = a * x0 + s * eps
  np.testing.assert_allclose(a * x_t - s * v, x0, atol=1e-5)
  np.testing.assert_allclose(s * x_t + a * v, eps, atol=1e-5)


def test_v_loss_is_the_x0_loss_weighted_by_one_plus_snr():
  x0, eps, pred, t = _arrays(2)
  ab = np.asarray(schedules.cosine_alpha_bar(t))
  a, s = np.sqrt(ab)[:, None, None, None], np.sqrt(1 - ab)[:, None, None, None]
  x_t = a * x0 + s * eps
  x0_hat = a * x_t - s * pred
  x0_loss = ((x0_hat - x0) ** 2).sum((1, 2, 3))
  np.testing.assert_allclose(losses.v_prediction_loss(pred, x0, eps, ab),
                             x0_loss * (1 + ab / (1 - ab)), rtol=1e-4)


def test_flow_matching_path_and_loss():
  x0, eps, pred, t = _arrays(3)
  tt = t[:, None, None, None]
  np.testing.assert_allclose(schedules.flow_matching_path(x0, eps, t),
                             (1 - tt) * x0 + tt * eps, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(schedules.flow_matching_path(x0, eps, np.zeros(3)),
                             x0)
  np.testing.assert_allclose(schedules.flow_matching_path(x0, eps, np.ones(3)),
                             eps)
  np.testing.assert_allclose(losses.flow_matching_loss(pred, x0, eps),
                             ((pred - (eps - x0)) ** 2).sum((1, 2, 3)),
                             rtol=1e-5)
  # the target is the path's time derivative
  d = jax.jvp(lambda u: schedules.flow_matching_path(x0, eps, u), (t,),
              (np.ones(3, np.float32),))[1]
  np.testing.assert_allclose(d, eps - x0, atol=1e-6)


def test_event_ndims_and_leading_shape():
  x0, eps, pred, _ = _arrays(4, shape=(2, 3, 5))
  out = losses.flow_matching_loss(pred, x0, eps, event_ndims=1)
  assert out.shape == (2, 3)
  ab = np.full((2, 3), 0.5, np.float32)
  assert losses.v_prediction_loss(pred, x0, eps, ab, event_ndims=1).shape == \
      (2, 3)


def test_edm_loss_is_lambda_weighted_denoiser_error():
  """Karras et al. 2022, eq. 8 / Table 1: lambda(sigma) ||D - x0||^2 with
  D = c_skip x~ + c_out F, lambda = (sigma^2 + sd^2) / (sigma sd)^2, at the
  VE state x~ = x0 + sigma eps of alpha_bar (sigma^2 = (1 - ab) / ab)."""
  rng = np.random.RandomState(0)
  x0, eps, f = (rng.randn(3, 4, 4, 1) for _ in range(3))
  ab = np.array([0.9, 0.3, 0.01])
  sig = np.sqrt((1 - ab) / ab)[:, None, None, None]
  sd = 0.5
  c_skip = sd ** 2 / (sig ** 2 + sd ** 2)
  c_out = sig * sd / np.sqrt(sig ** 2 + sd ** 2)
  d = c_skip * (x0 + sig * eps) + c_out * f
  lam = (sig ** 2 + sd ** 2) / (sig * sd) ** 2
  expected = np.sum(lam * (d - x0) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(
      losses.edm_loss(f.astype(np.float32), x0.astype(np.float32),
                      eps.astype(np.float32), ab.astype(np.float32)),
      expected, rtol=1e-4)
