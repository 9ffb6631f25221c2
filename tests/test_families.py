"""The family table and interface: a family defined here, outside the
library, trains, resumes exactly, samples and evaluates through the CLIs."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax.training import train_state

from condgen_jax import families
from condgen_jax.runner import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = "tests.test_families"

# ----------------------------------------------------------------------------
# A family: one learned image per class, plus Gaussian noise of a learned
# scale, fitted by Adam on the squared error.


def validate_config(s):
  if not s.learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0; got {s.learning_rate}")


def has_convolutions(s):
  del s
  return False


def metric_modes(s):
  del s
  return {"test_mse": "min"}


def create_state(s, image_shape, num_classes, rng):
  params = {"means": 0.1 * jax.random.normal(rng, (num_classes,)
                                             + tuple(image_shape)),
            "log_scale": jnp.zeros(())}
  return train_state.TrainState.create(
      apply_fn=None, params=params, tx=optax.adam(s.learning_rate))


def make_train_step(s, image_shape, num_classes):
  del s, image_shape, num_classes

  def train_step(state, batch, rng):
    noise = jax.random.normal(jax.random.fold_in(rng, state.step),
                              batch["image"].shape)

    def loss_fn(params):
      pred = (params["means"][batch["label"]]
              + 0.01 * jnp.exp(params["log_scale"]) * noise)
      return jnp.mean(jnp.square(pred - batch["image"]))
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss}
  return train_step


def make_sample_fn(s, image_shape, num_classes):
  del s, num_classes

  def sample(state, labels, rng):
    noise = jax.random.normal(rng, (labels.shape[0],) + tuple(image_shape))
    x = state.params["means"][labels] + 0.01 * jnp.exp(
        state.params["log_scale"]) * noise
    return jnp.clip(x, 0.0, 1.0)
  return sample


def evaluate(s, state, dataset, rng):
  del s, rng
  images, labels = dataset.split("test")
  x = images.astype(np.float32) / dataset.max_value
  mse = float(np.mean((np.asarray(state.params["means"])[labels] - x) ** 2))
  return {"test_mse": mse, "num_test_examples": len(labels)}


CONFIG = f'''
from condgen_jax.configs import common


def get_config():
  c = common.base_config("{MODEL}")
  c.dataset = "digits"
  c.batch_size = 32
  c.learning_rate = 0.05
  c.log_every = 5
  c.checkpoint_every = 5
  c.sample_every = 10
  c.best_metric = "test_mse"
  return c
'''

# ----------------------------------------------------------------------------


def test_model_names_and_import_paths():
  assert families.get_family("cvae").__name__ == "condgen_jax.families.cvae"
  assert families.get_family(MODEL).__name__ == MODEL
  with pytest.raises(ValueError, match="Unknown model 'vqvae'"):
    families.get_family("vqvae")
  with pytest.raises(ValueError, match="does not import"):
    families.get_family("no_such_package.family")
  acgan = train.resolve(ml_collections.ConfigDict({"model": "acgan"}))
  assert families.presets("acgan")["class_head"] is True
  assert families.presets(MODEL) == {}
  assert families.config_defaults("acgan")["d_conditioning"] == "none"
  assert families.config_defaults("cgan_conv")["d_conditioning"] == \
      "projection"
  assert families.config_defaults(MODEL) == {}
  assert families.has_convolutions(acgan)
  assert not families.has_convolutions(
      train.resolve(ml_collections.ConfigDict({"model": "cgan_mlp"})))


def _cli(module, *args):
  r = subprocess.run([sys.executable, "-m", f"experiments.{module}", *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.returncode == 0, r.stderr[-2000:]
  return r


def test_a_family_defined_outside_the_library_runs_through_the_clis(
    tmp_path, digits):
  config = tmp_path / "config.py"
  config.write_text(CONFIG)
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  _cli("train", f"--config={config}", f"--workdir={straight}",
       "--config.num_steps=20")
  _cli("train", f"--config={config}", f"--workdir={resumed}",
       "--config.num_steps=10")
  _cli("train", f"--config={config}", f"--workdir={resumed}",
       "--config.num_steps=20")
  _, a, step = train.restore_run(straight, dataset=digits)
  _, b, _ = train.restore_run(resumed, dataset=digits)
  assert step == 20
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params),
                  strict=True):
    np.testing.assert_array_equal(x, y)
  out = tmp_path / "s.npz"
  _cli("sample", f"--workdir={resumed}", "--num_per_class=3", f"--out={out}")
  s = np.load(out)
  assert s["images"].shape == (30, 8, 8, 1)
  np.testing.assert_array_equal(s["labels"], np.repeat(np.arange(10), 3))
  _cli("evaluate", f"--workdir={resumed}", "--num_per_class=20",
       "--parzen=false")
  result = json.loads((resumed / "eval.json").read_text())
  assert result["model"] == MODEL and result["step"] == 20
  # the family's metric, computed independently here
  images, labels = digits.split("test")
  expected = np.mean((np.asarray(b.params["means"])[labels]
                      - images / 16.0) ** 2)
  np.testing.assert_allclose(result["test_mse"], expected, rtol=1e-5)
  assert 0.0 <= result["class_accuracy"] <= 1.0
