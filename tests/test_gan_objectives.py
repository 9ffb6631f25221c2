"""GAN objectives as objects: built-ins by name, user objectives by import
path (here: one defined in this module, trained through the CLI)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from condgen_jax.losses import gan_objectives

ROOT = pathlib.Path(__file__).resolve().parents[1]


def relativistic_average_hinge(s):
  """RaHinge (Jolicoeur-Martineau 2019, sec. 4.2), defined outside the
  library: both losses read both discriminator outputs."""
  del s  # the GAN settings; this loss has no keys of its own

  def d_loss(real, fake):
    r, f = real["logit"], fake["logit"]
    return (jax.nn.relu(1.0 - (r - jnp.mean(f)))
            + jax.nn.relu(1.0 + (f - jnp.mean(r))))

  return gan_objectives.GANObjective(
      discriminator_loss=d_loss,
      generator_loss=lambda real, fake: d_loss(fake, real),
      generator_needs_real=True)


CONSTANT = gan_objectives.GANObjective(
    discriminator_loss=lambda real, fake: jnp.zeros_like(real["logit"]),
    generator_loss=lambda real, fake: -fake["logit"])


def not_an_objective(s):
  del s
  return 42


def _config(**kw):
  """The GAN settings of a cgan_conv config with these keys."""
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  return train.resolve(ml_collections.ConfigDict(
      {"model": "cgan_conv", **kw}))


def test_builtins_by_name_and_their_parts():
  real = {"logit": jnp.array([2.0, -1.0])}
  fake = {"logit": jnp.array([0.5, 3.0])}
  ns = gan_objectives.get_objective(_config(gan_loss="non_saturating"))
  np.testing.assert_allclose(ns.generator_loss(None, fake),
                             np.log1p(np.exp(-np.array([0.5, 3.0]))),
                             rtol=1e-6)
  wgan = gan_objectives.get_objective(_config(gan_loss="wasserstein",
                                              clip_value=0.5))
  assert wgan.d_transform is not None and wgan.regularizer is None
  np.testing.assert_allclose(
      wgan.metrics(real["logit"], fake["logit"])["wasserstein_estimate"],
      0.5 - 1.75)
  gp = gan_objectives.get_objective(_config(gan_loss="wasserstein_gp",
                                            gp_weight=3.0))
  assert gp.regularizer_weight == 3.0 and gp.d_transform is None
  ra = gan_objectives.get_objective(_config(gan_loss="relativistic_average"))
  assert ra.generator_needs_real
  r, f = np.array([2.0, -1.0]), np.array([0.5, 3.0])
  softplus = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(
      ra.generator_loss(real, fake),
      softplus(-(f - r.mean())) + softplus(r - f.mean()), rtol=1e-6)
  smoothed = gan_objectives.get_objective(
      _config(gan_loss="minimax", real_label_smoothing=0.2))
  s = 0.2
  expected = (-(1 - s) * np.log(1 / (1 + np.exp(-r)))
              - s * np.log(1 / (1 + np.exp(r))) - np.log(1 / (1 + np.exp(f))))
  np.testing.assert_allclose(smoothed.discriminator_loss(real, fake), expected,
                             rtol=1e-5)


@pytest.mark.parametrize("name,match", [
    ("vanilla", "Unknown gan_loss 'vanilla'"),
    ("no_such_module:x", "does not import"),
    ("tests.test_gan_objectives:not_an_objective", "gives int, not a"),
])
def test_bad_names_are_clear_errors(name, match):
  with pytest.raises(ValueError, match=match):
    gan_objectives.get_objective(_config(gan_loss=name))


def test_an_objective_by_import_path_instance_or_factory():
  constant = gan_objectives.get_objective(_config(
      gan_loss="tests.test_gan_objectives:CONSTANT"))
  np.testing.assert_array_equal(
      constant.generator_loss(None, {"logit": jnp.array([2.0])}), [-2.0])
  ra = gan_objectives.get_objective(_config(
      gan_loss="tests.test_gan_objectives:relativistic_average_hinge"))
  assert ra.generator_needs_real


@pytest.mark.parametrize("name", tuple(gan_objectives.BUILTINS))
def test_builtins_keep_patch_logits_shape_and_total_means_every_axis(name):
  objective = gan_objectives.get_objective(_config(gan_loss=name))
  rng = np.random.default_rng(0)
  real = {"logit": jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32)}
  fake = {"logit": jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32)}
  d = objective.discriminator_loss(real, fake)
  g = objective.generator_loss(real, fake)
  assert d.shape == g.shape == (2, 3, 3)
  context = gan_objectives.Context(real, fake, None)
  loss, metrics = gan_objectives.total(
      [gan_objectives.adversarial_generator_term(objective)], context)
  np.testing.assert_allclose(loss, np.mean(np.asarray(g)), rtol=1e-6)
  assert list(metrics) == ["g_adv_loss"]


def test_the_adversarial_terms_open_the_gan_familys_terms():
  cfg = _config(model="acgan", gan_loss="wasserstein_gp", gp_weight=5.0,
                r1_gamma=4.0, g_adv_weight=0.5)
  objective = gan_objectives.get_objective(cfg)
  names = lambda ts: [(t.name, t.weight) for t in ts]
  adversarial = names(gan_objectives.adversarial_discriminator_terms(
      cfg, objective))
  assert adversarial == [("d_adv_loss", 1.0), ("gradient_penalty", 5.0),
                         ("r1_penalty", 2.0)]
  d_terms = names(gan_objectives.discriminator_terms(cfg, objective))
  assert d_terms[:3] == adversarial and len(d_terms) == 5  # + class terms
  g_terms = names(gan_objectives.generator_terms(cfg, objective))
  assert g_terms[0] == ("g_adv_loss", 0.5)
  # Only r1_gamma is read: pix2pix's settings have no class keys.
  plain = ml_collections.FrozenConfigDict({"r1_gamma": 0.0})
  assert names(gan_objectives.adversarial_discriminator_terms(
      plain, objective)) == [("d_adv_loss", 1.0), ("gradient_penalty", 5.0)]


def test_terms_sum_in_order_with_their_weights():
  context = gan_objectives.Context(None, None, None)
  terms = [gan_objectives.Term("a", lambda c: jnp.array([1.0, 3.0])),
           gan_objectives.Term("b", lambda c: jnp.array([4.0]), 0.5),
           gan_objectives.Term("c", lambda c: jnp.array([10.0]), None)]
  loss, metrics = gan_objectives.total(terms, context)
  assert float(loss) == 2.0 + 0.5 * 4.0
  assert {k: float(v) for k, v in metrics.items()} == {"a": 2.0, "b": 4.0,
                                                        "c": 10.0}


def test_acgan_terms_follow_the_class_weights():
  names = lambda ts: [(t.name, t.weight) for t in ts]
  cfg = _config(real_class_weight=0.0, fake_class_weight=2.0,
                d_fake_class=False)
  assert names(gan_objectives.acgan_discriminator_terms(cfg)) == [
      ("d_real_class_loss", 0.0), ("d_fake_class_loss", None)]
  assert names(gan_objectives.acgan_generator_terms(cfg)) == [
      ("g_fake_class_loss", 2.0)]


def test_acgan_terms_of_attributes_sum_each_heads_cross_entropy():
  cfg = _config(model="acgan")
  d_terms = {t.name: t for t in gan_objectives.acgan_discriminator_terms(cfg)}
  (g_term,) = gan_objectives.acgan_generator_terms(cfg)
  digit = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
  color = np.array([[1.0, -1.0], [0.0, 2.0]], np.float32)
  labels = np.array([[0, 1], [2, 0]], np.int32)
  fake_labels = np.array([[1, 0], [2, 1]], np.int32)
  ce = lambda l, y: -(l[np.arange(2), y] - np.log(np.exp(l).sum(-1)))
  out = {"logit": np.zeros(2, np.float32), "class_logits": (digit, color)}
  context = gan_objectives.Context(out, out, labels, fake_labels=fake_labels)
  np.testing.assert_allclose(d_terms["d_real_class_loss"].fn(context),
                             ce(digit, labels[:, 0]) + ce(color, labels[:, 1]),
                             rtol=1e-6)
  want_fake = ce(digit, fake_labels[:, 0]) + ce(color, fake_labels[:, 1])
  np.testing.assert_allclose(d_terms["d_fake_class_loss"].fn(context),
                             want_fake, rtol=1e-6)
  np.testing.assert_allclose(g_term.fn(context), want_fake, rtol=1e-6)


def test_tacgan_twin_terms_train_d_on_it_and_g_against_it():
  cfg = _config(model="acgan", twin_class_head=True, twin_class_weight=0.5,
                d_fake_class=False)
  objective = gan_objectives.get_objective(cfg)
  d_terms = {t.name: t for t in gan_objectives.discriminator_terms(
      cfg, objective)}
  g_terms = {t.name: t for t in gan_objectives.generator_terms(cfg,
                                                               objective)}
  assert d_terms["d_twin_class_loss"].weight == 0.5
  assert g_terms["g_twin_class_loss"].weight == 0.5
  assert d_terms["d_fake_class_loss"].weight is None  # C: real data only
  twin = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
  labels = np.array([0, 1])
  # -log softmax(twin)[label], by hand
  want = -(twin[[0, 1], labels] - np.log(np.exp(twin).sum(-1)))
  fake = {"logit": np.zeros(2, np.float32), "class_logits": np.zeros_like(twin),
          "twin_class_logits": twin}
  context = gan_objectives.Context(None, fake, labels)
  np.testing.assert_allclose(d_terms["d_twin_class_loss"].fn(context), want,
                             rtol=1e-6)
  np.testing.assert_allclose(g_terms["g_twin_class_loss"].fn(context), -want,
                             rtol=1e-6)
  plain = _config(model="acgan")
  assert "d_twin_class_loss" not in [
      t.name for t in gan_objectives.discriminator_terms(plain, objective)]


def test_a_loss_defined_in_a_test_module_trains_through_the_cli(tmp_path):
  loss = "tests.test_gan_objectives:relativistic_average_hinge"
  args = ["--config=experiments/configs/cgan_mlp.py", f"--workdir={tmp_path}",
          "--config.dataset=digits", "--config.batch_size=32",
          "--config.num_steps=6", "--config.log_every=3",
          "--config.sample_every=0", f"--config.gan_loss={loss}"]
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  r = subprocess.run([sys.executable, "-m", "experiments.train", *args],
                     cwd=ROOT, capture_output=True, text=True, timeout=300,
                     env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  records = [json.loads(l) for l in
             (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [3, 6]
  assert np.isfinite(records[-1]["g_adv_loss"])
  assert json.loads((tmp_path / "config.json").read_text())["gan_loss"] == loss
  out = tmp_path / "s.npz"
  r = subprocess.run([sys.executable, "-m", "experiments.sample",
                      f"--workdir={tmp_path}", "--num_per_class=2",
                      f"--out={out}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=300, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  assert np.load(out)["images"].shape == (20, 8, 8, 1)


def test_regularizer_terms_follow_their_keys_and_compose_with_any_loss():
  names = lambda ts: [(t.name, t.weight) for t in ts]
  for gan_loss in ("hinge", "relativistic_pairing", "wasserstein_gp"):
    cfg = _config(gan_loss=gan_loss, r1_gamma=2.0, r2_gamma=4.0,
                  lecam_weight=0.3, bcr_weight=10.0)
    objective = gan_objectives.get_objective(cfg)
    adversarial = names(gan_objectives.adversarial_discriminator_terms(
        cfg, objective))
    d_terms = names(gan_objectives.discriminator_terms(
        cfg, objective, lambda key, x: x))
    assert d_terms == adversarial + [("r2_penalty", 2.0),
                                     ("lecam_penalty", 0.3),
                                     ("bcr_penalty", 10.0)]
  plain = _config()
  assert [t.name for t in gan_objectives.regularizer_terms(plain)] == []
  with pytest.raises(ValueError, match="bcr_weight=1.0 needs"):
    gan_objectives.regularizer_terms(_config(bcr_weight=1.0))


def test_regularizer_terms_read_the_context():
  cfg = _config(r2_gamma=1.0, lecam_weight=1.0, bcr_weight=1.0)
  shift = lambda key, x: x + 1.0  # T: a fixed shift, for the test
  terms = {t.name: t for t in gan_objectives.regularizer_terms(cfg, shift)}
  w = np.array([0.5, -1.0, 2.0], np.float32)
  critic = lambda x: jnp.sum(w * x ** 2, -1)
  fake_critic = lambda x: jnp.sum(w * x, -1)
  x_real = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], np.float32)
  x_fake = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
  real = {"logit": critic(x_real)}
  fake = {"logit": fake_critic(x_fake)}
  context = gan_objectives.Context(
      real, fake, None, critic, x_real, x_fake, jax.random.key(0),
      fake_critic=fake_critic, lecam_anchors=(0.5, -0.25))
  np.testing.assert_allclose(terms["r2_penalty"].fn(context),
                             np.full(2, np.sum(w ** 2)), rtol=1e-6)
  r, f = np.asarray(real["logit"]), np.asarray(fake["logit"])
  np.testing.assert_allclose(terms["lecam_penalty"].fn(context),
                             (r + 0.25) ** 2 + (f - 0.5) ** 2, rtol=1e-6)
  real_t = np.sum(w * (x_real + 1) ** 2, -1)
  fake_t = np.sum(w * (x_fake + 1), -1)
  np.testing.assert_allclose(terms["bcr_penalty"].fn(context),
                             (r - real_t) ** 2 + (f - fake_t) ** 2,
                             rtol=1e-6)


def test_relativistic_pairing_is_a_builtin_reading_both_logits():
  rp = gan_objectives.get_objective(_config(gan_loss="relativistic_pairing"))
  assert rp.generator_needs_real
  real = {"logit": jnp.array([2.0, -1.0])}
  fake = {"logit": jnp.array([0.5, 3.0])}
  softplus = lambda x: np.logaddexp(0.0, x)
  np.testing.assert_allclose(rp.discriminator_loss(real, fake),
                             softplus(-np.array([1.5, -4.0])), rtol=1e-6)
  np.testing.assert_allclose(rp.generator_loss(real, fake),
                             softplus(-np.array([-1.5, 4.0])), rtol=1e-6)


def test_class_loss_d2d_ce_swaps_the_acgan_terms_at_their_weights():
  cfg = _config(model="acgan", class_loss="d2d_ce", real_class_weight=0.5,
                d2d_temperature=0.2)
  d_terms = {t.name: t for t in gan_objectives.acgan_discriminator_terms(cfg)}
  (g_term,) = gan_objectives.acgan_generator_terms(cfg)
  assert d_terms["d_real_class_loss"].weight == 0.5
  rng = np.random.default_rng(1)
  out = {"logit": np.zeros(4, np.float32),
         "class_embedding": rng.normal(size=(4, 3)).astype(np.float32),
         "class_proxies": rng.normal(size=(2, 3)).astype(np.float32)}
  labels = np.array([0, 1, 1, 0], np.int32)
  want = gan_objectives.losses.d2d_ce_loss(
      out["class_embedding"], out["class_proxies"], labels, temperature=0.2)
  context = gan_objectives.Context(out, out, labels)
  np.testing.assert_allclose(d_terms["d_real_class_loss"].fn(context), want)
  np.testing.assert_allclose(g_term.fn(context), want)
  with pytest.raises(ValueError, match="Unknown class_loss 'triplet'"):
    _config(model="acgan", class_loss="triplet")
  with pytest.raises(ValueError, match="class_loss='d2d_ce' needs "
                     "class_head=True"):
    _config(class_loss="d2d_ce")
