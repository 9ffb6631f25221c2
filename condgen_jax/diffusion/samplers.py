"""Samplers of diffusion and flow-matching models, as pure functions.

Time runs from t = 1 (noise) to t = 0 (data) on the uniform grid
t_i = 1 - i / N, i = 0..N (see `condgen_jax.losses` for the forward
processes). A model is `model_fn(params, x, t, labels)` -> its prediction
(eps, v or the velocity, by `objective`), t `[B]` in [0, 1].

- 'ddpm': ancestral sampling from the posterior q(x_s | x_t, x_0 = x0_hat)
  (Ho et al. 2020, eqs. 6-7, on the grid s < t; the variance is the
  posterior's, beta_tilde). With the linear schedule and N = 1000 this is
  exactly the chain of Ho et al.
- 'ddim': the deterministic DDIM update, eta = 0 (Song et al. 2021,
  "Denoising Diffusion Implicit Models", eq. 12):
  x_s = alpha_s x0_hat + sigma_s eps_hat.
- 'euler' / 'heun': the ODE dx/dt = v(x, t) of flow matching, integrated
  from t = 1 to 0 with Euler or Heun's second-order method (Karras et al.
  2022, Alg. 1). 'ddim' on flow matching is the Euler step: with
  x0_hat = x - t v and eps_hat = x + (1 - t) v, the DDIM update
  (1 - s) x0_hat + s eps_hat equals x + (s - t) v, so every objective
  samples with the default sampler.

- 'dpmpp_2m' | 'unipc' | 'edm_heun' | 'edm_churn': few-step solvers for
  every objective, on the Karras et al. 2022 sigma grid; see "Few-step
  solvers" below (`few_step_sample`).

`nfe` counts network evaluations: N = nfe steps for ddpm / ddim / euler /
dpmpp_2m / unipc; Heun takes ceil(nfe / 2) steps of two evaluations each,
except that with an odd nfe its last step is an Euler step (one
evaluation), as in Karras et al. 2022; edm_heun / edm_churn take
nfe // 2 + 1 steps, the last one Euler (and the first too when nfe is
even). Either way the model is evaluated exactly `nfe` times.

Classifier-free guidance (Ho & Salimans 2022): the prediction is
(1 + w) pred(x, t, c) - w pred(x, t, null), so w = 0 is the plain
conditional model (null: the null label, or every attribute at its
null); both halves come from one forward pass over a batch of 2B. For eps
and v the combination commutes with the conversions between them (both
are affine in the prediction), so guiding v is guiding eps. A guidance
interval (lo, hi] of sigma~ = sigma_t / alpha_t (Kynkaanniemi et al. 2024)
guides only there (`guided`); autoguidance (Karras et al. 2024) replaces
the null-condition half by a weaker guide model (`autoguided`).

`clip_x0` (eps / v): x0_hat is clipped to the data range [-1, 1] and
eps_hat recomputed from it, as in the code of Ho et al.

The loop (`run_steps`) is a `lax.fori_loop`: its compile time does not grow
with nfe, and XLA:CPU runs this forward-only loop as fast as the same steps
unrolled (docs/diffusion.md has the timings).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from condgen_jax.diffusion import schedules

OBJECTIVES = ("eps", "v", "flow_matching", "edm")
# Few-step solvers over every objective (`few_step_sample`).
FEW_STEP_SAMPLERS = ("dpmpp_2m", "unipc", "edm_heun", "edm_churn")
SAMPLERS = {"eps": ("ddpm", "ddim") + FEW_STEP_SAMPLERS,
            "v": ("ddpm", "ddim") + FEW_STEP_SAMPLERS,
            "edm": ("ddpm", "ddim") + FEW_STEP_SAMPLERS,
            "flow_matching": ("euler", "heun", "ddim") + FEW_STEP_SAMPLERS}
ALL_SAMPLERS = ("ddpm", "ddim", "euler", "heun") + FEW_STEP_SAMPLERS


def check_sampler(objective: str, sampler: str) -> None:
  """ValueError naming both when `sampler` does not fit `objective`."""
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}; expected one of "
                     f"{OBJECTIVES}.")
  if sampler not in SAMPLERS[objective]:
    raise ValueError(f"sampler {sampler!r} does not fit objective "
                     f"{objective!r}; objective {objective!r} samples with "
                     f"one of {SAMPLERS[objective]}.")


def combine_guidance(cond, uncond, guidance_scale):
  """(1 + w) cond - w uncond (Ho & Salimans 2022, eq. 6; w = 0: cond)."""
  return (1.0 + guidance_scale) * cond - guidance_scale * uncond


def check_guidance_interval(interval, name: str = "guidance_interval"
                            ) -> tuple:
  """`interval` as () (guidance at every noise level) or (lo, hi) floats
  with 0 <= lo < hi <= inf (hi may be inf); else one ValueError naming
  `name`, the value and what is allowed. A list is taken as a tuple."""
  ok = isinstance(interval, (tuple, list)) and (
      len(interval) == 0 or (
          len(interval) == 2 and
          all(isinstance(v, (int, float)) and not isinstance(v, bool)
              for v in interval) and
          math.isfinite(interval[0]) and
          0 <= interval[0] < interval[1] and not math.isnan(interval[1])))
  if not ok:
    raise ValueError(
        f"{name} must be () (guidance at every noise level) or a pair "
        f"(lo, hi) of sigma~ with 0 <= lo < hi <= inf (hi may be inf); got "
        f"{interval!r}.")
  return tuple(float(v) for v in interval)


def in_guidance_interval(sig, interval):
  """The mask lo < sig <= hi of the guidance interval (lo, hi) (Kynkaanniemi
  et al. 2024, eq. 3); every True for the empty interval ()."""
  if not interval:
    return jnp.ones(jnp.shape(sig), bool)
  lo, hi = interval
  return (sig > lo) & (sig <= hi)


def _within(guided_pred, plain, t, interval, sigma_fn):
  """`guided_pred` where sigma_fn(t) lies in `interval`, else `plain`, per
  example (t `[B]`); `guided_pred` itself for the empty interval."""
  if not interval:
    return guided_pred
  keep = in_guidance_interval(sigma_fn(t), interval)
  return jnp.where(_expand(keep, plain), guided_pred, plain)


def guided(model_fn: Callable, guidance_scale: float, null_label,
           interval=(), sigma_fn: Callable | None = None) -> Callable:
  """model_fn with classifier-free guidance at the static scale w: one
  forward pass on [x; x] with labels [c; null]. w = 0 skips the null half.

  With a guidance interval (Kynkaanniemi et al. 2024, "Applying Guidance in
  a Limited Interval Improves Sample and Distribution Quality in Diffusion
  Models", eq. 3) the prediction of each example is

    (1 + w) pred(x, t, c) - w pred(x, t, null)   if lo < sigma~(t) <= hi,
    pred(x, t, c)                                 otherwise,

  picked per example from the same forward pass (jnp.where).

  Args:
    model_fn: `model_fn(params, x, t, labels)` -> the prediction.
    guidance_scale: w (static), our convention: the paper's w is 1 + w.
    null_label: the null class, or for attribute rows `[B, A]` the tuple of
      the A attributes' nulls (the whole condition dropped).
    interval: () or None (guidance at every noise level: exactly the
      function without an interval) or (lo, hi), static, of sigma~
      (`check_guidance_interval`; hi may be inf).
    sigma_fn: t `[B]` -> sigma~(t) `[B]`, the noise-to-signal ratio
      sigma_t / alpha_t (`sigma_tilde`); needed with an interval.

  Returns:
    `fn(params, x, t, labels)` -> the guided prediction.
  """
  if guidance_scale == 0:
    return model_fn
  interval = () if interval is None else check_guidance_interval(interval)
  if interval and sigma_fn is None:
    raise ValueError("guided: a guidance interval needs sigma_fn (t -> "
                     "sigma~).")

  def fn(params, x, t, labels):
    b = x.shape[0]
    null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype),
                            labels.shape)
    out = model_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([labels, null]))
    return _within(combine_guidance(out[:b], out[b:], guidance_scale),
                   out[:b], t, interval, sigma_fn)

  return fn


def autoguided(model_fn: Callable, guide_fn: Callable, guidance_scale: float,
               interval=(), sigma_fn: Callable | None = None) -> Callable:
  """Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad
  Version of Itself", eq. 2): the guide is a weaker model of the same task
  (an earlier checkpoint, a smaller network), evaluated with the SAME
  condition:

    (1 + w) model(x, t, c) - w guide(x, t, c),

  w = guidance_scale (the paper's w is 1 + w); w = 0 is the main model
  exactly (the guide is not evaluated). With `interval` (as in `guided`)
  this holds where lo < sigma~(t) <= hi and the main model's prediction
  elsewhere, per example.

  Args:
    model_fn: `model_fn(params, x, t, labels)` -> the main prediction.
    guide_fn: `guide_fn(guide_params, x, t, labels)` -> the guide's (same
      objective, so the same quantity).
    guidance_scale: w (static).
    interval, sigma_fn: the guidance interval, as in `guided`.

  Returns:
    `fn(params, x, t, labels)` with `params` the pair (main params, guide
    params).
  """
  if guidance_scale == 0:
    return lambda params, x, t, labels: model_fn(params[0], x, t, labels)
  interval = () if interval is None else check_guidance_interval(interval)
  if interval and sigma_fn is None:
    raise ValueError("autoguided: a guidance interval needs sigma_fn (t -> "
                     "sigma~).")

  def fn(params, x, t, labels):
    main_params, guide_params = params
    main = model_fn(main_params, x, t, labels)
    guide = guide_fn(guide_params, x, t, labels)
    return _within(combine_guidance(main, guide, guidance_scale), main, t,
                   interval, sigma_fn)

  return fn


def num_steps(sampler: str, nfe: int) -> int:
  """Steps of the time grid for `nfe` evaluations (Heun: ceil(nfe / 2))."""
  return (nfe + 1) // 2 if sampler == "heun" else nfe


def _expand(a, x):
  return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def denoise(objective: str, pred, x, alpha_bar, clip_x0: bool):
  """(x0_hat, eps_hat) from an eps or v prediction at x = x_t.

  eps: x0 = (x - sigma eps) / alpha; v: x0 = alpha x - sigma v and
  eps = sigma x + alpha v (Salimans & Ho 2022); edm: x0 = c_skip x~ +
  c_out F, x~ = x / alpha (`schedules.edm_preconditioning`), and
  eps = (x - alpha x0) / sigma. With `clip_x0`, x0 is clipped to [-1, 1]
  and eps = (x - alpha x0) / sigma.
  """
  ab = _expand(jnp.asarray(alpha_bar, x.dtype), x)
  alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
  if objective == "eps":
    x0, eps = (x - sigma * pred) / alpha, pred
  elif objective == "v":
    x0, eps = alpha * x - sigma * pred, sigma * x + alpha * pred
  elif objective == "edm":
    c_skip, c_out, _ = schedules.edm_preconditioning(sigma / alpha)
    x0 = c_skip * x / alpha + c_out * pred
    eps = (x - alpha * x0) / sigma
  else:
    raise ValueError(f"denoise needs objective 'eps', 'v' or 'edm'; got "
                     f"{objective!r}.")
  if clip_x0:
    x0 = jnp.clip(x0, -1.0, 1.0)
    eps = (x - alpha * x0) / sigma
  return x0, eps


def ddim_step(x0, eps, alpha_bar_s):
  """x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s) eps_hat
  (Song et al. 2021, eq. 12 with eta = 0)."""
  ab = _expand(jnp.asarray(alpha_bar_s, x0.dtype), x0)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps


def ddpm_step(x, x0, alpha_bar_t, alpha_bar_s, noise):
  """A draw of q(x_s | x_t, x_0 = x0_hat), s < t (Ho et al. 2020, eq. 7):

    mean = sqrt(ab_s) b / (1 - ab_t) x0 + sqrt(a) (1 - ab_s) / (1 - ab_t) x_t,
    var  = b (1 - ab_s) / (1 - ab_t),   a = ab_t / ab_s, b = 1 - a,

  x_s = mean + sqrt(var) noise. At s = 0 (ab_s = 1) var = 0 and x_s = x0.
  """
  ab_t = _expand(jnp.asarray(alpha_bar_t, x.dtype), x)
  ab_s = _expand(jnp.asarray(alpha_bar_s, x.dtype), x)
  a = ab_t / ab_s
  b = 1.0 - a
  mean = (jnp.sqrt(ab_s) * b * x0 + jnp.sqrt(a) * (1.0 - ab_s) * x) / (
      1.0 - ab_t)
  var = jnp.maximum(b * (1.0 - ab_s) / (1.0 - ab_t), 0.0)
  return mean + jnp.sqrt(var) * noise


def euler_step(x, v, t, s):
  """x_s = x_t + (s - t) v(x_t, t): one Euler step of dx/dt = v."""
  return x + _expand(jnp.asarray(s - t, x.dtype), x) * v


def heun_step(velocity_fn: Callable, x, t, s, v=None):
  """Heun's method (Karras et al. 2022, Alg. 1, lines 5-8): with
  v1 = v(x_t, t), x~ = x_t + (s - t) v1, v2 = v(x~, s),
  x_s = x_t + (s - t) (v1 + v2) / 2. Two evaluations (one when v1 = `v` is
  given)."""
  v1 = velocity_fn(x, t) if v is None else v
  v2 = velocity_fn(euler_step(x, v1, t, s), s)
  return euler_step(x, 0.5 * (v1 + v2), t, s)


def make_step(model_fn: Callable, *, objective: str, sampler: str,
              steps: int, alpha_bar_fn: Callable | None = None,
              clip_x0: bool = True) -> Callable:
  """step(params, x, labels, rng, i, euler=False) -> x at t_{i+1}.

  One step of the grid t_i = 1 - i / steps. `model_fn(params, x, t, labels)`
  is already guided (see `guided`). `euler` (static): Heun's last step as a
  plain Euler step.
  """
  check_sampler(objective, sampler)
  if sampler in FEW_STEP_SAMPLERS:
    raise ValueError(f"sampler {sampler!r} is multistep; use "
                     "`few_step_sample`.")

  def step(params, x, labels, rng, i, euler=False):
    b = x.shape[0]
    t = jnp.full((b,), 1.0 - i / steps, jnp.float32)
    s = jnp.full((b,), 1.0 - (i + 1) / steps, jnp.float32)
    if objective == "flow_matching":
      velocity = lambda y, u: model_fn(params, y, u, labels)
      if sampler in ("euler", "ddim") or euler:
        return euler_step(x, velocity(x, t), t, s)
      return heun_step(velocity, x, t, s)
    ab_t, ab_s = alpha_bar_fn(t), alpha_bar_fn(s)
    x0, eps = denoise(objective, model_fn(params, x, t, labels), x, ab_t,
                      clip_x0)
    if sampler == "ddim":
      return ddim_step(x0, eps, ab_s)
    noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return ddpm_step(x, x0, ab_t, ab_s, noise)

  return step


def run_steps(step: Callable, params, x, labels, rng, *, sampler: str,
              nfe: int) -> jax.Array:
  """Runs `step` (from `make_step`) over the grid for `nfe` evaluations."""
  steps = num_steps(sampler, nfe)
  last_euler = sampler == "heun" and nfe % 2 == 1
  full = steps - 1 if last_euler else steps
  x = jax.lax.fori_loop(0, full, lambda i, y: step(params, y, labels, rng, i),
                        x)
  if last_euler:
    x = step(params, x, labels, rng, steps - 1, True)
  return x


def check_nfe(nfe) -> int:
  if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
    raise ValueError(f"nfe must be an integer >= 1; got {nfe!r}.")
  return nfe


def check_guidance_scale(w) -> float:
  if isinstance(w, bool) or not isinstance(w, (int, float)) or not (
      math.isfinite(w) and w >= 0):
    raise ValueError(f"guidance_scale must be a finite number >= 0; got "
                     f"{w!r}.")
  return float(w)


def sample(model_fn: Callable, noise, cond, *, objective: str, sampler: str,
           nfe: int, alpha_bar_fn: Callable | None = None,
           guidance_scale: float = 0.0, null_cond=None, clip_x0: bool = True,
           rng=None, guidance_interval=()) -> jax.Array:
  """Integrates from `noise` (x at t = 1) to t = 0 over any model callable.

  Args:
    model_fn: `model_fn(x, t, cond)` -> the prediction of `objective`
      ('eps' | 'v': the noise or v; 'flow_matching': the velocity), with
      `t` float32 `[B]` in [0, 1].
    noise: x_1, `[B, ...]`; cond: the conditions `[B, ...]`.
    objective, sampler, nfe: as the diffusion family's config keys;
      `model_fn` is called exactly `nfe` times (twice as many rows with
      guidance, in one call each).
    alpha_bar_fn: the schedule of 'eps' / 'v' (`schedules.SCHEDULES`).
    guidance_scale: w of (1 + w) model(x, c) - w model(x, null_cond).
    clip_x0: 'eps' / 'v': clip x0_hat to [-1, 1].
    rng: a `jax.random.key`, for the stochastic 'ddpm' / 'edm_churn'.
    guidance_interval: () (guide everywhere) or (lo, hi): guide only where
      lo < sigma~(t) <= hi (`guided`).

  Returns:
    x_0, the shape of `noise`, in the model's data space.
  """
  fn = lambda params, x, t, c: model_fn(x, t, c)
  fn = guided(fn, check_guidance_scale(guidance_scale), null_cond,
              check_guidance_interval(guidance_interval),
              lambda t: sigma_tilde(objective, t, alpha_bar_fn))
  if sampler in FEW_STEP_SAMPLERS:
    return few_step_sample(fn, None, jnp.asarray(noise), jnp.asarray(cond),
                           rng, objective=objective, sampler=sampler,
                           nfe=check_nfe(nfe), alpha_bar_fn=alpha_bar_fn,
                           clip_x0=clip_x0)
  step = make_step(fn, objective=objective, sampler=sampler,
                   steps=num_steps(sampler, check_nfe(nfe)),
                   alpha_bar_fn=alpha_bar_fn, clip_x0=clip_x0)
  return run_steps(step, None, jnp.asarray(noise), jnp.asarray(cond), rng,
                   sampler=sampler, nfe=nfe)


# --- Few-step solvers -------------------------------------------------------
#
# They work on every objective through the exact-x0 ("denoiser") form of the
# probability-flow ODE (Karras et al. 2022, "Elucidating the Design Space of
# Diffusion-Based Generative Models", eq. 4 with s(t) = alpha_t): with
#
#   x~ = x_t / alpha_t,  sigma~ = sigma_t / alpha_t
#     (eps / v: sigma~ = sqrt((1 - alpha_bar) / alpha_bar);
#      flow_matching: alpha_t = 1 - t, sigma_t = t, sigma~ = t / (1 - t)),
#
# x~ = x_0 + sigma~ eps and the ODE is dx~/dsigma~ = (x~ - D(x~, sigma~)) /
# sigma~, D = x0_hat. The network's eps / v / velocity is converted to x0 at
# each evaluation (`predict_x0`). lambda = -log sigma~ is the half log-SNR of
# DPM-Solver (Lu et al. 2022). Flow matching's t = 1 is pure noise
# (sigma~ = inf), so these solvers start it at t = 1 - FM_T_GAP, taking
# x_{1 - gap} = (1 - gap) x_1 (the x_0 term, gap x_0, dropped).

FM_T_GAP = 1e-3
EDM_SIGMA_MIN = 0.002
EDM_RHO = 7.0


def alpha_sigma(objective, t, alpha_bar_fn):
  """(alpha_t, sigma_t) of x_t = alpha_t x0 + sigma_t eps: flow matching
  (1 - t, t); eps / v / edm sqrt(ab), sqrt(1 - ab) of `alpha_bar_fn`."""
  if objective == "flow_matching":
    return 1.0 - t, t
  ab = alpha_bar_fn(t)
  return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def sigma_tilde(objective: str, t, alpha_bar_fn=None):
  """sigma~(t) = sigma_t / alpha_t (eps / v: sqrt((1 - ab) / ab))."""
  alpha, sigma = alpha_sigma(objective, jnp.asarray(t, jnp.float32),
                              alpha_bar_fn)
  return sigma / alpha


def t_of_sigma(objective: str, sig, alpha_bar_fn=None, iters: int = 40):
  """The t with sigma~(t) = sig: flow_matching sig / (1 + sig); eps / v by
  bisection on [0, 1] (alpha_bar decreasing), `iters` halvings."""
  sig = jnp.asarray(sig, jnp.float32)
  if objective == "flow_matching":
    return sig / (1.0 + sig)

  def body(_, lohi):
    lo, hi = lohi
    mid = 0.5 * (lo + hi)
    up = sigma_tilde(objective, mid, alpha_bar_fn) < sig
    return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(sig),
                                              jnp.ones_like(sig)))
  return 0.5 * (lo + hi)


def predict_x0(objective: str, pred, x, t, alpha_bar_fn=None,
               clip_x0: bool = False):
  """x0_hat at x = x_t from the network output `pred` (t `[B]`):

  eps: (x - sigma eps) / alpha; v: alpha x - sigma v (Salimans & Ho 2022);
  flow_matching (x = (1 - t) x0 + t eps, velocity eps - x0): x - t v.
  `clip_x0` (eps / v only, as `denoise`) clips it to [-1, 1].
  """
  if objective == "flow_matching":
    return x - _expand(t.astype(x.dtype), x) * pred
  x0, _ = denoise(objective, pred, x, alpha_bar_fn(t), clip_x0)
  return x0


def _top_t(objective):
  return 1.0 - FM_T_GAP if objective == "flow_matching" else 1.0


def _setup(model_fn, params, x, labels, objective, alpha_bar_fn, clip_x0):
  """(x~ at the top time, D(x~, t) -> x0_hat with t a scalar)."""
  b = x.shape[0]
  t_top = _top_t(objective)
  alpha_top, sigma_top = alpha_sigma(objective, jnp.float32(t_top),
                                      alpha_bar_fn)
  if objective == "flow_matching":
    xt = x * sigma_top / alpha_top  # x_{1-gap} ~ (1 - gap) x_1, over alpha
  else:
    xt = x / alpha_top

  def denoiser(xt, t):
    tb = jnp.full((b,), t, jnp.float32)
    alpha, _ = alpha_sigma(objective, tb, alpha_bar_fn)
    xs = _expand(alpha.astype(xt.dtype), xt) * xt
    return predict_x0(objective, model_fn(params, xs, tb, labels), xs, tb,
                      alpha_bar_fn, clip_x0)

  return xt, denoiser


def karras_grid(objective: str, steps: int, alpha_bar_fn=None,
                sigma_min: float = EDM_SIGMA_MIN, rho: float = EDM_RHO):
  """(t_i, sigma~_i), i = 0..steps, on the schedule of Karras et al. 2022,
  eq. 5: sigma_i = (smax^(1/rho) + i / (N - 1) (smin^(1/rho) -
  smax^(1/rho)))^rho for i < N, sigma_N = 0; smax = sigma~(top time). Each
  sigma_i is mapped to t_i (`t_of_sigma`) and recomputed from t_i, so the
  solver and the model see the same noise level."""
  smax = sigma_tilde(objective, _top_t(objective), alpha_bar_fn)
  smin = jnp.minimum(jnp.float32(sigma_min), smax)
  if steps == 1:
    sig = smax[None]
  else:
    i = jnp.arange(steps, dtype=jnp.float32) / (steps - 1)
    sig = (smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))
           ) ** rho
  t = t_of_sigma(objective, sig, alpha_bar_fn)
  t = t.at[0].set(_top_t(objective))
  t = jnp.concatenate([t, jnp.zeros(1, jnp.float32)])
  return t, sigma_tilde(objective, t, alpha_bar_fn)


def dpmpp_2m(denoiser: Callable, x, t, sig):
  """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
  Sampling of Diffusion Probabilistic Models", Alg. 2), in x~:

    x~_{i+1} = (sig_{i+1} / sig_i) x~_i + (1 - sig_{i+1} / sig_i) D_hat,
    D_hat = (1 + 1 / (2 r)) D_i - 1 / (2 r) D_{i-1},
    h_i = lambda_{i+1} - lambda_i, r = h_{i-1} / h_i, lambda = -log sig,

  with D_hat = D_i at the first step and at the last (to sig = 0, where it
  gives x~ = D_{N-1}). One evaluation per step: N = nfe steps.
  """
  n = t.shape[0] - 1
  lam = -jnp.log(sig)
  d = denoiser(x, t[0])
  x_new = sig[1] / sig[0] * x + (1.0 - sig[1] / sig[0]) * d
  if n == 1:
    return d

  def body(i, carry):
    x, d_prev = carry
    d = denoiser(x, t[i])
    r = (lam[i] - lam[i - 1]) / (lam[i + 1] - lam[i])
    dh = (1.0 + 0.5 / r) * d - 0.5 / r * d_prev
    ratio = sig[i + 1] / sig[i]
    return ratio * x + (1.0 - ratio) * dh, d

  x, _ = jax.lax.fori_loop(1, n - 1, body, (x_new, d))
  return denoiser(x, t[n - 1])


def unipc(denoiser: Callable, x, t, sig):
  """UniPC-2, variant bh2 (Zhao et al. 2023, "UniPC: A Unified
  Predictor-Corrector Framework for Fast Sampling of Diffusion Models",
  Algs. 1-2, data prediction), in x~. With h = lambda_{i+1} - lambda_i,
  hh = -h, phi1 = expm1(hh) (= sig_{i+1} / sig_i - 1), B(h) = phi1 (bh2),
  r1 = (lambda_{i-1} - lambda_i) / h and D1 = (D_{i-1} - D_i) / r1:

    base       = (sig_{i+1} / sig_i) x~_i - phi1 D_i,
    UniP-2      x~_{i+1} = base - B D1 / 2          (no D1 term at step 0),
    UniC        x~c_{i+1} = base - B (c0 D1 + c1 (D_{i+1} - D_i)),
                [c0, c1] = solve([[1, 1], [r1, 1]], [b1, b2]),
                b1 = (phi1 / hh - 1) / B, b2 = 2 ((phi1 / hh - 1) / hh
                - 1/2) / B   (step 0: c1 = 1/2, no D1 term),

  where D_{i+1} = D(x~_{i+1}) at the predictor's point is reused as the
  model value at the corrected point for the next step, so the corrector
  costs no evaluation. UniC raises the order by one (their Thm. 3.3):
  third order here. The last step (to sig = 0) is first order with no
  corrector: x~_N = D_{N-1}. One evaluation per step: N = nfe steps.
  """
  n = t.shape[0] - 1
  lam = -jnp.log(sig)
  d = denoiser(x, t[0])
  if n == 1:
    return d

  def coeffs(i):
    h = lam[i + 1] - lam[i]
    hh = -h
    phi1 = jnp.expm1(hh)
    bh = phi1
    g1 = phi1 / hh - 1.0
    g2 = g1 / hh - 0.5
    return sig[i + 1] / sig[i], phi1, bh, g1 / bh, 2.0 * g2 / bh, h

  # Step 0: order 1 predictor (DDIM) and order 1 corrector (rho_c = 1/2).
  ratio, phi1, bh, _, _, _ = coeffs(0)
  base = ratio * x - phi1 * d
  x_pred = base
  d_next = denoiser(x_pred, t[1])
  x = base - bh * 0.5 * (d_next - d)

  def body(i, carry):
    x, d, d_prev = carry  # x = x~_i (corrected), d = D_i, d_prev = D_{i-1}
    ratio, phi1, bh, b1, b2, h = coeffs(i)
    r1 = (lam[i - 1] - lam[i]) / h
    d1 = (d_prev - d) / r1
    base = ratio * x - phi1 * d
    x_pred = base - bh * 0.5 * d1
    d_next = denoiser(x_pred, t[i + 1])
    # solve [[1, 1], [r1, 1]] [c0, c1] = [b1, b2]
    c0 = (b1 - b2) / (1.0 - r1)
    c1 = b1 - c0
    x_corr = base - bh * (c0 * d1 + c1 * (d_next - d))
    return x_corr, d_next, d

  x, d, _ = jax.lax.fori_loop(1, n - 1, body, (x, d_next, d))
  return d


def edm_num_steps(nfe: int) -> int:
  """N = nfe // 2 + 1 steps of Heun for `nfe` evaluations: the last step
  is an Euler step (to sigma = 0), and with an even nfe so is the first."""
  return nfe // 2 + 1


def _heun_ve(denoiser, x, t_hat, s_hat, t_next, s_next, euler):
  d = (x - denoiser(x, t_hat)) / s_hat
  x_e = x + (s_next - s_hat) * d
  if euler:
    return x_e
  d2 = (x_e - denoiser(x_e, t_next)) / s_next
  return x + (s_next - s_hat) * 0.5 * (d + d2)


def edm_heun(denoiser: Callable, x, t, sig, *, first_euler: bool = False):
  """Heun's method on dx~/dsig = (x~ - D(x~, sig)) / sig over the Karras
  grid (Karras et al. 2022, Alg. 1): d = (x~ - D) / sig_i, x' = x~ +
  (sig_{i+1} - sig_i) d, x~_{i+1} = x~ + (sig_{i+1} - sig_i)(d + d') / 2.
  The last step (to 0) is Euler; `first_euler` makes the first one Euler
  too. Evaluations: 2 N - 1 (2 N - 2 with `first_euler`)."""
  n = t.shape[0] - 1
  start = 0
  if first_euler and n > 1:
    x = _heun_ve(denoiser, x, t[0], sig[0], t[1], sig[1], True)
    start = 1
  x = jax.lax.fori_loop(start, n - 1, lambda i, y: _heun_ve(
      denoiser, y, t[i], sig[i], t[i + 1], sig[i + 1], False), x)
  return _heun_ve(denoiser, x, t[n - 1], sig[n - 1], t[n], sig[n], True)


def edm_churn(denoiser: Callable, x, t, sig, rng, *, objective: str,
              alpha_bar_fn=None, first_euler: bool = False,
              s_churn: float = 10.0, s_tmin: float = 0.05,
              s_tmax: float = 50.0, s_noise: float = 1.0):
  """The stochastic sampler of Karras et al. 2022 (Alg. 2): before step i,
  with gamma = min(S_churn / N, sqrt(2) - 1) where S_tmin <= sig_i <=
  S_tmax (else 0), sig^ = (1 + gamma) sig_i and x^ = x~ + sqrt(sig^2 -
  sig_i^2) S_noise z, z ~ N(0, I) (key: fold_in(rng, i)); then the Heun
  step of `edm_heun` from sig^ (its t by `t_of_sigma`) to sig_{i+1}.
  sig^ is capped at sig~(top time). Evaluations as `edm_heun`."""
  n = t.shape[0] - 1
  gamma = min(s_churn / n, math.sqrt(2.0) - 1.0)
  smax = sig[0]

  def churn(i, y):
    g = jnp.where((sig[i] >= s_tmin) & (sig[i] <= s_tmax), gamma, 0.0)
    s_hat = jnp.minimum((1.0 + g) * sig[i], smax)
    t_hat = t_of_sigma(objective, s_hat, alpha_bar_fn)
    s_hat = sigma_tilde(objective, t_hat, alpha_bar_fn)
    s_hat = jnp.maximum(s_hat, sig[i])
    z = jax.random.normal(jax.random.fold_in(rng, i), y.shape, y.dtype)
    y = y + jnp.sqrt(jnp.maximum(s_hat ** 2 - sig[i] ** 2, 0.0)) * s_noise * z
    return y, t_hat, s_hat

  def step(i, y, euler):
    y, t_hat, s_hat = churn(i, y)
    return _heun_ve(denoiser, y, t_hat, s_hat, t[i + 1], sig[i + 1], euler)

  start = 0
  if first_euler and n > 1:
    x = step(0, x, True)
    start = 1
  x = jax.lax.fori_loop(start, n - 1, lambda i, y: step(i, y, False), x)
  return step(n - 1, x, True)


def few_step_sample(model_fn: Callable, params, x, labels, rng, *,
                    objective: str, sampler: str, nfe: int,
                    alpha_bar_fn: Callable | None = None,
                    clip_x0: bool = True, **churn_kwargs) -> jax.Array:
  """x_0 from x = x_1 with one of FEW_STEP_SAMPLERS, `model_fn(params, x,
  t, labels)` (already guided) evaluated exactly `nfe` times: dpmpp_2m and
  unipc take nfe steps, edm_heun and edm_churn `edm_num_steps(nfe)` steps,
  all on the Karras grid (`karras_grid`, rho = 7, sigma_min = 0.002).
  `churn_kwargs`: S_churn etc. of `edm_churn`. Returns
  x_0 in data space (x~ at sigma = 0 is x_0)."""
  check_sampler(objective, sampler)
  check_nfe(nfe)
  xt, denoiser = _setup(model_fn, params, x, labels, objective,
                        alpha_bar_fn, clip_x0)
  if sampler in ("dpmpp_2m", "unipc"):
    t, sig = karras_grid(objective, nfe, alpha_bar_fn)
    return (dpmpp_2m if sampler == "dpmpp_2m" else unipc)(denoiser, xt, t,
                                                          sig)
  n = edm_num_steps(nfe)
  t, sig = karras_grid(objective, n, alpha_bar_fn)
  first_euler = nfe % 2 == 0
  if sampler == "edm_heun":
    return edm_heun(denoiser, xt, t, sig, first_euler=first_euler)
  return edm_churn(denoiser, xt, t, sig, rng, objective=objective,
                   alpha_bar_fn=alpha_bar_fn, first_euler=first_euler,
                   **churn_kwargs)
