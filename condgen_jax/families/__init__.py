"""Model families: the one table of `config.model` names, and the interface
the runner (`condgen_jax.runner.train`) drives.

A family is a module (or any object) with

  validate_config(config)          ValueError naming a bad value; called
                                   before anything is written
  create_state(config, image_shape, num_classes, rng) -> state pytree
  make_train_step(config, image_shape, num_classes)
      -> train_step(state, batch, rng) -> (state, metrics); metrics holds
         float32 scalars, 'loss' among them
  make_sample_fn(config, image_shape, num_classes)
      -> sample(state, conditions, rng) -> float32 images in [0, 1]
  evaluate(config, state, dataset, rng) -> dict of the family's own metrics
  metric_modes(config) -> {name: 'min' | 'max'} of what `evaluate`
                                   reports (for choosing a best checkpoint)
  has_convolutions(config) -> bool: whether the model convolves (XLA:CPU
                                   runs such models one step per call)
  latent_traversal(config, state, image_shape, num_classes, *, code,
      values, seed) (optional)     images along one latent code
                                   (`sampling.latent_traversal`; InfoGAN)
  CONDITION_KINDS (optional)       the runner's `condition_kind`s it takes
                                   (default ('label',)); with 'attributes',
                                   num_classes is a tuple of attribute sizes
                                   and labels are [B, A]; with 'image', the
                                   family derives a condition image from
                                   each batch image in its train step and
                                   sample takes condition images
  image_condition(config) (with 'image')
                                   the `image_conditions.ImageCondition`
                                   that derives them (for sampling from
                                   test images and for grids)
  OPTIONS (optional)               {key: options.Option}: the family's config
                                   keys, defaults and allowed values, read
                                   by its validation and by the config files

`config.model` is a name of `MODELS` or the import path of a module
implementing the interface (`package.module`), so a new family needs no
edit here: `--config.model=my_package.my_family`. A name's presets are
config values that the name implies (e.g. 'acgan' = the GAN family with a
class head); `presets` gives them.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from condgen_jax.core import options


@dataclasses.dataclass(frozen=True)
class Entry:
  module: str
  presets: dict = dataclasses.field(default_factory=dict)


MODELS = {
    "cvae": Entry("condgen_jax.families.cvae"),
    "cgan_mlp": Entry("condgen_jax.families.gan",
                      {"architecture": "mlp", "g_norm": "none"}),
    "cgan_conv": Entry("condgen_jax.families.gan",
                       {"architecture": "conv",
                        "d_conditioning": "projection"}),
    "acgan": Entry("condgen_jax.families.gan",
                   {"architecture": "conv", "class_head": True,
                    "d_conditioning": "none"}),
    "diffusion": Entry("condgen_jax.families.diffusion"),
    "cvae_sop": Entry("condgen_jax.families.sop"),
    "pix2pix": Entry("condgen_jax.families.pix2pix"),
}


def _entry(model: str) -> Entry:
  if model in MODELS:
    return MODELS[model]
  if isinstance(model, str) and "." in model:
    return Entry(model)
  raise ValueError(f"Unknown model {model!r}; expected one of "
                   f"{tuple(MODELS)} or the import path of a family module "
                   "('package.module').")


def get_family(model: str) -> Any:
  """The family module serving `model` (a name or an import path)."""
  entry = _entry(model)
  try:
    return importlib.import_module(entry.module)
  except ImportError as e:
    raise ValueError(f"model={model!r} does not import: {e}.") from None


def presets(model: str) -> dict:
  """The config values the model name implies ({} for an import path)."""
  return dict(_entry(model).presets)


def config_defaults(model: str) -> dict:
  """The family's declared keys at their defaults, with the name's presets
  applied: what a config file for `model` starts from. A family declares
  its keys in `OPTIONS` (`condgen_jax.core.options`); one without gets {}."""
  declared = getattr(get_family(model), "OPTIONS", {})
  return options.defaults(declared, presets(model))


def has_convolutions(config) -> bool:
  """Whether `config`'s model is convolutional (its CPU defaults differ)."""
  return bool(get_family(config.model).has_convolutions(config))
