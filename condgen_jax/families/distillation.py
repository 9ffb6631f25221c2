"""Progressive distillation of a trained diffusion run into a sampler of a
few DDIM steps (Salimans & Ho 2022), guidance included (Meng et al. 2023).

  python -m experiments.train --config=experiments/configs/distill.py \
      --config.teacher_workdir=DIR --workdir=DIR_2STEP

The student starts as a copy of the teacher's sampling (EMA) parameters and
has the teacher's U-Net, objective and schedule (read from the teacher's
`config.json`). Training runs in phases; phase k halves the steps N_k = teacher_steps / 2^k of its teacher into the
student's N_k / 2, for phases = log2(teacher_steps / student_steps), each
`steps_per_phase` steps (steps past the last phase continue it). Each
example draws t = i / N (i uniform in 1..N, N = N_k / 2 the student's
steps), t' = t - 1 / (2N), t'' = t - 1 / N, and takes two deterministic
(DDIM) steps of the teacher, z_t -> z_t' -> z_t''. The student's target is
the x0 with which one DDIM step of its own from z_t lands on z_t''
(Salimans & Ho 2022, Alg. 2):

  x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' -
        (sigma_t'' / sigma_t) alpha_t),

and its loss is max(SNR_t, 1) ||x0_hat(z_t) - x~||^2 per example ("truncated
SNR" weighting, their sec. 4). The first phase's teacher is the trained
model with its classifier-free guidance (scale `guidance_scale` of the
teacher run, or this config's when set): the student learns the guided
sampler with one forward pass per step and no guidance of its own (Meng et
al. 2023, "On Distillation of Guided Diffusion Models", stage two). At each
phase boundary the student's EMA parameters become the new teacher.

The state keeps the teacher's parameters, so a run resumes exactly from its
own checkpoint. Samples: `student_steps` DDIM steps (Euler on flow
matching) from pure noise, one network evaluation each.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from condgen_jax.core import checkpointing
from condgen_jax.core import options
from condgen_jax.diffusion import samplers
from condgen_jax.diffusion import schedules
from condgen_jax.families import common
from condgen_jax.families import diffusion
from condgen_jax.families import ema

OPTIONS = {
    "teacher_workdir": options.text(
        "", "the diffusion run to distil (its newest checkpoint's sampling "
        "params, its U-Net, objective and schedule)", "a diffusion workdir"),
    "teacher_steps": options.integer(
        16, "DDIM steps of the guided teacher that the first phase halves"),
    "student_steps": options.integer(
        2, "DDIM steps of the final student (teacher_steps / 2^phases)"),
    "steps_per_phase": options.integer(
        800, "training steps of each phase; steps past the last phase "
        "continue it"),
    "teacher_guidance_scale": options.number(
        -1.0, "w of the teacher's classifier-free guidance; < 0: the "
        "teacher run's guidance_scale", -math.inf),
    "learning_rate": options.positive(1e-4, "Adam's learning rate"),
    "ema_decay": options.number(
        0.999, "EMA of the student's params, used for sampling and as the "
        "next phase's teacher (0 = off)", 0.0, 1.0),
}


def phases(s) -> int:
  """log2(teacher_steps / student_steps)."""
  return int(round(math.log2(s.teacher_steps / s.student_steps)))


@functools.lru_cache(maxsize=8)
def _teacher_settings(workdir: str) -> ml_collections.FrozenConfigDict:
  config = checkpointing.read_config(workdir)
  if config.model != "diffusion":
    raise ValueError(f"config.teacher_workdir={workdir!r} holds a "
                     f"{config.model!r} run; distillation needs a "
                     "'diffusion' run.")
  values = options.defaults(diffusion.OPTIONS)
  values.update(config.to_dict())
  return ml_collections.FrozenConfigDict(values)


def teacher_settings(s) -> ml_collections.FrozenConfigDict:
  """The teacher run's settings (its config.json; keys new to the library
  at their defaults)."""
  return _teacher_settings(str(s.teacher_workdir))


def validate_config(s) -> None:
  """The teacher is a diffusion run on this dataset, and teacher_steps is
  student_steps times a power of 2 (at least 2)."""
  if not s.teacher_workdir:
    raise ValueError("config.teacher_workdir is required: the diffusion "
                     "run to distil.")
  t = teacher_settings(s)
  if t.dataset != s.dataset or t.condition_kind != s.condition_kind:
    raise ValueError(
        f"config.dataset={s.dataset!r} differs from the teacher's "
        f"{t.dataset!r} (config.teacher_workdir={s.teacher_workdir!r}).")
  if t.objective == "eps":
    raise ValueError(
        f"config.teacher_workdir={s.teacher_workdir!r} is an eps-prediction "
        "run: its x0 = (z - sigma eps) / alpha blows up near t = 1, where a "
        "few-step student starts (Salimans & Ho 2022, sec. 4); distil a run "
        "of objective 'v', 'edm' or 'flow_matching'.")
  ratio = s.teacher_steps / s.student_steps
  if ratio < 2 or s.teacher_steps % s.student_steps or (
      2 ** phases(s) != ratio):
    raise ValueError(
        f"config.teacher_steps={s.teacher_steps} must be "
        f"config.student_steps={s.student_steps} times a power of 2 >= 2.")


def has_convolutions(s) -> bool:
  del s
  return True


def metric_modes(s) -> dict:
  del s
  return {}


def evaluate(s, state, dataset, rng) -> dict:
  """No own metric: a distilled sampler is judged by its samples."""
  del s, state, dataset, rng
  return {}


class DistillState(train_state.TrainState):
  """The student (params, EMA) and the current phase's teacher params."""
  ema_params: Any = None
  teacher_params: Any = None


