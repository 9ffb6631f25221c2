"""Diffusion losses: the network's prediction against the target made from
the data and the noise: the eps loss (Ho et al. 2020), the v loss (Salimans
& Ho 2022), EDM's preconditioned loss (Karras et al. 2022) and conditional
flow matching on the linear path (Lipman et al.
2023; Liu et al. 2023). One value per example, summed over the event axes.
"""

from __future__ import annotations

import jax.numpy as jnp

from condgen_jax.diffusion.schedules import SIGMA_DATA
from condgen_jax.diffusion.schedules import edm_preconditioning
from condgen_jax.diffusion.schedules import v_target
from condgen_jax.losses.vae import _sum_event

def ddpm_eps_loss(eps_pred, eps, *, event_ndims: int = 3):
  """||eps - eps_theta(x_t, t, c)||^2, summed over the event axes.

  L_simple of Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
  eq. 14: the network predicts the noise that made x_t = `diffuse(x_0, eps,
  alpha_bar(t))`, with t uniform.
  """
  return _sum_event(jnp.square(eps_pred - eps), event_ndims)


def v_prediction_loss(v_pred, x0, eps, alpha_bar, *, event_ndims: int = 3):
  """||v - v_theta(x_t, t, c)||^2, v = alpha_t eps - sigma_t x_0, summed over
  the event axes.

  Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
  Diffusion Models", sec. 4 and App. D: x_0 = alpha_t x_t - sigma_t v and
  eps = sigma_t x_t + alpha_t v, so the target stays well scaled at both ends
  of the schedule. It equals the x_0 loss weighted by 1 + SNR(t)
  (SNR = alpha^2 / sigma^2).
  """
  return _sum_event(jnp.square(v_pred - v_target(x0, eps, alpha_bar,
                                                 event_ndims=event_ndims)),
                    event_ndims)


def flow_matching_loss(v_pred, x0, eps, *, event_ndims: int = 3):
  """||(eps - x_0) - v_theta(x_t, t, c)||^2, summed over the event axes.

  Conditional flow matching with the linear path x_t = (1 - t) x_0 + t eps
  (`flow_matching_path`), whose velocity dx_t/dt = eps - x_0 is the target:
  Lipman et al. 2023, "Flow Matching for Generative Modeling" (eq. 23 with
  sigma_min = 0), the rectified flow of Liu et al. 2023, "Flow Straight and
  Fast". Convention: t = 0 is the data and t = 1 the noise (Lipman et al.
  run time the other way); samples integrate dx/dt = v from t = 1 down to
  t = 0.
  """
  return _sum_event(jnp.square(v_pred - (eps - x0)), event_ndims)


def edm_loss(f_pred, x0, eps, alpha_bar, *, sigma_data: float = SIGMA_DATA,
             event_ndims: int = 3):
  """||F_theta - (x0 - c_skip x~) / c_out||^2, summed over the event axes:
  EDM's lambda(sigma) ||D(x~; sigma) - x0||^2 with D = c_skip x~ + c_out F.

  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models", eq. 8 and Table 1: with lambda(sigma) = 1 / c_out^2
  the network's own error has weight 1 at every noise level. Here
  x~ = x0 + sigma eps is the VE state at sigma = sqrt((1 - ab) / ab) of
  the VP state x_t = `diffuse(x0, eps, ab)` (x~ = x_t / sqrt(ab)), and
  (c_skip, c_out) = `edm_preconditioning(sigma, sigma_data)`.
  """
  ab = jnp.asarray(alpha_bar, jnp.result_type(x0))
  sigma = jnp.sqrt((1.0 - ab) / ab).reshape(ab.shape + (1,) * event_ndims)
  c_skip, c_out, _ = edm_preconditioning(sigma, sigma_data)
  target = (x0 - c_skip * (x0 + sigma * eps)) / c_out
  return _sum_event(jnp.square(f_pred - target), event_ndims)
