"""Exponential moving average of parameters, the weights used for sampling.

After n updates the average moves by 1 - d_n towards the new parameters,
with d_n = min(ema_decay, (1 + n) / (10 + n)): the warm-up of TensorFlow's
`ExponentialMovingAverage(num_updates=n)`, so that a short run (or an early
periodic evaluation) does not sample from an average still dominated by
the initial weights (with a fixed 0.999 the initial weights keep a weight
of 0.999^n: 0.37 after 1,000 steps, 0.14 after 2,000). Generator averages
improve GAN samples markedly (Yazici et al. 2019, "The Unusual
Effectiveness of Averaging in GAN Training"); diffusion models sample
from one too (Ho et al. 2020).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def decay_at(ema_decay: float, num_updates):
  """min(ema_decay, (1 + n) / (10 + n)) for the n-th update (n >= 1)."""
  n = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))


def update(ema_params, params, ema_decay: float, num_updates):
  """The average after the `num_updates`-th update: d * ema + (1 - d) *
  params with d = `decay_at(ema_decay, num_updates)`."""
  decay = decay_at(ema_decay, num_updates)
  return optax.incremental_update(params, ema_params, 1.0 - decay)
