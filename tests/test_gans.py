"""Tests of condgen_jax.models.gans: shapes, ranges, parameter counts, errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from condgen_jax.families import gan as gan_family
from condgen_jax.models import gans
from condgen_jax.runner import train


def count_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def make_models(config, image_shape, num_classes):
  """The GAN family's networks for `config`, resolved and checked first."""
  return gan_family.make_models(train.resolve(config), image_shape,
                                num_classes)


def make_config(model, **kwargs):
  c = ml_collections.ConfigDict({"model": model, "g_width": 8, "d_width": 8})
  c.update(kwargs)
  return c


def init_and_apply(generator, discriminator, image_shape, num_classes=10,
                   batch=3, z_dim=16, labels=None):
  keys = jax.random.split(jax.random.key(0), 4)
  z = jax.random.uniform(keys[0], (batch, z_dim))
  c = jnp.arange(batch) % num_classes if labels is None else labels

  def run(z, c):
    g_vars = generator.init({"params": keys[1], "dropout": keys[2]}, z, c)
    x, _ = generator.apply(g_vars, z, c, train=True, mutable=["batch_stats"],
                           rngs={"dropout": keys[2]})
    d_vars = discriminator.init({"params": keys[3], "dropout": keys[2]}, x, c)
    out, _ = discriminator.apply(d_vars, x, c, train=True,
                                 mutable=["batch_stats"],
                                 rngs={"dropout": keys[2]})
    return g_vars, x, d_vars, out

  return run(z, c)


@pytest.mark.parametrize("image_shape", [(8, 8, 1), (28, 28, 1)])
@pytest.mark.parametrize("model,g_cond,d_cond", [
    ("cgan_conv", "concat", "vectorize"),
    ("cgan_conv", "film", "embed_channel"),
    ("cgan_conv", "concat", "film"),
    ("cgan_conv", "film", "projection"),
    ("acgan", "concat", "none"),
    ("acgan", "film", "projection"),
])
def test_conv_shapes_and_ranges(image_shape, model, g_cond, d_cond):
  config = make_config(model, g_conditioning=g_cond, d_conditioning=d_cond)
  g, d = make_models(config, image_shape, 10)
  _, x, _, out = init_and_apply(g, d, image_shape)
  assert x.shape == (3,) + image_shape
  assert np.all(np.abs(np.asarray(x)) <= 1.0)
  assert out["logit"].shape == (3,)
  h4, w4 = image_shape[0] // 4, image_shape[1] // 4
  assert out["features"].shape == (3, h4 * w4 * 16)
  if model == "acgan":
    assert out["class_logits"].shape == (3, 10)
  else:
    assert out["class_logits"] is None
  assert out["twin_class_logits"] is None


ATTRIBUTES = jnp.array([[7, 0], [3, 5], [0, 2]], jnp.int32)  # [B, A]


def test_acgan_has_one_class_head_per_attribute():
  config = make_config("acgan", twin_class_head=True)
  g, d = make_models(config, (8, 8, 3), (10, 6))
  g_vars, x, d_vars, out = init_and_apply(g, d, (8, 8, 3),
                                          labels=ATTRIBUTES)
  assert x.shape == (3, 8, 8, 3)
  features = out["features"].shape[1]
  for key, name in (("class_logits", "class_head"),
                    ("twin_class_logits", "twin_class_head")):
    digit, color = out[key]
    assert digit.shape == (3, 10) and color.shape == (3, 6)
    params = d_vars["params"]
    assert name not in params
    assert params[f"{name}_0"]["kernel"].shape == (features, 10)
    assert params[f"{name}_1"]["kernel"].shape == (features, 6)
  # G reads z and the concatenated one-hots: 16 + 10 + 6 inputs
  assert g_vars["params"]["dense"]["kernel"].shape[0] == 16 + 10 + 6


@pytest.mark.parametrize("model,d_cond", [
    ("cgan_conv", "vectorize"), ("cgan_conv", "embed_channel"),
    ("cgan_conv", "film"), ("cgan_conv", "projection"), ("cgan_mlp", None)])
