"""The library from Python: load a trained run, sample it, evaluate it; a
family's initial state and train step from a config.

  import condgen_jax as cg
  model = cg.load("workdirs/cvae_digits")
  images, labels = model.sample(num_per_class=8)     # a row per class
  sevens, _ = model.sample(["7", "7"], seed=1)       # given conditions
  results = model.evaluate(num_per_class=100)        # eval.json's metrics

`train(config, workdir)` is `experiments.train` as a function.

`load` restores a workdir's checkpoint without the training loop's data on
the device; `Trained` holds what sampling and evaluation read. The entry
points `experiments.sample` and `experiments.evaluate` are this module
behind flags.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from condgen_jax import families
from condgen_jax.core import checkpointing
from condgen_jax.core import parallel
from condgen_jax.data import datasets as data_lib
from condgen_jax.evaluation import evaluate as evaluation
from condgen_jax.evaluation import sampling
from condgen_jax.runner import train as train_lib


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained run: its settings (`runner.train.resolve` of its
  config.json), family, dataset, device mesh, restored state and step.
  Sampling options (diffusion: `sampler`, `nfe`, `guidance_scale`,
  `guidance_interval`, `clip_x0`) are set with `with_options`, an
  autoguidance guide (diffusion) with `with_guide`."""
  settings: ml_collections.FrozenConfigDict
  family: Any
  dataset: data_lib.Dataset
  mesh: jax.sharding.Mesh
  state: Any
  step: int

  def with_options(self, **sampling_options) -> Trained:
    """The same run sampled with other sampling options (None: as trained);
    ValueError names an option the model lacks or a bad value."""
    return train_lib.with_sampling_options(self, **sampling_options)

  def with_guide(self, guide: Trained | None) -> Trained:
    """The same run sampled with autoguidance (Karras et al. 2024, "Guiding
    a Diffusion Model with a Bad Version of Itself"): each prediction is
    (1 + w) self(x, t, c) - w guide(x, t, c) with the SAME condition c, w =
    guidance_scale (the paper's w is 1 + w), only within
    `guidance_interval` when it is set; it replaces classifier-free
    guidance's null-condition half.

      main = cg.load("workdirs/diffusion_digits")
      model = main.with_guide(cg.load("workdirs/diffusion_digits",
                                      step=2000))
      images, labels = model.with_options(guidance_scale=1.0).sample()

    `guide`: a weaker diffusion run of the same objective, schedule,
    dataset and class count (an early checkpoint of this run, or a run of
    a smaller U-Net, built from its own settings); else ValueError naming
    both values. None: back to classifier-free guidance. The state becomes
    a `diffusion.autoguidance.GuidedState` (its `params`, `ema_params` and
    `step` are this run's)."""
    from condgen_jax.diffusion import autoguidance  # pylint: disable=g-import-not-at-top
    if guide is None:
      state = self.state
      if isinstance(state, autoguidance.GuidedState):
        state = state.state
      return dataclasses.replace(self, state=state)
    return dataclasses.replace(self, state=autoguidance.guided_state(
        self.settings, self.state, guide.settings, guide.state))

  def sample(self, conditions=None, *, num_per_class: int = 10,
             seed: int = 0):
    """(images float32 [N, H, W, C] in [0, 1], conditions) of the run.

    `conditions`: None for `num_per_class` samples of every class (every
    attribute combination; for a run conditioned on images, the first
    `num_per_class` test images of each class, returned with their labels);
    a sequence of strings ('7', 'Sneaker', 'digit=7,color=red'); an int
    array of labels [N] (attribute rows [N, A]); or, for a run conditioned
    on images, float condition images [N, *shape] in [0, 1]. A pure
    function of the checkpoint, the conditions and `seed`.
    """
    if conditions is None:
      return sampling.sample_per_class(self, self.state, num_per_class, seed)
    if sampling.image_condition(self) is not None:
      conditions = np.asarray(conditions)
      return sampling.sample_conditions(self, self.state, conditions,
                                        seed), conditions
    if len(conditions) and isinstance(conditions[0], str):
      conditions = np.stack([sampling.parse_condition(self.dataset, c)
                             for c in conditions])
    labels = np.asarray(conditions)
    return sampling.sample_labels(self, self.state, labels, seed), labels

  def evaluate(self, *, num_per_class: int = 1000, seed: int = 0,
               cas: bool = True, parzen: bool = False,
               family_metrics: bool = True, classifier=None) -> dict:
    """The metrics `experiments.evaluate` writes to eval.json
    (`evaluation.evaluate.evaluate_state`): the family's own (unless
    `family_metrics=False`), class accuracy, FID, precision / recall, KID,
    density / coverage and CAS, under the dataset's reference classifier
    or `classifier` (`evaluation.classifier`)."""
    return evaluation.evaluate_state(
        self, self.state, num_per_class=num_per_class, seed=seed, cas=cas,
        parzen=parzen, family_metrics=family_metrics, classifier=classifier)

  def latent_traversal(self, code: int, num_values: int = 9, seed: int = 0):
    """(images, labels, values) along continuous code `code` (InfoGAN)."""
    return sampling.latent_traversal(self, self.state, code, num_values,
                                     seed)


