import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.nn import conditioning as C

KEY = jax.random.key(0)


def _apply(module, x, c, **kw):
  variables = module.init(KEY, x, c, **kw)
  return module.apply(variables, x, c, **kw), variables


def test_condition_vector_one_hot_and_float():
  np.testing.assert_array_equal(C.condition_vector(jnp.array([2, 0]), 3),
                                [[0, 0, 1], [1, 0, 0]])
  soft = jnp.array([[0.2, 0.8]])
  np.testing.assert_array_equal(C.condition_vector(soft, 2), soft)
  with pytest.raises(ValueError, match=r"\[batch, 3\]"):
    C.condition_vector(jnp.ones((2, 4)), 3)


def test_attributes_become_concatenated_one_hots():
  attrs = jnp.array([[7, 0], [3, 5]])  # (digit, color)
  v = np.asarray(C.condition_vector(attrs, (10, 6)))
  expected = np.zeros((2, 16))
  expected[0, 7] = expected[0, 10 + 0] = 1
  expected[1, 3] = expected[1, 10 + 5] = 1
  np.testing.assert_array_equal(v, expected)
  assert C.condition_size((10, 6)) == 16 and C.condition_size(10) == 10
  with pytest.raises(ValueError, match=r"sizes \(10, 6\).*\[batch, 2\]"):
    C.condition_vector(jnp.array([7, 3]), (10, 6))


def test_attribute_projection_sums_one_embedding_per_attribute():
  """<W^T [onehot(d), onehot(c)], phi> = <e_d + e_c, phi>: an unseen (d, c)
  pair is scored with embeddings learned from other pairs."""
  feats = jax.random.normal(KEY, (2, 5))
  attrs = jnp.array([[7, 0], [3, 5]])
  out, variables = _apply(C.Projection((10, 6)), feats, attrs)
  w = np.asarray(variables["params"]["embed"]["kernel"])  # [16, 5]
  e = w[[7, 3]] + w[[10 + 0, 10 + 5]]
  np.testing.assert_allclose(out, np.sum(e * np.asarray(feats), -1),
                             rtol=1e-5)
  x = jnp.zeros((2, 4, 4, 1))
  y, v = _apply(C.EmbedChannel((10, 6), embed_dim=3), x, attrs)
  assert v["params"]["embed"]["kernel"].shape == (16, 3) and y.shape[-1] == 2


def test_concat_appends_one_hot():
  x = jnp.arange(12.0).reshape(2, 2, 3)
  y, _ = _apply(C.Concat(4), x, jnp.array([1, 3]))
  np.testing.assert_array_equal(y[:, :6], x.reshape(2, 6))
  np.testing.assert_array_equal(y[:, 6:], [[0, 1, 0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (3, 5, 7, 4)])
def test_vectorize_puts_the_one_hot_at_every_pixel(shape):
  x = jax.random.normal(KEY, shape)
  labels = jnp.arange(shape[0]) % 6
  y, variables = _apply(C.Vectorize(6), x, labels)
  assert not variables  # no parameters
  assert y.shape == shape[:3] + (shape[3] + 6,)
  np.testing.assert_array_equal(y[..., :shape[3]], x)
  onehot = np.eye(6)[np.asarray(labels)]
  for i in range(shape[0]):
    np.testing.assert_array_equal(
        y[i, :, :, shape[3]:], np.broadcast_to(onehot[i], shape[1:3] + (6,)))


@pytest.mark.parametrize("shape", [(4, 8, 8, 3), (2, 28, 28, 16), (5, 10)])
def test_film_with_a_zero_kernel_is_the_identity_at_init(shape):
  x = jax.random.normal(KEY, shape)
  film = C.FiLM(10, kernel_init=nn.initializers.zeros)
  y, variables = _apply(film, x, jnp.arange(shape[0]) % 10)
  np.testing.assert_array_equal(y, x)
  # one Dense K -> 2C: K*2C + 2C parameters
  n = sum(p.size for p in jax.tree.leaves(variables))
  assert n == 10 * 2 * shape[-1] + 2 * shape[-1]


def test_film_starts_with_a_random_modulation_per_class():
  """Default start: bias (1, 0), kernel LeCun normal (std 1 / sqrt(K)), so
  y = (1 + W_g[c]) x + W_b[c] for a one-hot c, different per class."""
  x = jax.random.normal(KEY, (4, 5, 5, 64))
  labels = jnp.array([0, 1, 2, 3])
  y, variables = _apply(C.FiLM(10), x, labels)
  kernel = np.asarray(variables["params"]["gamma_beta"]["kernel"])
  np.testing.assert_array_equal(variables["params"]["gamma_beta"]["bias"],
                                np.r_[np.ones(64), np.zeros(64)])
  assert 0.2 < kernel.std() < 0.45  # 1 / sqrt(10) = 0.316
  rows = kernel[np.asarray(labels)]
  expected = ((1 + rows[:, None, None, :64]) * np.asarray(x)
              + rows[:, None, None, 64:])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_film_applies_gamma_and_beta_per_channel():
  x = jax.random.normal(KEY, (2, 3, 3, 2))
  film = C.FiLM(2)
  variables = film.init(KEY, x, jnp.array([0, 1]))
  # class 0 -> gamma (2, 3), beta (-1, 0.5); class 1 -> gamma (1, 1), beta 0
  kernel = np.zeros((2, 4))
  kernel[0] = [1.0, 2.0, -1.0, 0.5]
  params = {"params": {"gamma_beta": {
      "kernel": jnp.asarray(kernel),
      "bias": jnp.array([1.0, 1.0, 0.0, 0.0])}}}
  del variables
  y = film.apply(params, x, jnp.array([0, 1]))
  np.testing.assert_allclose(y[0], x[0] * np.array([2.0, 3.0])
                             + np.array([-1.0, 0.5]), rtol=1e-6)
  np.testing.assert_allclose(y[1], x[1], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 8, 8, 1), (2, 28, 28, 3), (1, 6, 10, 2)])
