"""Training, sampling and evaluation of structured output prediction:
Sohn et al. 2015's CVAE and its deterministic baseline (`condgen_jax.models.sop`),
conditioned on an image (`condition_kind='image'`, `image_conditions`).

Each step binarises the batch (dynamically, as the CVAE family does), takes
the condition x of each binarised target and its pixels to predict y, and
takes one Adam step on the mean of

  CVAE      -ELBO = -log p(y|x,z) + KL(q(z|x,y) || p(z|x)),  z ~ q(z|x,y)
  baseline  -log p(y|x)

in nats per image, both Bernoulli over the pixels to predict (Sohn et al.
2015, eq. 4; their baseline NN is trained on the same reconstruction loss).
`evaluate` reports the test negative conditional log-likelihood of the
pixels to predict, -log p(y|x): importance-sampled with k = `iw_samples`
draws of q(z|x,y) for the CVAE (`estimators`), exact for the baseline.
Samples keep the given pixels and fill the others with Bernoulli means;
they take the conditions as given (gray test images, where training saw
binarised ones).

Config keys: `OPTIONS` below, each with its default, allowed values and
meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from condgen_jax.data import datasets as data_lib
from condgen_jax.families import common
from condgen_jax.losses import estimators
from condgen_jax.data import image_conditions
from condgen_jax import losses
from condgen_jax.core import options
from condgen_jax.models import sop

TrainState = train_state.TrainState
CONDITION_KINDS = ("image",)

OPTIONS = {
    "network": options.choice(
        "cvae", sop.NETWORKS,
        "'cvae' (Sohn et al. 2015) or 'baseline', the deterministic "
        "network of the same widths"),
    "latent_dim": options.integer(200, "size of z (cvae)"),
    "hidden": options.integers((500, 500), "hidden widths of each "
                               "network"),
    "learning_rate": options.positive(1e-3, "Adam's learning rate"),
    "binarize": options.flag(
        True, "dynamically binarised data, the usual protocol on MNIST"),
    "iw_samples": options.integer(
        100, "k of the importance-sampled test log-likelihood (cvae)"),
    **image_conditions.OPTIONS,
}


def validate_config(s) -> None:
  """The image condition fits the dataset (`image_conditions.check`)."""
  image_conditions.check(s)


def has_convolutions(s) -> bool:
  del s
  return False


def image_condition(s) -> image_conditions.ImageCondition:
  return image_conditions.from_settings(s)


def metric_modes(s) -> dict:
  """{name: 'min' | 'max'} of what `evaluate` reports."""
  if s.network == "cvae":
    return {"test_ncll": "min", "test_neg_elbo": "min"}
  return {"test_ncll": "min"}


def make_model(s, image_shape) -> sop.StructuredCVAE:
  return sop.StructuredCVAE(tuple(image_shape), s.latent_dim,
                            tuple(s.hidden), s.network,
                            common.compute_dtype(s))


def create_state(s, image_shape, num_classes, rng) -> TrainState:
  del num_classes
  model = make_model(s, image_shape)
  x = jnp.zeros((1,) + image_condition(s).shape(image_shape))
  y = jnp.zeros((1,) + tuple(image_shape))
  init_rng, z_rng = jax.random.split(rng)
  params = model.init(init_rng, x, y, z_rng)["params"]
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=optax.adam(s.learning_rate))


def masked_log_likelihood(logits, y, mask):
  """log p(y|...) over the pixels where `mask` is 1: `[B]` in nats."""
  ll = losses.bernoulli_log_likelihood(logits, y, event_ndims=0) * mask
  return jnp.sum(ll, axis=tuple(range(1, ll.ndim)))


def _terms(model, params, x, y, mask, rng) -> dict:
  """Per-example loss terms `[B]`; 'loss' is what training minimises."""
  out = model.apply({"params": params}, x, y * mask, rng)
  rec = -masked_log_likelihood(out["logits"], y, mask)
  if model.network == "baseline":
    return {"loss": rec, "reconstruction": rec}
  kl = losses.gaussian_kl(out["mean"], out["logvar"], out["prior_mean"],
                          out["prior_logvar"])
  return {"loss": rec + kl, "neg_elbo": rec + kl, "reconstruction": rec,
          "kl": kl}


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics): one Adam step on
  the mean loss of the module docstring; metrics in nats per image."""
  del num_classes
  spec = image_condition(s)
  model = make_model(s, image_shape)
  mask = spec.target_mask(image_shape)

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    bin_rng, z_rng = jax.random.split(rng)
    y = batch["image"]
    y = data_lib.binarize(y, bin_rng) if s.binarize else y
    x = spec.from_images(y)

    def loss_fn(params):
      terms = _terms(model, params, x, y, mask, z_rng)
      metrics = {k: jnp.mean(v) for k, v in terms.items()}
      return metrics["loss"], metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), metrics

  return train_step


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, conditions, rng) -> images in [0, 1]: the given pixels
  of `conditions`, the others Bernoulli means of p(y|x,z), z ~ p(z|x)."""
  del num_classes
  spec = image_condition(s)
  model = make_model(s, image_shape)

  def sample(state, conditions, rng):
    predicted = model.apply({"params": state.params}, conditions, rng,
                            method=sop.StructuredCVAE.sample)
    return spec.compose(conditions, predicted)

  return sample


def log_likelihood(model, params, x, y, mask, rng, num_samples: int):
  """log p(y|x) `[B]` of the pixels to predict: importance-sampled with
  `num_samples` draws of q(z|x,y) for the CVAE, exact for the baseline."""
  net = sop.StructuredCVAE

  def apply(*args, method):
    return model.apply({"params": params}, *args, method=method)

  if model.network == "baseline":
    return masked_log_likelihood(apply(x, method=net.logits), y, mask)

  def given_z(z):
    return masked_log_likelihood(apply(x, z, method=net.logits), y, mask)

  return estimators.importance_sampled_log_likelihood(
      given_z, apply(x, y * mask, method=net.recognize),
      apply(x, method=net.prior_params), rng, num_samples)


def evaluate(s, state, dataset: data_lib.Dataset, rng,
             batch_size: int = 500) -> dict:
  """Test negative conditional log-likelihood of the pixels to predict
  (`test_ncll`, nats per image) and the training terms on the test split.

  The test images are binarised once with keys derived from `rng` when the
  config binarises, so the numbers depend only on the params and `rng`.
  """
  spec = image_condition(s)
  model = make_model(s, dataset.image_shape)
  mask = spec.target_mask(dataset.image_shape)

  @jax.jit
  def batch_terms(params, images, key):
    bin_key, z_key, iw_key = jax.random.split(key, 3)
    y = data_lib.to_float(images, dataset.max_value)
    y = data_lib.binarize(y, bin_key) if s.binarize else y
    x = spec.from_images(y)
    out = _terms(model, params, x, y, mask, z_key)
    out["log_likelihood"] = log_likelihood(model, params, x, y, mask, iw_key,
                                           s.iw_samples)
    return out

  means, n = common.test_split_mean(
      lambda images, key: batch_terms(state.params, images, key),
      dataset, batch_size, rng, with_labels=False)
  result = {f"test_{k}": v for k, v in means.items()
            if k not in ("loss", "log_likelihood")}
  result.update(test_ncll=-means["log_likelihood"], num_test_examples=n)
  if s.network == "cvae":
    result["iw_samples"] = int(s.iw_samples)
  return result
