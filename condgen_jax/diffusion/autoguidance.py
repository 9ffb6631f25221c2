"""Autoguidance's guide (Karras et al. 2024, "Guiding a Diffusion Model with
a Bad Version of Itself"): a weaker diffusion run of the same task (an
early checkpoint of the same run, or a run of a smaller U-Net) whose
prediction, at the SAME condition, is extrapolated away from:

  (1 + w) main(x, t, c) - w guide(x, t, c),   w = guidance_scale

(the paper's w is 1 + w; `samplers.autoguided`), within the guidance
interval when one is set.

The guide travels with the state: `GuidedState(state, guide_params,
guide_settings)` is a pytree whose guide settings are static, so
`families.diffusion.make_sample_fn(s, ...)(guided_state, labels, rng)`
builds the guide's U-Net from its own settings
(`families.diffusion.make_model`) and evaluates it with its params. Every
other reader of the state (the test loss, the EMA params) sees the main
run's: `params`, `ema_params` and `step` are the main state's. Build it
with `guided_state` (which checks that the guide fits), or from a loaded
run with `condgen_jax.api.Trained.with_guide`.
"""

from __future__ import annotations

from typing import Any

from flax import struct

# What the guide must share with the run it guides: same prediction, same
# noise levels, same data and condition.
MATCHING_KEYS = ("objective", "schedule", "dataset", "condition_kind")
DIFFUSION_FAMILY = "condgen_jax.families.diffusion"


@struct.dataclass
class GuidedState:
  """A diffusion state with an autoguidance guide.

  Attributes:
    state: the main run's state (`families.diffusion.DiffusionState`).
    guide_params: the guide's sampling params (its EMA when it keeps one).
    guide_settings: the guide run's settings (static: they build its model).
  """
  state: Any
  guide_params: Any
  guide_settings: Any = struct.field(pytree_node=False)

  @property
  def params(self):
    return self.state.params

  @property
  def ema_params(self):
    return self.state.ema_params

  @property
  def step(self):
    return self.state.step


def check_guide(settings, guide_settings, num_classes=None,
                guide_num_classes=None) -> None:
  """ValueError (one line, naming both values) unless the guide is a run of
  the diffusion family with the same objective, schedule, dataset,
  condition kind and class count as the run of `settings`."""
  from condgen_jax import families  # pylint: disable=g-import-not-at-top
  family = families.get_family(settings.model)
  if family.__name__ != DIFFUSION_FAMILY:
    raise ValueError(f"a guide (autoguidance) does not apply to model "
                     f"{settings.model!r}: only diffusion runs take one.")
  if families.get_family(guide_settings.model) is not family:
    raise ValueError(f"the guide must be a diffusion run like the run it "
                     f"guides; guide model={guide_settings.model!r}, run "
                     f"model={settings.model!r}.")
  for key in MATCHING_KEYS:
    if guide_settings[key] != settings[key]:
      raise ValueError(f"the guide must have the run's {key}; guide "
                       f"{key}={guide_settings[key]!r}, run "
                       f"{key}={settings[key]!r}.")
  if num_classes != guide_num_classes:
    raise ValueError(f"the guide must have the run's class count; guide "
                     f"num_classes={guide_num_classes!r}, run "
                     f"num_classes={num_classes!r}.")


def guided_state(settings, state, guide_settings, guide_state) -> GuidedState:
  """`state` (of a run of `settings`) with the guide of `guide_settings`
  and `guide_state` (its sampling params: the EMA when it keeps one),
  checked by `check_guide`. A `GuidedState` given as `state` has its guide
  replaced."""
  from condgen_jax.families import diffusion  # pylint: disable=g-import-not-at-top
  if isinstance(state, GuidedState):
    state = state.state
  if isinstance(guide_state, GuidedState):
    guide_state = guide_state.state
  check_guide(settings, guide_settings,
              diffusion.num_classes_of(state.params),
              diffusion.num_classes_of(guide_state.params))
  return GuidedState(state, diffusion.sampling_params(guide_settings,
                                                      guide_state),
                     guide_settings)
