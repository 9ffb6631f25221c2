import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.models import cvae

KEY = jax.random.key(0)


def _init(model, shape=(8, 8, 1), batch=3):
  x = jax.random.uniform(KEY, (batch,) + shape)
  c = jnp.arange(batch) % model.num_classes
  variables = model.init(KEY, x, c, KEY)
  return variables, x, c


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("conditioning", ["vectorize", "film", "embed_channel"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)])
def test_output_shapes(architecture, conditioning, shape):
  if architecture == "mlp" and conditioning != "vectorize":
    pytest.skip("the MLP CVAE conditions by concatenation only")
  model = cvae.CVAE(shape, 10, latent_dim=5, architecture=architecture,
                    conditioning=conditioning, hidden=(32, 16),
                    channels=(4, 8))
  variables, x, c = _init(model, shape)
  out = model.apply(variables, x, c, KEY)
  assert out["logits"].shape == x.shape
  for k in ("mean", "logvar", "prior_mean", "prior_logvar", "z"):
    assert out[k].shape == (3, 5)
  sample = model.apply(variables, c, KEY, method=cvae.CVAE.generate)
  assert sample.shape == x.shape
  assert float(sample.min()) >= 0.0 and float(sample.max()) <= 1.0


def test_mlp_parameter_count():
  # encoder: (64+10)->32->16 -> mean/logvar 4; decoder: (4+10)->16->32->64
  model = cvae.CVAE((8, 8, 1), 10, latent_dim=4, hidden=(32, 16))
  variables, _, _ = _init(model)
  n = sum(p.size for p in jax.tree.leaves(variables["params"]))
  enc = 74 * 32 + 32 + 32 * 16 + 16 + 2 * (16 * 4 + 4)
  dec = 14 * 16 + 16 + 16 * 32 + 32 + 32 * 64 + 64
  prior = 2 * 10 * 4  # learned? no: standard prior has none
  assert n == enc + dec
  learned = cvae.CVAE((8, 8, 1), 10, latent_dim=4, hidden=(32, 16),
                      prior="learned")
  variables, _, _ = _init(learned)
  assert variables["params"]["prior_mean"].shape == (10, 4)
  n_learned = sum(p.size for p in jax.tree.leaves(variables["params"]))
  assert n_learned == enc + dec + prior


def test_learned_prior_picks_the_class_row():
  model = cvae.CVAE((8, 8, 1), 3, latent_dim=2, prior="learned",
                    hidden=(8,))
  variables, _, _ = _init(model)
  params = jax.tree.map(lambda x: x, variables["params"])
  params["prior_mean"] = jnp.array([[0., 1.], [2., 3.], [4., 5.]])
  params["prior_logvar"] = -params["prior_mean"]
  mean, logvar = model.apply({"params": params}, jnp.array([2, 0]),
                             method=cvae.CVAE.prior_params)
  np.testing.assert_array_equal(mean, [[4., 5.], [0., 1.]])
  np.testing.assert_array_equal(logvar, [[-4., -5.], [-0., -1.]])


def test_unconditional_vae_ignores_the_label():
  model = cvae.CVAE((8, 8, 1), 10, latent_dim=3, condition="none",
                    hidden=(16,))
  variables, x, _ = _init(model)
  a = model.apply(variables, x, jnp.array([0, 0, 0]), KEY)
  b = model.apply(variables, x, jnp.array([5, 6, 7]), KEY)
  np.testing.assert_array_equal(a["logits"], b["logits"])


def test_cvae_decoder_depends_on_the_label():
  model = cvae.CVAE((8, 8, 1), 10, latent_dim=3, hidden=(16,))
  variables, _, _ = _init(model)
  z = jnp.zeros((2, 3))
  out = model.apply(variables, z, jnp.array([0, 1]), method=cvae.CVAE.decode)
  assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("field,value", [("prior", "vamp"),
                                         ("architecture", "resnet"),
                                         ("condition", "text"),
                                         ("conditioning", "concat")])
def test_bad_names_raise_value_error(field, value):
  kwargs = {field: value}
  if field == "conditioning":
    kwargs["architecture"] = "conv"
  model = cvae.CVAE((8, 8, 1), 10, **kwargs)
  with pytest.raises(ValueError, match=repr(value)):
    _init(model)
