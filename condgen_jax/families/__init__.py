"""Model families: the one table of `config.model` names, and how a
family module is found.

A family implements `interface.Family` (state creation, train step,
sampler, evaluation and its properties; the optional members are listed
there). `config.model` is a name of `MODELS` or the import path of a module
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
from condgen_jax.families import interface


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
    "r3gan": Entry("condgen_jax.families.gan",
                   {"architecture": "r3gan",
                    "gan_loss": "relativistic_pairing"}),
    "diffusion": Entry("condgen_jax.families.diffusion"),
    "diffusion_distill": Entry("condgen_jax.families.distillation"),
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
    family = importlib.import_module(entry.module)
  except ImportError as e:
    raise ValueError(f"model={model!r} does not import: {e}.") from None
  missing = interface.missing_members(family)
  if missing:
    raise ValueError(f"model={model!r} is not a model family: "
                     f"{entry.module} lacks {', '.join(missing)} "
                     "(condgen_jax.families.interface.Family).")
  return family


def presets(model: str) -> dict:
  """The config values the model name implies ({} for an import path)."""
  return dict(_entry(model).presets)


def config_defaults(model: str) -> dict:
  """The family's declared keys at their defaults, with the name's presets
  applied: what a config file for `model` starts from. A family declares
  its keys in `OPTIONS` (`condgen_jax.core.options`); one without gets {}."""
  declared = getattr(get_family(model), "OPTIONS", {})
  return options.defaults(declared, presets(model))


def convolutional(config) -> bool:
  """`has_convolutions` of a config not resolved yet: the entry points pick
  the CPU dispatch mode with it before JAX starts. False for a model name
  that does not load (`runner.train.resolve` then reports it)."""
  try:
    return has_convolutions(config)
  except (ValueError, AttributeError):
    return False


def has_convolutions(s) -> bool:
  """Whether the model of settings `s` convolves (its CPU defaults
  differ)."""
  return bool(get_family(s.model).has_convolutions(s))
