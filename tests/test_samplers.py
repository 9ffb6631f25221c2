"""`diffusion.samplers.sample` over plain model callables, against closed
forms (the per-step formulas are checked by hand in
tests/test_family_diffusion.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.diffusion import samplers
from condgen_jax.diffusion import schedules


def constant_velocity(x, t, cond):
  del t
  return jnp.broadcast_to(cond[:, None, None, None].astype(x.dtype), x.shape)


@pytest.mark.parametrize("sampler,nfe", [("euler", 1), ("euler", 7),
                                         ("heun", 2), ("heun", 5)])
def test_a_constant_velocity_moves_x_by_it(sampler, nfe):
  noise = np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 3, 3, 1)
  cond = np.array([0.5, -2.0], np.float32)
  out = samplers.sample(constant_velocity, noise, cond,
                        objective="flow_matching", sampler=sampler, nfe=nfe)
  np.testing.assert_allclose(out, noise - cond[:, None, None, None],
                             atol=1e-6)


def test_guidance_extrapolates_from_the_null_condition():
  noise = np.zeros((2, 2, 2, 1), np.float32)
  cond = np.array([1.0, 3.0], np.float32)
  out = jax.jit(lambda n, c: samplers.sample(
      constant_velocity, n, c, objective="flow_matching", sampler="euler",
      nfe=3, guidance_scale=0.5, null_cond=-1.0))(noise, cond)
  guided = 1.5 * cond - 0.5 * (-1.0)  # (1 + w) v(c) - w v(null)
  np.testing.assert_allclose(out, -np.broadcast_to(
      guided[:, None, None, None], noise.shape), atol=1e-6)


def test_ddim_with_a_zero_noise_prediction_rescales_by_alpha():
  """eps_hat = 0: x0_hat = x_t / alpha_t, and each DDIM step gives
  alpha_s x0_hat, so x_0 = x_1 alpha(0) / alpha(1) = x_1 / sqrt(abar(1))."""
  noise = np.full((1, 2, 2, 1), 0.003, np.float32)
  zero = lambda x, t, c: jnp.zeros_like(x)
  out = samplers.sample(zero, noise, np.array([0]), objective="eps",
                        sampler="ddim", nfe=6, clip_x0=False,
                        alpha_bar_fn=schedules.cosine_alpha_bar)
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  abar_1 = max(f(1.0) / f(0.0), 1e-5)
  np.testing.assert_allclose(out, noise / np.sqrt(abar_1), rtol=1e-4)


def test_bad_arguments_are_named():
  x = np.zeros((1, 2, 2, 1), np.float32)
  with pytest.raises(ValueError, match="nfe must be an integer >= 1; got 0"):
    samplers.sample(constant_velocity, x, x[:, 0, 0, 0],
                    objective="flow_matching", sampler="euler", nfe=0)
  with pytest.raises(ValueError, match="'ddim' does not fit objective"):
    samplers.sample(constant_velocity, x, x[:, 0, 0, 0],
                    objective="flow_matching", sampler="ddim", nfe=2)


# --- Few-step solvers against the exact Gaussian denoiser -------------------
#
# Data x_0 ~ N(MU, S^2) per dimension. Then x_t = alpha x_0 + sigma eps is
# Gaussian and E[x_0 | x_t] = MU + alpha S^2 / (alpha^2 S^2 + sigma^2)
# (x_t - alpha MU), so the network's exact eps / v / velocity is closed
# form. In x~ = x_t / alpha, sigma~ = sigma / alpha, the probability-flow ODE
# moves x~ - MU by the factor sqrt(S^2 + sigma~^2) (the marginal's std), so
# its endpoint from x_1 is MU + (x~_1 - MU) S / sqrt(S^2 + sigma~_1^2).

MU, S = 0.3, 0.5


def gaussian_model(objective, alpha_bar_fn, calls=None):
  def fn(x, t, cond):
    del cond
    if calls is not None:
      jax.debug.callback(lambda: calls.append(1))
    tt = t[:, None]
    if objective == "flow_matching":
      a, s = 1.0 - tt, tt
    else:
      ab = alpha_bar_fn(t)[:, None]
      a, s = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    x0 = MU + a * S ** 2 / (a ** 2 * S ** 2 + s ** 2) * (x - a * MU)
    eps = (x - a * x0) / s
    return {"eps": eps, "v": a * eps - s * x0,
            "flow_matching": eps - x0}[objective]
  return fn


def exact_endpoint(objective, x1):
  """The ODE's x_0 from x_1, in numpy (float64). Flow matching starts at
  t = 1 - FM_T_GAP from x = (1 - gap) x_1 (samplers.FM_T_GAP)."""
  if objective == "flow_matching":
    t = 1.0 - samplers.FM_T_GAP
    a, s, x1 = 1.0 - t, t, t * x1
  else:
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    ab = max(f(1.0) / f(0.0), 1e-5)  # the cosine schedule at t = 1
    a, s = np.sqrt(ab), np.sqrt(1.0 - ab)
  return MU + (x1 / a - MU) * S / np.sqrt(S ** 2 + (s / a) ** 2)


def _run(objective, sampler, nfe, x1, calls=None, rng=None):
  return np.asarray(samplers.sample(
      gaussian_model(objective, schedules.cosine_alpha_bar, calls), x1,
      np.zeros(x1.shape[0], np.int32), objective=objective, sampler=sampler,
      nfe=nfe, alpha_bar_fn=schedules.cosine_alpha_bar, clip_x0=False,
      rng=rng), np.float64)


# Slopes of log(rms error) against log(nfe) over nfe = 16, 32, 64 on the
# Karras grid (measured: eps 2.13 / 3.07 / 2.20, flow_matching 1.99 / 2.86 /
# 2.09). DPM-Solver++(2M) and Heun are second order; UniPC-2 with its
# corrector is third (Zhao et al. 2023, Thm. 3.3: UniC raises the order by
# one). At nfe < 16 the rho = 7 grid is pre-asymptotic (errors do not yet
# fall monotonically), hence the range. The band's upper end catches an
# error that falls faster than the method's order allows, e.g. a solver
# reading the exact answer off the model.
ORDER_BANDS = {"dpmpp_2m": (1.6, 2.6), "unipc": (2.5, 3.5),
               "edm_heun": (1.6, 2.6)}


@pytest.mark.parametrize("objective", ["eps", "flow_matching"])
@pytest.mark.parametrize("sampler", sorted(ORDER_BANDS))
def test_few_step_solvers_converge_at_their_order(sampler, objective):
  x1 = np.random.RandomState(0).randn(16, 4).astype(np.float32)
  exact = exact_endpoint(objective, x1.astype(np.float64))
  nfes = np.array([16, 32, 64])
  errs = [np.sqrt(np.mean((_run(objective, sampler, int(n), x1) - exact)
                          ** 2)) for n in nfes]
  slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
  lo, hi = ORDER_BANDS[sampler]
  assert lo <= slope <= hi, (slope, errs)
  assert errs[-1] < 0.02, errs


@pytest.mark.parametrize("sampler", sorted(ORDER_BANDS))
def test_v_prediction_gives_the_eps_answer(sampler):
  """eps and v are converted to the same x0, so the solvers agree."""
  x1 = np.random.RandomState(1).randn(8, 3).astype(np.float32)
  np.testing.assert_allclose(_run("v", sampler, 12, x1),
                             _run("eps", sampler, 12, x1), atol=2e-4)


@pytest.mark.parametrize("sampler", samplers.FEW_STEP_SAMPLERS)
@pytest.mark.parametrize("nfe", [1, 2, 5, 8])
def test_few_step_solvers_call_the_model_nfe_times(sampler, nfe):
  calls = []
  x1 = np.ones((2, 3), np.float32)
  out = _run("eps", sampler, nfe, x1, calls, rng=jax.random.key(0))
  assert len(calls) == nfe
  assert np.all(np.isfinite(out))


def test_few_step_guided_counts_the_doubled_batch_once():
  calls = []

  def fn(x, t, c):
    jax.debug.callback(lambda: calls.append(1))
    assert x.shape[0] == 4  # [x; x] with [c; null]
    return gaussian_model("eps", schedules.cosine_alpha_bar)(x, t, c)

  samplers.sample(fn, np.ones((2, 3), np.float32), np.array([1, 2]),
                  objective="eps", sampler="dpmpp_2m", nfe=6,
                  alpha_bar_fn=schedules.cosine_alpha_bar,
                  guidance_scale=1.0, null_cond=0, clip_x0=False)
  assert len(calls) == 6


def test_edm_churn_samples_the_data_distribution():
  """Many draws of the stochastic sampler: mean and variance of N(MU, S^2)
  within 4 standard errors plus a small slack for the discretization
  (measured: mean 0.2977, variance / S^2 1.003 at nfe 127; Heun's own
  rms error there is ~3e-3 in x; at nfe 63 it shifts the variance ~5%)."""
  n = 8000
  x1 = np.asarray(jax.random.normal(jax.random.key(3), (n, 1)))
  out = _run("eps", "edm_churn", 127, x1, rng=jax.random.key(4)).ravel()
  assert abs(out.mean() - MU) < 4 * S / np.sqrt(n) + 0.005, out.mean()
  assert abs(out.var() / S ** 2 - 1) < 4 * np.sqrt(2 / n) + 0.02, out.var()
  # Not the deterministic map: the same x_1 with another key differs.
  other = _run("eps", "edm_churn", 127, x1[:8], rng=jax.random.key(5))
  assert np.abs(other.ravel() - out[:8]).max() > 1e-3
