"""The U-Net generator and the PatchGAN discriminator: shapes, the skips'
widths by hand, dropout as G's noise, and the CPU kernels' equality."""

import jax
import numpy as np
import pytest

from condgen_jax.nn import kernels
from condgen_jax.models import pix2pix

KEY = jax.random.key(0)


def _generator_output(shape, out_channels, channels, rng=KEY, rate=0.5,
                      kernel_set=kernels.STOCK):
  g = pix2pix.UNetGenerator(out_channels, channels, rate, kernel_set)
  x = jax.random.uniform(KEY, (2,) + shape, minval=-1.0, maxval=1.0)
  params = jax.jit(g.init)({"params": KEY, "dropout": KEY}, x)["params"]
  return params, jax.jit(g.apply)({"params": params}, x,
                                  rngs={"dropout": rng})


@pytest.mark.parametrize("shape,out_channels", [((8, 8, 1), 1),
                                                ((28, 28, 1), 1),
                                                ((8, 8, 1), 3)])
def test_generator_shapes_and_range(shape, out_channels):
  _, y = _generator_output(shape, out_channels, (8, 16, 16))
  assert y.shape == (2,) + shape[:2] + (out_channels,)
  assert -1.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_the_skips_double_the_decoders_inputs():
  params, _ = _generator_output((28, 28, 1), 1, (8, 16, 32))
  shapes = {k: v["kernel"].shape for k, v in params.items() if "kernel" in v}
  assert shapes["down0"] == (4, 4, 1, 8)
  assert shapes["down2"] == (4, 4, 16, 32)
  assert shapes["up2"] == (4, 4, 32, 16)  # the bottleneck: no skip
  assert shapes["up1"] == (4, 4, 2 * 16, 8)  # up2's output + down1's
  assert shapes["up0"] == (4, 4, 2 * 8, 1)
  # no norm on the first and the innermost encoder layer, nor the output
  assert {k for k in params if "norm" in k} == {"down_norm1", "up_norm1",
                                                "up_norm2"}


def test_dropout_is_the_generators_noise():
  _, a = _generator_output((8, 8, 1), 1, (8, 16, 16), jax.random.key(1))
  _, b = _generator_output((8, 8, 1), 1, (8, 16, 16), jax.random.key(1))
  _, c = _generator_output((8, 8, 1), 1, (8, 16, 16), jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  _, d = _generator_output((8, 8, 1), 1, (8, 16, 16), jax.random.key(1), 0.0)
  _, e = _generator_output((8, 8, 1), 1, (8, 16, 16), jax.random.key(2), 0.0)
  np.testing.assert_array_equal(d, e)


@pytest.mark.parametrize("shape,channels,patches", [
    ((28, 28, 1), (8,), (14, 14)),
    ((28, 28, 1), (8, 16), (14, 14)),  # the last layer has stride 1
    ((28, 28, 1), (8, 16, 32), (7, 7)),
    ((8, 8, 1), (8, 16), (4, 4)),
])
def test_patch_logits_shapes(shape, channels, patches):
  d = pix2pix.PatchDiscriminator(channels)
  x = jax.random.uniform(KEY, (3,) + shape)
  logits = d.apply(d.init(KEY, x, x), x, x)
  assert logits.shape == (3,) + patches


def test_cpu_kernels_compute_the_same_networks():
  p_stock, y_stock = _generator_output((28, 28, 1), 1, (8, 16, 32))
  p_cpu, y_cpu = _generator_output((28, 28, 1), 1, (8, 16, 32),
                                   kernel_set=kernels.CPU)
  assert jax.tree.structure(p_stock) == jax.tree.structure(p_cpu)
  np.testing.assert_allclose(y_stock, y_cpu, atol=2e-5)
  x = jax.random.uniform(KEY, (2, 28, 28, 1))
  stock = pix2pix.PatchDiscriminator((8, 16))
  params = stock.init(KEY, x, x)
  np.testing.assert_allclose(
      stock.apply(params, x, x),
      pix2pix.PatchDiscriminator((8, 16), kernels.CPU).apply(params, x, x),
      atol=2e-5)
