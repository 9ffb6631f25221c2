"""Tests of condgen_jax.core.options: declared keys, their checks and defaults,
and that every config file and family reads one declaration."""

import importlib
import math

import ml_collections
import pytest

from condgen_jax import families
from condgen_jax.core import options
from condgen_jax.runner import train

DECLARED = {
    "mode": options.choice("a", ("a", "b"), "a mode"),
    "on": options.flag(True, "a switch"),
    "width": options.integer(8, "a width"),
    "count": options.integer(0, "a count", minimum=0),
    "widths": options.integers((4, 8), "some widths"),
    "rate": options.number(0.5, "a rate", 0.0, 1.0),
    "closed": options.number(1.0, "a weight", 0.0, 1.0, high_open=False),
    "lr": options.positive(1e-3, "a learning rate"),
    "name": options.text("x", "a name"),
}


def _config(**kw):
  return ml_collections.ConfigDict(kw)


def test_resolve_fills_defaults_then_presets_then_the_config():
  values = options.resolve(_config(width=3), DECLARED, {"mode": "b",
                                                        "width": 5})
  assert values.mode == "b"  # the preset over the default
  assert values.width == 3  # the config over the preset
  assert values.widths == (4, 8) and values.on is True
  assert options.resolve(_config(widths=[1, 2]), DECLARED).widths == (1, 2)
  assert hash(values) == hash(options.resolve(_config(width=3), DECLARED,
                                              {"mode": "b"}))
  changed = options.replace(values, width=7)
  assert changed.width == 7 and values.width == 3 and changed.mode == "b"
  assert options.defaults(DECLARED, {"lr": 0.1, "unknown": 1})["lr"] == 0.1
  assert "unknown" not in options.defaults(DECLARED, {"unknown": 1})


@pytest.mark.parametrize("key,value,message", [
    ("mode", "c", r"Unknown mode 'c'; expected one of \('a', 'b'\)"),
    ("on", 1, r"config.on must be True or False; got 1"),
    ("width", 0, r"config.width must be an integer >= 1; got 0"),
    ("width", 2.0, r"config.width must be an integer >= 1; got 2.0"),
    ("width", True, r"config.width must be an integer >= 1; got True"),
    ("count", -1, r"config.count must be an integer >= 0; got -1"),
    ("widths", (), r"config.widths must be a non-empty sequence"),
    ("widths", (4, 0), r"integers >= 1; got \(4, 0\)"),
    ("rate", 1.0, r"config.rate must be a finite number in \[0.0, 1.0\)"),
    ("rate", -0.1, r"in \[0.0, 1.0\); got -0.1"),
    ("rate", math.nan, r"got nan"),
    ("closed", 1.5, r"in \[0.0, 1.0\]; got 1.5"),
    ("lr", 0.0, r"config.lr must be finite and > 0; got 0.0"),
    ("lr", math.inf, r"got inf"),
    ("lr", "1e-3", r"got '1e-3'"),
    ("name", 3, r"config.name must be a string; got 3"),
])
def test_each_check_names_the_key_the_value_and_what_is_allowed(
    key, value, message):
  with pytest.raises(ValueError, match=message):
    options.resolve(_config(**{key: value}), DECLARED)


def test_edge_values_pass():
  values = options.resolve(_config(rate=0.0, closed=1.0, count=0, width=1),
                           DECLARED)
  assert (values.rate, values.closed, values.count) == (0.0, 1.0, 0)


def test_describe_lists_each_key():
  table = options.describe(DECLARED).splitlines()
  assert len(table) == 2 + len(DECLARED)
  assert table[2] == "| `mode` | `'a'` | a \\| b | a mode |".replace(
      "\\|", "|")


CONFIGS = ("cvae", "cgan_mlp", "cgan_conv", "acgan", "infogan_style",
           "tacgan", "infogan", "diffusion", "cvae_sop", "pix2pix", "cifar10",
           "celeb_a")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_files_start_from_the_declarations(name):
  config = importlib.import_module(f"condgen_jax.configs.{name}").get_config()
  family = families.get_family(config.model)
  declared = {**train.OPTIONS, **family.OPTIONS}
  # Every declared key is in the file, and every key of the file is declared.
  assert set(config) == set(declared) | {"model"}
  # The values the file does not set are the declared defaults (or the
  # model name's presets): compare with a config built from nothing.
  bare = options.resolve(_config(model=config.model), family.OPTIONS,
                         families.presets(config.model))
  assert options.resolve(config, family.OPTIONS,
                         families.presets(config.model)).keys() == bare.keys()
  family.validate_config(config)


def test_the_gan_defaults_agree_everywhere():
  from condgen_jax.configs import acgan, cgan_conv, cgan_mlp  # pylint: disable=g-import-not-at-top
  from condgen_jax.families import gan as gan_training  # pylint: disable=g-import-not-at-top
  bare = train.resolve(_config(model="cgan_conv"))
  assert bare.g_upsample == gan_training.MODEL_OPTIONS["g_upsample"].default == \
      cgan_conv.get_config().g_upsample == "transpose"
  assert bare.g_norm == "batch" == acgan.get_config().g_norm
  # cgan_mlp's preset: the paper's G has no normalisation.
  assert cgan_mlp.get_config().g_norm == "none"
  assert train.resolve(_config(model="cgan_mlp")).g_norm == "none"
  assert train.resolve(_config(model="acgan")).d_conditioning == \
      "none"
