"""Where training spends its noise levels: samplers of the time t in [0, 1]
of each training example, and the per-example weights of the loss.

A training example is x_t = alpha_t x_0 + sigma_t eps at a time t drawn
from one of `TIME_SAMPLERS`, its noise level the VE ratio
sigma~ = sigma_t / alpha_t (EDM's sigma for data in [-1, 1]) and its
signal-to-noise ratio SNR = alpha_t^2 / sigma_t^2 = 1 / sigma~^2. Every
objective's squared error is a multiple of the x0 error
||x0_hat - x0||^2 (`x0_error_scale`), so a weighting is stated once, as a
weight on the x0 error (`x0_weight`), and `loss_weight` converts it to the
factor on any objective's own loss:

  objective's loss * loss_weight = x0_weight * ||x0_hat - x0||^2.

- 'uniform' times, weighting 'none': each objective's own loss (Ho et al.
  2020's L_simple for eps).
- 'logit_normal' (Esser et al. 2024): t = sigmoid(m + s n), n ~ N(0, 1).
- 'log_normal' (Karras et al. 2022): ln sigma~ ~ N(P_mean, P_std^2), the
  time where the schedule reaches that sigma~.
- weighting 'min_snr' (Hang et al. 2023): x0 weight min(SNR, gamma).
- weighting 'edm' (Karras et al. 2022): x0 weight
  lambda(sigma~) = (sigma~^2 + sigma_data^2) / (sigma~ sigma_data)^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from condgen_jax.diffusion import samplers
from condgen_jax.diffusion.schedules import SIGMA_DATA

TIME_SAMPLERS = ("uniform", "logit_normal", "log_normal")
WEIGHTINGS = ("none", "min_snr", "edm")


def logit_normal_times(rng, n: int, mean: float = 0.0, std: float = 1.0):
  """t = sigmoid(mean + std * z), z ~ N(0, 1), `[n]`.

  Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution
  Image Synthesis", eq. 19 (their best setting: mean 0, std 1): more of the
  training at intermediate times, where the velocity is hardest to predict.
  """
  return jax.nn.sigmoid(mean + std * jax.random.normal(rng, (n,)))


def log_normal_sigmas(rng, n: int, p_mean: float = -1.2,
                      p_std: float = 1.2):
  """sigma = exp(p_mean + p_std * z), z ~ N(0, 1), `[n]`.

  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models", Table 1 (training noise distribution, P_mean = -1.2,
  P_std = 1.2).
  """
  return jnp.exp(p_mean + p_std * jax.random.normal(rng, (n,)))


def sample_times(kind: str, rng, n: int, *, objective: str,
                 alpha_bar_fn=None, logit_normal=(0.0, 1.0),
                 log_normal=(-1.2, 1.2)):
  """Training times t `[n]` in [0, 1] from the sampler `kind`.

  Args:
    kind: one of TIME_SAMPLERS: 'uniform' t ~ U[0, 1]; 'logit_normal'
      (`logit_normal_times`, (mean, std) = `logit_normal`); 'log_normal'
      (`log_normal_sigmas`, (P_mean, P_std) = `log_normal`), each sigma~
      mapped to the time where the objective's schedule reaches it
      (`samplers.t_of_sigma`; clipped to the schedule's range).
    rng: a jax.random key.
    n: the number of times.
    objective: the objective (its schedule maps sigma~ to t).
    alpha_bar_fn: the schedule of eps / v / edm.
  Returns:
    float32 `[n]`.
  """
  if kind == "uniform":
    return jax.random.uniform(rng, (n,))
  if kind == "logit_normal":
    return logit_normal_times(rng, n, *logit_normal)
  if kind == "log_normal":
    return samplers.t_of_sigma(objective, log_normal_sigmas(rng, n,
                                                            *log_normal),
                               alpha_bar_fn)
  raise ValueError(f"Unknown time sampler {kind!r}; expected one of "
                   f"{TIME_SAMPLERS}.")


def x0_error_scale(objective: str, alpha, sigma,
                   sigma_data: float = SIGMA_DATA):
  """c with objective's squared error = c ||x0_hat - x0||^2, per example.

  eps: x0 = (x - sigma eps) / alpha, so c = alpha^2 / sigma^2 = SNR;
  v: x0 = alpha x - sigma v (alpha^2 + sigma^2 = 1) and flow matching:
  x0 = x - t v (sigma = t), so c = 1 / sigma^2; edm: x0 = c_skip x~ +
  c_out F (`schedules.edm_preconditioning`), so c = 1 / c_out^2 =
  lambda(sigma~).
  """
  if objective == "eps":
    return jnp.square(alpha / sigma)
  if objective in ("v", "flow_matching"):
    return 1.0 / jnp.square(sigma)
  if objective == "edm":
    return edm_lambda(sigma / alpha, sigma_data)
  raise ValueError(f"Unknown objective {objective!r}.")


def edm_lambda(sigma_tilde, sigma_data: float = SIGMA_DATA):
  """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
  (Karras et al. 2022, Table 1: the weight of ||D(x; sigma) - x0||^2 that
  makes the effective weight of the network's own error 1)."""
  s2 = jnp.square(sigma_tilde)
  return (s2 + sigma_data ** 2) / (s2 * sigma_data ** 2)


def x0_weight(weighting: str, alpha, sigma, *, gamma: float = 5.0,
              sigma_data: float = SIGMA_DATA):
  """The weight of ||x0_hat - x0||^2 per example (see the module doc).

  Args:
    weighting: 'min_snr': min(SNR, gamma), SNR = alpha^2 / sigma^2 (Hang et
      al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
      Strategy", eq. 8; gamma = 5, their default); 'edm': lambda(sigma~)
      (`edm_lambda`).
    alpha, sigma: the signal and noise scales of x_t, `[B]`.
  Returns:
    `[B]`.
  """
  if weighting == "min_snr":
    return jnp.minimum(jnp.square(alpha / sigma), gamma)
  if weighting == "edm":
    return edm_lambda(sigma / alpha, sigma_data)
  raise ValueError(f"Unknown loss weighting {weighting!r}; expected one of "
                   f"{WEIGHTINGS}.")


def loss_weight(weighting: str, objective: str, alpha, sigma, *,
                gamma: float = 5.0, sigma_data: float = SIGMA_DATA):
  """The factor on `objective`'s per-example loss that gives the x0 weight
  of `weighting`: x0_weight / x0_error_scale, `[B]`; ones for 'none'.

  For eps this is min(SNR, gamma) / SNR and for v min(SNR, gamma) /
  (SNR + 1), Hang et al. 2023's eqs. 9-10.
  """
  if weighting == "none":
    return jnp.ones_like(alpha)
  return (x0_weight(weighting, alpha, sigma, gamma=gamma,
                    sigma_data=sigma_data)
          / x0_error_scale(objective, alpha, sigma, sigma_data))
