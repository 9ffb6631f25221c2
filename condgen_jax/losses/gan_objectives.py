"""GAN objectives as objects, and the named terms each player minimises.

A `GANObjective` holds what makes one GAN loss: the discriminator's and the
generator's losses as functions of both discriminator outputs (`real`,
`fake`: dicts with 'logit' and, from the GAN family's Ds, 'features' and,
with class heads, 'class_logits' and 'twin_class_logits'), an optional
regulariser of the discriminator (a function of the critic, e.g. the WGAN-GP
gradient penalty), an optional optimiser transform for the discriminator
(WGAN weight clipping) and extra metrics.

The logits are `[B]` (one per example, the GAN family) or `[B, ...]` (one
per patch, pix2pix's PatchGAN `[B, h, w]`). The built-in losses are
elementwise in them and keep that shape (the relativistic ones also read
the mean over every axis), and `total` means each term over all its axes,
so a patch loss is the mean over the batch and the patches. The critic
handed to a regulariser maps a batch to one value per example `[B]` (a
patch discriminator's: the mean over its patches).

`config.gan_loss` names a built-in (`BUILTINS`) or is an import path
`package.module:attribute` to a `GANObjective` or to a function of the
run's settings returning one (`runner.train.resolve(config)`: every key
at its value, the objective keys `OBJECTIVE_KEYS` among them); every
process (train, sample, evaluate) rebuilds the same objective from the
config. A new loss is one
such object:

    def my_loss(s):
      return GANObjective(
          discriminator_loss=lambda real, fake: ...,   # the logits' shape
          generator_loss=lambda real, fake: ...)       # the logits' shape

    python -m experiments.train ... --config.gan_loss=my_module:my_loss

`discriminator_terms` / `generator_terms` list the named, weighted terms of
each player's loss in the GAN family: the adversarial ones
(`adversarial_discriminator_terms`: the objective's loss, its regulariser,
the R1 penalty, `r1_gamma`, any objective; `adversarial_generator_term`),
which any discriminator has, then the GAN family's regularisers
(`regularizer_terms`: R2, LeCam, bCR), the AC-GAN (cross-entropy or
ReACGAN's D2D-CE, `class_loss`) and TAC-GAN class terms, InfoGAN's code
term and feature matching.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from condgen_jax import losses

Outputs = dict  # a discriminator's outputs: 'logit', 'features', ...

# The settings keys that the built-ins and the adversarial terms read (as
# `families.gan.TRAIN_OPTIONS` declares them): any family whose settings
# hold them can build every built-in objective.
OBJECTIVE_KEYS = ("gan_loss", "real_label_smoothing", "gp_weight",
                  "clip_value", "r1_gamma")


@dataclasses.dataclass(frozen=True)
class GANObjective:
  """One GAN loss; see the module docstring.

  discriminator_loss(real, fake) and generator_loss(real, fake) return one
  value per logit: an array of the logits' shape, `[B]` or `[B, ...]` for
  a patch discriminator. `generator_needs_real`: whether generator_loss reads
  `real` (the step then runs D on the real batch in the generator update;
  otherwise `real` is None there). `regularizer(critic, x_real, x_fake,
  key) -> [B]` is added to D's loss with `regularizer_weight`; `critic`
  maps a batch like x_real to `[B]`.
  `d_transform`: an optax transform chained after D's optimiser.
  `metrics(real_logits, fake_logits) -> dict` of extra scalars.
  """
  discriminator_loss: Callable[[Outputs, Outputs], jax.Array]
  generator_loss: Callable[[Outputs | None, Outputs], jax.Array]
  generator_needs_real: bool = False
  regularizer: Callable | None = None
  regularizer_name: str = "regularizer"
  regularizer_weight: float = 0.0
  d_transform: optax.GradientTransformation | None = None
  metrics: Callable[[jax.Array, jax.Array], dict] | None = None


def _logits(d_loss, g_loss, **kw) -> GANObjective:
  """An objective whose losses read the logits only (the classic ones)."""
  return GANObjective(
      discriminator_loss=lambda real, fake: d_loss(real["logit"],
                                                   fake["logit"]),
      generator_loss=lambda real, fake: g_loss(fake["logit"]), **kw)


def _no_label_smoothing(s, name: str) -> None:
  if s.real_label_smoothing:
    raise ValueError(f"real_label_smoothing={s.real_label_smoothing} "
                     "applies to gan_loss 'minimax' or 'non_saturating' "
                     f"only; got gan_loss={name!r}.")


def _wasserstein_estimate(real_logits, fake_logits) -> dict:
  return {"wasserstein_estimate": jnp.mean(real_logits)
                                  - jnp.mean(fake_logits)}


def minimax(s, generator_loss=losses.minimax_generator_loss):
  """Goodfellow et al. 2014, with one-sided label smoothing."""
  smoothing = float(s.real_label_smoothing)
  d_loss = losses.minimax_discriminator_loss
  if smoothing:
    d_loss = functools.partial(d_loss, real_label_smoothing=smoothing)
  return _logits(d_loss, generator_loss)


def non_saturating(s):
  """Minimax D, the -log D(G(z)) generator loss (Goodfellow et al. 2014)."""
  return minimax(s, losses.non_saturating_generator_loss)


def least_squares(s):
  """Mao et al. 2017."""
  _no_label_smoothing(s, "least_squares")
  return _logits(losses.least_squares_discriminator_loss,
                 losses.least_squares_generator_loss)


def wasserstein(s):
  """Arjovsky et al. 2017: the critic's weights clipped to +-clip_value."""
  _no_label_smoothing(s, "wasserstein")
  clip = float(s.clip_value)
  return _logits(losses.wasserstein_discriminator_loss,
                 losses.wasserstein_generator_loss,
                 d_transform=losses.clip_weights(clip),
                 metrics=_wasserstein_estimate)


