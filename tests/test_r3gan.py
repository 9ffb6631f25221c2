"""R3GAN's networks (condgen_jax.models.r3gan): shapes, fix-up start,
grouped convs, no normalisation, conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.models import r3gan

SHAPE = (8, 8, 1)


def _nets(**kw):
  g = r3gan.Generator(SHAPE, 10, widths=(32, 16), blocks=2, **kw)
  d = r3gan.Discriminator(SHAPE, 10, widths=(16, 32), blocks=2, features=24,
                          **kw)
  z, c = jnp.ones((3, 5)), jnp.array([0, 3, 9])
  gp = g.init(jax.random.key(0), z, c)["params"]
  x = g.apply({"params": gp}, z, c)
  dp = d.init(jax.random.key(1), x, c)["params"]
  return g, gp, d, dp, z, c, x


def test_shapes_and_no_normalisation_layers():
  g, gp, d, dp, z, c, x = _nets()
  assert x.shape == (3, 8, 8, 1) and x.dtype == jnp.float32
  out = d.apply({"params": dp}, x, c)
  assert out["logit"].shape == (3,) and out["features"].shape == (3, 24)
  names = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_leaves_with_path((gp, dp))]
  assert not [n for n in names if "norm" in n.lower() or "scale" in n]
  # the 3x3 conv is grouped: 16 channels per group of the 2x expansion
  kernel = gp["block0_0"]["grouped"]["kernel"]
  assert kernel.shape == (3, 3, 16, 64)  # width 32 -> 64 hidden, 4 groups
  with pytest.raises(ValueError, match="divisible by 2"):
    r3gan.Generator((7, 7, 1), 10, widths=(8, 8)).init(
        jax.random.key(0), z, c)


def test_each_block_starts_as_the_identity_with_fixup_scaled_kernels():
  """The branch's last conv is zero (so the block is x), the others are
  LeCun-normal times L^(-1/4), L = 4 blocks: std sqrt(1/fan_in) / sqrt(2)."""
  _, gp, _, _, _, _, _ = _nets()
  block = gp["block0_0"]
  assert not np.any(np.asarray(block["project"]["kernel"]))
  x = jax.random.normal(jax.random.key(2), (2, 4, 4, 32))
  y = r3gan.ResidualBlock(32, scale=0.5).apply({"params": block}, x)
  np.testing.assert_array_equal(y, x)
  assert r3gan.fixup_scale(4) == pytest.approx(4 ** -0.25)
  stds = []
  for name in ("block0_0", "block0_1", "block1_0", "block1_1"):
    k = np.asarray(gp[name]["expand"]["kernel"])  # fan_in = width
    stds.append(k.std() * np.sqrt(k.shape[2]))
  # truncated normal of unit variance: std 1; times 4^(-1/4)
  np.testing.assert_allclose(np.mean(stds), 4 ** -0.25, rtol=0.1)


def test_the_condition_changes_both_networks():
  g, gp, d, dp, z, c, x = _nets()
  other = jnp.array([1, 4, 2])
  assert not np.allclose(g.apply({"params": gp}, z, other), x)
  # the projection term: logits differ by <embed(c) - embed(c'), h> / sqrt
  out = d.apply({"params": dp}, x, c)
  out2 = d.apply({"params": dp}, x, other)
  e = np.asarray(dp["embed"]["kernel"])
  h = np.asarray(out["features"])
  diff = np.sum((e[np.asarray(c)] - e[np.asarray(other)]) * h, -1) / np.sqrt(
      24.0)
  np.testing.assert_allclose(out["logit"] - out2["logit"], diff, rtol=1e-4,
                             atol=1e-6)
