"""Sohn et al.'s three networks and the baseline: shapes, sizes by hand and
what each network sees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.models import sop

KEY = jax.random.key(0)
SHAPE = (8, 8, 1)


def _init(network, batch=3):
  model = sop.StructuredCVAE(SHAPE, latent_dim=4, hidden=(16, 8),
                             network=network)
  x = jax.random.uniform(KEY, (batch,) + SHAPE)
  y = jax.random.uniform(jax.random.key(1), (batch,) + SHAPE)
  return model, model.init(KEY, x, y, KEY)["params"], x, y


def _count(params):
  return sum(p.size for p in jax.tree.leaves(params))


def _mlp(sizes):  # weights and biases of Dense layers between `sizes`
  return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def test_parameter_counts_by_hand():
  _, cvae, _, _ = _init("cvae")
  _, baseline, _, _ = _init("baseline")
  gaussian = lambda inputs: _mlp([inputs, 16, 8]) + 2 * (8 * 4 + 4)  # noqa
  assert _count(cvae["recognition"]) == gaussian(64 + 64)
  assert _count(cvae["prior"]) == gaussian(64)
  assert _count(cvae["generation"]) == _mlp([64 + 4, 16, 8, 64])
  # the baseline is the generation network without z
  assert _count(baseline) == _mlp([64, 16, 8, 64])
  assert set(baseline) == {"generation"}


def test_outputs_and_what_each_network_sees():
  model, params, x, y = _init("cvae")
  out = model.apply({"params": params}, x, y, KEY)
  assert out["logits"].shape == (3,) + SHAPE
  for k in ("mean", "logvar", "prior_mean", "prior_logvar"):
    assert out[k].shape == (3, 4)
  other = model.apply({"params": params}, x, 1.0 - y, KEY)
  # q(z|x,y) reads y; p(z|x) does not
  assert not np.allclose(out["mean"], other["mean"])
  np.testing.assert_array_equal(out["prior_mean"], other["prior_mean"])
  z = jnp.zeros((3, 4))
  a = model.apply({"params": params}, x, z, method=sop.StructuredCVAE.logits)
  b = model.apply({"params": params}, x, z + 1.0,
                  method=sop.StructuredCVAE.logits)
  assert not np.allclose(a, b)  # the generation network reads z


def test_samples_are_bernoulli_means_and_vary_with_z_only_for_the_cvae():
  for network, varies in (("cvae", True), ("baseline", False)):
    model, params, x, _ = _init(network)
    s1, s2 = (model.apply({"params": params}, x, jax.random.key(i),
                          method=sop.StructuredCVAE.sample) for i in (1, 2))
    assert s1.shape == (3,) + SHAPE
    assert 0.0 <= float(s1.min()) and float(s1.max()) <= 1.0
    assert (not np.allclose(s1, s2)) == varies


def test_unknown_network_is_a_value_error():
  with pytest.raises(ValueError, match="Unknown network 'gsnn'"):
    _init("gsnn")