def wasserstein_gp(s):
  """Gulrajani et al. 2017: the gradient penalty, weight gp_weight."""
  _no_label_smoothing(s, "wasserstein_gp")
  return _logits(losses.wasserstein_discriminator_loss,
                 losses.wasserstein_generator_loss,
                 regularizer=losses.gradient_penalty,
                 regularizer_name="gradient_penalty",
                 regularizer_weight=float(s.gp_weight),
                 metrics=_wasserstein_estimate)


def hinge(s):
  """Lim & Ye 2017; Miyato et al. 2018."""
  _no_label_smoothing(s, "hinge")
  return _logits(losses.hinge_discriminator_loss,
                 losses.hinge_generator_loss)


def relativistic_pairing(s):
  """RpGAN (Jolicoeur-Martineau 2019; Huang et al. 2024, R3GAN): each real
  logit against its paired fake one; G's loss reads the real logits."""
  _no_label_smoothing(s, "relativistic_pairing")
  return GANObjective(
      discriminator_loss=lambda real, fake: (
          losses.relativistic_pairing_discriminator_loss(real["logit"],
                                                         fake["logit"])),
      generator_loss=lambda real, fake: (
          losses.relativistic_pairing_generator_loss(real["logit"],
                                                     fake["logit"])),
      generator_needs_real=True)


def relativistic_average(s):
  """RaSGAN (Jolicoeur-Martineau 2019): both losses read both logits."""
  _no_label_smoothing(s, "relativistic_average")
  return GANObjective(
      discriminator_loss=lambda real, fake: (
          losses.relativistic_average_discriminator_loss(real["logit"],
                                                         fake["logit"])),
      generator_loss=lambda real, fake: (
          losses.relativistic_average_generator_loss(real["logit"],
                                                     fake["logit"])),
      generator_needs_real=True)


