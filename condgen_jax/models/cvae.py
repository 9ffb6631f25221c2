"""Conditional VAE (Sohn et al. 2015) and its unconditional baseline.

Encoder q(z|x,c) and decoder p(x|z,c) both see the condition c; the decoder
is Bernoulli on logits. The prior is either N(0, I) (`prior='standard'`) or a
learned diagonal Gaussian per class p(z|c) (`prior='learned'`). With
`condition='none'` the same code is the plain VAE of Kingma & Welling 2014
(a learned prior then has a single component).

Architectures: 'mlp' (condition concatenated to the inputs) and 'conv' (the
condition enters the encoder through `conditioning` = 'vectorize' |
'embed_channel' | 'film', and the decoder through concatenation to z plus FiLM
in its conv stack when `conditioning='film'`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from condgen_jax.nn import conditioning as cond_lib
from condgen_jax.nn import kernels as kernels_lib

ARCHITECTURES = ("mlp", "conv")
PRIORS = ("standard", "learned")
CONDITIONS = ("label", "none")


def _validate(architecture, prior, condition, conditioning, image_shape):
  for value, allowed, what in ((architecture, ARCHITECTURES, "architecture"),
                               (prior, PRIORS, "prior"),
                               (condition, CONDITIONS, "condition"),
                               (conditioning, cond_lib.CONDITIONINGS,
                                "conditioning")):
    if value not in allowed:
      raise ValueError(f"Unknown {what} {value!r}; expected one of {allowed}.")
  h, w, _ = image_shape
  if architecture == "conv" and (h % 4 or w % 4):
    raise ValueError(f"The conv CVAE needs H and W divisible by 4; got "
                     f"{image_shape}.")


def _relu_stack(h, features: Sequence[int], dtype: Any = None):
  """Dense -> ReLU for each width (layers named dense0, dense1, ...),
  computing in `dtype`; call inside a compact module."""
  for i, f in enumerate(features):
    h = nn.relu(nn.Dense(f, dtype=dtype, name=f"dense{i}")(h))
  return h


def _gaussian_head(h, latent_dim: int, dtype: Any = None):
  """Mean and log-variance of a diagonal Gaussian (layers 'mean', 'logvar'),
  computed in `dtype`, returned in float32."""
  return (nn.Dense(latent_dim, dtype=dtype, name="mean")(h)
          .astype(jnp.float32),
          nn.Dense(latent_dim, dtype=dtype, name="logvar")(h)
          .astype(jnp.float32))


class MLPEncoder(nn.Module):
  latent_dim: int
  hidden: Sequence[int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditional: bool
  dtype: Any = None  # computation dtype of the layers (None: float32)

  @nn.compact
  def __call__(self, x, c):
    h = x.reshape(x.shape[0], -1)
    if self.conditional:
      h = cond_lib.Concat(self.num_classes)(h, c)
    return _gaussian_head(_relu_stack(h, self.hidden, self.dtype),
                          self.latent_dim, self.dtype)


class MLPDecoder(nn.Module):
  image_shape: tuple[int, int, int]
  hidden: Sequence[int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditional: bool
  dtype: Any = None  # computation dtype of the layers (None: float32)

  @nn.compact
  def __call__(self, z, c):
    h = cond_lib.Concat(self.num_classes)(z, c) if self.conditional else z
    h = _relu_stack(h, self.hidden, self.dtype)
    n = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    return nn.Dense(n, dtype=self.dtype, name="logits")(h).reshape(
        (-1,) + self.image_shape)


class ConvEncoder(nn.Module):
  """Two stride-2 convs (+ FiLM when asked), then dense heads."""
  latent_dim: int
  channels: Sequence[int]
  hidden: int
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditional: bool
  conditioning: str
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None  # of the dense and FiLM layers; the convs: `kernels`

  @nn.compact
  def __call__(self, x, c):
    film = self.conditional and self.conditioning == "film"
    if self.conditional and not film:
      x = cond_lib.image_conditioning(self.conditioning, self.num_classes,
                                      self.dtype)(x, c)
    if film:
      h = cond_lib.FiLMConvStack(self.num_classes, self.channels,
                                 (2,) * len(self.channels), norm="layer",
                                 kernels=self.kernels, dtype=self.dtype,
                                 name="film_stack")(x, c)
    else:
      h = x
      for i, f in enumerate(self.channels):
        conv = self.kernels.strided_conv(f, (3, 3), strides=(2, 2),
                                         padding="SAME", name=f"conv{i}")
        h = nn.relu(conv(h))
    h = h.reshape(h.shape[0], -1)
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h))
    return _gaussian_head(h, self.latent_dim, self.dtype)


class ConvDecoder(nn.Module):
  """Dense to (H/4, W/4, C) then two stride-2 transposed convs to logits."""
  image_shape: tuple[int, int, int]
  channels: Sequence[int]
  hidden: int
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditional: bool
  conditioning: str
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None  # of the dense and FiLM layers; the convs: `kernels`

  @nn.compact
  def __call__(self, z, c):
    h_out, w_out, c_out = self.image_shape
    h = cond_lib.Concat(self.num_classes)(z, c) if self.conditional else z
    h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense")(h))
    first = self.channels[-1]
    h = nn.relu(nn.Dense(h_out // 4 * w_out // 4 * first, dtype=self.dtype,
                         name="to_map")(h))
    h = h.reshape(-1, h_out // 4, w_out // 4, first)
    up = tuple(reversed(self.channels))[1:] + (self.channels[0],)
    if self.conditional and self.conditioning == "film":
      h = cond_lib.FiLMConvStack(self.num_classes, up, (2, 2), norm="layer",
                                 transpose=True, kernels=self.kernels,
                                 dtype=self.dtype, name="film_stack")(h, c)
    else:
      for i, f in enumerate(up):
        h = nn.relu(self.kernels.conv_transpose(
            f, (3, 3), strides=(2, 2), padding="SAME", name=f"deconv{i}")(h))
    return self.kernels.conv(c_out, (3, 3), name="logits")(h)


class CVAE(nn.Module):
  """q(z|x,c), p(x|z,c) and the prior p(z|c) in one module.

  `__call__(x, c, rng)` returns a dict with the decoder logits, q's
  mean/logvar, the prior's mean/logvar and the sampled z.
  """
  image_shape: tuple[int, int, int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  latent_dim: int = 16
  architecture: str = "mlp"
  prior: str = "standard"
  condition: str = "label"
  conditioning: str = "vectorize"
  hidden: Sequence[int] = (512, 256)
  channels: Sequence[int] = (32, 64)
  # conv: the layer implementations (`kernels.resolve`); the same function
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  # The computation dtype of the dense layers (the convs': `kernels`'s);
  # parameters and outputs are float32 whatever it is. None: float32.
  dtype: Any = None

  def setup(self):
    _validate(self.architecture, self.prior, self.condition, self.conditioning,
              self.image_shape)
    conditional = self.condition == "label"
    if self.architecture == "mlp":
      self.encoder = MLPEncoder(self.latent_dim, self.hidden, self.num_classes,
                                conditional, self.dtype)
      self.decoder = MLPDecoder(self.image_shape, tuple(reversed(self.hidden)),
                                self.num_classes, conditional, self.dtype)
    else:
      self.encoder = ConvEncoder(self.latent_dim, self.channels,
                                 self.hidden[0], self.num_classes, conditional,
                                 self.conditioning, self.kernels, self.dtype)
      self.decoder = ConvDecoder(self.image_shape, self.channels,
                                 self.hidden[0], self.num_classes, conditional,
                                 self.conditioning, self.kernels, self.dtype)
    if self.prior == "learned":
      # with attributes, one mean per attribute value, summed per example
      components = (cond_lib.condition_size(self.num_classes) if conditional
                    else 1)
      self.prior_mean = self.param("prior_mean", nn.initializers.zeros,
                                   (components, self.latent_dim))
      self.prior_logvar = self.param("prior_logvar", nn.initializers.zeros,
                                     (components, self.latent_dim))

  def encode(self, x, c):
    return self.encoder(x, c)

  def decode(self, z, c):
    """Logits of p(x|z,c), float32."""
    return self.decoder(z, c).astype(jnp.float32)

  def prior_params(self, c):
    """Mean and log-variance of p(z|c), shape [B, latent_dim]."""
    batch = jnp.shape(c)[0]
    if self.prior == "standard":
      zeros = jnp.zeros((batch, self.latent_dim))
      return zeros, zeros
    if self.condition == "none":
      index = jnp.zeros((batch,), jnp.int32)
      return self.prior_mean[index], self.prior_logvar[index]
    onehot = cond_lib.condition_vector(c, self.num_classes)
    return onehot @ self.prior_mean, onehot @ self.prior_logvar

  def sample_prior(self, c, rng):
    mean, logvar = self.prior_params(c)
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)

  def generate(self, c, rng):
    """Bernoulli means p(x|z,c) with z ~ p(z|c): images in [0, 1]."""
    return nn.sigmoid(self.decode(self.sample_prior(c, rng), c))

  def __call__(self, x, c, rng):
    mean, logvar = self.encode(x, c)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
    prior_mean, prior_logvar = self.prior_params(c)
    return {"logits": self.decode(z, c), "mean": mean, "logvar": logvar,
            "prior_mean": prior_mean, "prior_logvar": prior_logvar, "z": z}
