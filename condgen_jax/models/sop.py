"""Structured output prediction: the CVAE of Sohn et al. 2015 and its
deterministic baseline, as MLPs.

x is the condition image (the given part of a target), y the target's
pixels to predict, z a Gaussian latent. The CVAE (`network='cvae'`) has
Sohn et al.'s three networks:

  recognition  q(z|x,y) = N(mu(x, y), diag sigma^2(x, y))
  prior        p(z|x)   = N(mu(x), diag sigma^2(x))
  generation   p(y|x,z) = Bernoulli(sigmoid(logits(x, z)))

The baseline (`network='baseline'`) is the generation network without z,
p(y|x) = Bernoulli(sigmoid(logits(x))): a deterministic network of the same
widths, trained on the same reconstruction loss. The logits cover the whole
image; the caller keeps the pixels to predict (`ImageCondition`'s target
mask). Every network is Dense -> ReLU per hidden width, then its heads.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NETWORKS = ("cvae", "baseline")


def _flat(*arrays):
  """The arrays flattened per example and concatenated: `[B, sum]`."""
  return jnp.concatenate([a.reshape(a.shape[0], -1) for a in arrays], -1)


class GaussianMLP(nn.Module):
  """(mean, log-variance) `[B, latent_dim]` of a diagonal Gaussian,
  computed in `dtype` (None: float32), returned in float32."""
  latent_dim: int
  hidden: Sequence[int]
  dtype: Any = None

  @nn.compact
  def __call__(self, h):
    for i, f in enumerate(self.hidden):
      h = nn.relu(nn.Dense(f, dtype=self.dtype, name=f"dense{i}")(h))
    return (nn.Dense(self.latent_dim, dtype=self.dtype, name="mean")(h)
            .astype(jnp.float32),
            nn.Dense(self.latent_dim, dtype=self.dtype, name="logvar")(h)
            .astype(jnp.float32))


class LogitsMLP(nn.Module):
  """Bernoulli logits of a whole image `[B, H, W, C]`, computed in `dtype`
  (None: float32), returned in float32."""
  image_shape: tuple[int, int, int]
  hidden: Sequence[int]
  dtype: Any = None

  @nn.compact
  def __call__(self, h):
    for i, f in enumerate(self.hidden):
      h = nn.relu(nn.Dense(f, dtype=self.dtype, name=f"dense{i}")(h))
    n = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    logits = nn.Dense(n, dtype=self.dtype, name="logits")(h)
    return logits.astype(jnp.float32).reshape((-1,) + self.image_shape)


class StructuredCVAE(nn.Module):
  """Sohn et al.'s CVAE (or its baseline) for targets of `image_shape`.

  `__call__(x, y, rng)` returns the generation logits at z ~ q(z|x,y) with
  q's and the prior's (mean, logvar) (the baseline: its logits only).
  """
  image_shape: tuple[int, int, int]
  latent_dim: int = 200
  hidden: Sequence[int] = (500, 500)
  network: str = "cvae"
  # The dense layers' computation dtype (None: float32); parameters and
  # outputs are float32 whatever it is.
  dtype: Any = None

  def setup(self):
    if self.network not in NETWORKS:
      raise ValueError(f"Unknown network {self.network!r}; expected one of "
                       f"{NETWORKS}.")
    if self.network == "cvae":
      self.recognition = GaussianMLP(self.latent_dim, self.hidden,
                                     self.dtype)
      self.prior = GaussianMLP(self.latent_dim, self.hidden, self.dtype)
    self.generation = LogitsMLP(self.image_shape, self.hidden, self.dtype)

  def recognize(self, x, y):
    """(mean, logvar) of q(z|x,y)."""
    return self.recognition(_flat(x, y))

  def prior_params(self, x):
    """(mean, logvar) of p(z|x)."""
    return self.prior(_flat(x))

  def logits(self, x, z=None):
    """Logits of p(y|x,z) (the baseline: of p(y|x), z unused)."""
    return self.generation(_flat(x) if self.network == "baseline"
                           else _flat(x, z))

  def sample(self, x, rng):
    """Bernoulli means in [0, 1] of p(y|x,z), z ~ p(z|x) (the baseline:
    of p(y|x))."""
    if self.network == "baseline":
      return nn.sigmoid(self.logits(x))
    mean, logvar = self.prior_params(x)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    return nn.sigmoid(self.logits(x, z))

  def __call__(self, x, y, rng):
    if self.network == "baseline":
      return {"logits": self.logits(x)}
    mean, logvar = self.recognize(x, y)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    prior_mean, prior_logvar = self.prior_params(x)
    return {"logits": self.logits(x, z), "mean": mean, "logvar": logvar,
            "prior_mean": prior_mean, "prior_logvar": prior_logvar}
