"""Training, sampling and evaluation of the diffusion family: class-conditional
DDPM-style diffusion (eps or v prediction) and flow matching, with
classifier-free guidance, through the runner's interface (`create_state`,
`make_train_step`, `make_sample_fn`, `evaluate`; see
`condgen_jax.families.cvae`).

The model sees images mapped to [-1, 1] (x -> 2x - 1); `sample` maps back to
[0, 1]. Each training step draws t ~ U[0, 1] and eps ~ N(0, I) per example,
replaces each label by the null label `num_classes` with probability
`p_uncond` (Ho & Salimans 2022, Alg. 1), and takes one Adam step on the
mean per-image loss of `condgen_jax.losses`. Samples use the EMA of the
parameters when ema_decay > 0.

A condition of attributes (condition_kind='attributes': labels `[B, A]`,
`num_classes` the tuple of their sizes) has one label embedding per
attribute, each with its own null row (`unet.UNet`); `p_uncond` drops the
whole condition of an example (every attribute to its null at once), and
guidance's unconditional half is every attribute at its null.

Config keys: `OPTIONS` below, each with its default, allowed values and
meaning.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from condgen_jax.data import datasets as data_lib
from condgen_jax.diffusion import noise_levels
from condgen_jax.diffusion import samplers
from condgen_jax.families import common
from condgen_jax.families import ema
from condgen_jax.diffusion import schedules
from condgen_jax import losses
from condgen_jax.core import options
from condgen_jax.models import unet

SCHEDULES = tuple(schedules.SCHEDULES)
# A label, or every attribute of the dataset (one embedding each, summed).
CONDITION_KINDS = ("label", "attributes")

OPTIONS = {
    "objective": options.choice(
        "eps", samplers.OBJECTIVES,
        "'eps' (Ho et al. 2020), 'v' (Salimans & Ho 2022), 'flow_matching' "
        "(Lipman et al. 2023; Liu et al. 2023), 'edm' (Karras et al. 2022's "
        "preconditioning on the VP schedule)"),
    "time_sampling": options.choice(
        "uniform", noise_levels.TIME_SAMPLERS,
        "training times: 'uniform', 'logit_normal' (Esser et al. 2024) or "
        "'log_normal' sigma (Karras et al. 2022); `diffusion.noise_levels`"),
    "logit_normal_mean": options.number(
        0.0, "logit_normal: t = sigmoid(mean + std z)", -math.inf),
    "logit_normal_std": options.positive(1.0, "logit_normal: its std"),
    "log_normal_mean": options.number(
        -1.2, "log_normal: ln sigma ~ N(mean, std^2) (EDM's P_mean)",
        -math.inf),
    "log_normal_std": options.positive(1.2, "log_normal: EDM's P_std"),
    "loss_weighting": options.choice(
        "none", noise_levels.WEIGHTINGS,
        "per-example weight of the loss, stated on the x0 error: 'none' "
        "(the objective's own), 'min_snr' min(SNR, gamma) (Hang et al. "
        "2023), 'edm' lambda(sigma) (Karras et al. 2022)"),
    "min_snr_gamma": options.positive(5.0, "gamma of 'min_snr'"),
    "schedule": options.choice(
        "cosine", SCHEDULES,
        "alpha_bar(t) of eps / v: 'linear' (Ho et al. 2020) or 'cosine' "
        "(Nichol & Dhariwal 2021)"),
    "sampler": options.choice(
        "ddim", samplers.ALL_SAMPLERS,
        "'ddpm' | 'ddim' for eps / v, 'euler' | 'heun' for flow_matching; "
        "'dpmpp_2m' | 'unipc' | 'edm_heun' | 'edm_churn' for any objective "
        "(`diffusion.samplers`)"),
    "nfe": options.integer(50, "network evaluations per sample (Heun: two "
                           "per step; edm_heun / edm_churn: nfe // 2 + 1 "
                           "steps)"),
    "guidance_scale": options.number(
        0.75, "w of (1 + w) pred(x, c) - w pred(x, null); 0 = the plain "
        "conditional model"),
    "guidance_interval": options.Option(
        (), "guide only where lo < sigma~ <= hi (Kynkaanniemi et al. 2024), "
        "sigma~ = sigma_t / alpha_t (EDM's sigma for data in [-1, 1]); "
        "elsewhere the conditional model; () = at every noise level",
        lambda key, value: samplers.check_guidance_interval(
            value, f"config.{key}"),
        "() or (lo, hi) with 0 <= lo < hi <= inf"),
    "clip_x0": options.flag(True, "ddpm / ddim: clip the predicted x0 to "
                            "[-1, 1]"),
    "p_uncond": options.number(0.1, "probability of training on the null "
                               "condition", 0.0, 1.0),
    "ema_decay": options.number(
        0.999, "EMA of the params used for sampling (0 = off); the decay at "
        "step n is min(ema_decay, (1 + n) / (10 + n))", 0.0, 1.0),
    "learning_rate": options.positive(1e-3, "Adam's learning rate"),
    "channels": options.integers((32, 64, 64), "U-Net widths, one per "
                                 "resolution"),
    "num_res_blocks": options.integer(1, "residual blocks per level (down; "
                                      "up has one more)"),
    "attention": options.flag(True, "self-attention at the lowest "
                              "resolution"),
    "num_groups": options.integer(8, "GroupNorm groups; must divide every "
                                  "width"),
    "patch_size": options.integer(
        2, "p x p patches folded into channels before the U-Net and "
        "unfolded after it (`unet.UNet`); must divide the image size",
        minimum=1),
}


def validate_config(s) -> None:
  """The checks across keys: the sampler fits the objective, and the
  channels divide into `num_groups`; ValueError names the values."""
  samplers.check_sampler(s.objective, s.sampler)
  bad = [c for c in s.channels if c % s.num_groups]
  if bad:
    raise ValueError(f"config.channels={tuple(s.channels)!r} must all be "
                     f"divisible by config.num_groups={s.num_groups}; {bad} "
                     "are not.")


def has_convolutions(s) -> bool:
  """The U-Net convolves (the runner's CPU defaults for conv models)."""
  del s
  return True


def metric_modes(s) -> dict:
  """{name: 'min' | 'max'} of what `evaluate` reports (besides the runner's
  sample metrics)."""
  del s
  return {"test_loss": "min"}


class DiffusionState(train_state.TrainState):
  """TrainState plus `ema_params` (None when ema_decay = 0)."""
  ema_params: Any = None


def make_model(s, num_classes) -> unet.UNet:
  return unet.UNet(num_classes=num_classes, channels=s.channels,
                   num_res_blocks=s.num_res_blocks, attention=s.attention,
                   num_groups=s.num_groups, patch_size=s.patch_size,
                   dtype=common.compute_dtype(s))


def create_state(s, image_shape, num_classes, rng) -> DiffusionState:
  model = make_model(s, num_classes)
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  attributes = isinstance(num_classes, tuple)
  labels = jnp.zeros((1, len(num_classes)) if attributes else (1,), jnp.int32)
  params = model.init(rng, x, jnp.zeros((1,)), labels)["params"]
  return DiffusionState.create(
      apply_fn=model.apply, params=params,
      tx=optax.adam(s.learning_rate),
      ema_params=params if s.ema_decay > 0 else None)


def drop_labels(labels, rng, p_uncond: float, null_label):
  """Each label replaced by `null_label` with probability `p_uncond`,
  independently (classifier-free guidance training, Ho & Salimans 2022).
  Attribute rows `[B, A]` with `null_label` the tuple of the A nulls: each
  row is replaced whole (the condition is dropped, not single
  attributes)."""
  drop = jax.random.bernoulli(rng, p_uncond, jnp.shape(labels)[:1])
  drop = drop.reshape(drop.shape + (1,) * (labels.ndim - 1))
  return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def network(s, model):
  """model_fn(params, x_t, t, labels) -> the objective's prediction: the
  U-Net, its input scaled by EDM's c_in for objective 'edm'
  (`schedules.edm_input_scale`)."""
  def apply(params, x, t, labels):
    return model.apply({"params": params}, x, t, labels)

  if s.objective != "edm":
    return apply
  alpha_bar_fn = schedules.SCHEDULES[s.schedule]

  def preconditioned(params, x, t, labels):
    ab = alpha_bar_fn(t)
    scale = schedules.edm_input_scale(jnp.sqrt(ab), jnp.sqrt(1.0 - ab))
    scale = scale.reshape(scale.shape + (1,) * (x.ndim - 1))
    return apply(params, (x * scale).astype(x.dtype), t, labels)

  return preconditioned


def sample_times(s, rng, n: int):
  """Training times `[n]` from the config's `time_sampling`."""
  return noise_levels.sample_times(
      s.time_sampling, rng, n, objective=s.objective,
      alpha_bar_fn=schedules.SCHEDULES.get(s.schedule),
      logit_normal=(s.logit_normal_mean, s.logit_normal_std),
      log_normal=(s.log_normal_mean, s.log_normal_std))


def per_example_loss(s, model, params, x0, labels, t, eps):
  """The objective's loss `[B]` at times t `[B]` and noise eps, x0 in
  [-1, 1], times the config's `loss_weighting` (`noise_levels`)."""
  apply = network(s, model)
  if s.objective == "flow_matching":
    x_t = schedules.flow_matching_path(x0, eps, t)
    loss = losses.flow_matching_loss(apply(params, x_t, t, labels), x0, eps)
    alpha, sigma = 1.0 - t, t
  else:
    alpha_bar = schedules.SCHEDULES[s.schedule](t)
    x_t = schedules.diffuse(x0, eps, alpha_bar)
    pred = apply(params, x_t, t, labels)
    if s.objective == "v":
      loss = losses.v_prediction_loss(pred, x0, eps, alpha_bar)
    elif s.objective == "edm":
      loss = losses.edm_loss(pred, x0, eps, alpha_bar)
    else:
      loss = losses.ddpm_eps_loss(pred, eps)
    alpha, sigma = jnp.sqrt(alpha_bar), jnp.sqrt(1.0 - alpha_bar)
  if s.loss_weighting == "none":
    return loss
  return loss * noise_levels.loss_weight(
      s.loss_weighting, s.objective, alpha, sigma, gamma=s.min_snr_gamma)


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics): one Adam step on
  the mean per-image loss ('loss'; 'mse' is it per dimension)."""
  model = make_model(s, num_classes)
  dims = int(np.prod(image_shape))

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    t_key, eps_key, drop_key = jax.random.split(rng, 3)
    x0 = common.to_signed(batch["image"])
    b = x0.shape[0]
    labels = drop_labels(batch["label"], drop_key, s.p_uncond, num_classes)
    t = sample_times(s, t_key, b)
    eps = jax.random.normal(eps_key, x0.shape, x0.dtype)

    def loss_fn(params):
      return jnp.mean(per_example_loss(s, model, params, x0, labels, t, eps))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads)
    if s.ema_decay > 0:
      state = state.replace(ema_params=ema.update(
          state.ema_params, state.params, s.ema_decay, state.step))
    return state, {"loss": loss, "mse": loss / dims}

  return train_step


def sampling_params(s, state):
  return state.ema_params if s.ema_decay > 0 else state.params


@functools.lru_cache(maxsize=32)
def _sampler(s, image_shape: tuple[int, ...], num_classes, guide=None):
  """sample(params, labels, rng) -> images in [0, 1] for the settings `s`,
  jitted once per (settings, shape) around a `lax.fori_loop`. With `guide`
  (the guide run's settings) it is autoguidance (`samplers.autoguided`)
  and `params` is the pair (main params, guide params); else
  classifier-free guidance (`samplers.guided`). Both only within
  `s.guidance_interval` when it is set."""
  model = make_model(s, num_classes)
  alpha_bar_fn = schedules.SCHEDULES.get(s.schedule)
  interval = samplers.check_guidance_interval(s.guidance_interval)
  sigma_fn = lambda t: samplers.sigma_tilde(s.objective, t, alpha_bar_fn)
  if guide is None:
    model_fn = samplers.guided(
        network(s, model), s.guidance_scale, num_classes, interval, sigma_fn)
  else:
    model_fn = samplers.autoguided(
        network(s, model), network(guide, make_model(guide, num_classes)),
        s.guidance_scale, interval, sigma_fn)
  if s.sampler in samplers.FEW_STEP_SAMPLERS:
    run = functools.partial(
        samplers.few_step_sample, model_fn, objective=s.objective,
        sampler=s.sampler, nfe=s.nfe, alpha_bar_fn=alpha_bar_fn,
        clip_x0=s.clip_x0)
  else:
    step = jax.jit(samplers.make_step(
        model_fn, objective=s.objective, sampler=s.sampler,
        steps=samplers.num_steps(s.sampler, s.nfe),
        alpha_bar_fn=alpha_bar_fn, clip_x0=s.clip_x0),
                   static_argnames="euler")
    run = functools.partial(samplers.run_steps, step, sampler=s.sampler,
                            nfe=s.nfe)

  def sample(params, labels, rng):
    labels = jnp.asarray(labels, jnp.int32)
    noise_key, step_key = jax.random.split(rng)
    x = jax.random.normal(noise_key, (labels.shape[0],) + image_shape)
    x = run(params, x, labels, step_key)
    return common.to_unit(x)

  return jax.jit(sample)


def sample_with(s, state, labels, rng, image_shape, *,
                sampler: str | None = None, nfe: int | None = None,
                guidance_scale: float | None = None,
                guidance_interval=None):
  """Samples for `labels` (ints in [0, num_classes), or attribute rows
  `[B, A]`): float32 images in [0, 1], `[B, *image_shape]`. `sampler`,
  `nfe`, `guidance_scale` and `guidance_interval` (() or (lo, hi) of
  sigma~) default to the config's and are checked like it. num_classes is
  read off the state (each label embedding has its size + 1 rows). A
  `diffusion.autoguidance.GuidedState` as `state` samples with
  autoguidance: (1 + w) main(x, t, c) - w guide(x, t, c)."""
  s = options.replace(
      s, sampler=s.sampler if sampler is None else sampler,
      nfe=s.nfe if nfe is None else samplers.check_nfe(nfe),
      guidance_scale=s.guidance_scale if guidance_scale is None
      else samplers.check_guidance_scale(guidance_scale),
      guidance_interval=s.guidance_interval if guidance_interval is None
      else samplers.check_guidance_interval(guidance_interval))
  samplers.check_sampler(s.objective, s.sampler)
  guide = getattr(state, "guide_settings", None)
  params = sampling_params(s, state)
  if guide is not None:
    params = (params, state.guide_params)
  return _sampler(s, tuple(image_shape), num_classes_of(state.params),
                  guide)(params, labels, rng)


def num_classes_of(params):
  """The class count (or the tuple of attribute sizes) a U-Net's params
  were built for: its label embeddings' rows less the null."""
  if "label_embed" in params:
    return params["label_embed"]["embedding"].shape[0] - 1
  sizes, a = [], 0
  while f"label_embed_{a}" in params:
    sizes.append(params[f"label_embed_{a}"]["embedding"].shape[0] - 1)
    a += 1
  return tuple(sizes)


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, labels, rng) -> float32 images in [0, 1], `[B, H, W, C]`,
  with the config's sampler, nfe, guidance_scale and guidance_interval.
  `state` may be a `diffusion.autoguidance.GuidedState` (its guide
  settings are static): autoguidance with its guide, whose U-Net is built
  from the guide's own settings."""
  fn = _sampler(s, tuple(image_shape), num_classes)

  def sample(state, labels, rng):
    guide = getattr(state, "guide_settings", None)
    if guide is None:
      return fn(sampling_params(s, state), labels, rng)
    return _sampler(s, tuple(image_shape), num_classes, guide)(
        (sampling_params(s, state), state.guide_params), labels, rng)

  return sample


