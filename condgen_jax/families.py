"""Which training module serves which `config.model`.

A family module provides `create_state`, `make_train_step`, `make_sample_fn`
and `evaluate` (see `condgen_jax.vae_training` for their contracts).
"""

from __future__ import annotations

import importlib
import types

MODELS = {
    "cvae": "condgen_jax.vae_training",
    "cgan_mlp": "condgen_jax.gan_training",
    "cgan_conv": "condgen_jax.gan_training",
    "acgan": "condgen_jax.gan_training",
}


def has_convolutions(config) -> bool:
  """Whether `config`'s model is convolutional (its CPU defaults differ)."""
  return config.model in ("cgan_conv", "acgan") or (
      config.model == "cvae" and config.get("architecture") == "conv")


def get_family(model: str) -> types.ModuleType:
  if model not in MODELS:
    raise ValueError(f"Unknown model {model!r}; expected one of "
                     f"{tuple(MODELS)}.")
  return importlib.import_module(MODELS[model])
