"""`diffusion.samplers.sample` over plain model callables, against closed
forms (the per-step formulas are checked by hand in
tests/test_family_diffusion.py)."""

import math

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
                                         ("heun", 2), ("heun", 5),
                                         ("ddim", 3)])
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
  with pytest.raises(ValueError, match="'ddpm' does not fit objective"):
    samplers.sample(constant_velocity, x, x[:, 0, 0, 0],
                    objective="flow_matching", sampler="ddpm", nfe=2)


# --- Guidance interval and autoguidance, on toy linear models --------------


def linear_model(a, b):
  """A toy network linear in x and t: p x + a t - b c (p: its params)."""
  def fn(p, x, t, c):
    return p * x + a * t[:, None] - b * c.astype(jnp.float32)[:, None]
  return fn


def np_linear(p, a, b, x, t, c):
  return p * x + a * t[:, None] - b * c.astype(np.float32)[:, None]


def guided_before_intervals(model_fn, w, null_label):
  """`samplers.guided` as it was before guidance intervals (the reference
  of bitwise equality)."""
  def fn(params, x, t, labels):
    b = x.shape[0]
    null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype),
                            labels.shape)
    out = model_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([labels, null]))
    return (1.0 + w) * out[:b] - w * out[b:]
  return fn


# sigma~ = t here, so the boundaries are exact: (lo, hi] = (0.25, 0.75].
T_EDGES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)
X5 = np.arange(10, dtype=np.float32).reshape(5, 2) / 4 - 1
C5 = np.array([0, 1, 2, 3, 4], np.int32)


def test_guidance_interval_is_cfg_inside_and_cond_outside():
  w, null = 1.5, 9
  out = samplers.guided(linear_model(0.3, 0.2), w, null, (0.25, 0.75),
                        lambda t: t)(0.7, X5, T_EDGES, C5)
  cond = np_linear(0.7, 0.3, 0.2, X5, T_EDGES, C5)
  uncond = np_linear(0.7, 0.3, 0.2, X5, T_EDGES, np.full(5, null))
  inside = np.array([False, False, True, True, False])  # lo < sig <= hi
  expected = np.where(inside[:, None], (1 + w) * cond - w * uncond, cond)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_guidance_interval_is_one_forward_pass_of_the_doubled_batch():
  calls = []

  def fn(p, x, t, c):
    jax.debug.callback(lambda b: calls.append(int(b)), x.shape[0])
    return linear_model(0.3, 0.2)(p, x, t, c)

  samplers.guided(fn, 2.0, 9, (0.25, 0.75), lambda t: t)(0.7, X5, T_EDGES,
                                                          C5)
  jax.effects_barrier()
  assert calls == [10]


def test_guidance_interval_to_inf_guides_flow_matchings_pure_noise():
  """sigma~(t = 1) = inf for flow matching: inside (lo, inf]."""
  t = np.array([1.0, 0.5, 0.1], np.float32)  # sigma~ = inf, 1, 1/9
  sig = lambda u: samplers.sigma_tilde("flow_matching", u)
  x, c, w = X5[:3], C5[:3], 2.0
  out = samplers.guided(linear_model(0.3, 0.2), w, 9, (0.5, math.inf),
                        sig)(0.7, x, t, c)
  cond = np_linear(0.7, 0.3, 0.2, x, t, c)
  uncond = np_linear(0.7, 0.3, 0.2, x, t, np.full(3, 9))
  expected = np.concatenate([((1 + w) * cond - w * uncond)[:2], cond[2:]])
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("interval", [(), None])
def test_no_interval_is_the_guidance_of_before_bitwise(interval):
  model = linear_model(0.3, 0.2)
  old = jax.jit(guided_before_intervals(model, 0.75, 9))(0.7, X5, T_EDGES,
                                                         C5)
  new = jax.jit(samplers.guided(model, 0.75, 9, interval, lambda t: t))(
      0.7, X5, T_EDGES, C5)
  plain = jax.jit(samplers.guided(model, 0.75, 9))(0.7, X5, T_EDGES, C5)
  assert np.array_equal(new, old) and np.array_equal(plain, old)


def test_autoguidance_is_main_extrapolated_from_the_guide():
  w = 1.5
  main, guide = linear_model(0.3, 0.2), linear_model(-0.4, 0.05)
  out = samplers.autoguided(main, guide, w)((0.7, 0.2), X5, T_EDGES, C5)
  m = np_linear(0.7, 0.3, 0.2, X5, T_EDGES, C5)
  g = np_linear(0.2, -0.4, 0.05, X5, T_EDGES, C5)  # the SAME condition
  np.testing.assert_allclose(out, (1 + w) * m - w * g, rtol=1e-6, atol=1e-6)
  within = samplers.autoguided(main, guide, w, (0.25, 0.75), lambda t: t)(
      (0.7, 0.2), X5, T_EDGES, C5)
  inside = np.array([False, False, True, True, False])
  np.testing.assert_allclose(
      within, np.where(inside[:, None], (1 + w) * m - w * g, m), rtol=1e-6,
      atol=1e-6)


