"""Image conditions: the masks by hand, the conditions derived from the
targets, their checks, and the determinism of their construction."""

import ml_collections
import numpy as np
import pytest

from condgen_jax.data import datasets as data
from condgen_jax.core import options
from condgen_jax.data import image_conditions
from condgen_jax.evaluation import sampling

SHAPE = (4, 6, 1)  # H // 2 = 2 rows, W // 2 = 3 columns per quadrant


@pytest.mark.parametrize("given,expected", [
    (1, [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
         [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]),
    (2, [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0],
         [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]),
    (3, [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1],
         [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]),
])
def test_given_quadrants_by_hand(given, expected):
  spec = image_conditions.ImageCondition("quadrants", given)
  mask = spec.given_mask(SHAPE)
  assert mask.shape == (4, 6, 1) and mask.dtype == np.float32
  np.testing.assert_array_equal(mask[..., 0], expected)
  np.testing.assert_array_equal(spec.target_mask(SHAPE)[..., 0],
                                1 - np.array(expected))


def test_odd_sizes_split_at_half():
  mask = image_conditions.ImageCondition("quadrants", 1).given_mask((5, 3, 1))
  # rows 2..4 and column 0 (H // 2 = 2, W // 2 = 1) are the bottom-left
  expected = np.zeros((5, 3))
  expected[2:, :1] = 1
  np.testing.assert_array_equal(mask[..., 0], expected)


def test_quadrant_condition_compose_and_show():
  spec = image_conditions.ImageCondition("quadrants", 1)
  rng = np.random.default_rng(0)
  images = rng.random((3, 4, 6, 2)).astype(np.float32)
  cond = np.asarray(spec.from_images(images))
  expected = np.zeros_like(images)
  expected[:, 2:, :3] = images[:, 2:, :3]
  np.testing.assert_array_equal(cond, expected)
  predicted = rng.random(images.shape).astype(np.float32)
  composed = np.asarray(spec.compose(cond, predicted))
  want = predicted.copy()
  want[:, 2:, :3] = images[:, 2:, :3]
  np.testing.assert_allclose(composed, want, rtol=0, atol=1e-7)
  shown = spec.show(cond, images.shape[1:])
  assert np.all(shown[:, :2] == 0.5) and np.all(shown[:, 2:, 3:] == 0.5)
  np.testing.assert_array_equal(shown[:, 2:, :3], images[:, 2:, :3])


def test_colorize_condition_is_the_digits_gray_level():
  colored = data.load_dataset("colored_digits")
  gray = data.load_dataset("digits")
  spec = image_conditions.ImageCondition("colorize")
  assert spec.shape(colored.image_shape) == (8, 8, 1)
  cond = np.asarray(spec.from_images(
      colored.test_images.astype(np.float32) / 255.0))
  # colored pixel = round(g / 16 * 255) in the digit's color channels
  np.testing.assert_allclose(cond, gray.test_images / 16.0, atol=0.5 / 255)
  np.testing.assert_array_equal(spec.given_mask((8, 8, 3)), 0.0)
  assert spec.show(cond[:2], (8, 8, 3)).shape == (2, 8, 8, 3)


def test_the_conditions_of_the_test_targets_are_deterministic(digits):
  images, labels = sampling.test_targets(digits, 3)
  test_images, test_labels = digits.split("test")
  index = [i for c in range(10)
           for i in np.flatnonzero(test_labels == c)[:3]]
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 3))
  np.testing.assert_array_equal(images, test_images[index] / 16.0)
  spec = image_conditions.ImageCondition("quadrants", 2)
  again, _ = sampling.test_targets(data.load_dataset("digits"), 3)
  np.testing.assert_array_equal(np.asarray(spec.from_images(images)),
                                np.asarray(spec.from_images(again)))


@pytest.mark.parametrize("conditions,fragment", [
    (np.zeros((2, 8, 8, 3), np.float32), "got dtype float32, shape (2, 8, "),
    (np.zeros((2, 8, 8, 1), np.int64), "got dtype int64"),
    (np.full((2, 8, 8, 1), 1.5, np.float32), "in [1.5, 1.5]"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), "non-finite values"),
])
def test_bad_conditions_are_one_clear_error(conditions, fragment):
  spec = image_conditions.ImageCondition("quadrants", 1)
  with pytest.raises(ValueError, match="conditions must") as e:
    spec.check(conditions, (8, 8, 1))
  assert fragment in str(e.value)


@pytest.mark.parametrize("values,fragment", [
    ({"image_task": "inpaint"}, "Unknown image_task 'inpaint'"),
    ({"quadrants_given": 4}, "Unknown quadrants_given 4"),
    ({"image_task": "colorize", "dataset": "digits"},
     "needs a colored dataset"),
])
def test_bad_settings(values, fragment):
  config = ml_collections.ConfigDict({"dataset": "digits", **values})
  with pytest.raises(ValueError, match=fragment):
    s = options.resolve(config, image_conditions.OPTIONS)
    image_conditions.check(ml_collections.ConfigDict(
        {**s.to_dict(), "dataset": config.dataset}))
  ok = ml_collections.ConfigDict({"dataset": "colored_mnist",
                                  "image_task": "colorize",
                                  "quadrants_given": 1})
  image_conditions.check(ok)
  assert image_conditions.from_settings(ok).task == "colorize"
