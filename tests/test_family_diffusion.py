"""The diffusion family: U-Net, label dropping, guidance, samplers, config
checks, and runs through the shared runner on `digits`."""

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from condgen_jax.core import checkpointing
from condgen_jax.core import options
from condgen_jax.diffusion import autoguidance
from condgen_jax.diffusion import samplers
from condgen_jax.families import diffusion as dt
from condgen_jax.diffusion import schedules
from condgen_jax.runner import train
from condgen_jax.models import unet


def tiny_config(**overrides):
  from condgen_jax.configs import diffusion
  c = diffusion.get_config()
  c.dataset = "digits"
  c.batch_size = 32
  c.channels = (8,)  # one level: the train step compiles in half the time
  c.num_res_blocks = 1
  c.attention = False
  c.nfe = 4
  c.num_steps = 6
  c.log_every = 3
  c.checkpoint_every = 3
  c.sample_every = 0
  c.samples_per_class = 2
  # The runner's other counter-based key: on CPU the U-Net's init compiles
  # 3x faster than with threefry's rolled loops.
  c.prng_impl = "philox4x32"
  c.update(overrides)
  return c


def _param_count(model, shape):
  x = jnp.zeros((2,) + shape)
  params = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(2),
                          jnp.zeros(2, jnp.int32))["params"]
  return unet.num_params(params)


@pytest.mark.parametrize("shape,channels,patch_size", [
    ((8, 8, 1), (8, 16, 32), 1), ((28, 28, 1), (8, 16, 32), 1),
    ((7, 9, 3), (8, 16, 32), 1), ((8, 8, 1), (8, 16), 2),
    ((28, 28, 1), (8, 16), 2), ((6, 10, 3), (8, 16), 2)])
def test_unet_output_shape(shape, channels, patch_size):
  model = unet.UNet(num_classes=10, channels=channels, num_res_blocks=1,
                    patch_size=patch_size)
  x = jnp.zeros((2,) + shape)
  out = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), x, jnp.ones(2),
                                     jnp.array([0, 10]))[0])
  assert out.shape == (2,) + shape


def test_unet_runs_and_mnist_default_has_about_a_million_params():
  model = unet.UNet(num_classes=10, channels=(8, 16), num_res_blocks=1)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  params = jax.jit(model.init)(jax.random.key(1, impl="philox4x32"), x,
                               jnp.zeros(3), jnp.zeros(3, jnp.int32))["params"]
  assert params["label_embed"]["embedding"].shape[0] == 11  # + the null row
  y = jax.jit(model.apply)({"params": params}, x, jnp.array([0.1, 0.5, 1.0]),
                           jnp.array([0, 3, 10]))
  assert y.shape == x.shape and np.isfinite(y).all()
  from condgen_jax.configs import diffusion
  default = dt.make_model(train.resolve(diffusion.get_config()), 10)
  assert _param_count(default, (28, 28, 1)) == 1_193_156


def test_unet_with_patches_is_the_unet_on_folded_images():
  """patch_size=2 on [B, 8, 8, 1] is the patch-1 U-Net of the same
  parameters on the 4-channel 4x4 images of `space_to_depth`, unfolded."""
  from condgen_jax.nn.layers import depth_to_space, space_to_depth
  kw = dict(num_classes=10, channels=(8, 16), num_res_blocks=1,
            attention=False)
  patched, plain = unet.UNet(patch_size=2, **kw), unet.UNet(**kw)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  t, labels = jnp.array([0.1, 0.5, 0.9]), jnp.array([0, 4, 10])
  params = patched.init(jax.random.key(1), x, t, labels)
  # Every parameter random, so the zero-initialised output convs count too.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [
      0.3 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
  got = patched.apply(params, x, t, labels)
  want = depth_to_space(plain.apply(params, space_to_depth(x, 2), t, labels),
                        2)
  assert np.abs(np.asarray(want)).max() > 0.1
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unet_rejects_a_patch_size_that_does_not_divide_the_image():
  model = unet.UNet(num_classes=10, channels=(8,), patch_size=3)
  with pytest.raises(ValueError, match="patch_size=3.*28x28"):
    model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), jnp.zeros(1),
               jnp.zeros(1, jnp.int32))


