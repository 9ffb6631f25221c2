"""The Python API: load a workdir, sample given conditions, evaluate; a
family's state and train step from a config. The committed runs of
tests/fixtures/before_layout serve as trained workdirs."""

import pathlib

import jax
import numpy as np
import pytest

import condgen_jax as cg
from condgen_jax.data import datasets as data_lib

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "before_layout"


@pytest.fixture(scope="module")
def cvae():
  return cg.load(FIXTURE / "cvae")


def test_load_restores_the_newest_checkpoint(cvae):
  assert cvae.step == 3 and cvae.settings.model == "cvae"
  assert cvae.dataset.name == "digits"
  with pytest.raises(FileNotFoundError, match="nothing to restore"):
    cg.load(FIXTURE / "cvae", best=True)


def test_sample_per_class_and_given_conditions(cvae):
  images, labels = cvae.sample(num_per_class=2, seed=0)
  assert images.shape == (20, 8, 8, 1) and images.dtype == np.float32
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
  assert 0.0 <= images.min() and images.max() <= 1.0
  # by name or by label, the same draws; another seed, other draws
  named, asked = cvae.sample(["7", "3"], seed=5)
  by_label, _ = cvae.sample(np.array([7, 3], np.int32), seed=5)
  np.testing.assert_array_equal(asked, [7, 3])
  np.testing.assert_array_equal(named, by_label)
  other, _ = cvae.sample(["7", "3"], seed=6)
  assert np.abs(other - named).max() > 1e-3
  with pytest.raises(ValueError, match="class 'ten'"):
    cvae.sample(["ten"])


def test_sampling_options_are_checked():
  model = cg.load(FIXTURE / "diffusion")
  faster = model.with_options(nfe=2)
  assert faster.settings.nfe == 2 and model.settings.nfe == 4
  a, _ = model.sample(["1"])
  b, _ = faster.sample(["1"])
  assert np.abs(a - b).max() > 1e-4  # the option reaches the sampler
  with pytest.raises(ValueError, match="nfe"):
    model.with_options(nfe=0)
  with pytest.raises(ValueError, match="does not apply to model 'cvae'"):
    cg.load(FIXTURE / "cvae").with_options(nfe=3)


def test_image_conditioned_runs_sample_from_condition_images():
  model = cg.load(FIXTURE / "pix2pix")
  images, labels = model.sample(num_per_class=1)
  assert images.shape == (10, 8, 8, 1)
  np.testing.assert_array_equal(labels, np.arange(10))
  cond = np.zeros((3, 8, 8, 1), np.float32)
  out, given = model.sample(cond)
  assert out.shape == (3, 8, 8, 1) and given is not None


def test_evaluate_reports_the_sample_metrics(cvae):
  results = cvae.evaluate(num_per_class=5, cas=False)
  assert 0.0 <= results["class_accuracy"] <= 1.0
  assert np.isfinite(results["fid"]) and "test_neg_elbo" in results


def test_init_state_and_train_step_from_a_config():
  from condgen_jax.configs import cvae  # pylint: disable=g-import-not-at-top
  config = cvae.get_config()
  config.dataset, config.hidden, config.latent_dim = "digits", (16,), 2
  state = cg.init_state(config, (8, 8, 1), 10, jax.random.key(0))
  step = jax.jit(cg.train_step(config, (8, 8, 1), 10), donate_argnums=0)
  ds = data_lib.load_dataset("digits")
  batch = {"image": data_lib.to_float(ds.train_images[:16], ds.max_value),
           "label": ds.train_labels[:16]}
  losses = []
  for i in range(5):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 5 and losses[-1] < losses[0]
  config.learning_rate = -1.0
  with pytest.raises(ValueError, match="learning_rate"):
    cg.train_step(config, (8, 8, 1), 10)