BUILTINS = {
    "minimax": minimax,
    "non_saturating": non_saturating,
    "least_squares": least_squares,
    "wasserstein": wasserstein,
    "wasserstein_gp": wasserstein_gp,
    "hinge": hinge,
    "relativistic_average": relativistic_average,
    "relativistic_pairing": relativistic_pairing,
}


def get_objective(s) -> GANObjective:
  """The objective `s.gan_loss` names: a key of `BUILTINS` or
  'package.module:attribute' (a GANObjective or a function of `s`
  returning one). `s`: a run's settings holding `OBJECTIVE_KEYS`
  (`runner.train.resolve`).
  ValueError names a bad name."""
  name = s.gan_loss
  if name in BUILTINS:
    return BUILTINS[name](s)
  if not isinstance(name, str) or ":" not in name:
    raise ValueError(f"Unknown gan_loss {name!r}; expected one of "
                     f"{tuple(BUILTINS)} or an import path "
                     "'package.module:attribute'.")
  module_name, attribute = name.split(":", 1)
  try:
    found = getattr(importlib.import_module(module_name), attribute)
  except (ImportError, AttributeError) as e:
    raise ValueError(f"gan_loss={name!r} does not import: {e}.") from None
  objective = found if isinstance(found, GANObjective) else found(s)
  if not isinstance(objective, GANObjective):
    raise ValueError(f"gan_loss={name!r} gives {type(objective).__name__}, "
                     "not a GANObjective.")
  return objective


# ----------------------------------------------------------------------------
# The terms each player minimises.


@dataclasses.dataclass(frozen=True)
class Context:
  """What a term may read: both D outputs (`real` is None in the G update
  when nothing there needs it), the real batch's labels (None where no
  term reads them), the critic x -> `[B]` and the real and generated
  batches it reads (for penalties), a key, and what G was given: its
  class or categorical code `fake_labels` (the real labels unless
  `code_prior='uniform'`; None = `labels`) and its continuous `codes`.
  `fake_critic`: the critic of generated batches (D conditioned on
  `fake_labels`, with the generated batch's augmentation draw), for R2 and
  bCR; `lecam_anchors`: LeCam's (alpha_R, alpha_F), D's EMA outputs.
  With augmentation (`families.gan`, config.augment) `x_real` / `x_fake`
  are the images before it and the critics include it (the draw of the
  batch's own D pass), as StyleGAN2-ADA differentiates its penalties."""
  real: Any
  fake: Any
  labels: jax.Array
  critic: Callable | None = None
  x_real: jax.Array | None = None
  x_fake: jax.Array | None = None
  key: jax.Array | None = None
  fake_labels: jax.Array | None = None
  codes: jax.Array | None = None
  fake_critic: Callable | None = None
  lecam_anchors: tuple | None = None

  @property
  def generated_labels(self) -> jax.Array:
    return self.labels if self.fake_labels is None else self.fake_labels


@dataclasses.dataclass(frozen=True)
class Term:
  """A named term, one value per example (or per patch); the loss adds
  weight * mean(fn(context)), the mean over every axis. With weight None
  it is reported as a metric but not minimised."""
  name: str
  fn: Callable[[Context], jax.Array]
  weight: float | None = 1.0


def adversarial_discriminator_terms(s, objective: GANObjective
                                    ) -> list[Term]:
  """The terms of D's loss that any discriminator has: the objective's
  loss (d_adv_loss), its regulariser (weight `regularizer_weight`) and the
  R1 penalty (weight r1_gamma / 2, absent when `s.r1_gamma` is 0). Reads
  `s.r1_gamma` only; the penalties read `Context.critic`, `x_real`,
  `x_fake` and `key`."""
  terms = [Term("d_adv_loss",
                lambda c: objective.discriminator_loss(c.real, c.fake))]
  if objective.regularizer is not None:
    terms.append(Term(objective.regularizer_name, lambda c: (
        objective.regularizer(c.critic, c.x_real, c.x_fake, c.key)),
                      objective.regularizer_weight))
  r1_gamma = float(s.r1_gamma)
  if r1_gamma > 0:
    terms.append(Term("r1_penalty",
                      lambda c: losses.r1_penalty(c.critic, c.x_real),
                      r1_gamma / 2))
  return terms


