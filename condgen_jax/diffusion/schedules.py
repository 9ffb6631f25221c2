"""Noise schedules and the forward process of diffusion and flow matching.

Time is continuous, t in [0, 1], t = 0 the data and t = 1 (nearly) pure
noise; the discrete DDPM chain of T steps is the grid t = i / T. A schedule
gives alpha_bar(t) (linear, Ho et al. 2020; cosine, Nichol & Dhariwal 2021),
and

  x_t = alpha_t x_0 + sigma_t eps,  alpha_t = sqrt(alpha_bar(t)),
  sigma_t = sqrt(1 - alpha_bar(t)),  eps ~ N(0, I)

(Ho et al. 2020, eq. 4). Arrays of t / alpha_bar have the examples' leading
shape and broadcast over the last `event_ndims` axes of x.
"""

from __future__ import annotations

import jax.numpy as jnp

def _per_example(a, x, event_ndims: int):
  a = jnp.asarray(a, jnp.result_type(x))
  return a.reshape(a.shape + (1,) * event_ndims)


def linear_alpha_bar(t, *, num_timesteps: int = 1000, beta_start: float = 1e-4,
                     beta_end: float = 0.02):
  """alpha_bar(t) of the linear beta schedule of Ho et al. 2020 (sec. 4).

  beta_i = beta_start + (beta_end - beta_start) (i - 1) / (T - 1), i = 1..T,
  and alpha_bar_i = prod_{j <= i} (1 - beta_j). At t = i / T this is
  alpha_bar_i (up to float32 rounding; alpha_bar(0) = 1); between grid points
  log alpha_bar is interpolated linearly, so any t in [0, 1] is allowed.
  """
  betas = jnp.linspace(beta_start, beta_end, num_timesteps, dtype=jnp.float32)
  log_ab = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.log1p(-betas))])
  s = jnp.asarray(t, jnp.float32) * num_timesteps
  return jnp.exp(jnp.interp(s, jnp.arange(num_timesteps + 1,
                                          dtype=jnp.float32), log_ab))


def cosine_alpha_bar(t, *, offset: float = 0.008, min_alpha_bar: float = 1e-5):
  """alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2).

  Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic
  Models", eq. 17, with s = `offset` = 0.008, in continuous time. f(1) = 0,
  so the value is clipped below at `min_alpha_bar` (their clip of beta_t at
  0.999 plays this role): x_1 stays a (tiny) function of x_0 and
  x_0 = (x_t - sigma eps) / alpha is finite everywhere.
  """
  f = lambda u: jnp.square(jnp.cos((u + offset) / (1.0 + offset)
                                   * jnp.pi / 2.0))
  ab = f(jnp.asarray(t, jnp.float32)) / f(0.0)
  return jnp.clip(ab, min_alpha_bar, 1.0)


SCHEDULES = {"linear": linear_alpha_bar, "cosine": cosine_alpha_bar}


def diffuse(x0, eps, alpha_bar, *, event_ndims: int = 3):
  """x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps: a draw of
  q(x_t | x_0) (Ho et al. 2020, eq. 4) given the noise eps."""
  ab = _per_example(alpha_bar, x0, event_ndims)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps


def v_target(x0, eps, alpha_bar, *, event_ndims: int = 3):
  """v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, sec. 4)."""
  ab = _per_example(alpha_bar, x0, event_ndims)
  return jnp.sqrt(ab) * eps - jnp.sqrt(1.0 - ab) * x0


def flow_matching_path(x0, eps, t, *, event_ndims: int = 3):
  """x_t = (1 - t) x_0 + t eps: the linear path from the data (t = 0) to the
  noise (t = 1)."""
  t = _per_example(t, x0, event_ndims)
  return (1.0 - t) * x0 + t * eps


# The data's standard deviation assumed by EDM's preconditioning and
# weighting (Karras et al. 2022, sec. 5, for images in [-1, 1]).
SIGMA_DATA = 0.5


def edm_preconditioning(sigma_tilde, sigma_data: float = SIGMA_DATA):
  """(c_skip, c_out, c_in) of D(x~; s) = c_skip x~ + c_out F(c_in x~; s)
  at the VE noise level s = sigma~ (x~ = x0 + s eps):

    c_skip = sd^2 / (s^2 + sd^2),  c_out = s sd / sqrt(s^2 + sd^2),
    c_in = 1 / sqrt(s^2 + sd^2),   sd = sigma_data.

  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models", Table 1 and App. B.6: the network's input and target
  have unit variance at every noise level. Its noise input is the time t of
  the schedule (a function of s) rather than their c_noise = ln(s) / 4.
  """
  s2 = jnp.square(sigma_tilde)
  norm = jnp.sqrt(s2 + sigma_data ** 2)
  return (sigma_data ** 2 / (s2 + sigma_data ** 2),
          sigma_tilde * sigma_data / norm, 1.0 / norm)


def edm_input_scale(alpha, sigma, sigma_data: float = SIGMA_DATA):
  """The factor on x_t = alpha x0 + sigma eps that gives EDM's network input
  c_in x~ (x~ = x_t / alpha): 1 / sqrt(sigma^2 + alpha^2 sigma_data^2)."""
  return 1.0 / jnp.sqrt(jnp.square(sigma) + jnp.square(alpha) * sigma_data ** 2)
