"""Progressive distillation (condgen_jax.families.distillation): the target
against a numpy Alg. 2, and a tiny teacher distilled through the runner,
resumed exactly."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from condgen_jax.diffusion import schedules
from condgen_jax.families import distillation
from condgen_jax.runner import train


def _np_cosine(t):
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  return np.maximum(f(t) / f(0.0), 1e-5)


@pytest.mark.parametrize("objective", ["v", "flow_matching"])
def test_target_is_the_x0_whose_one_step_lands_on_two_teacher_steps(
    objective):
  """Salimans & Ho 2022, Alg. 2, in numpy with a linear teacher
  x0_hat = 0.6 z + 0.1: z_t -> z_t' -> z_t'' by DDIM, then one DDIM step
  from z_t with the target x0 reaches z_t''."""
  rng = np.random.RandomState(0)
  z = rng.randn(3, 2, 2, 1)
  t = np.array([1.0, 0.75, 0.5])
  n = 4

  def a_s(u):
    if objective == "flow_matching":
      return 1 - u, u
    ab = _np_cosine(u)
    return np.sqrt(ab), np.sqrt(1 - ab)

  def teacher(zz, u):
    a, s = (v[:, None, None, None] for v in a_s(u))
    x0 = 0.6 * zz + 0.1
    return x0, (zz - a * x0) / s

  col = lambda v: v[:, None, None, None]
  x0, eps = teacher(z, t)
  z1 = col(a_s(t - 0.5 / n)[0]) * x0 + col(a_s(t - 0.5 / n)[1]) * eps
  x0, eps = teacher(z1, t - 0.5 / n)
  a2, s2 = a_s(t - 1.0 / n)
  z2 = col(a2) * x0 + col(s2) * eps
  a, s = a_s(t)
  want = (z2 - col(s2 / s) * z) / col(a2 - s2 / s * a)
  # one DDIM step from z_t with x0 = want lands on z_t''
  np.testing.assert_allclose(
      col(a2) * want + col(s2) * (z - col(a) * want) / col(s), z2,
      rtol=1e-6, atol=1e-9)

  def jteacher(zz, u):
    out = teacher(np.asarray(zz, np.float64), np.asarray(u, np.float64))
    return tuple(jnp.asarray(o, jnp.float32) for o in out)

  got, got_z2 = distillation.distillation_target(
      jteacher, jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32), n,
      objective, schedules.cosine_alpha_bar)
  np.testing.assert_allclose(got_z2, z2, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def _teacher_config(**overrides):
  from condgen_jax.configs import diffusion  # pylint: disable=g-import-not-at-top
  c = diffusion.get_config()
  c.update(dataset="digits", batch_size=16, channels=(8,), attention=False,
           nfe=2, num_steps=2, log_every=0, checkpoint_every=2,
           sample_every=0, prng_impl="philox4x32", objective="v")
  c.update(overrides)
  return c


def _student_config(teacher_dir, **overrides):
  from condgen_jax.configs import distill  # pylint: disable=g-import-not-at-top
  c = distill.get_config()
  c.update(dataset="digits", batch_size=16, teacher_workdir=str(teacher_dir),
           teacher_steps=4, student_steps=1, num_steps=6, steps_per_phase=3,
           log_every=0,
           checkpoint_every=3, sample_every=0, prng_impl="philox4x32")
  c.update(overrides)
  return c


def test_a_teacher_is_distilled_through_the_runner_and_resumes_exactly(
    tmp_path, digits):
  train.train_and_evaluate(_teacher_config(), tmp_path / "teacher", digits)
  # an eps teacher is refused from its config.json, before its checkpoint
  (tmp_path / "eps").mkdir()
  eps = json.loads((tmp_path / "teacher" / "config.json").read_text())
  (tmp_path / "eps" / "config.json").write_text(
      json.dumps({**eps, "objective": "eps"}))
  with pytest.raises(ValueError, match="eps-prediction run"):
    train.resolve(_student_config(tmp_path / "eps"))
  with pytest.raises(ValueError, match="times a power of 2"):
    train.resolve(_student_config(tmp_path / "teacher", teacher_steps=6,
                                  student_steps=4))
  straight = train.train_and_evaluate(
      _student_config(tmp_path / "teacher"), tmp_path / "a", digits)
  train.train_and_evaluate(_student_config(tmp_path / "teacher",
                                           num_steps=3),
                           tmp_path / "b", digits)
  resumed = train.train_and_evaluate(
      _student_config(tmp_path / "teacher"), tmp_path / "b", digits)
  assert int(straight.step) == 6
  jax.tree.map(np.testing.assert_array_equal, straight.params,
               resumed.params)
  # the second phase's teacher is the first phase's student, not the run's
  teacher = distillation.load_teacher(
      train.resolve(_student_config(tmp_path / "teacher")), (8, 8, 1), 10)
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                      straight.teacher_params, teacher)
  assert max(jax.tree.leaves(diff)) > 0
  s = train.resolve(_student_config(tmp_path / "teacher"))
  x = distillation.make_sample_fn(s, (8, 8, 1), 10)(
      straight, jnp.arange(10), jax.random.key(0))
  assert x.shape == (10, 8, 8, 1) and np.isfinite(np.asarray(x)).all()
