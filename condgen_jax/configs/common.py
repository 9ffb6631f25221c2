"""The one base of every config file: a model's keys at their defaults.

The keys, defaults and allowed values are declared once, in the library:
the runner's in `condgen_jax.runner.train.OPTIONS`, each family's in its module's
`OPTIONS` (`condgen_jax.core.options`), with the model name's presets of
`condgen_jax.families.MODELS` applied. A config file starts from
`base_config(model)` and sets only what it changes.
"""

import ml_collections

from condgen_jax.runner import train


def base_config(model: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model = model
  c.update(train.config_defaults(model))
  return c
