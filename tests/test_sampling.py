import numpy as np
import pytest

from condgen_jax import sampling
from condgen_jax import train
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