def adversarial_generator_term(objective: GANObjective,
                               weight: float = 1.0) -> Term:
  """G's adversarial term g_adv_loss, `objective.generator_loss`."""
  return Term("g_adv_loss",
              lambda c: objective.generator_loss(c.real, c.fake), weight)


def discriminator_terms(s, objective: GANObjective,
                        consistency_augment: Callable | None = None
                        ) -> list[Term]:
  """The GAN family's D loss: `adversarial_discriminator_terms`, the
  `regularizer_terms` (none at their defaults; `consistency_augment` is
  bCR's T) and, with a class head, the AC-GAN class terms; with a twin
  head, TAC-GAN's twin term -log q_mi(c|G(z,c)) (Gong et al. 2019); with
  continuous codes, InfoGAN's code term."""
  terms = adversarial_discriminator_terms(s, objective)
  terms += regularizer_terms(s, consistency_augment)
  if s.class_head:
    terms += acgan_discriminator_terms(s)
  if s.twin_class_head:
    terms.append(Term("d_twin_class_loss", lambda c: (
        losses.tacgan_twin_class_loss(c.fake["twin_class_logits"],
                                      c.generated_labels)),
                      float(s.twin_class_weight)))
  if s.continuous_codes:
    terms.append(code_term("d_code_loss", s))
  return terms


def regularizer_terms(s, consistency_augment: Callable | None = None
                      ) -> list[Term]:
  """The GAN family's extra regularisers of D, each with any objective and
  absent at weight 0: the R2 penalty (`r2_gamma` / 2, on generated
  samples, `Context.fake_critic`), LeCam (`lecam_weight`, against
  `Context.lecam_anchors`) and bCR (`bcr_weight` for both lambdas;
  `consistency_augment(key, x)` is T, the keys folded from `Context.key`
  with 5 (real) and 6 (fake), independent draws)."""
  terms = []
  r2_gamma = float(s.r2_gamma)
  if r2_gamma > 0:
    terms.append(Term("r2_penalty",
                      lambda c: losses.r2_penalty(c.fake_critic, c.x_fake),
                      r2_gamma / 2))
  if float(s.lecam_weight) > 0:
    terms.append(Term("lecam_penalty", lambda c: losses.lecam_penalty(
        c.real["logit"], c.fake["logit"], *c.lecam_anchors),
                      float(s.lecam_weight)))
  if float(s.bcr_weight) > 0:
    if consistency_augment is None:
      raise ValueError(f"bcr_weight={s.bcr_weight} needs an augmentation T "
                       "(consistency_augment).")

    def bcr(c):
      real_t = consistency_augment(jax.random.fold_in(c.key, 5), c.x_real)
      fake_t = consistency_augment(jax.random.fold_in(c.key, 6), c.x_fake)
      return losses.balanced_consistency_loss(
          c.real["logit"], c.critic(real_t), c.fake["logit"],
          c.fake_critic(fake_t))
    terms.append(Term("bcr_penalty", bcr, float(s.bcr_weight)))
  return terms


def generator_terms(s, objective: GANObjective) -> list[Term]:
  """The GAN family's G loss: the adversarial term
  (`adversarial_generator_term`, weight g_adv_weight), feature matching
  (Salimans et al. 2016) and, with a class head, the AC-GAN class term; with
  a twin head, TAC-GAN's +log q_mi(c|G(z,c)) (G maximises the twin's
  loss); with continuous codes, InfoGAN's code term."""
  terms = [adversarial_generator_term(objective, float(s.g_adv_weight))]
  if float(s.feature_matching) > 0:
    terms.append(Term("feature_matching", lambda c: (
        losses.feature_matching_loss(c.real["features"],
                                     c.fake["features"])),
                      float(s.feature_matching)))
  if s.class_head:
    terms += acgan_generator_terms(s)
  if s.twin_class_head:
    terms.append(Term("g_twin_class_loss", lambda c: (
        -losses.tacgan_twin_class_loss(c.fake["twin_class_logits"],
                                       c.generated_labels)),
                      float(s.twin_class_weight)))
  if s.continuous_codes:
    terms.append(code_term("g_code_loss", s))
  return terms


