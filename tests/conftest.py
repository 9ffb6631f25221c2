"""Shared fixtures. The suite runs on CPU; jit-heavy tests keep models tiny."""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

# One persistent XLA compilation cache for the run, shared by the xdist
# workers, the CLI subprocesses and the notebook kernels (all inherit the
# environment): the suite compiles the same small programs many times, and
# a process restarted after a kill compiles what the killed one did. Keys
# are hashes of the program, flags and devices, so a hit is the executable
# a compile would have produced. A cache size enables jax's file lock.
_CACHE_ENV = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "JAX_COMPILATION_CACHE_MAX_SIZE": str(4 << 30),
}
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config):
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # else a worker, or set
    path = tempfile.mkdtemp(prefix="condgen_xla_cache_")  # by hand
    config.stash[_CACHE_KEY] = path
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    for name, value in _CACHE_ENV.items():
      os.environ.setdefault(name, value)
  # What the entry points do before JAX starts, so that tests run the
  # programs the CLIs run (tests/test_runtime.py checks each default).
  from condgen_jax.core import runtime  # pylint: disable=g-import-not-at-top
  runtime.apply_cpu_defaults()


def pytest_unconfigure(config):
  path = config.stash.get(_CACHE_KEY, None)
  if path:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def digits():
  from condgen_jax.data import datasets as data
  return data.load_dataset("digits")


@pytest.fixture(scope="session")
def mnist_dir():
  """$CONDGEN_DATA_DIR/mnist with the official IDX files, else skip."""
  root = os.environ.get("CONDGEN_DATA_DIR")
  if not root or not (pathlib.Path(root) / "mnist").exists():
    pytest.skip("CONDGEN_DATA_DIR with mnist/ IDX files is not set")
  return pathlib.Path(root) / "mnist"


def tiny_cvae_config(**overrides):
  from condgen_jax.configs import cvae
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
