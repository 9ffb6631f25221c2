"""Tests of condgen_jax.families.gan: the runner's interface for GANs.

Tiny shapes (8x8x1, batch 16, widths 8). The sweeps run eagerly: across many
configs that is faster on CPU than compiling each train step.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from condgen_jax.data import datasets as data_lib
from condgen_jax.losses import gan_objectives
from condgen_jax.families import gan as gan_training
from condgen_jax.runner import train

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def make_config(model="cgan_conv", **kwargs):
  c = ml_collections.ConfigDict({
      "model": model, "gan_loss": "non_saturating", "z_dim": 8, "g_width": 8,
      "d_width": 8, "mbd_kernels": 4, "mbd_kernel_dim": 3,
      "vbn_batch_size": 8})
  c.update(kwargs)
  return train.resolve(c)


def fake_batch(key=jax.random.key(1), size=16):
  k1, k2 = jax.random.split(key)
  return {"image": jax.random.uniform(k1, (size,) + IMAGE_SHAPE),
          "label": jax.random.randint(k2, (size,), 0, NUM_CLASSES,
                                      dtype=jnp.int32)}


def run_steps(config, num_steps=1, jit=False):
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  step = gan_training.make_train_step(config, IMAGE_SHAPE, NUM_CLASSES)
  if jit:
    step = jax.jit(step)
  metrics = None
  for i in range(num_steps):
    state, metrics = step(state, fake_batch(jax.random.key(i)),
                          jax.random.key(42))
  return state, metrics


def assert_finite_metrics(metrics, expected_keys=()):
  for key in ("loss", "d_loss", "g_loss", "d_adv_loss", "g_adv_loss", "d_real",
              "d_fake") + tuple(expected_keys):
    assert key in metrics, key
  for key, value in metrics.items():
    assert value.shape == () and value.dtype == jnp.float32, key
    assert np.isfinite(value), (key, value)


@pytest.mark.parametrize("gan_loss", tuple(gan_objectives.BUILTINS))
def test_every_gan_loss_trains(gan_loss):
  extra = {"wasserstein_gp": ("gradient_penalty", "wasserstein_estimate"),
           "wasserstein": ("wasserstein_estimate",)}.get(gan_loss, ())
  smoothing = 0.1 if gan_loss in ("minimax", "non_saturating") else 0.0
  state, metrics = run_steps(make_config(gan_loss=gan_loss,
                                         real_label_smoothing=smoothing))
  assert_finite_metrics(metrics, extra)
  assert int(state.step) == 1 and state.step.dtype == jnp.int32


@pytest.mark.parametrize("model,kwargs,extra", [
    ("cgan_mlp", {"z_dim": 100, "feature_matching": 1.0},
     ("feature_matching",)),
    ("cgan_conv", {"g_conditioning": "film", "d_conditioning": "film",
                   "n_critic": 2, "ema_decay": 0.9}, ()),
    ("acgan", {"gan_loss": "hinge", "minibatch_discrimination": True},
     ("d_real_class_loss", "d_fake_class_loss", "g_fake_class_loss",
      "real_class_acc", "fake_class_acc")),
    ("acgan", {"virtual_batch_norm": True, "d_conditioning": "projection"},
     ("real_class_acc",)),
])
def test_every_model_trains(model, kwargs, extra):
  state, metrics = run_steps(make_config(model, **kwargs))
  assert_finite_metrics(metrics, extra)
  if kwargs.get("ema_decay"):
    # One EMA update, its decay warmed up to min(0.9, 2 / 11):
    # ema = 2/11 * init + 9/11 * new params.
    init = gan_training.create_state(make_config(model, **kwargs),
                                     IMAGE_SHAPE, NUM_CLASSES,
                                     jax.random.key(0))
    chex.assert_trees_all_close(
        state.ema_params,
        jax.tree.map(lambda a, b: 2 / 11 * a + 9 / 11 * b, init.g_params,
                     state.g_params), rtol=1e-5, atol=1e-6)


def test_train_step_compiles_once_and_donates():
  config = make_config("acgan", gan_loss="wasserstein_gp", spectral_norm=True)
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  u_before = np.asarray(state.d_stats["sn_conv0"]["conv0/kernel/u"])
  step = gan_training.make_train_step(config, IMAGE_SHAPE, NUM_CLASSES)
  step = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
  for i in range(3):
    state, metrics = step(state, fake_batch(jax.random.key(i)),
                          jax.random.key(7))
  assert int(state.step) == 3
  assert_finite_metrics(metrics, ("gradient_penalty",))
  # Spectral norm's power iteration advanced during the D updates.
  assert not np.allclose(state.d_stats["sn_conv0"]["conv0/kernel/u"],
                         u_before)


def test_step_rng_is_folded_with_the_step():
  config = make_config("cgan_mlp", z_dim=100)
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  step = gan_training.make_train_step(config, IMAGE_SHAPE, NUM_CLASSES)
  batch, rng = fake_batch(), jax.random.key(3)
  _, m1 = step(state, batch, rng)
  _, m2 = step(state.replace(step=state.step + 1), batch, rng)
  _, m3 = step(state, batch, rng)
  assert float(m1["d_loss"]) == float(m3["d_loss"])
  assert float(m1["d_loss"]) != float(m2["d_loss"])


def _class_head_changed(**kwargs):
  config = make_config("acgan", **kwargs)
  before = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                     jax.random.key(0))
  after, _ = run_steps(config)
  head = lambda s: s.d_params["class_head"]
  return not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(head(before)), jax.tree.leaves(head(after))))


def test_d_fake_class_false_keeps_fake_class_gradient_out_of_d():
  # real_class_weight=0 and d_fake_class=False: no class term reaches D, so
  # Adam's update of the class head is exactly zero.
  assert not _class_head_changed(real_class_weight=0.0, d_fake_class=False)
  # InfoGAN-style (term on generated samples only) does train the head.
  assert _class_head_changed(real_class_weight=0.0, d_fake_class=True)


def test_tacgan_step_trains_the_twin_head_and_sums_g_terms():
  config = make_config("acgan", twin_class_head=True, twin_class_weight=0.5,
                       d_fake_class=False)
  before = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                     jax.random.key(0))
  after, m = run_steps(config, jit=True)
  twin = lambda s: jax.tree.leaves(s.d_params["twin_class_head"])
  assert not all(np.array_equal(a, b)
                 for a, b in zip(twin(before), twin(after)))
  # G minimises adv + fake_class_weight * CE - twin_class_weight * CE_twin;
  # the metric g_twin_class_loss is the (negative) term itself.
  assert float(m["g_twin_class_loss"]) < 0 < float(m["d_twin_class_loss"])
  np.testing.assert_allclose(
      m["g_loss"], m["g_adv_loss"] + m["g_fake_class_loss"]
      + 0.5 * m["g_twin_class_loss"], rtol=1e-5)
  assert 0.0 <= float(m["fake_twin_class_acc"]) <= 1.0


def test_sample_latents():
  labels = jnp.zeros((64,), jnp.int32)
  key = jax.random.key(5)
  plain = train.resolve(make_config("acgan"))
  z, fake_labels, codes = gan_training.sample_latents(plain, key, labels, 10)
  # the AC-GAN default: exactly the old noise, the data's labels, no codes
  np.testing.assert_array_equal(z, gan_training.sample_z(key, (64, 8),
                                                         "uniform"))
  assert fake_labels is labels and codes is None
  info = train.resolve(make_config(
      "acgan", code_prior="uniform", continuous_codes=2))
  z, fake_labels, codes = gan_training.sample_latents(info, key, labels, 10)
  assert z.shape == (64, 10) and codes.shape == (64, 2)
  np.testing.assert_array_equal(z[:, 8:], codes)
  assert np.all(np.abs(codes) <= 1) and np.std(codes) > 0.4  # U[-1, 1]
  assert set(np.unique(fake_labels)) > {0}  # drawn, not the given zeros
  assert np.all((fake_labels >= 0) & (fake_labels < 10))
  _, kept, _ = gan_training.sample_latents(info, key, labels, 10,
                                           keep_labels=True)
  assert kept is labels


def test_infogan_training_reads_no_labels():
  from condgen_jax.configs import infogan  # pylint: disable=g-import-not-at-top
  config = infogan.get_config()
  # the config weighs both terms 1 (the authors'); 0.1 tells them apart
  assert config.continuous_code_weight == 1.0
  config.update(z_dim=6, g_width=8, d_width=8, q_hidden=8, g_hidden=8,
                d_hidden=8, continuous_code_weight=0.1)
  config = train.resolve(config)
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  step = jax.jit(gan_training.make_train_step(config, IMAGE_SHAPE,
                                              NUM_CLASSES))
  batch = fake_batch()
  relabelled = dict(batch, label=(batch["label"] + 3) % NUM_CLASSES)
  s1, m1 = step(state, batch, jax.random.key(2))
  s2, m2 = step(state, relabelled, jax.random.key(2))
  for a, b in zip(jax.tree.leaves((s1.g_params, s1.d_params)),
                  jax.tree.leaves((s2.g_params, s2.d_params))):
    np.testing.assert_array_equal(a, b)
  # G and Q minimise adv + categorical CE + 0.1 x continuous-code NLL
  np.testing.assert_allclose(
      m1["g_loss"], m1["g_adv_loss"] + m1["g_fake_class_loss"]
      + 0.1 * m1["g_code_loss"], rtol=1e-5)
  assert float(m1["d_code_loss"]) > 0.5 * np.log(2 * np.pi) * 2
  assert float(m1["d_loss"]) == pytest.approx(
      float(m1["d_adv_loss"] + m1["d_fake_class_loss"]
            + 0.1 * m1["d_code_loss"]), rel=1e-5)
  # sampling asks for given codes: sample == generate at the same latents
  sample = gan_training.make_sample_fn(config, IMAGE_SHAPE, NUM_CLASSES)
  generate = gan_training.make_generate_fn(config, IMAGE_SHAPE, NUM_CLASSES)
  codes = jnp.full((4,), 7, jnp.int32)
  z, kept, _ = gan_training.sample_latents(
      train.resolve(config), jax.random.key(9), codes, NUM_CLASSES,
      keep_labels=True)
  np.testing.assert_array_equal(sample(s1, codes, jax.random.key(9)),
                                generate(s1, z, kept))
  assert gan_training.evaluate(config, s1, None, None) == {}


ATTRIBUTE_SIZES = (10, 6)  # digit, color


def attribute_batch(size=16):
  rows = np.arange(size)
  return {"image": jax.random.uniform(jax.random.key(1),
                                      (size,) + IMAGE_SHAPE),
          "label": jnp.asarray(np.stack([rows % 10, rows % 6], 1),
                               jnp.int32)}


def test_acgan_trains_and_samples_on_attributes():
  # compiled (eagerly, the first calls of new shapes are slower)
  config = make_config("acgan", twin_class_head=True)
  state = jax.jit(lambda key: gan_training.create_state(
      config, IMAGE_SHAPE, ATTRIBUTE_SIZES, key))(jax.random.key(0))
  step = jax.jit(gan_training.make_train_step(config, IMAGE_SHAPE,
                                              ATTRIBUTE_SIZES))
  state, m = step(state, attribute_batch(), jax.random.key(2))
  assert_finite_metrics(m, (
      "real_class_acc", "fake_class_acc", "real_class_acc_0",
      "real_class_acc_1", "fake_class_acc_0", "fake_class_acc_1",
      "fake_twin_class_acc", "d_twin_class_loss"))
  # a joint hit needs both attributes right
  assert float(m["real_class_acc"]) <= min(float(m["real_class_acc_0"]),
                                           float(m["real_class_acc_1"]))
  sample = jax.jit(gan_training.make_sample_fn(config, IMAGE_SHAPE,
                                               ATTRIBUTE_SIZES))
  red7 = jnp.array([[7, 0], [7, 0]], jnp.int32)
  x = sample(state, red7, jax.random.key(3))
  assert x.shape == (2,) + IMAGE_SHAPE
  # the color reaches G: the same z in another color gives other pixels
  other = sample(state, red7.at[:, 1].set(2), jax.random.key(3))
  assert np.abs(np.asarray(x) - np.asarray(other)).max() > 1e-6


def test_condition_batch_cycles_through_classes_or_combinations():
  # the virtual-batch-norm reference conditions: row-major combinations
  labels = jnp.arange(8, dtype=jnp.int32)
  np.testing.assert_array_equal(
      gan_training.condition_batch(ATTRIBUTE_SIZES, labels),
      [[0, c] for c in range(6)] + [[1, 0], [1, 1]])
  np.testing.assert_array_equal(
      gan_training.condition_batch(ATTRIBUTE_SIZES, labels + 59),
      [[9, 5]] + [[0, c] for c in range(6)] + [[1, 0]])
  np.testing.assert_array_equal(gan_training.condition_batch(3, labels),
                                [0, 1, 2, 0, 1, 2, 0, 1])


def test_infogan_codes_are_refused_with_attributes():
  from condgen_jax.configs import infogan  # pylint: disable=g-import-not-at-top
  config = infogan.get_config()
  config.condition_kind = "attributes"
  with pytest.raises(ValueError, match=r"condition_kind='attributes' does "
                     r"not take code_prior='uniform' or continuous_codes=2 "
                     r"\(InfoGAN's codes\)"):
    train.resolve(config)
  with pytest.raises(ValueError, match="code_prior='uniform'"):
    make_config("acgan", code_prior="uniform", condition_kind="attributes")
  config.condition_kind = "label"
  train.resolve(config)


def test_acgan_evaluate_reports_each_attribute_and_the_joint_accuracy():
  dataset = data_lib.conditioned_on_attributes(
      data_lib.load_dataset("colored_digits"))
  shape = dataset.image_shape
  config = make_config("acgan")
  state = jax.jit(lambda key: gan_training.create_state(
      config, shape, dataset.num_classes, key))(jax.random.key(0))
  out = gan_training.evaluate(config, state, dataset, None, batch_size=200)
  # the same accuracies from D's heads, by numpy
  players = gan_training._Players(config, shape, dataset.num_classes)
  images, labels = dataset.split("test")
  x = 2.0 * data_lib.to_float(images, dataset.max_value) - 1.0
  d_out, _ = jax.jit(functools.partial(players.discriminate, train=False))(
      state.d_params, state.d_stats, x, labels)
  hits = np.stack([np.argmax(np.asarray(l), -1) == labels[:, a]
                   for a, l in enumerate(d_out["class_logits"])], 1)
  assert out["num_test_examples"] == len(labels) == 360
  np.testing.assert_allclose(out["test_digit_acc"], hits[:, 0].mean())
  np.testing.assert_allclose(out["test_color_acc"], hits[:, 1].mean())
  np.testing.assert_allclose(out["test_class_acc"], hits.all(1).mean())


def test_cgan_mlp_real_images_follow_the_generator_range():
  # D must see real and generated images in the same range.
  for g_output, tanh in (("sigmoid", False), ("tanh", True)):
    s = train.resolve(make_config("cgan_mlp", g_output=g_output))
    assert gan_training.tanh_output(s) is tanh
  assert gan_training.tanh_output(train.resolve(
      make_config("cgan_conv")))


def test_sample_fn_range_and_shape():
  for model, kwargs in (("cgan_mlp", {"z_dim": 100}),
                        ("cgan_mlp", {"g_output": "tanh"}),
                        ("cgan_conv", {"ema_decay": 0.99}),
                        ("acgan", {"virtual_batch_norm": True})):
    config = make_config(model, **kwargs)
    state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                      jax.random.key(0))
    sample = gan_training.make_sample_fn(config, IMAGE_SHAPE, NUM_CLASSES)
    x = sample(state, jnp.arange(5, dtype=jnp.int32), jax.random.key(1))
    assert x.shape == (5,) + IMAGE_SHAPE and x.dtype == jnp.float32
    assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))
    assert np.std(np.asarray(x)) > 0


@pytest.mark.parametrize("kwargs,message", [
    ({"gan_loss": "vanilla"}, "Unknown gan_loss 'vanilla'; expected one of"),
    ({"gan_loss": "no.such_module:loss"}, "does not import"),
    ({"z_prior": "cauchy"}, "Unknown z_prior 'cauchy'"),
    ({"optimizer": "lbfgs"}, "Unknown optimizer 'lbfgs'"),
    ({"architecture": "rnn"}, "Unknown architecture 'rnn'"),
    ({"model": "cgan_conv", "d_conditioning": "none"},
     "Unknown d_conditioning 'none'"),
    ({"n_critic": 0}, "n_critic"),
    ({"ema_decay": 1.0}, r"ema_decay must be a finite number in \[0.0, 1.0\)"),
    ({"gan_loss": "hinge", "real_label_smoothing": 0.1},
     "applies to gan_loss 'minimax' or 'non_saturating' only"),
    ({"gan_loss": "wasserstein", "clip_value": 0.0},
     "clip_value must be finite and > 0; got 0.0"),
    ({"fake_class_weight": -1.0},
     "fake_class_weight must be a finite number >= 0.0; got -1.0"),
    ({"augment": "crop"}, "Unknown augment 'crop'; expected one of"),
    ({"augment_policy": "color,flip"}, "Unknown augment_policy"),
    ({"ada_target": 1.5}, r"ada_target must be a finite number in \[0.0, "
     r"1.0\]"),
    ({"class_loss": "d2d_ce"}, "class_loss='d2d_ce' needs class_head=True"),
])
def test_config_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    gan_training.create_state(make_config(**kwargs), IMAGE_SHAPE,
                              NUM_CLASSES, jax.random.key(0))


def test_evaluate_is_empty_for_cgan():
  config = make_config("cgan_conv")
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  assert gan_training.evaluate(config, state, None, jax.random.key(0)) == {}


@pytest.mark.slow
def test_acgan_class_head_beats_chance_on_digits():
  dataset = data_lib.load_dataset("digits")
  config = make_config("acgan", d_width=16, d_learning_rate=1e-3)
  images = jnp.asarray(data_lib.to_float(dataset.train_images[:512], 16.0))
  labels = jnp.asarray(dataset.train_labels[:512])
  state = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  step = jax.jit(gan_training.make_train_step(config, IMAGE_SHAPE,
                                              NUM_CLASSES),
                 donate_argnums=0)
  for i in range(100):
    idx = jax.random.choice(jax.random.key(i), 512, (32,), replace=False)
    state, metrics = step(state, {"image": images[idx], "label": labels[idx]},
                          jax.random.key(1))
  assert_finite_metrics(metrics, ("real_class_acc",))
  result = gan_training.evaluate(config, state, dataset, jax.random.key(2))
  assert result["num_test_examples"] == len(dataset.test_labels)
  assert result["test_class_acc"] > 0.3, result


def test_r1_penalty_enters_the_discriminator_loss_with_gamma_over_two():
  _, plain = run_steps(make_config("cgan_mlp"), num_steps=1)
  _, r1 = run_steps(make_config("cgan_mlp", r1_gamma=4.0), num_steps=1)
  assert "r1_penalty" not in plain and float(r1["r1_penalty"]) > 0
  np.testing.assert_allclose(
      r1["d_loss"], r1["d_adv_loss"] + 2.0 * r1["r1_penalty"], rtol=1e-6)
  np.testing.assert_allclose(r1["d_adv_loss"], plain["d_adv_loss"],
                             rtol=1e-6)  # the same first D forward pass


def test_sgd_optimizer_follows_the_papers_decay():
  config = make_config("cgan_mlp", optimizer="sgd", g_learning_rate=0.1,
                       d_learning_rate=0.1, momentum=0.5)
  state, metrics = run_steps(config, num_steps=2)
  assert_finite_metrics(metrics)
  s = train.resolve(config)
  tx = gan_training._optimizer(s, 0.1)
  params = {"w": jnp.ones(())}
  opt_state = tx.init(params)
  grads = {"w": jnp.ones(())}
  updates, opt_state = tx.update(grads, opt_state, params)
  np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)  # step 0: lr 0.1


def test_create_state_applies_the_init_to_both_players():
  flax_state = gan_training.create_state(make_config("acgan"), IMAGE_SHAPE,
                                         NUM_CLASSES, jax.random.key(0))
  dcgan = gan_training.create_state(make_config("acgan", init="dcgan"),
                                    IMAGE_SHAPE, NUM_CLASSES,
                                    jax.random.key(0))
  for name in ("g_params", "d_params"):
    before = jax.tree_util.tree_leaves_with_path(getattr(flax_state, name))
    after = dict(jax.tree_util.tree_leaves_with_path(getattr(dcgan, name)))
    kernels = [np.asarray(after[p]).ravel() for p, _ in before
               if p[-1].key == "kernel"]
    assert kernels, name
    drawn = np.concatenate(kernels)
    assert abs(drawn.std() - 0.02) < 0.002, (name, drawn.std())
    for path, leaf in before:  # biases are the layers' own (zeros)
      if path[-1].key == "bias":
        np.testing.assert_array_equal(after[path], leaf)
  # the default keeps the layers' initialisers: LeCun normal, not 0.02
  d_conv = np.asarray(flax_state.d_params["conv0"]["kernel"])
  assert d_conv.std() > 0.1


def test_code_augmentation_changes_only_the_class_term_on_fakes():
  # The warped pass feeds the class term on generated samples alone: D's
  # other terms, and the batch statistics, are those of the plain step.
  kwargs = dict(code_prior="uniform", continuous_codes=2,
                real_class_weight=0.0, d_norm="batch")
  plain_state, plain = run_steps(make_config("acgan", **kwargs), jit=True)
  warped_state, warped = run_steps(
      make_config("acgan", code_augmentation=True, **kwargs), jit=True)
  for key in ("d_adv_loss", "d_code_loss", "d_real", "d_fake"):
    assert float(plain[key]) == float(warped[key]), key
  assert abs(float(plain["d_fake_class_loss"])
             - float(warped["d_fake_class_loss"])) > 1e-4
  for a, b in zip(jax.tree.leaves(plain_state.d_stats),
                  jax.tree.leaves(warped_state.d_stats)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.leaves(plain_state.d_stats)  # batch norm has statistics


# ----------------------------------------------------------------------------
# Augmentation and regularisers (docs/gan_quality.md).


def test_ada_at_p_zero_is_the_plain_step_and_diffaugment_changes_both_players():
  plain_state, plain = run_steps(make_config("cgan_conv"))
  ada_state, ada = run_steps(make_config("cgan_conv", augment="ada"))
  # p starts at 0: every op passes the images through unchanged
  for key in ("d_adv_loss", "g_adv_loss", "d_real", "d_fake"):
    assert float(plain[key]) == float(ada[key]), key
  assert isinstance(ada_state, gan_training.RegularizedGANState)
  assert not isinstance(plain_state, gan_training.RegularizedGANState)
  assert float(ada["ada_p"]) == 0.0  # no adjustment before ada_interval
  assert float(ada_state.extras["ada_count"]) == 16
  _, diff = run_steps(make_config("cgan_conv", augment="diffaugment"))
  assert float(diff["d_real"]) != float(plain["d_real"])
  assert float(diff["g_adv_loss"]) != float(plain["g_adv_loss"])  # G too


def test_real_and_fake_batches_get_independent_augmentation_draws():
  config = make_config("cgan_conv", augment="diffaugment")
  step = gan_training._GANStep(config, IMAGE_SHAPE, NUM_CLASSES)
  x = jnp.ones((8,) + IMAGE_SHAPE)
  keys = jax.random.split(jax.random.key(0), 3)  # as d_loss' keys[0], [1]
  real, fake = step.augment(keys[0], x, None), step.augment(keys[1], x, None)
  assert not np.array_equal(real, fake)
  g = jax.grad(lambda im: jnp.sum(step.augment(keys[1], im, None)))(x)
  assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_regularisers_enter_the_discriminator_loss_with_their_weights():
  config = make_config("cgan_conv", r2_gamma=4.0, lecam_weight=0.5,
                       bcr_weight=2.0, gan_loss="relativistic_pairing")
  state, m = run_steps(config, num_steps=2, jit=True)
  assert_finite_metrics(m, ("r2_penalty", "lecam_penalty", "bcr_penalty",
                            "lecam_real", "lecam_fake"))
  np.testing.assert_allclose(
      m["d_loss"], m["d_adv_loss"] + 2.0 * m["r2_penalty"]
      + 0.5 * m["lecam_penalty"] + 2.0 * m["bcr_penalty"], rtol=1e-5)
  assert float(m["r2_penalty"]) > 0 and float(m["bcr_penalty"]) > 0
  # the EMAs are in the state, as the last D update left them
  assert float(state.extras["lecam_real"]) == float(m["lecam_real"])


def test_lecam_anchors_start_at_the_first_batch_then_decay():
  config = make_config("cgan_conv", lecam_weight=1.0, lecam_decay=0.5)
  step = gan_training._GANStep(config, IMAGE_SHAPE, NUM_CLASSES)
  extras = {"lecam_real": jnp.float32(1.0), "lecam_fake": jnp.float32(-1.0)}
  real, fake = {"logit": jnp.array([2.0, 4.0])}, {"logit": jnp.array([0.0])}
  first = step.lecam_anchors(extras, real, fake, jnp.bool_(True))
  later = step.lecam_anchors(extras, real, fake, jnp.bool_(False))
  assert [float(a) for a in first] == [3.0, 0.0]
  assert [float(a) for a in later] == [2.0, -0.5]


def test_d2d_ce_head_trains_and_reports_class_accuracy():
  config = make_config("acgan", class_loss="d2d_ce", d2d_embed_dim=8)
  before = gan_training.create_state(config, IMAGE_SHAPE, NUM_CLASSES,
                                     jax.random.key(0))
  after, m = run_steps(config)
  assert_finite_metrics(m, ("d_real_class_loss", "g_fake_class_loss",
                            "real_class_acc"))
  head = lambda s: jax.tree.leaves(s.d_params[gan_training.D2D_HEAD])
  assert not all(np.array_equal(a, b) for a, b in zip(head(before),
                                                       head(after)))


def test_new_keys_train_on_digits_through_the_runner(tmp_path, digits):
  import json  # pylint: disable=g-import-not-at-top
  from condgen_jax.configs import acgan  # pylint: disable=g-import-not-at-top
  c = acgan.get_config()
  c.update(dict(
      dataset="digits", batch_size=8, num_steps=4, log_every=2,
      checkpoint_every=4, sample_every=0, samples_per_class=1, z_dim=8,
      g_width=8, d_width=8, augment="ada", ada_interval=1, ada_target=0.0,
      ada_kimg=1.0, lecam_weight=0.3, bcr_weight=1.0, r2_gamma=0.1,
      gan_loss="relativistic_pairing", class_loss="d2d_ce",
      d2d_embed_dim=8))
  state = train.train_and_evaluate(c, tmp_path, digits)
  assert int(state.step) == 4
  records = [json.loads(l) for l in
             (tmp_path / "metrics.jsonl").read_text().splitlines()]
  last = records[-1]
  for key in ("d_adv_loss", "g_adv_loss", "r2_penalty", "lecam_penalty",
              "bcr_penalty", "d_real_class_loss", "ada_p"):
    assert np.isfinite(last[key]), key
  p = float(state.extras["ada_p"])
  assert 0.0 <= p <= 1.0 and p == pytest.approx(last["ada_p"])
  # ada_target=0: p moves by 8 / 1000 per step, up or down (from 0: up
  # unless no D(real) was positive)
  assert p > 0.0 or last["ada_rt"] <= 0.0
  # the run resumes from its checkpoint, extras included
  _, restored, step = train.restore_run(tmp_path, dataset=digits)
  assert step == 4
  assert float(restored.extras["ada_p"]) == p


def test_r3gan_config_trains_samples_and_refuses_class_heads(tmp_path,
                                                            digits):
  from condgen_jax.configs import r3gan  # pylint: disable=g-import-not-at-top
  c = r3gan.get_config()
  c.update(dict(dataset="digits", batch_size=8, num_steps=3, log_every=3,
                checkpoint_every=3, sample_every=0, samples_per_class=1,
                z_dim=8, r3gan_g_widths=(16, 16, 16),
                r3gan_d_widths=(16, 16, 16), r3gan_features=16))
  s = train.resolve(c)
  assert (s.architecture, s.gan_loss) == ("r3gan", "relativistic_pairing")
  assert gan_training.has_convolutions(s)
  state = train.train_and_evaluate(c, tmp_path, digits)
  assert int(state.step) == 3
  assert "block2_0" in state.g_params and "embed" in state.d_params
  x = gan_training.make_sample_fn(s, (8, 8, 1), 10)(
      state, jnp.arange(10), jax.random.key(0))
  assert x.shape == (10, 8, 8, 1) and np.isfinite(np.asarray(x)).all()
  c.class_head = True
  with pytest.raises(ValueError, match="r3gan.*class_head=True"):
    train.resolve(c)
