"""Tests of condgen_jax.nn.layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.nn import layers


def count_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def test_maxout_matches_numpy_with_set_params():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 3)).astype(np.float32)
  kernel = rng.normal(size=(3, 2 * 5)).astype(np.float32)
  bias = rng.normal(size=(2 * 5,)).astype(np.float32)
  params = {"dense": {"kernel": kernel, "bias": bias}}
  got = layers.Maxout(2, 5).apply({"params": params}, x)
  want = np.stack([np.max(x @ kernel[:, j * 5:(j + 1) * 5]
                          + bias[j * 5:(j + 1) * 5], axis=-1)
                   for j in range(2)], -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d,features,pieces", [(784, 240, 5), (10, 50, 5),
                                               (290, 240, 4)])
def test_maxout_param_count(d, features, pieces):
  params = layers.Maxout(features, pieces).init(jax.random.key(0),
                                                jnp.ones((1, d)))["params"]
  assert count_params(params) == d * features * pieces + features * pieces
  out = layers.Maxout(features, pieces).apply({"params": params},
                                              jnp.ones((2, 3, d)))
  assert out.shape == (2, 3, features)


def test_maxout_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_pieces"):
    layers.Maxout(3, 0).init(jax.random.key(0), jnp.ones((1, 2)))


def test_minibatch_discrimination_shape_and_values():
  x = jax.random.normal(jax.random.key(0), (5, 6))
  mbd = layers.MinibatchDiscrimination(num_kernels=4, kernel_dim=3)
  variables = mbd.init(jax.random.key(1), x)
  out = mbd.apply(variables, x)
  assert out.shape == (5, 6 + 4)
  np.testing.assert_allclose(out[:, :6], x)
  t = np.asarray(variables["params"]["T"], np.float64)
  m = (np.asarray(x, np.float64) @ t).reshape(5, 4, 3)
  want = np.exp(-np.abs(m[:, None] - m[None]).sum(-1)).sum(1)
  np.testing.assert_allclose(out[:, 6:], want, rtol=1e-5)
  assert np.all(np.asarray(out[:, 6:]) >= 1.0 - 1e-6)  # the j = i term


def test_minibatch_discrimination_is_permutation_equivariant():
  x = jax.random.normal(jax.random.key(0), (7, 2, 3))
  mbd = layers.MinibatchDiscrimination(num_kernels=5, kernel_dim=2)
  variables = mbd.init(jax.random.key(1), x)
  perm = np.array([3, 0, 6, 1, 5, 2, 4])
  np.testing.assert_allclose(mbd.apply(variables, x[perm]),
                             mbd.apply(variables, x)[perm], rtol=1e-5,
                             atol=1e-6)
  # Identical examples give o = batch size for every kernel.
  same = jnp.broadcast_to(x[:1], x.shape)
  np.testing.assert_allclose(mbd.apply(variables, same)[:, 6:], 7.0,
                             rtol=1e-6)


def test_virtual_batch_norm_uses_reference_statistics():
  rng = np.random.default_rng(1)
  ref = (3.0 + 2.0 * rng.normal(size=(16, 4, 4, 3))).astype(np.float32)
  x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
  vbn = layers.VirtualBatchNorm()
  variables = vbn.init(jax.random.key(0), x, ref)
  got = vbn.apply(variables, x, ref)
  mu = ref.astype(np.float64).mean((0, 1, 2))
  var = ref.astype(np.float64).var((0, 1, 2))
  np.testing.assert_allclose(got, (x - mu) / np.sqrt(var + 1e-5), rtol=1e-4,
                             atol=1e-5)
  # The statistics do not depend on the batch being normalised.
  np.testing.assert_allclose(vbn.apply(variables, x[:1], ref), got[:1],
                             rtol=1e-6)
  # Scale and bias act after normalisation.
  params = {"scale": jnp.full(3, 2.0), "bias": jnp.array([1.0, 0.0, -1.0])}
  np.testing.assert_allclose(vbn.apply({"params": params}, x, ref),
                             2.0 * got + params["bias"], rtol=1e-5, atol=1e-5)


def test_virtual_batch_norm_include_example_matches_numpy():
  rng = np.random.default_rng(2)
  ref = rng.normal(size=(8, 5)).astype(np.float32) * 2 + 1
  x = rng.normal(size=(3, 5)).astype(np.float32)
  vbn = layers.VirtualBatchNorm(include_example=True)
  variables = vbn.init(jax.random.key(0), x, ref)
  got = vbn.apply(variables, x, ref)
  want = []
  for i in range(3):
    batch = np.concatenate([ref, x[i:i + 1]]).astype(np.float64)
    want.append((x[i] - batch.mean(0)) / np.sqrt(batch.var(0) + 1e-5))
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-4, atol=1e-5)


def test_virtual_batch_norm_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="batch axis"):
    layers.VirtualBatchNorm().init(jax.random.key(0), jnp.ones((2, 3)),
                                   jnp.ones((4, 5)))


def test_spectral_norm_wrapper_has_same_params_either_way():
  class Net(nn.Module):
    enabled: bool

    @nn.compact
    def __call__(self, x, train):
      layer = nn.Dense(3, name="dense")
      return layers.spectral_norm(layer, self.enabled, name="sn")(
          x, update_stats=train)

  x = jnp.ones((2, 4))
  on = Net(True).init(jax.random.key(0), x, train=False)
  off = Net(False).init(jax.random.key(0), x, train=False)
  assert jax.tree_util.tree_structure(on["params"]) == \
      jax.tree_util.tree_structure(off["params"])
  assert "batch_stats" in on and "batch_stats" not in off
  # With many power iterations the normalised kernel has spectral norm 1.
  params = {"dense": {"kernel": jnp.array([[3.0, 0, 0], [0, 1.0, 0],
                                           [0, 0, 0.5], [0, 0, 0]]),
                      "bias": jnp.zeros(3)}}
  stats = on["batch_stats"]
  for _ in range(30):
    y, updates = Net(True).apply({"params": params, "batch_stats": stats},
                                 jnp.eye(4), train=True,
                                 mutable=["batch_stats"])
    stats = updates["batch_stats"]
  np.testing.assert_allclose(y[0], [1.0, 0.0, 0.0], atol=1e-3)


def test_depth_to_space_layout():
  x = np.arange(2 * 2 * 3 * 8, dtype=np.float32).reshape(2, 2, 3, 8)
  y = np.asarray(layers.depth_to_space(jnp.asarray(x), 2))
  assert y.shape == (2, 4, 6, 2)
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(y[:, i::2, j::2, :],
                                    x[..., (i * 2 + j) * 2:(i * 2 + j + 1) * 2])


def test_subpixel_conv_spans_a_stride2_transposed_conv():
  """Any stride-2, kernel-4 transposed conv is a 3x3 sub-pixel conv: fit the
  sub-pixel weights by least squares and match it to float precision."""
  key = jax.random.key(0)
  x = jax.random.normal(key, (4, 5, 5, 3))
  convt = nn.ConvTranspose(2, (4, 4), strides=(2, 2), padding="SAME",
                           use_bias=False)
  target = convt.apply(convt.init(key, x), x)  # [4, 10, 10, 2]
  # 3x3 patches of x (SAME padding), one row per input pixel.
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = np.stack([xp[:, i:i + 5, j:j + 5, :] for i in range(3)
                      for j in range(3)], axis=3).reshape(4 * 25, 27)
  # targets rearranged space-to-depth: [B*H*W, 4 phases * 2 channels]
  t = np.asarray(target).reshape(4, 5, 2, 5, 2, 2).transpose(0, 1, 3, 2, 4, 5)
  t = t.reshape(4 * 25, 8)
  w, *_ = np.linalg.lstsq(patches, t, rcond=None)
  layer = layers.SubPixelConv(2, use_bias=False)
  params = {"params": {"conv": {"kernel": jnp.asarray(
      w.reshape(3, 3, 3, 8))}}}
  np.testing.assert_allclose(layer.apply(params, x), target, atol=1e-4)
