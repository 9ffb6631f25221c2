"""Tests of condgen_jax.nn.augmentation: random affine warps."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from condgen_jax.nn import augmentation


def _scipy_warp(image, a, t, fill):
  """The same map by scipy (past the edge the fill is interpolated, as
  JAX's mode="constant" does): output pixel o reads the input at
  A (o - centre) + t + centre = A o + (t + centre - A centre)."""
  centre = (np.array(image.shape[:2], np.float64) - 1) / 2
  offset = t + centre - a @ centre
  return np.stack([ndimage.affine_transform(
      image[..., k], a, offset=offset, order=1, mode="grid-constant",
      cval=fill) for k in range(image.shape[-1])], -1)


def test_identity_and_shift_are_exact():
  x = np.random.default_rng(0).uniform(size=(2, 6, 5, 1)).astype(np.float32)
  eye = np.tile(np.eye(2, dtype=np.float32), (2, 1, 1))
  np.testing.assert_allclose(
      augmentation.warp(x, eye, np.zeros((2, 2), np.float32), -1.0), x,
      atol=1e-6)
  # output row r reads input row r + 1; the last row falls outside: fill
  shifted = augmentation.warp(x, eye, np.array([[1.0, 0.0]] * 2, np.float32),
                              -1.0)
  np.testing.assert_allclose(shifted[:, :-1], x[:, 1:], atol=1e-6)
  np.testing.assert_allclose(shifted[:, -1], -1.0)


def test_quarter_turn_is_rot90():
  x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
  a = np.array([[[0.0, -1.0], [1.0, 0.0]]], np.float32)  # theta = 90 deg
  out = augmentation.warp(x, a, np.zeros((1, 2), np.float32), 0.0)
  # out[r, c] = x[-c, r] about the centre: a clockwise quarter turn
  np.testing.assert_allclose(out[0, ..., 0], np.rot90(x[0, ..., 0], -1),
                             atol=1e-5)


def test_random_maps_match_scipy():
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(4, 9, 7, 2)).astype(np.float32)
  a, t = augmentation.affine_matrices(jax.random.key(3), 4)
  out = np.asarray(augmentation.warp(x, a, t, -1.0))
  for i in range(4):
    np.testing.assert_allclose(
        out[i], _scipy_warp(x[i], np.asarray(a[i], np.float64),
                            np.asarray(t[i], np.float64), -1.0), atol=1e-5)


def test_gradient_is_the_transposed_warp():
  # the warp is linear in the image: d<w, warp(x)>/dx = M^T w, with M built
  # column by column from scipy's warp of the basis images
  shape = (4, 5, 1)
  a = np.array([[0.9, -0.3], [0.35, 1.1]])
  t = np.array([0.4, -0.7])
  m = np.stack([_scipy_warp(e.reshape(shape), a, t, 0.0).ravel()
                for e in np.eye(20)], -1)
  w = np.random.default_rng(2).normal(size=20)
  grad = jax.grad(lambda x: jnp.sum(augmentation.warp(
      x[None], jnp.asarray(a[None], jnp.float32),
      jnp.asarray(t[None], jnp.float32), 0.0).ravel() * w))(
          jnp.zeros(shape, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad).ravel(), m.T @ w, atol=1e-5)


def test_matrices_span_their_ranges():
  n = 2000
  a, t = augmentation.affine_matrices(jax.random.key(0), n)
  a, t = np.asarray(a, np.float64), np.asarray(t, np.float64)
  # A = R(theta) diag(1 / s_r, 1 / s_c): column norms 1 / s, angle theta
  theta = np.degrees(np.arctan2(a[:, 1, 0], a[:, 0, 0]))
  scales = 1 / np.linalg.norm(a, axis=1)
  assert np.all(np.abs(theta) <= augmentation.MAX_ROTATION + 1e-4)
  assert np.abs(theta).max() > 0.95 * augmentation.MAX_ROTATION
  lo, hi = augmentation.SCALE_RANGE
  assert np.all((scales >= lo - 1e-5) & (scales <= hi + 1e-5))
  assert scales.min() < lo + 0.01 and scales.max() > hi - 0.01
  assert np.all(np.abs(t) <= augmentation.MAX_SHIFT)
  assert np.abs(t).max() > 0.95 * augmentation.MAX_SHIFT
  # independent draws per image and axis
  assert abs(np.corrcoef(scales[:, 0], scales[:, 1])[0, 1]) < 0.1
