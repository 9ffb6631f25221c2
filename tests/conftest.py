"""Shared fixtures. The suite runs on CPU; jit-heavy tests keep models tiny."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def digits():
  from condgen_jax import data
  return data.load_dataset("digits")


@pytest.fixture(scope="session")
def mnist_dir():
  """$CONDGEN_DATA_DIR/mnist with the official IDX files, else skip."""
  root = os.environ.get("CONDGEN_DATA_DIR")
  if not root or not (pathlib.Path(root) / "mnist").exists():
    pytest.skip("CONDGEN_DATA_DIR with mnist/ IDX files is not set")
  return pathlib.Path(root) / "mnist"


def tiny_cvae_config(**overrides):
  from experiments.configs import cvae
  c = cvae.get_config()
  c.dataset = "digits"
  c.batch_size = 32
  c.hidden = (64, 32)
  c.channels = (8, 16)
  c.latent_dim = 4
  c.num_steps = 40
  c.log_every = 10
  c.checkpoint_every = 20
  c.sample_every = 20
  c.samples_per_class = 2
  c.update(overrides)
  return c
