"""Training, sampling and evaluation of the (C)VAE family.

The runner (`condgen_jax.runner.train`) drives every model family through the same
four functions: `create_state`, `make_train_step`, `make_sample_fn` and
`evaluate`.

Config keys: `OPTIONS` below, each with its default, allowed values and
meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from condgen_jax.nn import conditioning as cond_lib
from condgen_jax.models import cvae
from condgen_jax.data import datasets as data_lib
from condgen_jax.families import common
from condgen_jax import losses
from condgen_jax.core import options

TrainState = train_state.TrainState
# A label or every attribute (concatenated one-hots into the encoder and
# decoder; the learned prior's mean and log-variance are sums of per-value
# terms).
CONDITION_KINDS = ("label", "attributes")


OPTIONS = {
    "latent_dim": options.integer(16, "size of z"),
    "architecture": options.choice("mlp", cvae.ARCHITECTURES,
                                   "encoder and decoder networks"),
    "prior": options.choice("learned", cvae.PRIORS,
                            "N(0, I), or a learned Gaussian p(z|c)"),
    "condition": options.choice(
        "label", cvae.CONDITIONS,
        "'none' = the unconditional VAE baseline"),
    "conditioning": options.choice(
        "vectorize", cond_lib.CONDITIONINGS,
        "conv only: how the condition enters the networks"),
    "hidden": options.integers((512, 256), "mlp: hidden widths"),
    "channels": options.integers((32, 64), "conv: channels per stride-2 "
                                 "conv"),
    "learning_rate": options.positive(1e-3, "Adam's learning rate"),
    "binarize": options.flag(
        True, "dynamically binarised data, the usual VAE protocol on MNIST"),
    "iw_samples": options.integer(
        0, "k of the importance-weighted bound (IWAE) in evaluate; 0 = off",
        minimum=0),
    "kernels": common.KERNELS_OPTION,
}


def make_model(s, image_shape, num_classes) -> cvae.CVAE:
  return cvae.CVAE(
      image_shape=tuple(image_shape), num_classes=num_classes,
      latent_dim=s.latent_dim, architecture=s.architecture,
      prior=s.prior, condition=s.condition, conditioning=s.conditioning,
      hidden=tuple(s.hidden), channels=tuple(s.channels),
      kernels=common.layer_kernels(s), dtype=common.compute_dtype(s))


def validate_config(s) -> None:
  """`kernels` against `compute_dtype` (`common.check_precision`)."""
  common.check_precision(s)


def has_convolutions(s) -> bool:
  return s.architecture == "conv"


def metric_modes(s) -> dict:
  """{name: 'min' | 'max'} of what `evaluate` reports (besides the runner's
  sample metrics)."""
  modes = {"test_neg_elbo": "min"}
  if s.iw_samples:
    modes["test_iw_nll"] = "min"
  return modes


def create_state(s, image_shape, num_classes, rng) -> TrainState:
  model = make_model(s, image_shape, num_classes)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  c = jnp.zeros((1,) + ((len(num_classes),) if isinstance(num_classes, tuple)
                        else ()), jnp.int32)
  init_rng, z_rng = jax.random.split(rng)
  params = model.init(init_rng, x, c, z_rng)["params"]
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=optax.adam(s.learning_rate))


def _neg_elbo_terms(model, params, x, c, rng):
  out = model.apply({"params": params}, x, c, rng)
  return losses.negative_elbo(out["logits"], x, out["mean"], out["logvar"],
                              out["prior_mean"], out["prior_logvar"])


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics), one Adam step on the
  mean negative ELBO; metrics in nats per image."""
  model = make_model(s, image_shape, num_classes)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    bin_rng, z_rng = jax.random.split(rng)
    x = batch["image"]
    x = data_lib.binarize(x, bin_rng) if s.binarize else x

    def loss_fn(params):
      neg_elbo, rec, kl = _neg_elbo_terms(model, params, x, batch["label"],
                                          z_rng)
      return jnp.mean(neg_elbo), {"neg_elbo": jnp.mean(neg_elbo),
                                  "reconstruction": jnp.mean(rec),
                                  "kl": jnp.mean(kl)}

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    metrics["loss"] = metrics["neg_elbo"]
    return state.apply_gradients(grads=grads), metrics

  return train_step


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, labels, rng) -> Bernoulli means in [0, 1], z ~ p(z|c)."""
  model = make_model(s, image_shape, num_classes)

  def sample(state, labels, rng):
    return model.apply({"params": state.params}, labels, rng,
                       method=cvae.CVAE.generate)

  return sample


def importance_weighted_bound(model, params, x, c, rng, num_samples: int):
  """log p(x|c) >= log (1/k) sum_k p(x|z_k,c) p(z_k|c) / q(z_k|x,c).

  Burda et al. 2016 (IWAE), z_k ~ q(z|x,c). Returns `[B]` in nats (the bound
  on log p, i.e. negate it for an NLL bound).
  """
  mean, logvar = model.apply({"params": params}, x, c, method=cvae.CVAE.encode)
  prior_mean, prior_logvar = model.apply({"params": params}, c,
                                         method=cvae.CVAE.prior_params)

  def one(key):
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    logits = model.apply({"params": params}, z, c, method=cvae.CVAE.decode)
    return (losses.bernoulli_log_likelihood(logits, x,
                                            event_ndims=x.ndim - 1)
            + losses.gaussian_log_prob(z, prior_mean, prior_logvar)
            - losses.gaussian_log_prob(z, mean, logvar))

  log_w = jax.lax.map(one, jax.random.split(rng, num_samples))  # [k, B]
  return jax.nn.logsumexp(log_w, axis=0) - jnp.log(num_samples)


def evaluate(s, state, dataset: data_lib.Dataset, rng,
             batch_size: int = 500) -> dict:
  """Test-split negative ELBO (and the IWAE bound) in nats per image.

  The test images are binarised once with a key derived from `rng` when the
  config binarises, so the numbers depend only on the params and `rng`.
  """
  model = make_model(s, dataset.image_shape, dataset.num_classes)
  k = int(s.iw_samples)

  @jax.jit
  def batch_terms(params, images, labels, key):
    bin_key, z_key, iw_key = jax.random.split(key, 3)
    x = data_lib.to_float(images, dataset.max_value)
    x = data_lib.binarize(x, bin_key) if s.binarize else x
    neg_elbo, rec, kl = _neg_elbo_terms(model, params, x, labels, z_key)
    out = {"neg_elbo": neg_elbo, "reconstruction": rec, "kl": kl}
    if k:
      out["iw_bound"] = importance_weighted_bound(model, params, x, labels,
                                                  iw_key, k)
    return out

  means, n = common.test_split_mean(
      lambda images, labels, key: batch_terms(state.params, images, labels,
                                              key),
      dataset, batch_size, rng)
  result = {"test_neg_elbo": means["neg_elbo"],
            "test_reconstruction": means["reconstruction"],
            "test_kl": means["kl"],
            "num_test_examples": n}
  if k:
    result["test_iw_nll"] = -means["iw_bound"]
    result["iw_samples"] = k
  return result