@functools.lru_cache(maxsize=8)
def _test_loss_fn(s, num_classes, max_value: float):
  """jit of the summed per-image loss of a batch of uint8 images (one
  compiled function per setting, reused by every evaluation)."""
  model = make_model(s, num_classes)

  @jax.jit
  def batch_loss(params, images, labels, key):
    x0 = common.to_signed(data_lib.to_float(images, max_value))
    t_key, eps_key = jax.random.split(key)
    t = sample_times(s, t_key, x0.shape[0])
    eps = jax.random.normal(eps_key, x0.shape, x0.dtype)
    return jnp.sum(per_example_loss(s, model, params, x0, labels, t, eps))

  return batch_loss


def evaluate(s, state, dataset: data_lib.Dataset, rng,
             batch_size: int = 500) -> dict:
  """The training objective on the test split, with the true labels and the
  sampling (EMA) params: mean per-image loss at t ~ U[0, 1], eps ~ N(0, I)
  drawn from `rng` (t from the config's `time_sampling`, the loss with its
  `loss_weighting`), so a pure function of (params, rng)."""
  batch_loss = _test_loss_fn(s, dataset.num_classes, float(dataset.max_value))
  params = sampling_params(s, state)
  means, n = common.test_split_mean(
      lambda images, labels, key: {"loss": batch_loss(params, images, labels,
                                                      key)},
      dataset, batch_size, rng)
  return {"test_loss": means["loss"], "num_test_examples": n}