def test_conditional_gans_take_attributes(model, d_cond):
  config = make_config(model, **({"d_conditioning": d_cond} if d_cond
                                 else {}))
  g, d = make_models(config, (8, 8, 3), (10, 6))
  z_dim = 100 if model == "cgan_mlp" else 16
  _, x, d_vars, out = init_and_apply(g, d, (8, 8, 3), labels=ATTRIBUTES,
                                     z_dim=z_dim)
  assert x.shape == (3, 8, 8, 3) and out["logit"].shape == (3,)
  assert out["class_logits"] is None
  # D's condition differs only in the color: so does its logit
  recolored = ATTRIBUTES.at[:, 1].set((ATTRIBUTES[:, 1] + 1) % 6)
  assert not np.allclose(d.apply(d_vars, x, recolored)["logit"],
                         out["logit"])


def test_float_condition_vectors_work():
  config = make_config("cgan_conv", g_conditioning="film",
                       d_conditioning="embed_channel")
  g, d = make_models(config, (8, 8, 1), 4)
  c = jax.nn.softmax(jax.random.normal(jax.random.key(3), (3, 4)))
  _, x, _, out = init_and_apply(g, d, (8, 8, 1), num_classes=4, labels=c)
  assert x.shape == (3, 8, 8, 1) and out["logit"].shape == (3,)


@pytest.mark.parametrize("image_shape", [(8, 8, 1), (28, 28, 1)])
def test_cgan_mlp_shapes_and_range(image_shape):
  g, d = make_models(make_config("cgan_mlp"), image_shape, 10)
  _, x, _, out = init_and_apply(g, d, image_shape, z_dim=100)
  assert x.shape == (3,) + image_shape
  assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))
  assert out["logit"].shape == (3,)
  assert out["class_logits"] is None
  assert out["features"].shape == (3, 240)


def test_cgan_mlp_generator_activation_and_output_options():
  z = jax.random.normal(jax.random.key(0), (4, 100))
  c = jnp.arange(4)
  paper = gans.MLPGenerator((8, 8, 1), 10)
  params = paper.init(jax.random.key(1), z, c)
  x_paper = np.asarray(paper.apply(params, z, c))
  assert np.all((x_paper > 0) & (x_paper < 1))
  # Same parameters, tanh output: tanh(a) = 2 sigmoid(2a) - 1 with a = logit,
  # and LeakyReLU(0.2) differs from ReLU exactly where a unit is negative.
  tanh = gans.MLPGenerator((8, 8, 1), 10, output="tanh")
  _, inter = paper.apply(params, z, c, capture_intermediates=True,
                         mutable=["intermediates"])
  logits = np.asarray(inter["intermediates"]["out"]["__call__"][0])
  np.testing.assert_allclose(np.asarray(tanh.apply(params, z, c)).reshape(
      4, -1), np.tanh(logits), atol=1e-6)
  leaky = gans.MLPGenerator((8, 8, 1), 10, activation="leaky_relu")
  hz = np.asarray(inter["intermediates"]["z_dense"]["__call__"][0])
  assert (hz < 0).any()  # so the two activations give different pixels
  assert not np.allclose(leaky.apply(params, z, c), x_paper)
  for kwargs, name in (({"activation": "elu"}, "g_activation"),
                       ({"output": "linear"}, "g_output")):
    with pytest.raises(ValueError, match=f"Unknown {name} '"):
      gans.MLPGenerator((8, 8, 1), 10, **kwargs).init(jax.random.key(1), z, c)


def test_cgan_mlp_parameter_counts_mnist():
  g, d = make_models(make_config("cgan_mlp"), (28, 28, 1), 10)
  g_vars, _, d_vars, _ = init_and_apply(g, d, (28, 28, 1), z_dim=100)
  # Generator: z 100 -> 200, y 10 -> 1000, 1200 -> 1200, 1200 -> 784.
  g_want = (100 * 200 + 200) + (10 * 1000 + 1000) + (1200 * 1200 + 1200) + (
      1200 * 784 + 784)
  # Discriminator: maxout 784 -> 240 x 5, 10 -> 50 x 5, 290 -> 240 x 4, 1.
  d_want = (784 * 1200 + 1200) + (10 * 250 + 250) + (290 * 960 + 960) + (
      240 + 1)
  assert count_params(g_vars["params"]) == g_want == 2_413_984
  assert count_params(d_vars["params"]) == d_want == 1_224_351


