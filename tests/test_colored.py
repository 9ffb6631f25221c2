import numpy as np
import pytest

from condgen_jax.data import colored
from condgen_jax.data import datasets as data


@pytest.fixture(scope="module")
def base():
  return data.load_dataset("digits")


def test_parse_and_format_combinations():
  assert colored.parse_combinations("7:red, 3:blue") == ((7, 0), (3, 2))
  assert colored.parse_combinations("") == ()
  default = colored.parse_combinations("default")
  assert default == colored.DEFAULT_HELD_OUT
  assert colored.format_combinations(((7, 0), (9, 5))) == "7:red,9:cyan"
  for bad in ("7:purple", "10:red", "7", "x:red"):
    with pytest.raises(ValueError, match="DIGIT:COLOR"):
      colored.parse_combinations(bad)


def test_default_holds_out_one_per_digit_and_every_color():
  held = colored.DEFAULT_HELD_OUT
  assert len(held) == 10 and len(set(held)) == 10
  assert sorted(d for d, _ in held) == list(range(10))
  assert set(c for _, c in held) == set(range(6))
  assert (7, colored.COLOR_NAMES.index("red")) in held  # "a red 7"


def test_colorize_by_hand():
  gray = np.array([[[[0], [8]], [[16], [4]]]], np.uint8)  # max 16
  out = colored.colorize(gray, np.array([3]), 16.0)  # yellow (255, 255, 0)
  expected = np.array([[[0, 0, 0], [128, 128, 0]], [[255, 255, 0],
                                                   [64, 64, 0]]])
  np.testing.assert_array_equal(out[0], expected)  # round(g * 255)


def test_construction_is_deterministic_and_keeps_gray_levels(base):
  a = data.load_dataset("colored_digits")
  b = data.load_dataset("colored_digits")
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_images, b.test_images)
  np.testing.assert_array_equal(a.attributes.train, b.attributes.train)
  assert a.train_images.shape == base.train_images.shape[:3] + (3,)
  np.testing.assert_array_equal(a.train_labels, base.train_labels)
  np.testing.assert_array_equal(a.attributes.train[:, 0], base.train_labels)
  # each image is its gray source times its color's RGB
  rgb = np.array([c for _, c in colored.PALETTE])[a.attributes.train[:, 1]]
  expected = np.round(base.train_images / 16.0 * rgb[:, None, None, :])
  np.testing.assert_array_equal(a.train_images, expected)


def test_held_out_combinations_never_train_but_all_are_tested():
  ds = data.load_dataset("colored_digits", held_out=((7, 0), (3, 2)))
  train = set(map(tuple, ds.attributes.train.tolist()))
  test = set(map(tuple, ds.attributes.test.tolist()))
  assert (7, 0) not in train and (3, 2) not in train
  assert len(train) == 58 and len(test) == 60
  # digit 7 in training: the five other colors, each about a fifth
  sevens = ds.attributes.train[ds.train_labels == 7, 1]
  counts = np.bincount(sevens, minlength=6)
  assert counts[0] == 0 and counts[1:].min() > 0.5 * len(sevens) / 5
  assert ds.attributes.held_out == ((7, 0), (3, 2))


def test_a_digit_with_no_color_left_is_an_error():
  with pytest.raises(ValueError, match="digit 4 no color"):
    colored.allowed_colors([(4, c) for c in range(6)])