def test_embed_channel_adds_exactly_one_channel(shape):
  x = jax.random.normal(KEY, shape)
  y, variables = _apply(C.EmbedChannel(10), x, jnp.array([3] * shape[0]))
  assert y.shape == shape[:3] + (shape[3] + 1,)
  np.testing.assert_array_equal(y[..., :-1], x)
  h, w = shape[1:3]
  # Embed 10x50, Dense 50 -> H*W with bias
  n = sum(p.size for p in jax.tree.leaves(variables))
  assert n == 10 * 50 + 50 * h * w + h * w


def test_embed_channel_depends_on_the_class():
  x = jnp.zeros((2, 4, 4, 1))
  y, _ = _apply(C.EmbedChannel(3, embed_dim=5), x, jnp.array([0, 2]))
  assert not np.allclose(y[0, ..., -1], y[1, ..., -1])


def test_projection_is_inner_product_with_class_embedding():
  feats = jax.random.normal(KEY, (3, 5))
  labels = jnp.array([0, 1, 2])
  out, variables = _apply(C.Projection(3), feats, labels)
  embed = np.asarray(variables["params"]["embed"]["kernel"])  # [3, 5]
  expected = np.sum(embed[np.asarray(labels)] * np.asarray(feats), -1)
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_projection_embedding_starts_at_the_glorot_scale():
  """Glorot-uniform over [K, F]: |w| <= sqrt(6 / (K + F)), variance
  2 / (K + F); the Dense default (variance 1 / K) would be ~sqrt(F / (2K))
  times larger."""
  k, f = 10, 6272  # MNIST's D: 7 x 7 x 128 features
  _, variables = _apply(C.Projection(k), jnp.zeros((2, f)), jnp.array([0, 1]))
  w = np.asarray(variables["params"]["embed"]["kernel"])
  assert w.shape == (k, f)
  assert np.abs(w).max() <= np.sqrt(6 / (k + f))
  np.testing.assert_allclose(w.std(), np.sqrt(2 / (k + f)), rtol=0.02)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_film_conv_stack_shapes(norm):
  x = jax.random.normal(KEY, (4, 28, 28, 1))
  stack = C.FiLMConvStack(10, (8, 16), (2, 2), norm=norm)
  variables = stack.init(KEY, x, jnp.arange(4), train=True)
  y, _ = stack.apply(variables, x, jnp.arange(4), train=True,
                     mutable=["batch_stats"])
  assert y.shape == (4, 7, 7, 16)
  assert "film1" in variables["params"]


def test_film_conv_stack_transpose_upsamples():
  x = jnp.ones((2, 2, 2, 4))
  stack = C.FiLMConvStack(10, (8, 1), (2, 2), transpose=True,
                          activation=nn.tanh)
  y, _ = _apply(stack, x, jnp.array([0, 1]))
  assert y.shape == (2, 8, 8, 1)


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match="'tile'"):
    C.image_conditioning("tile", 10)
  with pytest.raises(ValueError, match="'group'"):
    C.normalization("group", True)