def test_autoguidance_at_w0_is_the_main_model_exactly():
  def guide(p, x, t, c):
    raise AssertionError("the guide is not evaluated at w = 0")

  main = linear_model(0.3, 0.2)
  out = jax.jit(samplers.autoguided(main, guide, 0.0, (0.25, 0.75),
                                    lambda t: t))((0.7, None), X5, T_EDGES,
                                                  C5)
  assert np.array_equal(out, jax.jit(main)(0.7, X5, T_EDGES, C5))


@pytest.mark.parametrize("interval", [(5.0, 1.0), (1.0, 1.0), (-0.1, 2.0),
                                      (0.3,), (0.3, 1.0, 2.0), "0.3,5",
                                      (math.nan, 1.0), (0.3, math.nan),
                                      (math.inf, math.inf), (True, 2.0)])
def test_a_bad_guidance_interval_is_one_clear_error(interval):
  with pytest.raises(ValueError, match=r"guidance_interval must be \(\) .*"
                     r"0 <= lo < hi <= inf.*got"):
    samplers.check_guidance_interval(interval)
  with pytest.raises(ValueError, match="guidance_interval"):
    samplers.guided(linear_model(0.3, 0.2), 1.0, 9, interval, lambda t: t)


def test_good_guidance_intervals_are_float_pairs():
  assert samplers.check_guidance_interval(()) == ()
  assert samplers.check_guidance_interval([0, 5]) == (0.0, 5.0)
  assert samplers.check_guidance_interval((0.28, math.inf)) == (0.28,
                                                                math.inf)


def test_sample_with_an_interval_above_every_level_is_unguided():
  """The Karras grid of flow matching starts at t = 1 - 0.001, sigma~ =
  999 (`samplers.FM_T_GAP`): an interval above it never guides."""
  noise = np.zeros((2, 2, 2, 1), np.float32)
  cond = np.array([1.0, 3.0], np.float32)
  run = lambda **kw: samplers.sample(
      constant_velocity, noise, cond, objective="flow_matching",
      sampler="dpmpp_2m", nfe=3, null_cond=-1.0, **kw)
  np.testing.assert_allclose(run(guidance_scale=0.5,
                                 guidance_interval=(1e4, math.inf)),
                             run(guidance_scale=0.0), atol=1e-6)
  assert not np.allclose(run(guidance_scale=0.5), run(guidance_scale=0.0))


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
    # EDM (Karras et al. 2022, Table 1): D = c_skip x~ + c_out F at the VE
    # state x~ = x / a, sigma~ = s / a, sigma_data = 0.5
    sig, sd = s / a, 0.5
    c_skip = sd ** 2 / (sig ** 2 + sd ** 2)
    c_out = sig * sd / jnp.sqrt(sig ** 2 + sd ** 2)
    return {"eps": eps, "v": a * eps - s * x0,
            "flow_matching": eps - x0,
            "edm": (x0 - c_skip * x / a) / c_out}[objective]
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


@pytest.mark.parametrize("objective", ["v", "edm"])
@pytest.mark.parametrize("sampler", sorted(ORDER_BANDS) + ["ddim"])
def test_v_and_edm_predictions_give_the_eps_answer(sampler, objective):
  """eps, v and EDM's F are converted to the same x0, so the solvers
  agree."""
  x1 = np.random.RandomState(1).randn(8, 3).astype(np.float32)
  np.testing.assert_allclose(_run(objective, sampler, 12, x1),
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


@pytest.mark.parametrize("nfe", [10, 50])
def test_flow_matching_euler_is_as_accurate_as_eps_ddim(nfe):
  """With the exact model of Gaussian data, flow matching's Euler on its
  uniform grid and eps-DDIM on the cosine grid end as close to the ODE's
  endpoint (rms 6.8e-2 / 7.2e-2 at nfe 10, 1.44e-2 / 1.53e-2 at 50): the
  solver and time grid do not make flow matching's FID trail eps's
  (docs/diffusion.md)."""
  x1 = np.random.RandomState(0).randn(256, 4).astype(np.float32)
  eps_err = np.sqrt(np.mean((_run("eps", "ddim", nfe, x1) - exact_endpoint(
      "eps", x1.astype(np.float64))) ** 2))
  # Euler starts at t = 1 exactly, where x~ / sigma~ = x_1: the ODE's
  # endpoint from there is MU + S x_1
  fm = _run("flow_matching", "euler", nfe, x1)
  fm_err = np.sqrt(np.mean((fm - (MU + S * x1.astype(np.float64))) ** 2))
  assert 0.8 < fm_err / eps_err < 1.1, (fm_err, eps_err)
