"""The family interface: every built-in family and the one defined in
tests/test_families.py implement it; anything else is named as not."""

import types

import pytest

from condgen_jax import families
from condgen_jax.families import interface

FAMILIES = (*families.MODELS, "tests.test_families")


@pytest.mark.parametrize("model", FAMILIES)
def test_every_family_implements_the_interface(model):
  family = families.get_family(model)
  assert isinstance(family, interface.Family)
  assert interface.missing_members(family) == []


def _conforming(**changes):
  members = dict(
      validate_config=lambda s: None,
      create_state=lambda s, image_shape, num_classes, rng: None,
      make_train_step=lambda s, image_shape, num_classes: None,
      make_sample_fn=lambda s, image_shape, num_classes: None,
      evaluate=lambda s, state, dataset, rng: {},
      metric_modes=lambda s: {},
      has_convolutions=lambda s: False)
  members.update(changes)
  return types.SimpleNamespace(**{k: v for k, v in members.items()
                                  if v is not None})


def test_a_missing_member_or_a_wrong_signature_is_named():
  assert interface.missing_members(_conforming()) == []
  assert interface.missing_members(_conforming(evaluate=None)) == [
      "evaluate()"]
  swapped = _conforming(
      create_state=lambda s, num_classes, image_shape, rng: None)
  assert interface.missing_members(swapped) == [
      "create_state(s, image_shape, num_classes, rng) (has "
      "create_state(s, num_classes, image_shape, rng))"]
  assert not isinstance(_conforming(has_convolutions=None), interface.Family)


def test_a_module_that_is_not_a_family_is_one_clear_error():
  with pytest.raises(ValueError, match=r"model='os\.path' is not a model "
                     r"family: os\.path lacks validate_config\(\), "):
    families.get_family("os.path")