def test_unet_rejects_widths_not_divisible_by_the_groups():
  model = unet.UNet(num_classes=10, channels=(12, 16))
  with pytest.raises(ValueError, match="num_groups=8"):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros(1),
               jnp.zeros(1, jnp.int32))


def test_sinusoidal_embedding():
  t = np.array([0.0, 3.0, 250.0])
  e = unet.sinusoidal_embedding(t, 8)
  freqs = np.exp(-np.log(10_000.0) * np.arange(4) / 4)
  np.testing.assert_allclose(e, np.concatenate(
      [np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], -1),
                             rtol=1e-5, atol=1e-5)


def test_null_label_is_used_at_the_rate_p_uncond():
  labels = jnp.arange(200_000, dtype=jnp.int32) % 10
  out = np.asarray(dt.drop_labels(labels, jax.random.key(0), 0.1, 10))
  dropped = out == 10
  assert abs(dropped.mean() - 0.1) < 0.003  # 4.5 standard errors
  np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])
  none = dt.drop_labels(labels, jax.random.key(0), 0.0, 10)
  np.testing.assert_array_equal(none, labels)


def test_attributes_each_get_an_embedding_with_a_null_row():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  class Embedding(nn.Module):
    @nn.compact
    def __call__(self, labels):
      return unet.condition_embedding((10, 6), labels, 4)

  labels = jnp.array([[7, 0], [3, 5], [10, 6]], jnp.int32)  # last: null
  params = Embedding().init(jax.random.key(0), labels)["params"]
  digit = np.asarray(params["label_embed_0"]["embedding"])
  color = np.asarray(params["label_embed_1"]["embedding"])
  assert digit.shape == (11, 4) and color.shape == (7, 4)
  np.testing.assert_allclose(
      Embedding().apply({"params": params}, labels),
      digit[[7, 3, 10]] + color[[0, 5, 6]], rtol=1e-6)
  model = unet.UNet(num_classes=(10, 6), channels=(8,), num_res_blocks=1,
                    attention=False)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((2, 8, 8, 3)), jnp.zeros(2),
                          jnp.zeros((2, 2), jnp.int32))["params"]
  assert "label_embed" not in shapes
  assert dt.num_classes_of(shapes) == (10, 6)
  label_model = unet.UNet(num_classes=10, channels=(8,), num_res_blocks=1,
                          attention=False)
  assert dt.num_classes_of(jax.eval_shape(
      label_model.init, jax.random.key(0), jnp.zeros((2, 8, 8, 1)),
      jnp.zeros(2), jnp.zeros(2, jnp.int32))["params"]) == 10


def test_a_dropped_attribute_condition_is_dropped_whole():
  rows = np.arange(100_000)
  labels = jnp.asarray(np.stack([rows % 10, rows % 6], 1), jnp.int32)
  out = np.asarray(dt.drop_labels(labels, jax.random.key(0), 0.1, (10, 6)))
  dropped = np.all(out == [10, 6], axis=1)
  assert abs(dropped.mean() - 0.1) < 0.0045  # 4.7 standard errors
  np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])
  # no row is dropped in part
  assert not np.any((out[:, 0] == 10) != (out[:, 1] == 6))


def _fake_model(calls=None):
  """A stand-in for the network: a fixed nonlinear function of (x, t, c);
  `calls` counts evaluations (and their batch sizes) at run time."""

  def model_fn(params, x, t, labels):
    if calls is not None:
      jax.debug.callback(lambda b: calls.append(int(b)), x.shape[0])
    t4 = t[:, None, None, None]
    c4 = labels.astype(jnp.float32)[:, None, None, None]
    return params * jnp.tanh(x) + 0.1 * t4 - 0.05 * c4

  return model_fn


def _np_fake(x, t, c, p=0.7):
  return p * np.tanh(x) + 0.1 * t[:, None, None, None] - \
      0.05 * c.astype(np.float32)[:, None, None, None]


