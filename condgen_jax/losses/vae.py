"""ELBO terms: Gaussian KL and log-densities, the Bernoulli likelihood and
the negative ELBO (Kingma & Welling 2014; Sohn et al. 2015 for the
conditional case). Pure functions, one value per example; every function
accepts any leading shape and sums over the event axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# A numpy constant: computing it with jnp at import would start the XLA
# backend before the entry points have configured it.
LOG_2PI = np.float32(np.log(2.0 * np.pi))



def _sum_event(x, event_ndims: int):
  return jnp.sum(x, axis=tuple(range(x.ndim - event_ndims, x.ndim))) \
      if event_ndims else x


def gaussian_kl(mean_q, logvar_q, mean_p=0.0, logvar_p=0.0, *,
                event_ndims: int = 1):
  """KL(N(mean_q, exp(logvar_q)) || N(mean_p, exp(logvar_p))), diagonal.

  KL = 1/2 * sum_i [ logvar_p - logvar_q
                     + (exp(logvar_q) + (mean_q - mean_p)^2) / exp(logvar_p)
                     - 1 ]

  With the defaults the prior is N(0, I) (Kingma & Welling 2014, App. B). A
  per-class prior p(z|c) passes its own mean/logvar, broadcastable to q's.
  Returns the KL summed over the last `event_ndims` axes, in nats.
  """
  mean_p = jnp.broadcast_to(mean_p, jnp.shape(mean_q))
  logvar_p = jnp.broadcast_to(logvar_p, jnp.shape(logvar_q))
  kl = 0.5 * (logvar_p - logvar_q
              + (jnp.exp(logvar_q) + jnp.square(mean_q - mean_p))
              * jnp.exp(-logvar_p) - 1.0)
  return _sum_event(kl, event_ndims)


def gaussian_log_prob(z, mean, logvar, *, event_ndims: int = 1):
  """log N(z; mean, exp(logvar)), diagonal, summed over the event axes."""
  lp = -0.5 * (LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar))
  return _sum_event(lp, event_ndims)


def bernoulli_log_likelihood(logits, targets, *, event_ndims: int = 3):
  """log p(x | logits) = sum x * log s(l) + (1 - x) * log(1 - s(l)).

  Uses log-sigmoid forms, so logits of any magnitude are safe. `targets` may
  be binary or in [0, 1] (the usual "continuous Bernoulli-free" MNIST
  convention). Summed over the last `event_ndims` axes (H, W, C by default).
  """
  ll = targets * jax.nn.log_sigmoid(logits) + (1.0 - targets) * \
      jax.nn.log_sigmoid(-logits)
  return _sum_event(ll, event_ndims)


def negative_elbo(logits, targets, mean_q, logvar_q, mean_p=0.0, logvar_p=0.0):
  """-ELBO = -E_q[log p(x|z,c)] + KL(q(z|x,c) || p(z|c)), one sample of z.

  Returns `(neg_elbo, reconstruction, kl)`, each of shape `[batch]`, in nats.
  """
  rec = -bernoulli_log_likelihood(logits, targets,
                                  event_ndims=targets.ndim - 1)
  kl = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p)
  return rec + kl, rec, kl
