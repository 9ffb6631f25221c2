"""The interface of a model family: what the runner, sampling and
evaluation call. A family is a module (or any object) whose functions match
`Family`; `families.get_family` checks it when it loads one.

Types: `s` is the run's settings, the frozen `ml_collections.FrozenConfigDict`
that `runner.train.resolve` makes of its config once (the runner's and
the family's keys at their values, checked); `image_shape` is
(H, W, C); `num_classes` is an int, or with `condition_kind='attributes'`
the tuple of the attributes' sizes; a state is any pytree the family
defines (parameters, optimizer state, step).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

# train_step(state, batch, rng) -> (state, metrics): `batch` is {'image':
# float32 [B, H, W, C] in [0, 1], 'label': int32 [B] or [B, A]}; metrics are
# float32 scalars, 'loss' among them.
TrainStep = Callable[[Any, dict, Any], tuple[Any, dict]]
# sample(state, conditions, rng) -> float32 images [B, H, W, C] in [0, 1].
SampleFn = Callable[[Any, Any, Any], Any]


@runtime_checkable
class Family(Protocol):
  """One model family (CVAE, GAN, diffusion, ...)."""

  def validate_config(self, s) -> None:
    """The family's checks across its keys (each key is checked as its
    `OPTIONS` declare it): ValueError naming the values and what is
    allowed. `resolve` calls it, before anything is written."""

  def create_state(self, s, image_shape: Sequence[int], num_classes,
                   rng) -> Any:
    """The initial state, from `rng`."""

  def make_train_step(self, s, image_shape: Sequence[int],
                      num_classes) -> TrainStep:
    """`train_step(state, batch, rng) -> (state, metrics)`, uncompiled."""

  def make_sample_fn(self, s, image_shape: Sequence[int],
                     num_classes) -> SampleFn:
    """`sample(state, conditions, rng) -> images`, uncompiled."""

  def evaluate(self, s, state, dataset, rng) -> dict:
    """The family's own metrics on the test split (e.g. the negative
    ELBO); {} when it has none."""

  def metric_modes(self, s) -> dict:
    """{metric: 'min' | 'max'} of what `evaluate` reports, for choosing a
    best checkpoint."""

  def has_convolutions(self, s) -> bool:
    """Whether the model convolves (XLA:CPU runs such models one step per
    call)."""


# Optional members, read with getattr:
#   OPTIONS: {key: core.options.Option}, the family's config keys;
#   CONDITION_KINDS: the `condition_kind`s it takes (default ('label',));
#   image_condition(s): with 'image', the `data.image_conditions.
#     ImageCondition` deriving each condition image from its target;
#   latent_traversal(s, state, image_shape, num_classes, *, code,
#     values, seed): images along one latent code (InfoGAN).


def missing_members(family) -> list[str]:
  """The members of `Family` that `family` lacks or whose leading
  parameters differ (names as in `Family`); [] for a conforming family."""
  problems = []
  for name, member in vars(Family).items():  # in the order declared
    if name.startswith("_") or not inspect.isfunction(member):
      continue
    impl = getattr(family, name, None)
    if not callable(impl):
      problems.append(f"{name}()")
      continue
    want = list(inspect.signature(member).parameters)[1:]  # without self
    try:
      params = inspect.signature(impl).parameters
    except (TypeError, ValueError):  # a builtin without a signature
      continue
    if any(p.kind == p.VAR_POSITIONAL for p in params.values()):
      continue  # a wrapper passing its arguments on
    have = list(params)[:len(want)]
    if have != want:
      problems.append(f"{name}({', '.join(want)}) (has "
                      f"{name}({', '.join(have)}))")
  return problems
