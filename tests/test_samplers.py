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