def test_guidance_is_the_formula_in_one_batched_pass():
  calls = []
  x = np.random.default_rng(0).standard_normal((3, 4, 4, 1)).astype(
      np.float32)
  t = np.array([0.2, 0.5, 0.9], np.float32)
  c = np.array([1, 4, 7], np.int32)
  w = 1.5
  out = samplers.guided(_fake_model(calls), w, 10)(0.7, x, t, c)
  jax.effects_barrier()
  cond, uncond = _np_fake(x, t, c), _np_fake(x, t, np.full(3, 10))
  np.testing.assert_allclose(out, (1 + w) * cond - w * uncond, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(samplers.combine_guidance(cond, uncond, w),
                             (1 + w) * cond - w * uncond, rtol=1e-6)
  assert calls == [6]  # one forward pass over [x; x]
  plain = samplers.guided(_fake_model(calls), 0.0, 10)(0.7, x, t, c)
  np.testing.assert_allclose(plain, cond, rtol=1e-5, atol=1e-6)


def test_guidance_on_attributes_drops_the_whole_condition():
  def model_fn(params, x, t, labels):  # depends on both attributes
    c = (labels[:, 0] + 0.1 * labels[:, 1]).astype(jnp.float32)
    return params * jnp.tanh(x) + 0.1 * t[:, None, None, None] - (
        0.05 * c[:, None, None, None])

  def np_model(x, t, labels, p=0.7):
    c = (labels[:, 0] + 0.1 * labels[:, 1]).astype(np.float32)
    return p * np.tanh(x) + 0.1 * t[:, None, None, None] - (
        0.05 * c[:, None, None, None])

  x = np.random.default_rng(1).standard_normal((3, 4, 4, 3)).astype(
      np.float32)
  t = np.array([0.2, 0.5, 0.9], np.float32)
  c = np.array([[7, 0], [3, 5], [0, 2]], np.int32)
  w = 2.0
  out = samplers.guided(model_fn, w, (10, 6))(0.7, x, t, c)
  cond = np_model(x, t, c)
  uncond = np_model(x, t, np.array([[10, 6]] * 3))
  np.testing.assert_allclose(out, (1 + w) * cond - w * uncond, rtol=1e-5,
                             atol=1e-6)


def _np_cosine(t):
  f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
  return np.maximum(f(t) / f(0.0), 1e-5)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddim_step_matches_numpy(clip_x0):
  steps, i = 5, 1
  step = samplers.make_step(_fake_model(), objective="eps", sampler="ddim",
                            steps=steps, alpha_bar_fn=schedules.cosine_alpha_bar,
                            clip_x0=clip_x0)
  x = 2.0 * np.random.default_rng(1).standard_normal((2, 4, 4, 1)).astype(
      np.float32)
  c = np.array([2, 5], np.int32)
  out = step(0.7, x, c, jax.random.key(0), i)
  t, s = 1 - i / steps, 1 - (i + 1) / steps
  ab_t, ab_s = _np_cosine(t), _np_cosine(s)
  eps = _np_fake(x, np.full(2, t), c)
  x0 = (x - np.sqrt(1 - ab_t) * eps) / np.sqrt(ab_t)
  if clip_x0:
    assert np.abs(x0).max() > 1  # the clip matters here
    x0 = np.clip(x0, -1, 1)
    eps = (x - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
  np.testing.assert_allclose(out, np.sqrt(ab_s) * x0 + np.sqrt(1 - ab_s) * eps,
                             rtol=1e-4, atol=1e-5)


def test_ddim_is_deterministic_and_ddpm_is_not():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  c = jnp.array([1, 2])

  steps = {name: jax.jit(samplers.make_step(
      _fake_model(), objective="v", sampler=name, steps=6,
      alpha_bar_fn=schedules.linear_alpha_bar)) for name in ("ddim", "ddpm")}

  def run(sampler, key):
    return np.asarray(samplers.run_steps(
        steps[sampler], 0.7, x, c, jax.random.key(key), sampler=sampler,
        nfe=6))

  np.testing.assert_array_equal(run("ddim", 1), run("ddim", 2))
  assert np.abs(run("ddpm", 1) - run("ddpm", 2)).max() > 1e-3
  np.testing.assert_array_equal(run("ddpm", 1), run("ddpm", 1))


def test_ddpm_step_is_the_posterior_draw():
  rng = np.random.default_rng(2)
  x, x0, noise = (rng.standard_normal((2, 3, 3, 1)).astype(np.float32)
                  for _ in range(3))
  ab_t, ab_s = np.array([0.3, 0.6]), np.array([0.5, 0.9])
  out = samplers.ddpm_step(x, x0, ab_t, ab_s, noise)
  e = lambda a: a[:, None, None, None]
  beta = 1 - e(ab_t / ab_s)
  mean = (np.sqrt(e(ab_s)) * beta / (1 - e(ab_t)) * x0
          + np.sqrt(e(ab_t / ab_s)) * (1 - e(ab_s)) / (1 - e(ab_t)) * x)
  var = beta * (1 - e(ab_s)) / (1 - e(ab_t))
  np.testing.assert_allclose(out, mean + np.sqrt(var) * noise, rtol=1e-5,
                             atol=1e-6)
  last = samplers.ddpm_step(x, x0, ab_t, np.ones(2), noise)
  np.testing.assert_allclose(last, x0, atol=1e-6)  # s = 0: no noise, x0


def test_euler_and_heun_steps_by_hand():
  steps, i = 4, 2
  x = np.random.default_rng(3).standard_normal((2, 3, 3, 1)).astype(
      np.float32)
  c = np.array([0, 9], np.int32)
  t, s = 1 - i / steps, 1 - (i + 1) / steps
  v = lambda y, u: _np_fake(y, np.full(2, u), c)
  euler = samplers.make_step(_fake_model(), objective="flow_matching",
                             sampler="euler", steps=steps)
  np.testing.assert_allclose(euler(0.7, x, c, None, i),
                             x + (s - t) * v(x, t), rtol=1e-5, atol=1e-6)
  heun = samplers.make_step(_fake_model(), objective="flow_matching",
                            sampler="heun", steps=steps)
  v1 = v(x, t)
  v2 = v(x + (s - t) * v1, s)
  np.testing.assert_allclose(heun(0.7, x, c, None, i),
                             x + (s - t) * 0.5 * (v1 + v2), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("sampler,nfe,expected_steps", [
    ("heun", 1, 1), ("heun", 6, 3), ("heun", 7, 4), ("euler", 5, 5),
    ("ddim", 3, 3)])
def test_every_sampler_evaluates_the_model_exactly_nfe_times(
    sampler, nfe, expected_steps):
  calls = []
  objective = "flow_matching" if sampler in ("euler", "heun") else "eps"
  steps = samplers.num_steps(sampler, nfe)
  assert steps == expected_steps
  step = jax.jit(samplers.make_step(
      _fake_model(calls), objective=objective, sampler=sampler, steps=steps,
      alpha_bar_fn=schedules.cosine_alpha_bar), static_argnames="euler")
  x = jnp.ones((2, 3, 3, 1))
  out = samplers.run_steps(step, 0.7, x, jnp.array([1, 2]), jax.random.key(0),
                           sampler=sampler, nfe=nfe)
  jax.block_until_ready(out)
  jax.effects_barrier()
  assert len(calls) == nfe


def test_heun_with_odd_nfe_reaches_t0_with_a_final_euler_step():
  """nfe = 3: a Heun step 1 -> 1/2, then an Euler step 1/2 -> 0."""
  x = np.full((1, 2, 2, 1), 0.3, np.float32)
  c = np.array([3], np.int32)
  step = jax.jit(samplers.make_step(_fake_model(), objective="flow_matching",
                                    sampler="heun", steps=2),
                 static_argnames="euler")
  out = samplers.run_steps(step, 0.7, x, c, None, sampler="heun", nfe=3)
  v = lambda y, u: _np_fake(y, np.full(1, u), c)
  v1 = v(x, 1.0)
  y = x - 0.5 * 0.5 * (v1 + v(x - 0.5 * v1, 0.5))
  np.testing.assert_allclose(out, y - 0.5 * v(y, 0.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides,match", [
    ({"sampler": "heun"}, "'heun' does not fit objective 'eps'"),
    ({"objective": "flow_matching", "sampler": "ddpm"},
     "'ddpm' does not fit objective 'flow_matching'"),
    ({"objective": "x0"}, "objective 'x0'"),
    ({"schedule": "sqrt"}, "schedule 'sqrt'"),
    ({"sampler": "dpm"}, "sampler 'dpm'"),
    ({"guidance_scale": -0.5}, "guidance_scale.*-0.5"),
    ({"guidance_scale": math.inf}, "guidance_scale.*inf"),
    ({"guidance_interval": (5.0, 1.0)},
     r"config.guidance_interval must be \(\).*lo < hi.*got \(5.0, 1.0\)"),
    ({"guidance_interval": (-1.0, math.inf)},
     r"guidance_interval.*got \(-1.0, inf\)"),
    ({"nfe": 0}, "nfe.*0"),
    ({"p_uncond": 1.0}, "p_uncond.*1.0"),
    ({"p_uncond": -0.1}, "p_uncond.*-0.1"),
    ({"learning_rate": 0.0}, "learning_rate.*0.0"),
    ({"learning_rate": math.nan}, "learning_rate.*nan"),
    ({"ema_decay": 1.0}, "ema_decay.*1.0"),
    ({"channels": (12, 16)}, "divisible by config.num_groups=8.*12"),
    ({"num_res_blocks": 0}, "num_res_blocks.*0"),
])
def test_bad_config_values_are_one_clear_error(overrides, match):
  with pytest.raises(ValueError, match=match):
    train.resolve(tiny_config(**overrides))


def test_flags_must_be_booleans():
  for key in ("attention", "clip_x0"):
    with pytest.raises(ValueError, match=f"config.{key} must be True or "
                       "False; got 1"):
      train.resolve(ml_collections.ConfigDict(
          {**tiny_config().to_dict(), key: 1}))


def test_sample_with_checks_its_arguments():
  config = train.resolve(tiny_config())
  state = jax.eval_shape(lambda: dt.create_state(config, (8, 8, 1), 10,
                                                 jax.random.key(0)))
  labels, key = jnp.arange(3), jax.random.key(1)
  with pytest.raises(ValueError, match="'euler' does not fit objective 'eps'"):
    dt.sample_with(config, state, labels, key, (8, 8, 1), sampler="euler")
  with pytest.raises(ValueError, match="nfe.*0"):
    dt.sample_with(config, state, labels, key, (8, 8, 1), nfe=0)
  with pytest.raises(ValueError, match="guidance_scale.*-1"):
    dt.sample_with(config, state, labels, key, (8, 8, 1), guidance_scale=-1)
  with pytest.raises(ValueError, match=r"guidance_interval.*got \(5, 1\)"):
    dt.sample_with(config, state, labels, key, (8, 8, 1),
                   guidance_interval=(5, 1))


def _random_state(config, seed: int, scale: float = 0.2):
  """A tiny U-Net's state with every parameter perturbed by `scale` N(0, 1)
  (its zero-init output layer would make every prediction 0, guided or
  not)."""
  state = jax.jit(lambda k: dt.create_state(config, (8, 8, 1), 10, k))(
      jax.random.key(seed))
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  leaves = [p + scale * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys)]
  return state.replace(params=jax.tree.unflatten(tree, leaves))


# One DDIM step to t = 0 of a v prediction without clipping is x_0 =
# alpha x_1 - sigma v, affine in v, and images are clip((x_0 + 1) / 2, 0,
# 1): a combination (1 + w) a - w b of predictions gives that combination of
# the unclipped samples (same noise), clipped; checked in numpy.
def _one_step(**overrides):
  return train.resolve(tiny_config(objective="v", nfe=1, clip_x0=False,
                                   ema_decay=0.0, **overrides))


def test_sampling_guides_only_within_the_interval():
  s = train.resolve(tiny_config(nfe=3, ema_decay=0.0, guidance_scale=2.0))
  state = _random_state(s, 0)
  labels, key = jnp.arange(4), jax.random.key(1)
  sample = lambda **kw: np.asarray(dt.sample_with(s, state, labels, key,
                                                  (8, 8, 1), **kw))
  guided, plain = sample(), sample(guidance_scale=0.0)
  assert not np.allclose(guided, plain, atol=1e-4)
  # the cosine schedule's sigma~ is at most sqrt((1 - 1e-5) / 1e-5) ~ 316
  np.testing.assert_allclose(sample(guidance_interval=(1e3, math.inf)),
                             plain, atol=1e-6)
  np.testing.assert_allclose(sample(guidance_interval=(0.0, math.inf)),
                             guided, atol=1e-6)
  # sigma~ at t = 1, 2/3, 1/3: ~316, ~1.75, ~0.58: the last two steps guided
  mid = sample(guidance_interval=(0.3, 5.0))
  assert not np.allclose(mid, plain, atol=1e-4)
  assert not np.allclose(mid, guided, atol=1e-4)
  # the same from the config key, through make_sample_fn under jit
  fn = jax.jit(dt.make_sample_fn(options.replace(
      s, guidance_interval=(0.3, 5.0)), (8, 8, 1), 10))
  np.testing.assert_allclose(fn(state, labels, key), mid, atol=1e-6)


def test_autoguidance_samples_with_a_smaller_guide():
  w = 1.5
  s = _one_step(guidance_scale=w)
  gs = _one_step(channels=(16,), num_groups=4)  # another U-Net size
  state, guide_state = _random_state(s, 0, 0.02), _random_state(gs, 1, 0.02)
  guided = autoguidance.guided_state(s, state, gs, guide_state)
  labels, key = jnp.arange(4), jax.random.key(2)
  main = np.asarray(dt.sample_with(s, state, labels, key, (8, 8, 1),
                                   guidance_scale=0.0))
  guide = np.asarray(dt.sample_with(gs, guide_state, labels, key, (8, 8, 1),
                                    guidance_scale=0.0))
  out = np.asarray(dt.sample_with(s, guided, labels, key, (8, 8, 1)))
  for x in (main, guide):  # unclipped
    assert np.all((x > 0) & (x < 1))
  np.testing.assert_allclose(out, np.clip((1 + w) * main - w * guide, 0, 1),
                             atol=1e-6)
  assert not np.allclose(out, main, atol=1e-2)
  assert np.array_equal(
      dt.sample_with(s, guided, labels, key, (8, 8, 1), guidance_scale=0.0),
      main)  # w = 0: the main model exactly
  # outside the interval (t = 1 only: sigma~ ~ 316) the main model
  np.testing.assert_allclose(
      dt.sample_with(s, guided, labels, key, (8, 8, 1),
                     guidance_interval=(0.3, 5.0)), main, atol=1e-6)
  fn = jax.jit(dt.make_sample_fn(s, (8, 8, 1), 10))
  np.testing.assert_allclose(fn(guided, labels, key), out, atol=1e-6)
  assert guided.params is state.params  # the rest reads the main run's


def test_a_guide_must_fit_the_run():
  from conftest import tiny_cvae_config  # pylint: disable=g-import-not-at-top
  s = train.resolve(tiny_config())
  for overrides, match in (
      ({"objective": "v"}, "guide objective='v', run objective='eps'"),
      ({"schedule": "linear"},
       "guide schedule='linear', run schedule='cosine'"),
      ({"dataset": "mnist"}, "guide dataset='mnist', run dataset='digits'")):
    with pytest.raises(ValueError, match=match):
      autoguidance.check_guide(s, train.resolve(tiny_config(**overrides)))
  with pytest.raises(ValueError, match="guide num_classes=7, run "
                     "num_classes=10"):
    autoguidance.check_guide(s, s, 10, 7)
  cvae = train.resolve(tiny_cvae_config())
  with pytest.raises(ValueError, match="guide model='cvae', run "
                     "model='diffusion'"):
    autoguidance.check_guide(s, cvae)
  with pytest.raises(ValueError, match="does not apply to model 'cvae'"):
    autoguidance.check_guide(cvae, s)


@pytest.mark.parametrize("objective,sampler,channels,recipe", [
    ("eps", "ddim", (8, 16), {}), ("v", "ddpm", (8,), {}),
    ("flow_matching", "heun", (8,),
     {"time_sampling": "logit_normal", "loss_weighting": "min_snr"}),
    ("edm", "dpmpp_2m", (8,), {"time_sampling": "log_normal"})])
def test_runner_trains_then_samples(tmp_path, digits, objective, sampler,
                                    channels, recipe):
  config = tiny_config(objective=objective, sampler=sampler,
                       channels=channels, attention=len(channels) > 1,
                       **recipe)
  state = train.train_and_evaluate(config, tmp_path, digits)
  assert int(state.step) == 6
  assert (tmp_path / "samples" / "step_00000006.png").exists()
  config = train.resolve(config)
  sample = dt.make_sample_fn(config, (8, 8, 1), 10)
  x = sample(state, jnp.arange(20) % 10, jax.random.key(0))
  assert x.shape == (20, 8, 8, 1) and x.dtype == jnp.float32
  assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
  np.testing.assert_array_equal(x, sample(state, jnp.arange(20) % 10,
                                          jax.random.key(0)))
  if objective == "flow_matching":
    other = dt.sample_with(config, state, jnp.arange(4), jax.random.key(0),
                           (8, 8, 1), sampler="euler", nfe=3,
                           guidance_scale=0.0)
    assert other.shape == (4, 8, 8, 1)
    assert 0.0 <= float(other.min()) and float(other.max()) <= 1.0
  out = dt.evaluate(config, state, digits, jax.random.key(0))
  assert out["num_test_examples"] == 360 and np.isfinite(out["test_loss"])
  assert out == dt.evaluate(config, state, digits, jax.random.key(0))


@pytest.mark.parametrize("objective", ["eps", "v", "edm"])
def test_loss_weighting_multiplies_each_example_s_loss(objective):
  """min_snr: the loss of each example times min(SNR, 5) / SNR (eps),
  / (SNR + 1) (v), / lambda(sigma) (edm), SNR of the cosine schedule in
  numpy; 'edm' on objective 'edm' is its own loss."""
  s = train.resolve(tiny_config(objective=objective))
  model = dt.make_model(s, 10)
  rng = np.random.RandomState(0)
  x0 = rng.uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  eps = rng.randn(4, 8, 8, 1).astype(np.float32)
  t = np.array([0.05, 0.3, 0.6, 0.95], np.float32)
  labels = jnp.arange(4)
  params = model.init(jax.random.key(0), x0, t, labels)["params"]
  loss = lambda **kw: np.asarray(dt.per_example_loss(
      options.replace(s, **kw), model, params, x0, labels, t, eps),
      np.float64)
  ab = _np_cosine(t.astype(np.float64))
  snr = ab / (1 - ab)
  lam = (1 / snr + 0.25) / (0.25 / snr)
  scale = {"eps": snr, "v": snr + 1, "edm": lam}[objective]
  np.testing.assert_allclose(loss(loss_weighting="min_snr"),
                             loss() * np.minimum(snr, 5.0) / scale,
                             rtol=1e-4)
  np.testing.assert_allclose(loss(loss_weighting="edm"),
                             loss() * lam / scale, rtol=1e-4)


def test_resume_is_exact(tmp_path, digits):
  """8 steps straight == 4 steps, stop, resume to 8: bit-identical params,
  EMA and optimiser state."""
  config = tiny_config(num_steps=8, checkpoint_every=4, log_every=4)
  straight = train.train_and_evaluate(config, tmp_path / "a", digits)
  train.train_and_evaluate(tiny_config(num_steps=4, checkpoint_every=4,
                                       log_every=4), tmp_path / "b", digits)
  resumed = train.train_and_evaluate(config, tmp_path / "b", digits)
  assert int(resumed.step) == 8
  for a, b in zip(jax.tree.leaves((straight.params, straight.ema_params,
                                   straight.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.ema_params,
                                   resumed.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(straight.params), jax.tree.leaves(straight.ema_params)))


def test_nan_stops_the_run_and_keeps_the_finite_checkpoint(tmp_path, digits,
                                                           monkeypatch):
  original = dt.make_train_step

  def make(*args):
    step_fn = original(*args)

    def train_step(state, batch, rng):  # the update from step 4 writes NaN
      new, metrics = step_fn(state, batch, rng)
      return new.replace(params=jax.tree.map(
          lambda p: jnp.where(state.step == 4, jnp.nan, p), new.params)), \
          metrics
    return train_step
  monkeypatch.setattr(dt, "make_train_step", make)
  config = tiny_config(num_steps=9, checkpoint_every=3, log_every=3)
  with pytest.raises(FloatingPointError,
                     match=r"non-finite \w+=nan at step 6 \(steps 4-6"):
    train.train_and_evaluate(config, tmp_path, digits)
  mngr = checkpointing.manager(tmp_path / "checkpoints", read_only=True)
  assert mngr.all_steps() == [3]


def test_periodic_evaluation_keeps_the_best_checkpoint(tmp_path, digits):
  config = tiny_config(num_steps=6, eval_every=3, eval_num_per_class=2,
                       best_metric="test_loss", nfe=2)
  train.train_and_evaluate(config, tmp_path, digits)
  evals = [json.loads(l) for l in
           (tmp_path / "eval_metrics.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals] == [3, 6]
  best = min(evals, key=lambda e: e["eval/test_loss"])["step"]
  assert sorted(int(p.name) for p in (tmp_path / "best").iterdir()
                if p.name.isdigit()) == [best]
  assert {"eval/class_accuracy", "eval/fid",
          "eval/test_loss"} <= set(evals[-1])
