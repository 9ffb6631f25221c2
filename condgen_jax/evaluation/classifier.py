"""The reference classifier: the domain network behind every sample metric.

Inception-v3 weights cannot be downloaded here, and ImageNet features are a
poor fit for 28x28 digits anyway, so conditional samples are scored with a
small CNN trained on the same dataset, the protocol TF-GAN uses for MNIST
(`tfgan.eval.mnist_score` / `mnist_frechet_distance`). Its logits give class
accuracy and the Inception Score; its penultimate layer (`FEATURE_DIM` = 128
ReLU units) gives FID, intra-FID and precision/recall, see `metrics`.

`CNN`: conv3x3(32) -> maxpool -> conv3x3(64) -> maxpool -> dense(128) =
features -> dropout -> dense(num_classes) = logits. All SAME padding, so it
takes any H, W (8x8 `digits`, 28x28 MNIST / Fashion-MNIST).

`train_classifier` trains it with Adam + cosine decay (on random
+-`max_shift` pixel translations for MNIST), from a fixed seed, with the data
on the device.
`load_or_train_classifier` caches the params (flax msgpack) and a JSON record
(test accuracy, dataset, seed, steps, ...) under

  cache_dir/<dataset>/      cache_dir defaults to
                            $CONDGEN_CACHE_DIR/classifiers, else
                            ~/.cache/condgen_jax/classifiers

so every later evaluation reuses the same network. Measured test accuracies:
see `DEFAULT_SETTINGS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from condgen_jax.core import locking
from condgen_jax.data import datasets as data_lib

FEATURE_DIM = 128
CACHE_DIR_ENV = "CONDGEN_CACHE_DIR"
PARAMS_FILE = "params.msgpack"
INFO_FILE = "classifier.json"

# Per dataset: training steps, batch size, peak learning rate, max shift.
# MNIST / Fashion: 3 epochs of 60k at batch 128. Measured with seed 0 on 2
# shared CPU cores: digits 99.4% (600 steps, ~3 s), MNIST 99.10% (~7 min),
# Fashion-MNIST 90.90% (~4 min). Random shifts (used for MNIST only) cost
# accuracy on digits (8x8) and Fashion-MNIST (centred objects): 97.8% and
# 89.6% with max_shift 1 and 2.
DEFAULT_SETTINGS = {
    "digits": dict(num_steps=600, batch_size=64, learning_rate=3e-3,
                   max_shift=0),
    "mnist": dict(num_steps=1400, batch_size=128, learning_rate=2e-3,
                  max_shift=2),
    "fashion_mnist": dict(num_steps=1400, batch_size=128, learning_rate=2e-3,
                          max_shift=0),
}
DEFAULT_SETTINGS.update({k: DEFAULT_SETTINGS[v]
                         for k, v in data_lib.COLORED_SOURCE.items()})


class CNN(nn.Module):
  """conv32-pool-conv64-pool-dense(128)-dense(K); returns (logits, features).

  `features` is the penultimate activation (after ReLU, before dropout),
  `[B, features]`; `logits` is `[B, num_classes]`.
  """
  num_classes: int = 10
  features: int = FEATURE_DIM
  dropout_rate: float = 0.3

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.relu(nn.Conv(32, (3, 3), padding="SAME", name="conv1")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = nn.relu(nn.Conv(64, (3, 3), padding="SAME", name="conv2")(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    features = nn.relu(nn.Dense(self.features, name="dense")(x))
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, name="logits")(h)
    return logits, features


def random_shift(key: jax.Array, images, max_shift: int):
  """Translates each image by an integer (dy, dx) in [-max_shift, max_shift],
  filling with zeros (the background of all three datasets)."""
  if max_shift == 0:
    return images
  b, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2,
                            (0, 0)))
  offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)

  def crop(image, offset):
    return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0),
                                 (h, w, image.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def _resolve_dataset(dataset, data_dir: str | None = None) -> data_lib.Dataset:
  """A `Dataset` as is; a name is read from the IDX files when they can be
  found (no TFDS build), else through `data.load_dataset`. A colored dataset
  is built with every (digit, color) combination in its training split, also
  when given with some held out: a reference classifier sees them all."""
  if isinstance(dataset, data_lib.Dataset):
    if dataset.attributes is None or not dataset.attributes.held_out:
      return dataset
    dataset = dataset.name
  if dataset not in data_lib.DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; expected a data.Dataset "
                     f"or one of {data_lib.DATASETS}.")
  if dataset in data_lib.COLORED_SOURCE:
    return data_lib.load_dataset(dataset, data_dir, held_out=())
  if dataset != "digits":
    folder = data_lib.find_idx_dir(dataset, data_dir)
    if folder is not None:
      return data_lib.load_idx(dataset, folder)
  return data_lib.load_dataset(dataset, data_dir)


def _settings(name: str, **overrides) -> dict:
  settings = dict(DEFAULT_SETTINGS.get(name, DEFAULT_SETTINGS["mnist"]))
  for key, value in overrides.items():
    if value is not None:
      settings[key] = value
  return settings


def _apply_batched(fn, images, batch_size: int):
  """Runs jitted `fn` on fixed-size batches (the last one padded), so any N
  compiles once; returns the concatenated outputs as jax arrays."""
  n = images.shape[0]
  if n == 0:
    raise ValueError("Got an empty batch of images.")
  outputs = []
  for start in range(0, n, batch_size):
    chunk = jnp.asarray(images[start:start + batch_size], jnp.float32)
    valid = chunk.shape[0]
    if valid < batch_size and n > batch_size:
      chunk = jnp.pad(chunk, ((0, batch_size - valid),) + ((0, 0),) * 3)
    outputs.append(jax.tree.map(lambda y, v=valid: y[:v], fn(chunk)))
  return jax.tree.map(lambda *ys: jnp.concatenate(ys, axis=0), *outputs)


def train_classifier(dataset, *, seed: int = 0, num_steps: int | None = None,
                     batch_size: int | None = None,
                     learning_rate: float | None = None,
                     max_shift: int | None = None, data_dir: str | None = None,
                     log_every: int = 0):
  """Trains the reference `CNN` on the train split of `dataset`.

  Args:
    dataset: a `data.Dataset`, or a name in `data.DATASETS`.
    seed: the one seed of init, batch order, shifts and dropout.
    num_steps, batch_size, learning_rate, max_shift: default to
      `DEFAULT_SETTINGS[dataset]`. Adam, learning rate cosine-decayed to 0.
    data_dir: where to look for MNIST / Fashion-MNIST when given a name.
    log_every: print the running loss every that many steps (0 = never).

  Returns:
    (params, test_accuracy): the trained params and their accuracy on the
    whole test split, a float in [0, 1].
  """
  ds = _resolve_dataset(dataset, data_dir)
  cfg = _settings(ds.name, num_steps=num_steps, batch_size=batch_size,
                  learning_rate=learning_rate, max_shift=max_shift)
  if cfg["num_steps"] < 1:
    raise ValueError(f"num_steps must be >= 1; got {cfg['num_steps']}.")
  model = CNN(num_classes=ds.num_classes)
  key = jax.random.key(seed)
  init_key, data_key, step_key = jax.random.split(key, 3)

  images = jnp.asarray(ds.train_images)  # uint8 on the device
  labels = jnp.asarray(ds.train_labels)
  n = images.shape[0]
  bs = cfg["batch_size"]
  spe = data_lib.steps_per_epoch(n, bs)

  params = model.init(init_key, jnp.zeros((1,) + ds.image_shape))["params"]
  schedule = optax.cosine_decay_schedule(cfg["learning_rate"],
                                         cfg["num_steps"])
  state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=optax.adam(schedule))

  train_step = _classifier_step(model, images, labels, bs, ds.max_value,
                                step_key, cfg["max_shift"])
  permutation = None
  for step in range(cfg["num_steps"]):
    if step % spe == 0:
      permutation = data_lib.epoch_permutation(data_key, step // spe, n)
    state, loss = train_step(state, permutation)
    if log_every and (step + 1) % log_every == 0:
      print(f"[classifier {ds.name}] step {step + 1}/{cfg['num_steps']} "
            f"loss {float(loss):.4f}", flush=True)

  accuracy = _test_accuracy(model, state.params, ds)
  return state.params, accuracy


def _classifier_step(model, images, labels, batch_size: int,
                     max_value: float, step_key, max_shift: int):
  """The compiled step (state, permutation) -> (state, loss): the step's
  batch of the epoch's permutation, shifted by up to max_shift pixels, one
  Adam step on the cross-entropy with dropout."""

  @jax.jit
  def train_step(state, permutation):
    step = state.step
    batch = data_lib.get_batch(images, labels, permutation, step, batch_size,
                               max_value)
    shift_key, dropout_key = jax.random.split(
        jax.random.fold_in(step_key, step))
    x = random_shift(shift_key, batch["image"], max_shift)

    def loss_fn(params):
      logits, _ = model.apply({"params": params}, x, train=True,
                              rngs={"dropout": dropout_key})
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, batch["label"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  return train_step


def _test_accuracy(model, params, ds: data_lib.Dataset,
                   batch_size: int = 1000) -> float:
  fn = jax.jit(lambda x: model.apply({"params": params}, x)[0])
  images = data_lib.to_float(ds.test_images, ds.max_value)
  logits = _apply_batched(fn, images, batch_size)
  return float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(ds.test_labels)))


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceClassifier:
  """A trained `CNN` with batched, jitted `logits` and `features`.

  Images are float32 in [0, 1], `[N, H, W, C]` with (H, W, C) ==
  `image_shape`; outputs are `[N, num_classes]` and `[N, FEATURE_DIM]`.
  """
  params: dict
  num_classes: int
  image_shape: tuple[int, int, int]
  test_accuracy: float
  info: dict = dataclasses.field(default_factory=dict)
  batch_size: int = 500

  @functools.cached_property
  def _model(self) -> CNN:
    return CNN(num_classes=self.num_classes)

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda params, x: self._model.apply({"params": params}, x))

  def _check(self, images):
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[1:] != tuple(self.image_shape):
      raise ValueError(f"Expected images of shape [N, {', '.join(map(str, self.image_shape))}]"
                       f" (float32 in [0, 1]); got {shape}.")

  def logits_and_features(self, images):
    """(logits `[N, K]`, features `[N, FEATURE_DIM]`) in one pass."""
    self._check(images)
    return _apply_batched(functools.partial(self._apply, self.params), images,
                          self.batch_size)

  def logits(self, images):
    return self.logits_and_features(images)[0]

  def features(self, images):
    return self.logits_and_features(images)[1]


def default_cache_dir() -> pathlib.Path:
  root = os.environ.get(CACHE_DIR_ENV)
  if root:
    return pathlib.Path(root).expanduser() / "classifiers"
  return pathlib.Path("~/.cache/condgen_jax/classifiers").expanduser()


def _write_atomic(path: pathlib.Path, payload: bytes) -> None:
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(payload)
  os.replace(tmp, path)


def _load_cached(folder: pathlib.Path, wanted: dict,
                 verbose: bool) -> ReferenceClassifier | None:
  """The classifier saved in `folder` if its info matches `wanted`."""
  info_path, params_path = folder / INFO_FILE, folder / PARAMS_FILE
  if not (info_path.exists() and params_path.exists()):
    return None
  info = json.loads(info_path.read_text())
  if not all(info.get(k) == v for k, v in wanted.items()):
    return None
  template = CNN(num_classes=info["num_classes"]).init(
      jax.random.key(0), jnp.zeros((1,) + tuple(info["image_shape"])))
  params = flax.serialization.from_bytes(template["params"],
                                         params_path.read_bytes())
  if verbose:
    print(f"[classifier {folder.name}] loaded {params_path} (test "
          f"accuracy {info['test_accuracy']:.4f})", flush=True)
  return ReferenceClassifier(params, info["num_classes"],
                             tuple(info["image_shape"]),
                             info["test_accuracy"], info)


def load_or_train_classifier(dataset, cache_dir: str | os.PathLike | None = None,
                             *, seed: int = 0, num_steps: int | None = None,
                             batch_size: int | None = None,
                             data_dir: str | None = None,
                             retrain: bool = False,
                             verbose: bool = True,
                             attribute: str | None = None
                             ) -> ReferenceClassifier:
  """The reference classifier of `dataset`, from `cache_dir/<name>/` if it
  holds one trained with the same settings, else trained and saved there.

  Args:
    dataset: a `data.Dataset`, or a name in `data.DATASETS`.
    cache_dir: the cache root; default `default_cache_dir()`.
    seed, num_steps, batch_size: as in `train_classifier`; a cached network
      trained with other settings is retrained (and replaced).
    data_dir: where to look for MNIST / Fashion-MNIST when given a name.
    retrain: train even if a matching cache exists.
    verbose: print whether it trained or loaded, and the test accuracy.
    attribute: classify this attribute of a dataset with attributes (e.g.
      'color' of colored_mnist) instead of its label; cached under
      `<name>.<attribute>/`.
  """
  name = dataset.name if isinstance(dataset, data_lib.Dataset) else dataset
  if name not in data_lib.DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of "
                     f"{data_lib.DATASETS}.")
  folder = pathlib.Path(cache_dir or default_cache_dir()).expanduser() / (
      f"{name}.{attribute}" if attribute else name)
  cfg = _settings(name, num_steps=num_steps, batch_size=batch_size)
  wanted = {"dataset": name, "attribute": attribute, "seed": seed,
            "num_steps": cfg["num_steps"],
            "batch_size": cfg["batch_size"],
            "learning_rate": cfg["learning_rate"],
            "max_shift": cfg["max_shift"], "feature_dim": FEATURE_DIM}

  # Several processes may want the same classifier at once: one trains it,
  # the others wait for it and load what it saved.
  with locking.exclusive(folder.with_name(f".{folder.name}.lock")):
    cached = None if retrain else _load_cached(folder, wanted, verbose)
    if cached is not None:
      return cached
    return _train_and_save(dataset, folder, wanted, cfg, seed=seed,
                           data_dir=data_dir, attribute=attribute,
                           verbose=verbose)


def _train_and_save(dataset, folder: pathlib.Path, wanted: dict, cfg: dict,
                    *, seed: int, data_dir, attribute, verbose: bool
                    ) -> ReferenceClassifier:
  ds = _resolve_dataset(dataset, data_dir)
  if attribute:
    ds = data_lib.labelled_by(ds, attribute)
  info_path, params_path = folder / INFO_FILE, folder / PARAMS_FILE
  start = time.time()
  params, accuracy = train_classifier(
      ds, seed=seed, num_steps=cfg["num_steps"], batch_size=cfg["batch_size"],
      learning_rate=cfg["learning_rate"], max_shift=cfg["max_shift"])
  seconds = time.time() - start
  info = dict(wanted, test_accuracy=accuracy, num_classes=ds.num_classes,
              image_shape=list(ds.image_shape), num_test=len(ds.test_labels),
              train_seconds=round(seconds, 1), data_source=ds.source,
              jax_version=jax.__version__, device=str(jax.devices()[0]))
  folder.mkdir(parents=True, exist_ok=True)
  _write_atomic(params_path, flax.serialization.to_bytes(params))
  _write_atomic(info_path, json.dumps(info, indent=2).encode())
  if verbose:
    print(f"[classifier {folder.name}] trained in {seconds:.0f} s, test "
          f"accuracy {accuracy:.4f}; saved to {folder}", flush=True)
  return ReferenceClassifier(params, ds.num_classes, ds.image_shape, accuracy,
                             info)