def acgan_discriminator_terms(s) -> list[Term]:
  """The AC-GAN objective's D side (Odena et al. 2017, eq. 3): -log q(c|x)
  on real data (real_class_weight) and -log q(c|G(z,c)) on generated data
  (fake_class_weight; minimised by D only when d_fake_class, reported
  always). real_class_weight=0 gives the InfoGAN-style variant. For a
  condition of A attributes, D has one class head per attribute and each
  term is -log q(c|x) = -sum_a log q_a(c_a|x), the sum of the attributes'
  cross-entropies (`losses.acgan_real_class_loss`). With
  class_loss='d2d_ce' each term is ReACGAN's D2D-CE instead
  (`class_loss_fn`), at the same weights."""
  loss = class_loss_fn(s)
  return [
      Term("d_real_class_loss", lambda c: loss(c.real, c.labels),
           float(s.real_class_weight)),
      Term("d_fake_class_loss", lambda c: loss(c.fake, c.generated_labels),
           float(s.fake_class_weight) if s.d_fake_class else None),
  ]


def acgan_generator_terms(s) -> list[Term]:
  """The AC-GAN objective's G side: -log q(c|G(z,c)) (or D2D-CE),
  fake_class_weight."""
  loss = class_loss_fn(s)
  return [Term("g_fake_class_loss", lambda c: loss(c.fake, c.generated_labels),
               float(s.fake_class_weight))]


CLASS_LOSSES = ("ce", "d2d_ce")


def class_loss_fn(s) -> Callable[[Outputs, jax.Array], jax.Array]:
  """(outputs, labels) -> `[B]`: the class term of `s.class_loss`. 'ce':
  the cross-entropy of 'class_logits' (`losses.acgan_real_class_loss`);
  'd2d_ce': `losses.d2d_ce_loss` of 'class_embedding' and
  'class_proxies' (the GAN family's D2D-CE head) with `d2d_temperature`,
  `d2d_positive_margin` and `d2d_negative_margin`."""
  if s.class_loss == "ce":
    return lambda out, labels: losses.acgan_real_class_loss(
        out["class_logits"], labels)
  if s.class_loss == "d2d_ce":
    kw = dict(temperature=float(s.d2d_temperature),
              positive_margin=float(s.d2d_positive_margin),
              negative_margin=float(s.d2d_negative_margin))
    return lambda out, labels: losses.d2d_ce_loss(
        out["class_embedding"], out["class_proxies"], labels, **kw)
  raise ValueError(f"Unknown class_loss {s.class_loss!r}; expected one of "
                   f"{CLASS_LOSSES}.")


def code_term(name: str, s) -> Term:
  """InfoGAN's continuous-code term -log Q(c'|G(z, c, c')) (Chen et al.
  2016), weight continuous_code_weight; G and D's Q head both minimise it."""
  return Term(name, lambda c: losses.infogan_continuous_code_loss(
      c.fake["code_means"], c.codes), float(s.continuous_code_weight))


def total(terms: list[Term], context: Context):
  """(sum of weight * mean(term), {name: mean(term)}), in the terms' order,
  each mean over all of a term's axes (examples, and patches); the first
  term enters unscaled when its weight is 1."""
  loss, metrics = None, {}
  for term in terms:
    value = jnp.mean(term.fn(context))
    metrics[term.name] = value
    if term.weight is None:
      continue
    weighted = value if (loss is None and term.weight == 1.0) else (
        term.weight * value)
    loss = weighted if loss is None else loss + weighted
  return loss, metrics
