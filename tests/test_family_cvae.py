import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.data import datasets as data
from condgen_jax.families import cvae as vae_training
from conftest import tiny_cvae_config


@pytest.mark.parametrize("prior", ["standard", "learned"])
def test_short_digits_training_lowers_the_loss(digits, prior):
  config = tiny_cvae_config(prior=prior)
  state = vae_training.create_state(config, digits.image_shape, 10,
                                    jax.random.key(0))
  step = jax.jit(vae_training.make_train_step(config, digits.image_shape, 10),
                 donate_argnums=0)
  images = data.to_float(digits.train_images[:256], 16.0)
  labels = digits.train_labels[:256]
  rng = jax.random.key(1)
  losses = []
  for i in range(150):
    sl = slice((i * 32) % 256, (i * 32) % 256 + 32)
    state, metrics = step(state, {"image": images[sl], "label": labels[sl]},
                          rng)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:5])
  assert int(state.step) == 150
  np.testing.assert_allclose(metrics["neg_elbo"],
                             metrics["reconstruction"] + metrics["kl"],
                             rtol=1e-5)


def test_sample_fn_gives_images_in_unit_interval(digits):
  config = tiny_cvae_config()
  state = vae_training.create_state(config, (8, 8, 1), 10, jax.random.key(0))
  sample = vae_training.make_sample_fn(config, (8, 8, 1), 10)
  x = sample(state, jnp.arange(10), jax.random.key(2))
  assert x.shape == (10, 8, 8, 1)
  assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_evaluate_reports_nats_and_the_iwae_bound(digits):
  config = tiny_cvae_config(iw_samples=20)
  state = vae_training.create_state(config, (8, 8, 1), 10, jax.random.key(0))
  out = vae_training.evaluate(config, state, digits, jax.random.key(0),
                              batch_size=200)
  assert out["num_test_examples"] == 360
  np.testing.assert_allclose(out["test_neg_elbo"],
                             out["test_reconstruction"] + out["test_kl"],
                             rtol=1e-6)
  # An untrained Bernoulli decoder with logits ~ 0: about 64 log 2 nats.
  assert 30 < out["test_neg_elbo"] < 80
  # The IWAE bound is tighter than the ELBO (up to Monte-Carlo noise).
  assert out["test_iw_nll"] <= out["test_neg_elbo"] + 0.05
  again = vae_training.evaluate(config, state, digits, jax.random.key(0),
                                batch_size=200)
  assert again == out  # a pure function of (params, rng)


def test_importance_weighted_bound_with_one_sample_is_an_elbo_estimate():
  """k=1: log w = log p(x|z) + log p(z) - log q(z|x); its mean over many
  draws matches -(rec + KL) computed in closed form."""
  config = tiny_cvae_config()
  model = vae_training.make_model(config, (8, 8, 1), 10)
  x = (jax.random.uniform(jax.random.key(0), (4, 8, 8, 1)) > 0.5
       ).astype(jnp.float32)
  c = jnp.arange(4)
  params = model.init(jax.random.key(1), x, c, jax.random.key(2))["params"]
  draws = jax.vmap(lambda k: vae_training.importance_weighted_bound(
      model, params, x, c, k, 1))(jax.random.split(jax.random.key(3), 4000))
  neg_elbo, _, _ = jax.vmap(lambda k: vae_training._neg_elbo_terms(
      model, params, x, c, k))(jax.random.split(jax.random.key(4), 4000))
  np.testing.assert_allclose(-draws.mean(0), neg_elbo.mean(0), rtol=2e-3)
