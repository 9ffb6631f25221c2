"""Tests of condgen_jax.nn.kernels: each XLA:CPU kernel has the parameter tree
of the stock layer it replaces and computes the same function (values and
gradients); models built with either give the same results."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.nn import kernels
from condgen_jax.nn import layers


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
  ours, ref = kernels.BatchNorm(momentum=0.9), nn.BatchNorm(
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
  ev = kernels.BatchNorm(use_running_average=True).apply(
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
  ours = kernels.BatchNorm()
  v = ours.init(jax.random.key(0), x)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(ours.apply(
      {"params": p, "batch_stats": v["batch_stats"]}, x,
      mutable=["batch_stats"])[0] ** 2)))
  hlo = grad.lower(v["params"]).as_text()
  assert "stablehlo.reduce" not in hlo  # every channel sum is a dot
  assert hlo.count("stablehlo.dot") >= 4  # mean, var; dbias, dscale


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (2, 7, 7, 4), (1, 8, 6, 2),
                                   (2, 9, 7, 16), (2, 6, 6, 24)])
def test_stride2_conv_equals_strided_conv(shape):
  # Below STRIDED_FORWARD_MIN_CHANNELS input channels the forward pass goes
  # through space-to-depth, from it on through lax's strided conv; the
  # gradient is the space-to-depth form's either way.
  x = jax.random.normal(jax.random.key(0), shape)
  ref = nn.Conv(5, (4, 4), strides=(2, 2), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  ours = kernels.StridedConv(5, (4, 4))
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
  strided = shape[-1] >= kernels.STRIDED_FORWARD_MIN_CHANNELS
  assert ("window_strides=(2, 2)" in jaxpr) == strided
  y = jax.random.normal(jax.random.key(2), (2, 3, 5, 8))
  np.testing.assert_array_equal(
      layers.space_to_depth(layers.depth_to_space(y, 2), 2), y)


def _numpy_conv_transpose(x, kernel, k_pads):
  """Stride-2 transposed conv in numpy, as lax defines it: the input dilated
  by 2 (zeros between pixels), padded by `k_pads`, then correlated with the
  kernel (not flipped)."""
  n, h, w, c = x.shape
  xd = np.zeros((n, 2 * h - 1, 2 * w - 1, c))
  xd[:, ::2, ::2] = x
  return _numpy_conv(xd, kernel, (k_pads, k_pads))


@pytest.mark.parametrize("k,shape,features", [(4, (2, 7, 7, 8), 16),
                                              (4, (2, 14, 14, 32), 1),
                                              (5, (1, 4, 6, 3), 5),
                                              (3, (2, 5, 5, 4), 2)])
def test_conv_transpose_equals_a_transposed_conv(k, shape, features):
  x = jax.random.normal(jax.random.key(0), shape)
  ref = nn.ConvTranspose(features, (k, k), strides=(2, 2), padding="SAME")
  ours = kernels.ConvTranspose(features, (k, k))
  params = ref.init(jax.random.key(1), x)
  mine = ours.init(jax.random.key(1), x)
  for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)  # same tree, same initial values
  params = {"params": {**params["params"], "bias": jax.random.normal(
      jax.random.key(4), (features,))}}
  # lax's 'SAME' padding of the dilated input, by hand: k + s - 2 in all,
  # ceil of half of it first when s <= k - 1.
  pad_len = k
  lo = k - 1 if 2 > k - 1 else -(-pad_len // 2)
  want = _numpy_conv_transpose(np.asarray(x),
                               np.asarray(params["params"]["kernel"]),
                               (lo, pad_len - lo)) + np.asarray(
                                   params["params"]["bias"])
  assert want.shape[1:3] == (2 * shape[1], 2 * shape[2])
  np.testing.assert_allclose(ref.apply(params, x), want, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(ours.apply(params, x), want, rtol=1e-5,
                             atol=1e-5)
  w = jax.random.normal(jax.random.key(3), want.shape)
  loss = lambda m: (lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)) * w))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(ours), (0, 1))(params, x)),
                  jax.tree.leaves(jax.grad(loss(ref), (0, 1))(params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  # the weight gradient is no window-dilated convolution
  jaxpr = lambda m: str(jax.make_jaxpr(jax.grad(loss(m)))(params, x))
  assert "lhs_dilation=(2, 2)" in jaxpr(ref)
  assert "lhs_dilation=(2, 2)" not in jaxpr(ours)
  assert "rhs_dilation=(2, 2)" not in jaxpr(ours)


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
  ours, ref = conv(kernels.conv_general_dilated), conv(
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
  hlo = lambda w: jax.jit(lambda x, w: kernels.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                         ).lower(x, w).compile().as_text()
  assert " convolution(" not in hlo(jnp.ones((3, 3, 64, 4)))   # 36 <= 72
  assert " convolution(" in hlo(jnp.ones((3, 3, 64, 16)))      # 144 > 72


def test_thin_input_convolutions_get_a_matmul_input_gradient_on_cpu():
  def convs_in_grad(cin):
    x, w = jnp.ones((2, 15, 15, cin)), jnp.ones((2, 2, cin, 64))
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(kernels.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                                                 ** 2)))
    return grad.lower(x, w).compile().as_text().count(" convolution(")
  assert convs_in_grad(4) == 1   # 2*2*4 = 16 <= 72: lax forward, dot dx
  assert convs_in_grad(32) == 2  # 2*2*32 = 128 > 72: lax forward and dx


def test_resolve():
  assert kernels.resolve("auto", "cpu") is kernels.CPU
  assert kernels.resolve("auto", "gpu") is kernels.STOCK
  assert kernels.resolve("stock", "cpu") is kernels.STOCK
  assert kernels.resolve("cpu", "tpu") is kernels.CPU
  with pytest.raises(ValueError, match="Unknown kernels 'fast'"):
    kernels.resolve("fast")


@pytest.mark.parametrize("k,shape", [(3, (2, 9, 9, 3)), (3, (2, 8, 8, 3)),
                                     (3, (2, 14, 7, 16)), (5, (1, 7, 10, 2))])
def test_strided_conv_with_an_odd_kernel_is_lax_strided_conv(k, shape):
  """Odd kernels go through `even_kernel` (a zero tap on the side 'SAME'
  pads): the same values and gradients as nn.Conv, and the weight gradient
  is no window-dilated convolution."""
  x = jax.random.normal(jax.random.key(0), shape)
  ref = nn.Conv(4, (k, k), strides=(2, 2), padding="SAME")
  params = ref.init(jax.random.key(1), x)
  ours = kernels.StridedConv(4, (k, k))
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)
  w = jax.random.normal(jax.random.key(3), ref.apply(params, x).shape)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)) * w)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  jaxpr = str(jax.make_jaxpr(jax.grad(loss(ours)))(params, x))
  assert "rhs_dilation=(2, 2)" not in jaxpr
  assert "rhs_dilation=(2, 2)" in str(
      jax.make_jaxpr(jax.grad(loss(ref)))(params, x))


# ----------------------------------------------------------------------------
# Whole models: the same parameters and the same function with either set of
# kernels, and forward-mode autodiff through the stock one.

def _gan_config(model, **kw):
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict({"model": model, "z_dim": 8, "g_width": 8,
                                 "d_width": 8, "g_norm": "batch",
                                 "mbd_kernels": 4, "mbd_kernel_dim": 3})
  c.update(kw)
  return c


GAN_CONFIGS = {
    "cgan_mlp": _gan_config("cgan_mlp", dropout_rate=0.0),
    "cgan_conv": _gan_config("cgan_conv", d_norm="batch"),
    "cgan_conv_pixel_shuffle_sn": _gan_config(
        "cgan_conv", g_upsample="pixel_shuffle", spectral_norm=True,
        d_conditioning="vectorize"),
    "acgan_film": _gan_config("acgan", g_conditioning="film",
                              d_conditioning="film", d_norm="layer"),
}


def _apply_both(config, kernels_name):
  from condgen_jax.families import gan  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.kernels = kernels_name
  g, d = gan.make_models(train.resolve(config), (8, 8, 1), 10)
  z = jax.random.normal(jax.random.key(0), (6, 8))
  c = jnp.arange(6) % 10
  gv = g.init(jax.random.key(1), z, c)
  x, _ = g.apply(gv, z, c, train=True, mutable=["batch_stats"])
  dv = d.init(jax.random.key(2), x, c)
  out, _ = d.apply(dv, x, c, train=True, mutable=["batch_stats"])
  return (g, gv, z, c), (d, dv, x), x, out["logit"]


@pytest.mark.parametrize("name", GAN_CONFIGS)
def test_gans_compute_the_same_function_with_either_kernels(name):
  (g, gv, z, c), (d, dv, x), fake_s, logit_s = _apply_both(
      GAN_CONFIGS[name], "stock")
  (g2, gv2, _, _), (d2, dv2, _), fake_c, logit_c = _apply_both(
      GAN_CONFIGS[name], "cpu")
  assert jax.tree.map(jnp.shape, gv) == jax.tree.map(jnp.shape, gv2)
  assert jax.tree.map(jnp.shape, dv) == jax.tree.map(jnp.shape, dv2)
  np.testing.assert_allclose(fake_c, fake_s, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logit_c, logit_s, rtol=1e-5, atol=1e-5)
  # gradients of D's output w.r.t. its params and its input
  grad = lambda m, v: jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(
      {**v, "params": p}, x, c, train=True, mutable=["batch_stats"])[0][
          "logit"])), argnums=(0, 1))(v["params"], x)
  for a, b in zip(jax.tree.leaves(grad(d2, dv2)), jax.tree.leaves(grad(d, dv))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _check_jvp_against_vjp(f, primal, seed=0):
  """jax.jvp runs through f, and <J t, w> == <t, J^T w> (J^T w by vjp)."""
  leaves, tree = jax.tree.flatten(primal)
  keys = jax.random.split(jax.random.key(seed), len(leaves) + 1)
  t = jax.tree.unflatten(tree, [jax.random.normal(k, l.shape)
                                for k, l in zip(keys[1:], leaves)])
  y, jt = jax.jvp(f, (primal,), (t,))
  w = jax.random.normal(keys[0], y.shape)
  (vw,) = jax.vjp(f, primal)[1](w)
  lhs = float(jnp.vdot(jt, w))
  rhs = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(t),
                                                   jax.tree.leaves(vw)))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", GAN_CONFIGS)
def test_jvp_through_the_gans_with_stock_kernels(name):
  (g, gv, z, c), (d, dv, x), _, _ = _apply_both(GAN_CONFIGS[name], "stock")
  _check_jvp_against_vjp(lambda p: g.apply(
      {**gv, "params": p}, z, c, train=True, mutable=["batch_stats"])[0],
                         gv["params"])
  _check_jvp_against_vjp(lambda x: d.apply(
      dv, x, c, train=True, mutable=["batch_stats"])[0]["logit"], x)


@pytest.mark.parametrize("conditioning", ["vectorize", "film"])
def test_the_conv_cvae_computes_the_same_function_with_either_kernels(
    conditioning):
  from condgen_jax.models import cvae  # pylint: disable=g-import-not-at-top
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  c = jnp.arange(4)

  def loss(k):
    model = cvae.CVAE(image_shape=(8, 8, 1), num_classes=10, latent_dim=3,
                      architecture="conv", hidden=(16,), channels=(4, 8),
                      conditioning=conditioning, kernels=k)
    params = model.init(jax.random.key(1), x, c, jax.random.key(2))
    f = lambda p: jnp.sum(jnp.sin(model.apply(
        p, x, c, jax.random.key(2))["logits"]))
    return params, jax.value_and_grad(f)(params)

  p_stock, (v_stock, g_stock) = loss(kernels.STOCK)
  p_cpu, (v_cpu, g_cpu) = loss(kernels.CPU)
  assert jax.tree.map(jnp.shape, p_stock) == jax.tree.map(jnp.shape, p_cpu)
  chex.assert_trees_all_close(p_stock, p_cpu)
  np.testing.assert_allclose(v_cpu, v_stock, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_cpu), jax.tree.leaves(g_stock)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_jvp_through_the_cvae(architecture):
  from condgen_jax.models import cvae  # pylint: disable=g-import-not-at-top
  model = cvae.CVAE(image_shape=(8, 8, 1), num_classes=10, latent_dim=3,
                    architecture=architecture, hidden=(16,), channels=(4, 8))
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  c = jnp.arange(4)
  params = model.init(jax.random.key(1), x, c, jax.random.key(2))["params"]
  _check_jvp_against_vjp(lambda p: model.apply(
      {"params": p}, x, c, jax.random.key(2))["logits"], params)


def test_a_checkpoint_trained_with_cpu_kernels_restores_with_stock_ones(
    tmp_path, digits):
  import json  # pylint: disable=g-import-not-at-top
  from condgen_jax.evaluation import sampling  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  from condgen_jax.configs import acgan  # pylint: disable=g-import-not-at-top
  config = acgan.get_config()
  config.update(dataset="digits", batch_size=32, num_steps=4, g_width=8,
                d_width=8, log_every=2, checkpoint_every=4, sample_every=0,
                kernels="cpu", d_norm="batch")
  train.train_and_evaluate(config, tmp_path, digits)
  run, state, _ = train.restore_run(tmp_path, dataset=digits)
  cpu_samples = sampling.sample_labels(run, state, np.arange(20) % 10, seed=3)
  saved = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**saved,
                                                    "kernels": "stock"}))
  run, state, _ = train.restore_run(tmp_path, dataset=digits)
  g, _ = run.family.make_models(run.settings, (8, 8, 1), 10)
  assert g.kernels is kernels.STOCK
  stock_samples = sampling.sample_labels(run, state, np.arange(20) % 10,
                                         seed=3)
  np.testing.assert_allclose(stock_samples, cpu_samples, atol=1e-5)
