"""Tests of condgen_jax.layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax import layers


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


def _bn_numpy(x, scale, bias, eps=1e-5):
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axes), x.var(axes)
  return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


@pytest.mark.parametrize("shape", [(16, 5, 5, 8), (12, 6)])
def test_batch_norm_matches_numpy_and_flax(shape):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=shape) * 3 + 1).astype(np.float32)
  c = shape[-1]
  params = {"scale": np.linspace(0.5, 2, c, dtype=np.float32),
            "bias": np.linspace(-1, 1, c, dtype=np.float32)}
  ours, ref = layers.BatchNorm(momentum=0.9), nn.BatchNorm(
      use_running_average=False, momentum=0.9)
  v_ours, v_ref = ours.init(jax.random.key(0), x), ref.init(
      jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
  stats = jax.tree.map(lambda a: a + 0.5, v_ours["batch_stats"])
  variables = {"params": params, "batch_stats": stats}
  y, upd = ours.apply(variables, x, mutable=["batch_stats"])
  want, mean, var = _bn_numpy(x.astype(np.float64), params["scale"],
                              params["bias"])
  np.testing.assert_allclose(y, want, atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["mean"],
                             0.9 * 0.5 + 0.1 * mean, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["var"],
                             0.9 * 1.5 + 0.1 * var, rtol=1e-5)
  # Evaluation uses the running averages.
  ev = layers.BatchNorm(use_running_average=True).apply(
      {"params": params, "batch_stats": stats}, x)
  np.testing.assert_allclose(
      ev, (x - 0.5) / np.sqrt(1.5 + 1e-5) * params["scale"] + params["bias"],
      atol=1e-5)

  # Gradients (hand-written VJP) equal flax's autodiff, through y and
  # through the updated statistics.
  w = rng.normal(size=shape).astype(np.float32)

  def loss(module, params, x):
    y, upd = module.apply({"params": params, "batch_stats": stats}, x,
                          mutable=["batch_stats"])
    return (jnp.sum(jnp.sin(y) * w) + 3.0 * jnp.sum(upd["batch_stats"]["mean"])
            + jnp.sum(upd["batch_stats"]["var"] ** 2))

  g_ours = jax.grad(loss, argnums=(1, 2))(ours, params, x)
  g_ref = jax.grad(loss, argnums=(1, 2))(ref, params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_norm_statistics_are_matmuls():
  x = jnp.ones((64, 7, 7, 16))
  ours = layers.BatchNorm()
  v = ours.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(ours.apply(
      {"params": p, "batch_stats": v["batch_stats"]}, x,
      mutable=["batch_stats"])[0] ** 2)))
  hlo = grad.lower(v["params"]).as_text()
  assert "stablehlo.reduce" not in hlo  # every channel sum is a dot
  assert hlo.count("stablehlo.dot") >= 4  # mean, var; dbias, dscale


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


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (2, 7, 7, 4), (1, 8, 6, 2),
                                   (2, 9, 7, 16), (2, 6, 6, 24)])
def test_stride2_conv_equals_strided_conv(shape):
  # Below STRIDED_FORWARD_MIN_CHANNELS input channels the forward pass goes
  # through space-to-depth, from it on through lax's strided conv; the
  # gradient is the space-to-depth form's either way.
  x = jax.random.normal(jax.random.key(0), shape)
  ref = nn.Conv(5, (4, 4), strides=(2, 2), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  ours = layers.Stride2Conv(5, 4)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == \
      jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  w = jax.random.normal(jax.random.key(3), ref.apply(params, x).shape)
  g_ref = jax.grad(lambda p, x: jnp.sum(jnp.sin(ref.apply(p, x)) * w),
                   argnums=(0, 1))(params, x)
  g_ours = jax.grad(lambda p, x: jnp.sum(jnp.sin(ours.apply(p, x)) * w),
                    argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # Second order: forward-over-reverse, and reverse-over-reverse as in a
  # gradient penalty.
  gx = lambda m: jax.grad(lambda x: jnp.sum(jnp.tanh(m.apply(params, x))))
  np.testing.assert_allclose(jax.jvp(gx(ours), (x,), (x,))[1],
                             jax.jvp(gx(ref), (x,), (x,))[1],
                             rtol=1e-3, atol=1e-3)
  penalty = lambda m: jax.grad(lambda p: jnp.sum(jax.grad(
      lambda x: jnp.sum(jnp.tanh(m.apply(p, x))))(x) ** 2))(params)
  for a, b in zip(jax.tree.leaves(penalty(ours)),
                  jax.tree.leaves(penalty(ref))):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
  jaxpr = str(jax.make_jaxpr(lambda x: ours.apply(params, x))(x))
  strided = shape[-1] >= layers.STRIDED_FORWARD_MIN_CHANNELS
  assert ("window_strides=(2, 2)" in jaxpr) == strided
  y = jax.random.normal(jax.random.key(2), (2, 3, 5, 8))
  np.testing.assert_array_equal(
      layers.space_to_depth(layers.depth_to_space(y, 2), 2), y)


def _numpy_conv(x, w, pads):
  """Direct stride-1 NHWC convolution in numpy: y[n,i,j,f] =
  sum_{a,b,c} pad(x)[n, i+a, j+b, c] w[a, b, c, f]."""
  kh, kw, _, f = w.shape
  xp = np.pad(x, ((0, 0), *pads, (0, 0)))
  ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  y = np.zeros((x.shape[0], ho, wo, f))
  for a in range(kh):
    for b in range(kw):
      y += np.einsum("nijc,cf->nijf", xp[:, a:a + ho, b:b + wo], w[a, b])
  return y


@pytest.mark.parametrize("x_shape,w_shape,padding,pads", [
    ((2, 7, 9, 16), (3, 3, 16, 2), "SAME", ((1, 1), (1, 1))),
    ((2, 8, 8, 10), (2, 2, 10, 3), "VALID", ((0, 0), (0, 0))),
    ((2, 6, 6, 5), (3, 3, 5, 8), ((2, 1), (0, 2)), ((2, 1), (0, 2))),
    # Thin input (kh*kw*C <= 72 < kh*kw*F): the input gradient is taps.
    ((2, 5, 5, 6), (3, 3, 6, 12), "SAME", ((1, 1), (1, 1))),
    ((2, 6, 7, 4), (3, 3, 4, 10), ((2, 0), (1, 2)), ((2, 0), (1, 2))),
    ((2, 15, 15, 4), (2, 2, 4, 64), "VALID", ((0, 0), (0, 0))),
    ((2, 5, 5, 16), (3, 3, 16, 12), "SAME", ((1, 1), (1, 1))),  # lax path
])
def test_conv_general_dilated_matches_a_direct_convolution(
    x_shape, w_shape, padding, pads):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(x_shape).astype(np.float32)
  w = rng.standard_normal(w_shape).astype(np.float32)
  conv = lambda f: (lambda x, w: f(x, w, (1, 1), padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")))
  ours, ref = conv(layers.conv_general_dilated), conv(
      jax.lax.conv_general_dilated)
  y = ours(jnp.asarray(x), jnp.asarray(w))
  np.testing.assert_allclose(y, _numpy_conv(x, w, pads), rtol=1e-4,
                             atol=1e-4)
  dy = jnp.asarray(rng.standard_normal(y.shape).astype(np.float32))
  for got, want in zip(jax.vjp(ours, x, w)[1](dy), jax.vjp(ref, x, w)[1](dy)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Second-order too (a gradient penalty differentiates through it).
  gx = lambda f: jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))
  np.testing.assert_allclose(
      jax.jvp(gx(ours), (x,), (dy[:1].sum() * x,))[1],
      jax.jvp(gx(ref), (x,), (dy[:1].sum() * x,))[1], rtol=1e-3, atol=1e-3)


def test_thin_convolutions_become_matmuls_on_cpu():
  x = jnp.ones((2, 14, 14, 64))
  hlo = lambda w: jax.jit(lambda x, w: layers.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                         ).lower(x, w).compile().as_text()
  assert " convolution(" not in hlo(jnp.ones((3, 3, 64, 4)))   # 36 <= 72
  assert " convolution(" in hlo(jnp.ones((3, 3, 64, 16)))      # 144 > 72


def test_thin_input_convolutions_get_a_matmul_input_gradient_on_cpu():
  def convs_in_grad(cin):
    x, w = jnp.ones((2, 15, 15, cin)), jnp.ones((2, 2, cin, 64))
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(layers.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                                                 ** 2)))
    return grad.lower(x, w).compile().as_text().count(" convolution(")
  assert convs_in_grad(4) == 1   # 2*2*4 = 16 <= 72: lax forward, dot dx
  assert convs_in_grad(32) == 2  # 2*2*32 = 128 > 72: lax forward and dx