def test_cgan_mlp_dropout_only_in_training():
  g, d = make_models(make_config("cgan_mlp"), (8, 8, 1), 10)
  _, x, d_vars, _ = init_and_apply(g, d, (8, 8, 1), z_dim=100)
  c = jnp.arange(3)
  a = d.apply(d_vars, x, c)["logit"]
  b = d.apply(d_vars, x, c)["logit"]
  np.testing.assert_array_equal(a, b)
  t1 = d.apply(d_vars, x, c, train=True, rngs={"dropout": jax.random.key(1)})
  t2 = d.apply(d_vars, x, c, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(t1["logit"], t2["logit"])


def test_options_spectral_norm_minibatch_discrimination_norms():
  config = make_config("acgan", spectral_norm=True,
                       minibatch_discrimination=True, mbd_kernels=6,
                       mbd_kernel_dim=3, d_norm="layer", g_norm="layer")
  g, d = make_models(config, (8, 8, 1), 10)
  g_vars, _, d_vars, out = init_and_apply(g, d, (8, 8, 1))
  assert "batch_stats" in d_vars  # spectral norm's u and sigma
  assert "mbd" in d_vars["params"]
  assert "batch_stats" not in g_vars  # layer norm is stateless
  assert out["logit"].shape == (3,) and out["class_logits"].shape == (3, 10)
  g, d = make_models(make_config("cgan_mlp", spectral_norm=True,
                                      minibatch_discrimination=True),
                          (8, 8, 1), 10)
  _, _, d_vars, out = init_and_apply(g, d, (8, 8, 1), z_dim=100)
  assert "batch_stats" in d_vars and out["logit"].shape == (3,)


def test_virtual_batch_norm_generator_uses_reference_batch():
  config = make_config("cgan_conv", virtual_batch_norm=True)
  g, _ = make_models(config, (8, 8, 1), 10)
  z = jax.random.normal(jax.random.key(0), (4, 16))
  ref = (jax.random.normal(jax.random.key(1), (6, 16)), jnp.arange(6))
  variables = g.init(jax.random.key(2), z, jnp.arange(4), ref=ref)
  assert "batch_stats" not in variables
  x = g.apply(variables, z, jnp.arange(4), ref=ref)
  # Each example's output is independent of the rest of its batch.
  x1 = g.apply(variables, z[:1], jnp.arange(1), ref=ref)
  np.testing.assert_allclose(x[:1], x1, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="ref"):
    g.apply(variables, z, jnp.arange(4))


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "vae"}, "Unknown model 'vae'; expected one of"),
    ({"g_conditioning": "add"}, "Unknown g_conditioning 'add'"),
    ({"d_conditioning": "none"}, "Unknown d_conditioning 'none'"),
    ({"d_conditioning": "concat"}, "'vectorize', 'embed_channel'"),
    ({"d_norm": "group"}, "Unknown d_norm 'group'"),
    ({"g_norm": "instance"}, "Unknown g_norm 'instance'"),
])
def test_make_models_errors(kwargs, message):
  config = make_config("cgan_conv")
  config.update(kwargs)
  with pytest.raises(ValueError, match=message):
    make_models(config, (8, 8, 1), 10)


def test_tacgan_twin_head_beside_the_class_head():
  g, d = make_models(make_config("acgan", twin_class_head=True),
                          (8, 8, 1), 10)
  _, _, d_vars, out = init_and_apply(g, d, (8, 8, 1))
  assert out["class_logits"].shape == out["twin_class_logits"].shape == (3, 10)
  params = d_vars["params"]
  assert {"class_head", "twin_class_head"} <= set(params)
  # two heads, not one: different initial weights, different logits
  assert not np.allclose(out["class_logits"], out["twin_class_logits"])
  with pytest.raises(ValueError, match="twin_class_head=True .* needs "
                     "class_head=True"):
    make_models(make_config("cgan_conv", twin_class_head=True),
                     (8, 8, 1), 10)


