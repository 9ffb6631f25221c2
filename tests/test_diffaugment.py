"""Tests of condgen_jax.nn.diffaugment: DiffAugment's ops against numpy
versions of the official code at the same draws, their gradients, ADA's
probability and its update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.nn import diffaugment as da


def _images(key=0, shape=(4, 8, 8, 3)):
  return jax.random.uniform(jax.random.key(key), shape, minval=-1.0,
                            maxval=1.0)


# ----------------------------------------------------------------------------
# numpy versions of the official ops (DiffAugment_pytorch.py), NHWC.


def np_brightness(x, b):
  return x + b[:, None, None, None]


def np_saturation(x, s):
  m = x.mean(axis=-1, keepdims=True)
  return (x - m) * s[:, None, None, None] + m


def np_contrast(x, c):
  m = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - m) * c[:, None, None, None] + m


def np_translate(x, t):
  """out[b, i, j] = x[b, i + t_r, j + t_c] inside, else 0."""
  out = np.zeros_like(x)
  _, h, w, _ = x.shape
  for b in range(x.shape[0]):
    for i in range(h):
      for j in range(w):
        si, sj = i + t[b, 0], j + t[b, 1]
        if 0 <= si < h and 0 <= sj < w:
          out[b, i, j] = x[b, si, sj]
  return out


def np_cutout(x, offsets):
  """The official scatter: the clamped grid of the square set to 0."""
  _, h, w, _ = x.shape
  ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
  mask = np.ones(x.shape[:3], x.dtype)
  for b in range(x.shape[0]):
    for gi in range(ch):
      for gj in range(cw):
        i = min(max(gi + offsets[b, 0] - ch // 2, 0), h - 1)
        j = min(max(gj + offsets[b, 1] - cw // 2, 0), w - 1)
        mask[b, i, j] = 0
  return x * mask[..., None]


NP_OPS = {"brightness": np_brightness, "saturation": np_saturation,
          "contrast": np_contrast, "translation": np_translate,
          "cutout": np_cutout}


@pytest.mark.parametrize("shape", [(6, 8, 8, 3), (5, 7, 9, 1)])
def test_each_op_matches_numpy_at_the_same_draws(shape):
  x = _images(1, shape)
  params = da.draw(jax.random.key(2), shape)
  np_params = {k: np.asarray(v) for k, v in params.items()}
  # draws in the official ranges
  assert np.all(np.abs(np_params["brightness"]) <= 0.5)
  assert np.all((0 <= np_params["saturation"]) & (np_params["saturation"] < 2))
  assert np.all((0.5 <= np_params["contrast"])
                & (np_params["contrast"] < 1.5))
  lim = da.translation_limits(*shape[1:3])
  assert np.all(np.abs(np_params["translation"]) <= np.array(lim))
  for op in da.OPS:
    got = da._APPLY[op](x, params[op])
    want = NP_OPS[op](np.asarray(x), np_params[op])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=op)
  # the whole policy is the ops in order
  want = np.asarray(x)
  for op in da.OPS:
    want = NP_OPS[op](want, np_params[op])
  got = da.augment(jax.random.key(2), x)
  # augment draws from fold_in(key, 0)
  params0 = da.draw(jax.random.fold_in(jax.random.key(2), 0), shape)
  want = np.asarray(x)
  for op in da.OPS:
    want = NP_OPS[op](want, np.asarray(params0[op]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_saturation_is_the_identity_for_one_channel():
  x = _images(3, (4, 8, 8, 1))
  np.testing.assert_array_equal(da.saturation(x, jnp.full((4,), 1.7)), x)


def test_cutout_square_is_half_the_size_inside_the_image():
  x = jnp.ones((9, 8, 8, 1))
  offsets = jnp.array([[r, c] for r in (0, 4, 8) for c in (0, 3, 8)])
  cut = 64 - np.asarray(da.cutout(x, offsets)).reshape(9, -1).sum(-1)
  # centre: a full 4x4 square; at the border it is clipped to 2 rows/cols
  assert cut[4] == 16 and cut[0] == 4 and cut[8] == 4
  assert np.all(cut > 0)


@pytest.mark.parametrize("op", da.OPS)
def test_gradient_through_each_op_is_finite_and_nonzero(op):
  x = _images(4, (3, 8, 8, 3))
  params = da.draw(jax.random.key(5), x.shape, (op,))
  weights = jax.random.normal(jax.random.key(6), x.shape)
  g = jax.grad(lambda im: jnp.sum(weights * da.apply(im, params)))(x)
  assert np.all(np.isfinite(g))
  assert np.all(np.abs(np.asarray(g)).reshape(3, -1).sum(-1) > 0)
  if op == "cutout":  # no gradient inside the cut square
    mask = np.asarray(da.cutout_mask(x.shape, params["cutout"]))
    np.testing.assert_array_equal(np.asarray(g) * (1 - mask), 0.0)


def test_translation_gradient_moves_with_the_pixels():
  x = _images(7, (2, 8, 8, 1))
  shifts = jnp.array([[1, -1], [-1, 0]])
  for b, (tr, tc) in enumerate(np.asarray(shifts)):
    i, j = 4, 3
    g = jax.grad(lambda im: da.translate(im, shifts)[b, i, j, 0])(x)
    want = np.zeros(x.shape, np.float32)
    want[b, i + tr, j + tc, 0] = 1.0
    np.testing.assert_array_equal(g, want)
  # a pixel shifted in from outside reads the zero padding: no gradient
  g = jax.grad(lambda im: da.translate(im, shifts)[0, 7, 0, 0])(x)
  np.testing.assert_array_equal(g, 0.0)


def test_augment_is_differentiable_in_the_images():
  x = _images(8, (4, 8, 8, 3))
  g = jax.jit(jax.grad(lambda im: jnp.sum(da.augment(
      jax.random.key(9), im) ** 2)))(x)
  assert np.all(np.isfinite(g)) and np.any(g != 0)


# ----------------------------------------------------------------------------
# ADA's probability.


def test_probability_zero_is_the_identity_and_one_always_augments():
  x = _images(10, (64, 8, 8, 3))
  for k in range(3):
    key = jax.random.key(k)
    np.testing.assert_array_equal(da.augment(key, x, p=0.0), x)
    np.testing.assert_array_equal(
        da.augment(key, x, p=jnp.float32(0.0)), x)
    always = da.augment(key, x, p=1.0)
    np.testing.assert_allclose(always, da.augment(key, x), rtol=1e-6,
                               atol=1e-6)
    changed = np.any(np.asarray(always != x).reshape(64, -1), -1)
    assert changed.all()


def test_probability_half_augments_about_half_the_examples():
  x = jnp.ones((1000, 8, 8, 1))  # cutout always zeros some pixel
  fractions = []
  for k in range(4):
    y = da.augment(jax.random.key(k), x, "cutout", p=0.5)
    fractions.append(np.mean(np.any(np.asarray(y != x).reshape(1000, -1),
                                    -1)))
  assert abs(np.mean(fractions) - 0.5) < 0.03, fractions
  # and p is traceable: one compiled function for every p
  f = jax.jit(lambda p: jnp.mean(jnp.any(
      da.augment(jax.random.key(0), x, "cutout", p) != x, axis=(1, 2, 3))))
  assert float(f(0.0)) == 0.0 and float(f(1.0)) == 1.0
  assert 0.4 < float(f(0.5)) < 0.6


def test_each_op_has_its_own_probability_draw():
  # policy 'color' on 3 channels: unchanged only when no op is applied
  x = _images(11, (2000, 4, 4, 3))
  y = da.augment(jax.random.key(3), x, "color", p=0.5)
  unchanged = np.mean(np.all(np.asarray(y == x).reshape(2000, -1), -1))
  assert abs(unchanged - 0.125) < 0.03, unchanged


# ----------------------------------------------------------------------------
# ADA's update of p.


def np_ada_adjust(p, signs, target, kimg):
  r_t = np.mean(np.sign(signs))
  return float(np.clip(p + np.sign(r_t - target) * signs.size
                       / (kimg * 1000), 0.0, 1.0))


@pytest.mark.parametrize("p,positive_fraction,want_direction", [
    (0.3, 0.9, 1), (0.3, 0.6, -1), (0.3, 0.1, -1), (0.0, 0.1, 0),
    (0.95, 1.0, 1)])
def test_ada_update_matches_the_formula(p, positive_fraction,
                                        want_direction):
  # 4 steps of batch 16, target 0.6, kimg 0.5: p moves by 64 / 500 per update
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(4):
    n_pos = int(round(16 * positive_fraction))
    logits = np.concatenate([rng.uniform(0.1, 3, n_pos),
                             -rng.uniform(0.1, 3, 16 - n_pos)])
    batches.append(logits.astype(np.float32))
  state = {**da.ada_init(), "ada_p": jnp.float32(p)}
  for i, logits in enumerate(batches):
    state = da.ada_accumulate(state, jnp.mean(jnp.sign(logits)), 16)
    state = da.ada_update(state, (i + 1) % 4 == 0, target=0.6, kimg=0.5)
    if i < 3:  # not yet adjusted: p unchanged, signs accumulated
      assert float(state["ada_p"]) == np.float32(p)
      assert float(state["ada_count"]) == 16 * (i + 1)
  want = np_ada_adjust(p, np.concatenate(batches), 0.6, 0.5)
  np.testing.assert_allclose(float(state["ada_p"]), want, rtol=1e-6,
                             atol=1e-7)
  assert float(state["ada_count"]) == 0 and float(state["ada_sign_sum"]) == 0
  direction = np.sign(round(float(state["ada_p"]) - p, 6))
  assert direction == want_direction
  assert 0.0 <= float(state["ada_p"]) <= 1.0
  if p == 0.95:  # 0.95 + 64 / 500 is clipped to 1
    assert float(state["ada_p"]) == 1.0


def test_ada_adjust_clips_to_zero_and_one():
  assert float(da.ada_adjust(0.01, 100.0, 100.0, target=0.6, kimg=0.01)) == 1
  assert float(da.ada_adjust(0.99, -100.0, 100.0, target=0.6,
                             kimg=0.01)) == 0


def test_augmentation_object_and_errors():
  x = _images(12, (2, 8, 8, 1))
  np.testing.assert_array_equal(da.Augmentation()(jax.random.key(0), x), x)
  diff = da.Augmentation("diffaugment", "translation")
  np.testing.assert_array_equal(
      diff(jax.random.key(0), x),
      da.augment(jax.random.key(0), x, "translation"))
  ada = da.Augmentation("ada")
  np.testing.assert_array_equal(ada(jax.random.key(0), x, 0.0), x)
  with pytest.raises(ValueError, match="Unknown augment 'crop'"):
    da.Augmentation("crop")
  with pytest.raises(ValueError, match="Unknown DiffAugment policy"):
    da.policy_ops("color,flip")
  assert da.policy_ops("cutout,color") == ("brightness", "saturation",
                                           "contrast", "cutout")
