"""Config keys declared once: each key's default, allowed values and meaning.

A family (and the runner) declares its keys as a dict of `Option`s, e.g.

    OPTIONS = {
        "z_dim": options.integer(100, "size of the generator's noise"),
        "z_prior": options.choice("uniform", ("uniform", "normal"), "..."),
    }

and everything else reads that declaration: `resolve` fills a config's
missing keys with the defaults (or with the presets of a model name, see
`condgen_jax.families`) and checks every value, raising one ValueError that
names the key, the bad value and what is allowed; `defaults` gives the
config files their keys (`condgen_jax/configs/common.py`); `describe` prints
the declaration. A new setting is one declaration plus the line that reads
it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import ml_collections


@dataclasses.dataclass(frozen=True)
class Option:
  """One config key: its default, its meaning and its check.

  `check(key, value)` raises ValueError naming the key, the value and what
  is allowed; `allowed` describes it for `describe`.
  """
  default: Any
  doc: str
  check: Callable[[str, Any], None]
  allowed: str


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def choice(default, allowed, doc: str) -> Option:
  """One of `allowed` (a tuple of strings, usually)."""
  allowed = tuple(allowed)

  def check(key, value):
    if value not in allowed:
      raise ValueError(f"Unknown {key} {value!r}; expected one of "
                       f"{allowed}.")
  return Option(default, doc, check, " | ".join(map(str, allowed)))


def flag(default: bool, doc: str) -> Option:
  def check(key, value):
    if not isinstance(value, bool):
      raise ValueError(f"config.{key} must be True or False; got {value!r}.")
  return Option(default, doc, check, "True | False")


def integer(default: int, doc: str, minimum: int = 1) -> Option:
  """An integer >= `minimum` (counts, sizes)."""
  def check(key, value):
    if not _is_int(value) or value < minimum:
      raise ValueError(f"config.{key} must be an integer >= {minimum}; got "
                       f"{value!r}.")
  return Option(default, doc, check, f"integer >= {minimum}")


def integers(default: tuple, doc: str, minimum: int = 1) -> Option:
  """A non-empty sequence of integers >= `minimum` (layer widths)."""
  def check(key, value):
    if (not isinstance(value, (tuple, list)) or not value or
        not all(_is_int(v) and v >= minimum for v in value)):
      raise ValueError(f"config.{key} must be a non-empty sequence of "
                       f"integers >= {minimum}; got {value!r}.")
  return Option(tuple(default), doc, check, f"integers >= {minimum}")


def number(default: float, doc: str, low: float = 0.0,
           high: float = math.inf, *, high_open: bool = True) -> Option:
  """A finite number with low <= value < high (<= high if not high_open):
  weights, probabilities, decays."""
  bracket = ")" if high_open else "]"

  allowed = (f">= {low}" if high == math.inf else
             f"in [{low}, {high}{bracket}")

  def check(key, value):
    ok = (_is_number(value) and math.isfinite(value) and low <= value and
          (value < high if high_open else value <= high))
    if not ok:
      raise ValueError(f"config.{key} must be a finite number {allowed}; "
                       f"got {value!r}.")
  return Option(default, doc, check, allowed)


def positive(default: float, doc: str) -> Option:
  """A finite number > 0 (learning rates)."""
  def check(key, value):
    if not (_is_number(value) and math.isfinite(value) and value > 0):
      raise ValueError(f"config.{key} must be finite and > 0; got {value!r}.")
  return Option(default, doc, check, "> 0")


def text(default: str, doc: str, allowed: str = "a string") -> Option:
  """A string checked elsewhere (e.g. a name or an import path)."""
  def check(key, value):
    if not isinstance(value, str):
      raise ValueError(f"config.{key} must be a string; got {value!r}.")
  return Option(default, doc, check, allowed)


def defaults(declared: dict[str, Option], presets: dict | None = None) -> dict:
  """{key: default}, with `presets` (a model name's values) applied."""
  values = {k: o.default for k, o in declared.items()}
  values.update({k: v for k, v in (presets or {}).items() if k in declared})
  return values


def resolve(config, declared: dict[str, Option],
            presets: dict | None = None) -> ml_collections.FrozenConfigDict:
  """Every declared key's value: the config's, else the preset's, else the
  default; each checked (ValueError names the first bad one). Hashable, so
  it can close over a compiled step."""
  presets = presets or {}
  values = {}
  for key, option in declared.items():
    value = config.get(key) if key in config else None
    if value is None:
      value = presets.get(key, option.default)
    if isinstance(value, list):
      value = tuple(value)
    option.check(key, value)
    values[key] = value
  return ml_collections.FrozenConfigDict(values)


def replace(values: ml_collections.FrozenConfigDict,
            **changes) -> ml_collections.FrozenConfigDict:
  """`values` with some keys changed (values already checked)."""
  return ml_collections.FrozenConfigDict({**values.to_dict(), **changes})


def describe(declared: dict[str, Option]) -> str:
  """A Markdown table of the keys: default, allowed values, meaning."""
  rows = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
  rows += [f"| `{k}` | `{o.default!r}` | {o.allowed} | {o.doc} |"
           for k, o in declared.items()]
  return "\n".join(rows)