def test_infogan_q_network_heads():
  config = make_config("acgan", continuous_codes=2, q_hidden=12)
  g, d = make_models(config, (8, 8, 1), 10)
  _, _, d_vars, out = init_and_apply(g, d, (8, 8, 1), z_dim=18)
  assert out["class_logits"].shape == (3, 10)
  assert out["code_means"].shape == (3, 2)
  params = d_vars["params"]
  # both heads read the shared 12-unit hidden layer, not the features
  assert params["q_hidden"]["kernel"].shape == (out["features"].shape[1], 12)
  assert params["class_head"]["kernel"].shape == (12, 10)
  assert params["code_head"]["kernel"].shape == (12, 2)
  with pytest.raises(ValueError, match="continuous_codes=2 needs the conv"):
    make_models(make_config("cgan_mlp", continuous_codes=2), (8, 8, 1),
                     10)


def test_infogan_dense_hidden_layers():
  config = make_config("acgan", g_hidden=20, d_hidden=24, d_norm="batch",
                       continuous_codes=2, q_hidden=12, q_norm="layer")
  g, d = make_models(config, (8, 8, 1), 10)
  g_vars, _, d_vars, out = init_and_apply(g, d, (8, 8, 1), batch=6,
                                          z_dim=18)
  # G: [z, one-hot c] -> Dense(20) -> batch norm -> Dense(2 x 2 x 16); the
  # norm's offset replaces the Dense's bias
  assert g_vars["params"]["hidden"]["kernel"].shape == (18 + 10, 20)
  assert set(g_vars["params"]["hidden"]) == {"kernel"}
  assert g_vars["params"]["norm_hidden"]["scale"].shape == (20,)
  assert g_vars["batch_stats"]["norm_hidden"]["mean"].shape == (20,)
  assert g_vars["params"]["dense"]["kernel"].shape == (20, 2 * 2 * 16)
  # D: flattened convs (2 x 2 x 16) -> Dense(24) -> the shared features
  params = d_vars["params"]
  assert params["hidden"]["kernel"].shape == (2 * 2 * 16, 24)
  assert params["q_hidden"]["kernel"].shape == (24, 12)
  assert out["features"].shape == (6, 24)
  # the features are LeakyReLU(0.2) of a train-mode batch norm: undoing
  # the LeakyReLU leaves per-unit batch mean 0 and variance 1
  f = np.asarray(out["features"])
  pre = np.where(f < 0, f / 0.2, f)
  np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(pre.var(0), 1.0, atol=1e-3)
  # Q's hidden layer is layer-normed: its pre-activation, from the shared
  # features and the q_hidden weights, has per-example mean 0 and var 1
  w, b = params["q_hidden"]["kernel"], params["q_hidden"]["bias"]
  q = f @ np.asarray(w) + np.asarray(b)
  q = (q - q.mean(1, keepdims=True)) / np.sqrt(q.var(1, keepdims=True) + 1e-6)
  q = q * np.asarray(params["q_norm"]["scale"]) + np.asarray(
      params["q_norm"]["bias"])
  q = np.where(q > 0, q, 0.2 * q)
  np.testing.assert_allclose(
      out["code_means"], q @ np.asarray(params["code_head"]["kernel"])
      + np.asarray(params["code_head"]["bias"]), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="g_hidden=8, d_hidden=0 need the "
                     "conv models"):
    make_models(make_config("cgan_mlp", g_hidden=8), (8, 8, 1), 10)
  with pytest.raises(ValueError, match="q_norm='batch' needs q_hidden > 0"):
    make_models(make_config("acgan", q_norm="batch"), (8, 8, 1), 10)


