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
  2022, Alg. 1).

`nfe` counts network evaluations: N = nfe steps for ddpm / ddim / euler;
Heun takes ceil(nfe / 2) steps of two evaluations each, except that with an
odd nfe its last step is an Euler step (one evaluation), as in Karras et
al. 2022. Either way the model is evaluated exactly `nfe` times.

Classifier-free guidance (Ho & Salimans 2022): the prediction is
(1 + w) pred(x, t, c) - w pred(x, t, null), so w = 0 is the plain
conditional model (null: the null label, or every attribute at its
null); both halves come from one forward pass over a batch of 2B. For eps
and v the combination commutes with the conversions between them (both
are affine in the prediction), so guiding v is guiding eps.

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

OBJECTIVES = ("eps", "v", "flow_matching")
SAMPLERS = {"eps": ("ddpm", "ddim"), "v": ("ddpm", "ddim"),
            "flow_matching": ("euler", "heun")}
ALL_SAMPLERS = ("ddpm", "ddim", "euler", "heun")


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


def guided(model_fn: Callable, guidance_scale: float, null_label) -> Callable:
  """model_fn with classifier-free guidance at the static scale w: one
  forward pass on [x; x] with labels [c; null]. w = 0 skips the null half.
  `null_label`: the null class, or for attribute rows `[B, A]` the tuple of
  the A attributes' nulls (the whole condition dropped)."""
  if guidance_scale == 0:
    return model_fn

  def fn(params, x, t, labels):
    b = x.shape[0]
    null = jnp.broadcast_to(jnp.asarray(null_label, labels.dtype),
                            labels.shape)
    out = model_fn(params, jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                   jnp.concatenate([labels, null]))
    return combine_guidance(out[:b], out[b:], guidance_scale)

  return fn


def num_steps(sampler: str, nfe: int) -> int:
  """Steps of the time grid for `nfe` evaluations (Heun: ceil(nfe / 2))."""
  return (nfe + 1) // 2 if sampler == "heun" else nfe


def _expand(a, x):
  return jnp.reshape(a, a.shape + (1,) * (x.ndim - a.ndim))


def denoise(objective: str, pred, x, alpha_bar, clip_x0: bool):
  """(x0_hat, eps_hat) from an eps or v prediction at x = x_t.

  eps: x0 = (x - sigma eps) / alpha; v: x0 = alpha x - sigma v and
  eps = sigma x + alpha v (Salimans & Ho 2022). With `clip_x0`, x0 is clipped
  to [-1, 1] and eps = (x - alpha x0) / sigma.
  """
  ab = _expand(jnp.asarray(alpha_bar, x.dtype), x)
  alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
  if objective == "eps":
    x0, eps = (x - sigma * pred) / alpha, pred
  elif objective == "v":
    x0, eps = alpha * x - sigma * pred, sigma * x + alpha * pred
  else:
    raise ValueError(f"denoise needs objective 'eps' or 'v'; got "
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

  def step(params, x, labels, rng, i, euler=False):
    b = x.shape[0]
    t = jnp.full((b,), 1.0 - i / steps, jnp.float32)
    s = jnp.full((b,), 1.0 - (i + 1) / steps, jnp.float32)
    if objective == "flow_matching":
      velocity = lambda y, u: model_fn(params, y, u, labels)
      if sampler == "euler" or euler:
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
           rng=None) -> jax.Array:
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
    rng: a `jax.random.key`, for the stochastic 'ddpm' only.

  Returns:
    x_0, the shape of `noise`, in the model's data space.
  """
  fn = lambda params, x, t, c: model_fn(x, t, c)
  fn = guided(fn, check_guidance_scale(guidance_scale), null_cond)
  step = make_step(fn, objective=objective, sampler=sampler,
                   steps=num_steps(sampler, check_nfe(nfe)),
                   alpha_bar_fn=alpha_bar_fn, clip_x0=clip_x0)
  return run_steps(step, None, jnp.asarray(noise), jnp.asarray(cond), rng,
                   sampler=sampler, nfe=nfe)