def train(config, workdir, dataset: data_lib.Dataset | None = None):
  """Trains `config` into `workdir` (resuming from its newest checkpoint) as
  `experiments.train` does; returns the final state. `dataset` overrides
  the config's (e.g. one already loaded)."""
  return train_lib.train_and_evaluate(config, workdir, dataset)


def load(workdir, *, step: int | None = None, best: bool = False,
         dataset: data_lib.Dataset | None = None) -> Trained:
  """The trained run in `workdir`: its config.json and its newest
  checkpoint that restores (or `step`; or with `best`, the best one kept by
  periodic evaluation). `dataset` overrides the config's (e.g. one already
  loaded). ValueError / FileNotFoundError say what is wrong."""
  s = read_settings(workdir)
  dataset = train_lib.run_dataset(s, dataset)
  mesh = parallel.make_mesh()
  target = abstract_state(s, dataset, mesh)
  state, step = train_lib.restore_state(workdir, target, step=step, best=best)
  return Trained(s, families.get_family(s.model), dataset, mesh, state,
                 int(step))


def read_settings(workdir) -> ml_collections.FrozenConfigDict:
  """The settings of the run in `workdir`: `runner.train.resolve` of its
  config.json, checked more strictly than a config given in code: a key
  that neither the runner nor the model's family declares (a typo of a
  hand edit) is refused, as is any bad value, by a ValueError that names
  the file, the key and what is allowed. (A family that declares no
  `OPTIONS` keeps every key, as `resolve` does.)"""
  config = checkpointing.read_config(workdir)
  path = checkpointing.as_path(workdir) / checkpointing.CONFIG_FILE
  try:
    if hasattr(families.get_family(config.model), "OPTIONS"):
      keys = sorted({"model", *train_lib.config_defaults(config.model)})
      unknown = sorted(set(config.keys()) - set(keys))
      if unknown:
        close = difflib.get_close_matches(unknown[0], keys, n=1)
        raise ValueError(
            f"{unknown[0]!r} is not a key of model {config.model!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; its keys are {keys}.")
    return train_lib.resolve(config)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None


def abstract_state(s, dataset: data_lib.Dataset, mesh):
  """The shapes, dtypes and shardings (by `s.param_sharding`) of the state
  of a run of settings `s`."""
  family = families.get_family(s.model)
  key = jax.random.key(0, impl=s.prng_impl)
  shapes = jax.eval_shape(lambda k: family.create_state(
      s, dataset.image_shape, dataset.num_classes, k), key)
  return jax.tree.map(
      lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                               sharding=sharding),
      shapes, parallel.state_shardings(shapes, mesh, s.param_sharding))


def resolve(config):
  """The settings of `config`, resolved once and checked
  (`runner.train.resolve`): what every family function takes."""
  return train_lib.resolve(config)


def init_state(config, image_shape: Sequence[int], num_classes, rng):
  """The initial state of `config.model`'s family (`config`, or settings
  already resolved, is resolved and checked first)."""
  s = train_lib.resolve(config)
  return families.get_family(s.model).create_state(
      s, tuple(image_shape), num_classes, rng)


def train_step(config, image_shape: Sequence[int], num_classes):
  """`config.model`'s `train_step(state, batch, rng) -> (state, metrics)`,
  uncompiled: `batch` is {'image': float [B, H, W, C] in [0, 1], 'label':
  int [B] (or [B, A])}; wrap it in `jax.jit(..., donate_argnums=0)`."""
  s = train_lib.resolve(config)
  return families.get_family(s.model).make_train_step(
      s, tuple(image_shape), num_classes)