def test_make_models_shape_and_vbn_errors():
  with pytest.raises(ValueError, match="divisible by 4"):
    make_models(make_config("acgan"), (10, 10, 1), 10)
  with pytest.raises(ValueError, match="cgan_mlp has none"):
    make_models(make_config("cgan_mlp", virtual_batch_norm=True),
                     (8, 8, 1), 10)


def test_cgan_mlp_generator_norm_option():
  g, _ = make_models(make_config("cgan_mlp", g_norm="batch"), (8, 8, 1),
                          10)
  variables = g.init(jax.random.key(0), jnp.zeros((2, 100)), jnp.arange(2))
  assert set(variables["batch_stats"]) == {"z_dense_norm", "c_dense_norm",
                                           "joint_dense_norm"}
  with pytest.raises(ValueError, match="'group'"):
    bad, _ = make_models(make_config("cgan_mlp", g_norm="group"),
                              (8, 8, 1), 10)
    bad.init(jax.random.key(0), jnp.zeros((2, 100)), jnp.arange(2))


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)])
def test_generator_upsampling_options(shape):
  for upsample in gans.UPSAMPLES:
    g, _ = make_models(make_config("acgan", g_upsample=upsample), shape,
                            10)
    z = jnp.zeros((2, 8))
    variables = g.init(jax.random.key(0), z, jnp.arange(2))
    x = g.apply(variables, z, jnp.arange(2))
    assert x.shape == (2,) + shape
    assert float(jnp.abs(x).max()) <= 1.0
  with pytest.raises(ValueError, match="'bilinear'"):
    g, _ = make_models(make_config("acgan", g_upsample="bilinear"),
                            shape, 10)
    g.init(jax.random.key(0), z, jnp.arange(2))


def test_d_leaky_slope_sets_the_discriminators_negative_slope():
  config = make_config("acgan", d_hidden=24, d_norm="batch",
                       d_leaky_slope=0.01)
  g, d = make_models(config, (8, 8, 1), 10)
  _, _, _, out = init_and_apply(g, d, (8, 8, 1), batch=6)
  # the features are LeakyReLU(0.01) of a train-mode batch norm
  f = np.asarray(out["features"])
  assert (f < 0).any()
  pre = np.where(f < 0, f / 0.01, f)
  np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(pre.var(0), 1.0, atol=1e-3)
  with pytest.raises(ValueError, match="d_leaky_slope must be"):
    train.resolve(make_config("acgan", d_leaky_slope=1.5))


def test_initialize_dcgan_draws_kernels_and_scales_from_normals():
  params = {"conv": {"kernel": jnp.full((4, 4, 16, 64), 3.0),
                     "bias": jnp.full((64,), 0.5)},
            "norm": {"scale": jnp.full((4096,), 7.0),
                     "bias": jnp.zeros((4096,))},
            "embed": {"embedding": jnp.ones((10, 8))}}
  rng = jax.random.key(0)
  assert gans.initialize(params, rng, "flax") is params
  out = gans.initialize(params, rng, "dcgan")
  kernel = np.asarray(out["conv"]["kernel"])
  assert kernel.shape == (4, 4, 16, 64)
  assert abs(kernel.mean()) < 0.001 and abs(kernel.std() - 0.02) < 0.001
  scale = np.asarray(out["norm"]["scale"])
  assert abs(scale.mean() - 1.0) < 0.002 and abs(scale.std() - 0.02) < 0.001
  # biases and embeddings keep their values
  np.testing.assert_array_equal(out["conv"]["bias"], 0.5)
  np.testing.assert_array_equal(out["norm"]["bias"], 0.0)
  np.testing.assert_array_equal(out["embed"]["embedding"], 1.0)
  # each leaf from its own key; the same key gives the same draw
  assert not np.allclose(kernel.ravel()[:4096] - 0.0, scale - 1.0)
  np.testing.assert_array_equal(
      gans.initialize(params, rng, "dcgan")["conv"]["kernel"], kernel)
  with pytest.raises(ValueError, match="Unknown init 'xavier'"):
    gans.initialize(params, rng, "xavier")
