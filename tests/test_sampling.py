import numpy as np
import pytest

from condgen_jax.evaluation import sampling
from condgen_jax.runner import train
from conftest import tiny_cvae_config


@pytest.fixture(scope="module")
def run(digits):
  return train.setup(tiny_cvae_config(), digits)


def test_sample_per_class_order_and_determinism(run):
  x, y = sampling.sample_per_class(run, run.state, 3, seed=1, batch_size=8)
  assert x.shape == (30, 8, 8, 1) and x.dtype == np.float32
  np.testing.assert_array_equal(y, np.repeat(np.arange(10), 3))
  again, _ = sampling.sample_per_class(run, run.state, 3, seed=1,
                                       batch_size=8)
  np.testing.assert_array_equal(x, again)
  other, _ = sampling.sample_per_class(run, run.state, 3, seed=2,
                                       batch_size=8)
  assert not np.array_equal(x, other)


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 10]), r"\[0, 10\); found 10"),
    (np.array([-1, 2]), r"found -1"),
    (np.array([0.5, 1.0]), "integer")])
def test_labels_outside_the_class_range_are_refused(run, labels, match):
  with pytest.raises(ValueError, match=match):
    sampling.sample_labels(run, run.state, labels)


def test_nonpositive_num_per_class(run):
  with pytest.raises(ValueError, match="positive"):
    sampling.sample_per_class(run, run.state, 0)


def test_class_rows_of_attributes_enumerate_every_combination():
  from condgen_jax.data import images  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(
      images.class_rows((2, 3), 2),
      [[0, 0], [0, 0], [0, 1], [0, 1], [0, 2], [0, 2],
       [1, 0], [1, 0], [1, 1], [1, 1], [1, 2], [1, 2]])
  assert images.grid_rows((10, 6)) == 10 and images.grid_rows(7) == 7
  assert images.per_combination((10, 6), 10) == 1
  assert images.per_combination((10, 6), 12) == 2
  assert images.per_combination(10, 12) == 12


def test_parse_condition(run):
  from condgen_jax.data import datasets as data  # pylint: disable=g-import-not-at-top
  assert sampling.parse_condition(run.dataset, "7") == 7
  with pytest.raises(ValueError, match="class '12' is not one of"):
    sampling.parse_condition(run.dataset, "12")
  colored = data.conditioned_on_attributes(data.load_dataset("colored_digits"))
  np.testing.assert_array_equal(
      sampling.parse_condition(colored, "color=red, digit=7"), [7, 0])
  np.testing.assert_array_equal(
      sampling.parse_condition(colored, "digit=3,color=5"), [3, 5])
  for text, match in (("digit=7", r"does not give \['color'\]"),
                      ("digit=7,digit=3,color=red", "once for each"),
                      ("digit=7,color=purple", "color 'purple'"),
                      ("7,red", "NAME=VALUE")):
    with pytest.raises(ValueError, match=match):
      sampling.parse_condition(colored, text)