def load_teacher(s, image_shape, num_classes):
  """The teacher run's sampling params from its newest checkpoint, as
  concrete arrays (also when called while `create_state` is traced)."""
  return _load_teacher(str(s.teacher_workdir), tuple(image_shape),
                       num_classes)


@functools.lru_cache(maxsize=4)
def _load_teacher(workdir: str, image_shape, num_classes):
  t = _teacher_settings(workdir)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with jax.ensure_compile_time_eval():
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        jax.eval_shape(lambda k: diffusion.create_state(
            t, image_shape, num_classes, k), jax.random.key(0)))
    state, step, _ = checkpointing.restore_newest(
        checkpointing.as_path(workdir) / "checkpoints", target)
  if step is None:
    raise ValueError(f"config.teacher_workdir={workdir!r} has no "
                     "checkpoint.")
  return diffusion.sampling_params(t, state)


def create_state(s, image_shape, num_classes, rng) -> DistillState:
  del rng  # the student starts as the teacher
  params = load_teacher(s, image_shape, num_classes)
  return DistillState.create(
      apply_fn=None, params=params, tx=optax.adam(s.learning_rate),
      ema_params=params if s.ema_decay > 0 else None, teacher_params=params)


def _guidance(s) -> float:
  t = teacher_settings(s)
  return (t.guidance_scale if s.teacher_guidance_scale < 0
          else s.teacher_guidance_scale)


def _x0_eps(objective, pred, z, alpha, sigma, t, alpha_bar_fn, clip_x0):
  """(x0_hat, eps_hat) at z = alpha x0 + sigma eps."""
  x0 = samplers.predict_x0(objective, pred, z, t, alpha_bar_fn, clip_x0)
  return x0, (z - _col(alpha, z) * x0) / _col(sigma, z)


def _col(a, x):
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)).astype(x.dtype)


alpha_sigma = samplers.alpha_sigma


