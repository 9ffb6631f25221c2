"""Monte-Carlo estimators of (conditional) log-likelihoods.

`importance_sampled_log_likelihood` estimates log p(y|x) of a latent
variable model p(y|x) = E_{p(z|x)} p(y|x,z) with a Gaussian proposal
q(z|x,y), as Sohn et al. 2015 (Sec. 5.1) report the conditional
log-likelihood of their CVAEs; with x empty it is the estimate behind the
IWAE bound (Burda et al. 2016).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from condgen_jax import losses


def importance_sampled_log_likelihood(log_likelihood: Callable, proposal,
                                      prior, key, num_samples: int):
  """log p(y|x) ~= logsumexp_k [log p(y|x,z_k) + log p(z_k|x)
                                - log q(z_k|x,y)] - log k,  z_k ~ q(z|x,y).

  `log_likelihood(z)` maps latents `[B, D]` to log p(y|x,z) `[B]`;
  `proposal` and `prior` are (mean, log-variance) pairs `[B, D]` of the
  diagonal Gaussians q(z|x,y) and p(z|x). Returns `[B]` in nats.

  The estimate's exponential is unbiased for p(y|x), so the estimate is a
  lower bound of log p(y|x) in expectation that tightens as k grows and is
  consistent (Burda et al. 2016, Thm. 1); with q the exact posterior every
  weight equals p(y|x) and any k gives the exact value. The k draws run one
  after the other (`lax.map`): memory does not grow with k.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples must be >= 1; got {num_samples}.")
  mean, logvar = proposal
  prior_mean, prior_logvar = prior

  def log_weight(k):
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k, mean.shape)
    return (log_likelihood(z)
            + losses.gaussian_log_prob(z, prior_mean, prior_logvar)
            - losses.gaussian_log_prob(z, mean, logvar))

  log_w = jax.lax.map(log_weight, jax.random.split(key, num_samples))
  return (jax.nn.logsumexp(log_w, axis=0)
          - np.float32(np.log(num_samples)))
