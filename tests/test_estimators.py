"""The importance-sampled log-likelihood on a linear-Gaussian model, whose
marginal, posterior and ELBO have closed forms (computed here in numpy):

  z ~ N(0, 1),  y | z ~ N(a z + b, s^2)  =>  y ~ N(b, a^2 + s^2),
  p(z | y) = N(a (y - b) / (a^2 + s^2), s^2 / (a^2 + s^2)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.losses import estimators

A, B, S = 1.5, -0.5, 0.7
Y = np.array([-2.0, -0.5, 0.3, 1.8], np.float32)


def _log_normal(x, mean, var):
  return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def _log_likelihood(z):  # log N(y; a z + b, s^2), z [B, 1]
  return (-0.5 * (jnp.log(2 * jnp.pi * S ** 2)
                  + (Y - A * z[:, 0] - B) ** 2 / S ** 2))


def _gaussian(mean, var):
  mean = np.broadcast_to(np.float32(mean), Y.shape)[:, None]
  return jnp.asarray(mean), jnp.log(jnp.full_like(mean, var))


def _estimate(proposal, k, seed=0):
  return np.asarray(estimators.importance_sampled_log_likelihood(
      _log_likelihood, proposal, _gaussian(0.0, 1.0), jax.random.key(seed),
      k))


def _estimates(proposal, k, draws):
  """`draws` independent estimates `[draws, len(Y)]`."""
  keys = jax.random.split(jax.random.key(k), draws)
  return np.asarray(jax.vmap(
      lambda key: estimators.importance_sampled_log_likelihood(
          _log_likelihood, proposal, _gaussian(0.0, 1.0), key, k))(keys))


EXACT = _log_normal(Y, B, A ** 2 + S ** 2)
POSTERIOR = _gaussian(A * (Y - B) / (A ** 2 + S ** 2),
                      S ** 2 / (A ** 2 + S ** 2))


@pytest.mark.parametrize("k", [1, 7])
def test_the_exact_posterior_gives_the_exact_marginal_for_any_k(k):
  np.testing.assert_allclose(_estimate(POSTERIOR, k), EXACT, rtol=1e-5,
                             atol=1e-5)


def test_one_sample_of_another_proposal_averages_to_its_elbo():
  m, v = 0.3, 0.5  # q(z|y) = N(0.3, 0.5) for every y
  elbo = (-0.5 * np.log(2 * np.pi * S ** 2)
          - ((Y - A * m - B) ** 2 + A ** 2 * v) / (2 * S ** 2)
          - 0.5 * np.log(2 * np.pi) - (m ** 2 + v) / 2
          + 0.5 * np.log(2 * np.pi * np.e * v))
  draws = _estimates(_gaussian(m, v), 1, 4000)
  stderr = draws.std(0) / np.sqrt(len(draws))
  np.testing.assert_array_less(np.abs(draws.mean(0) - elbo), 4 * stderr)


def test_another_proposal_converges_from_below_as_k_grows():
  proposal = _gaussian(0.0, 1.0)  # the prior: a poor proposal
  gaps, stderrs = [], []
  for k in (1, 10, 100, 3000):
    draws = _estimates(proposal, k, 200)
    gaps.append(EXACT - draws.mean(0))
    stderrs.append(draws.std(0) / np.sqrt(len(draws)))
  for i in range(3):  # the expected gap shrinks with k
    noise = 4 * np.hypot(stderrs[i], stderrs[i + 1])
    np.testing.assert_array_less(gaps[i + 1], gaps[i] + noise)
  assert np.all(gaps[0] > 0.5)
  np.testing.assert_array_less(np.abs(gaps[-1]), 4 * stderrs[-1] + 0.01)


def test_k_below_one_is_refused():
  with pytest.raises(ValueError, match="num_samples must be >= 1; got 0"):
    _estimate(POSTERIOR, 0)