def distillation_target(teacher_x0, z, t, student_steps: int, objective,
                        alpha_bar_fn):
  """Salimans & Ho 2022, Alg. 2: two DDIM steps of the teacher from z_t
  (t -> t - 1/(2N) -> t - 1/N, N = `student_steps`), and the x0 with which
  one DDIM step from z_t reaches the same z_t''. `teacher_x0(z, t)` ->
  (x0_hat, eps_hat). Returns (x~, z_t'')."""
  n = student_steps
  t1, t2 = t - 0.5 / n, t - 1.0 / n
  a, s_ = alpha_sigma(objective, t, alpha_bar_fn)
  a1, s1 = alpha_sigma(objective, t1, alpha_bar_fn)
  a2, s2 = alpha_sigma(objective, t2, alpha_bar_fn)
  x0, eps = teacher_x0(z, t)
  z1 = _col(a1, z) * x0 + _col(s1, z) * eps
  x0, eps = teacher_x0(z1, t1)
  z2 = _col(a2, z) * x0 + _col(s2, z) * eps
  ratio = s2 / s_
  target = (z2 - _col(ratio, z) * z) / _col(a2 - ratio * a, z)
  return target, z2


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics): one Adam step of
  the student on the current phase ('loss', 'phase')."""
  t_s = teacher_settings(s)
  model = diffusion.make_model(t_s, num_classes)
  net = diffusion.network(t_s, model)
  alpha_bar_fn = schedules.SCHEDULES.get(t_s.schedule)
  objective = t_s.objective
  guided = samplers.guided(net, _guidance(s), num_classes)
  per_phase = s.steps_per_phase
  last_phase = phases(s) - 1

  def train_step(state, batch, rng):
    phase = jnp.minimum(state.step // per_phase, last_phase)
    # a new phase: the student (EMA) becomes the teacher
    new_phase = (state.step % per_phase == 0) & (state.step > 0) & (
        state.step // per_phase <= last_phase)
    student_now = state.ema_params if s.ema_decay > 0 else state.params
    teacher = jax.tree.map(lambda a, b: jnp.where(new_phase, a, b),
                           student_now, state.teacher_params)
    n = (s.teacher_steps // 2) // (2 ** phase)  # the student's steps
    rng = jax.random.fold_in(rng, state.step)
    i_key, eps_key = jax.random.split(rng)
    x0 = common.to_signed(batch["image"])
    labels = batch["label"]
    b = x0.shape[0]
    i = jax.random.randint(i_key, (b,), 1, n + 1)
    t = i.astype(jnp.float32) / n
    eps = jax.random.normal(eps_key, x0.shape, x0.dtype)
    a, sig = alpha_sigma(objective, t, alpha_bar_fn)
    z = _col(a, x0) * x0 + _col(sig, x0) * eps

    def teacher_x0(z, t):
      pred = jax.lax.cond(phase == 0,
                          lambda: guided(teacher, z, t, labels),
                          lambda: net(teacher, z, t, labels))
      a, sg = alpha_sigma(objective, t, alpha_bar_fn)
      return _x0_eps(objective, pred, z, a, sg, t, alpha_bar_fn,
                     t_s.clip_x0)

    target, _ = distillation_target(teacher_x0, z, t, n, objective,
                                    alpha_bar_fn)
    target = jax.lax.stop_gradient(target)
    weight = jnp.maximum(jnp.square(a / sig), 1.0)

    def loss_fn(params):
      x0_hat = samplers.predict_x0(objective, net(params, z, t, labels), z,
                                   t, alpha_bar_fn)
      err = jnp.sum(jnp.square(x0_hat - target), axis=(1, 2, 3))
      return jnp.mean(weight * err)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.replace(teacher_params=teacher)
    state = state.apply_gradients(grads=grads)
    if s.ema_decay > 0:
      # restart the EMA at each phase on the student
      ema_params = jax.tree.map(lambda a, b: jnp.where(new_phase, a, b),
                                state.params, state.ema_params)
      state = state.replace(ema_params=ema.update(
          ema_params, state.params, s.ema_decay, state.step % per_phase))
    return state, {"loss": loss, "phase": phase.astype(jnp.float32)}

  return train_step


def sampling_params(s, state):
  return state.ema_params if s.ema_decay > 0 else state.params


@functools.lru_cache(maxsize=8)
def _sampler(s, image_shape: tuple[int, ...], num_classes):
  t_s = teacher_settings(s)
  model = diffusion.make_model(t_s, num_classes)
  step = samplers.make_step(
      diffusion.network(t_s, model), objective=t_s.objective, sampler="ddim"
      if t_s.objective != "flow_matching" else "euler",
      steps=s.student_steps,
      alpha_bar_fn=schedules.SCHEDULES.get(t_s.schedule),
      clip_x0=t_s.clip_x0)

  def sample(params, labels, rng):
    labels = jnp.asarray(labels, jnp.int32)
    x = jax.random.normal(rng, (labels.shape[0],) + image_shape)
    x = jax.lax.fori_loop(0, s.student_steps,
                          lambda i, y: step(params, y, labels, rng, i), x)
    return common.to_unit(x)

  return jax.jit(sample)


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, labels, rng) -> images in [0, 1]: `student_steps` DDIM
  steps of the student, one network evaluation each."""
  fn = _sampler(s, tuple(image_shape), num_classes)

  def sample(state, labels, rng):
    return fn(sampling_params(s, state), labels, rng)

  return sample
