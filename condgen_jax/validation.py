"""Checks of config values, each raising one ValueError that names the key,
the bad value and what is allowed. Families call them from their
`validate_config`, which the runner calls before anything is written."""

from __future__ import annotations

import math


def _number(config, key, default):
  value = config.get(key, default)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"config.{key} must be a number; got {value!r}.")
  return value


def positive(config, *keys, defaults: dict | None = None) -> None:
  """Each key's value is a finite number > 0 (learning rates, scales)."""
  for key in keys:
    value = _number(config, key, (defaults or {}).get(key, 1.0))
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"config.{key} must be finite and > 0; got {value!r}.")


def at_least(config, minimum: int, *keys,
             defaults: dict | None = None) -> None:
  """Each key's value is an integer >= `minimum` (counts, sizes)."""
  for key in keys:
    value = config.get(key, (defaults or {}).get(key, minimum))
    if isinstance(value, bool) or not isinstance(value, int) or \
        value < minimum:
      raise ValueError(f"config.{key} must be an integer >= {minimum}; got "
                       f"{value!r}.")


def all_at_least(config, minimum: int, key: str) -> None:
  """A sequence key (layer widths) whose entries are integers >= minimum."""
  values = config.get(key, ())
  if not values or any(isinstance(v, bool) or not isinstance(v, int) or
                       v < minimum for v in values):
    raise ValueError(f"config.{key} must be a non-empty sequence of integers "
                     f">= {minimum}; got {values!r}.")


def in_range(config, key: str, low: float, high: float, *,
             high_open: bool = True, default: float = 0.0) -> None:
  """low <= value < high (or <= high with high_open=False): probabilities,
  decays, momenta."""
  value = _number(config, key, default)
  ok = math.isfinite(value) and low <= value and (
      value < high if high_open else value <= high)
  if not ok:
    bracket = ")" if high_open else "]"
    raise ValueError(f"config.{key} must be in [{low}, {high}{bracket}; got "
                     f"{value!r}.")


def one_of(config, key: str, allowed, default=None) -> None:
  value = config.get(key, default)
  if value not in allowed:
    raise ValueError(f"Unknown {key} {value!r}; expected one of "
                     f"{tuple(allowed)}.")
