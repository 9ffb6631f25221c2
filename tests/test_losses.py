"""Tests of condgen_jax.losses against independent numpy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from condgen_jax import losses

LOGITS = np.array([-1e4, -20.0, -1.5, 0.0, 0.3, 2.0, 20.0, 1e4], np.float32)
FAKE = np.array([1e4, 3.0, -0.7, 0.0, 1.1, -2.0, -20.0, -1e4], np.float32)


def np_log_sigmoid(x):
  x = np.asarray(x, np.float64)
  return -np.logaddexp(0.0, -x)  # exact and stable in float64


def np_softmax_xent(logits, labels):
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  logz = m[..., 0] + np.log(np.exp(logits - m).sum(-1))
  return logz - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


# ----------------------------------------------------------------------------
# ELBO terms.


def np_gaussian_kl(mq, lvq, mp, lvp):
  vq, vp = np.exp(lvq), np.exp(lvp)
  return 0.5 * np.sum(np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0, -1)


def test_gaussian_kl_matches_numpy():
  rng = np.random.default_rng(0)
  mq, lvq, mp, lvp = (rng.normal(size=(4, 3)).astype(np.float32)
                      for _ in range(4))
  np.testing.assert_allclose(losses.gaussian_kl(mq, lvq, mp, lvp),
                             np_gaussian_kl(mq, lvq, mp, lvp), rtol=1e-5)
  np.testing.assert_allclose(losses.gaussian_kl(mq, lvq),
                             np_gaussian_kl(mq, lvq, 0.0, 0.0), rtol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
  mq, lvq = np.array([0.5, -1.0]), np.array([-0.4, 0.3])
  mp, lvp = np.array([0.1, 0.2]), np.array([0.2, -0.5])
  rng = np.random.default_rng(1)
  z = mq + np.exp(0.5 * lvq) * rng.normal(size=(200_000, 2))

  def log_normal(z, m, lv):
    return np.sum(-0.5 * (np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv)),
                  -1)

  mc = np.mean(log_normal(z, mq, lvq) - log_normal(z, mp, lvp))
  got = float(losses.gaussian_kl(jnp.float32(mq), jnp.float32(lvq),
                                 jnp.float32(mp), jnp.float32(lvp)))
  np.testing.assert_allclose(got, mc, rtol=0.01)


def test_gaussian_kl_zero_when_equal():
  m = jnp.array([[0.3, -2.0, 1.0]])
  lv = jnp.array([[0.1, -1.0, 2.0]])
  np.testing.assert_allclose(losses.gaussian_kl(m, lv, m, lv), [0.0],
                             atol=1e-6)


def test_gaussian_kl_per_class_prior_broadcasts():
  rng = np.random.default_rng(2)
  prior_mean = rng.normal(size=(10, 3)).astype(np.float32)  # one per class
  prior_logvar = rng.normal(size=(10, 3)).astype(np.float32)
  labels = np.array([3, 0, 7, 3])
  mq = rng.normal(size=(4, 3)).astype(np.float32)
  lvq = rng.normal(size=(4, 3)).astype(np.float32)
  got = losses.gaussian_kl(mq, lvq, prior_mean[labels], prior_logvar[labels])
  want = np_gaussian_kl(mq, lvq, prior_mean[labels], prior_logvar[labels])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # A single shared prior [3] broadcasts over the batch.
  got = losses.gaussian_kl(mq, lvq, prior_mean[0], prior_logvar[0])
  want = np_gaussian_kl(mq, lvq, prior_mean[0][None], prior_logvar[0][None])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got.shape == (4,)


def test_bernoulli_log_likelihood_matches_numpy_with_large_logits():
  logits = np.array([-1e4, -3.0, 0.0, 2.5, 1e4, 1e4], np.float32)
  targets = np.array([0.0, 1.0, 0.5, 0.2, 1.0, 0.0], np.float32)
  want = targets * np_log_sigmoid(logits) + (1 - targets) * np_log_sigmoid(
      -logits)
  got = losses.bernoulli_log_likelihood(logits.reshape(1, 6, 1, 1),
                                        targets.reshape(1, 6, 1, 1))
  assert got.shape == (1,)
  np.testing.assert_allclose(got, [want.sum()], rtol=1e-6)
  per_pixel = np.asarray(
      losses.bernoulli_log_likelihood(logits, targets, event_ndims=0))
  np.testing.assert_allclose(per_pixel, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(per_pixel[[0, 4]], [0.0, 0.0], atol=0)
  np.testing.assert_allclose(per_pixel[5], -1e4, rtol=1e-6)


def test_negative_elbo_is_reconstruction_plus_kl():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
  x = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)
  mq = rng.normal(size=(2, 3)).astype(np.float32)
  lvq = rng.normal(size=(2, 3)).astype(np.float32)
  neg_elbo, rec, kl = losses.negative_elbo(logits, x, mq, lvq)
  want_rec = -np.sum(x * np_log_sigmoid(logits)
                     + (1 - x) * np_log_sigmoid(-logits), axis=(1, 2, 3))
  want_kl = np_gaussian_kl(mq, lvq, 0.0, 0.0)
  np.testing.assert_allclose(rec, want_rec, rtol=1e-5)
  np.testing.assert_allclose(kl, want_kl, rtol=1e-5)
  np.testing.assert_allclose(neg_elbo, want_rec + want_kl, rtol=1e-5)


# ----------------------------------------------------------------------------
# GAN losses.


@pytest.mark.parametrize("s", [0.0, 0.1, 0.3])
def test_minimax_discriminator_loss(s):
  want = (-((1 - s) * np_log_sigmoid(LOGITS) + s * np_log_sigmoid(-LOGITS))
          - np_log_sigmoid(-FAKE))
  got = losses.minimax_discriminator_loss(LOGITS, FAKE,
                                          real_label_smoothing=s)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_minimax_discriminator_loss_extremes_by_hand():
  # -log s(1e4) = 0, -log s(-1e4) = 1e4; -log(1 - s(-1e4)) = 0.
  got = losses.minimax_discriminator_loss(jnp.array([1e4, -1e4]),
                                          jnp.array([-1e4, -1e4]))
  np.testing.assert_allclose(got, [0.0, 1e4], rtol=1e-6)
  # Smoothing 0.1 at a confident real logit of 1e4: 0.1 * 1e4.
  got = losses.minimax_discriminator_loss(jnp.array([1e4]), jnp.array([-1e4]),
                                          real_label_smoothing=0.1)
  np.testing.assert_allclose(got, [1e3], rtol=1e-5)


def test_minimax_discriminator_loss_rejects_bad_smoothing():
  with pytest.raises(ValueError, match="real_label_smoothing"):
    losses.minimax_discriminator_loss(LOGITS, FAKE, real_label_smoothing=1.0)


def test_generator_losses():
  np.testing.assert_allclose(losses.minimax_generator_loss(FAKE),
                             np_log_sigmoid(-FAKE), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.non_saturating_generator_loss(FAKE),
                             -np_log_sigmoid(FAKE), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      losses.non_saturating_generator_loss(jnp.array([1e4, -1e4])),
      [0.0, 1e4], rtol=1e-6)
  np.testing.assert_allclose(
      losses.minimax_generator_loss(jnp.array([1e4, -1e4])),
      [-1e4, 0.0], rtol=1e-6)


def test_least_squares_losses():
  want_d = 0.5 * (LOGITS.astype(np.float64) - 1) ** 2 + 0.5 * FAKE.astype(
      np.float64) ** 2
  np.testing.assert_allclose(
      losses.least_squares_discriminator_loss(LOGITS, FAKE), want_d, rtol=1e-6)
  np.testing.assert_allclose(losses.least_squares_generator_loss(FAKE),
                             0.5 * (FAKE.astype(np.float64) - 1) ** 2,
                             rtol=1e-6)
  np.testing.assert_allclose(
      losses.least_squares_discriminator_loss(jnp.array(1.0), jnp.array(0.0)),
      0.0)


def test_wasserstein_losses():
  np.testing.assert_allclose(
      losses.wasserstein_discriminator_loss(LOGITS, FAKE), FAKE - LOGITS)
  np.testing.assert_allclose(losses.wasserstein_generator_loss(FAKE), -FAKE)


def test_hinge_losses():
  want = np.maximum(0, 1 - LOGITS) + np.maximum(0, 1 + FAKE)
  np.testing.assert_allclose(losses.hinge_discriminator_loss(LOGITS, FAKE),
                             want, rtol=1e-6)
  np.testing.assert_allclose(losses.hinge_generator_loss(FAKE), -FAKE)
  # By hand: real 2 and fake -3 are outside the margin -> 0.
  assert float(losses.hinge_discriminator_loss(jnp.float32(2.0),
                                               jnp.float32(-3.0))) == 0.0


def test_acgan_class_losses():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3
  logits[0, 0] = [1e4, -1e4, 0, 0, 0]
  labels = rng.integers(0, 5, size=(2, 3))
  labels[0, 0] = 1
  want = np_softmax_xent(logits, labels)
  for fn in (losses.acgan_real_class_loss, losses.acgan_fake_class_loss,
             losses.tacgan_twin_class_loss):
    got = fn(logits, labels)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(want[0, 0], 2e4, rtol=1e-6)
  with pytest.raises(ValueError, match="integer"):
    losses.acgan_real_class_loss(logits, labels.astype(np.float32))


def test_acgan_class_losses_of_attributes_sum_over_the_heads():
  # one head per attribute (10 digits, 6 colors): -log of the factorised
  # joint q(d, c | x) = q_digit(d | x) q_color(c | x), by numpy in float64
  rng = np.random.default_rng(5)
  digit = rng.normal(size=(4, 10)).astype(np.float32) * 3
  color = rng.normal(size=(4, 6)).astype(np.float32) * 3
  labels = np.array([[7, 0], [3, 5], [0, 2], [9, 1]], np.int32)
  softmax = lambda l: np.exp(l - l.max(-1, keepdims=True)) / np.exp(
      l - l.max(-1, keepdims=True)).sum(-1, keepdims=True)
  p_digit = softmax(digit.astype(np.float64))[np.arange(4), labels[:, 0]]
  p_color = softmax(color.astype(np.float64))[np.arange(4), labels[:, 1]]
  want = -np.log(p_digit * p_color)
  for fn in (losses.acgan_real_class_loss, losses.acgan_fake_class_loss,
             losses.tacgan_twin_class_loss):
    got = fn((digit, color), labels)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # uniform heads, by hand: log 10 + log 6 = log 60 per example
  flat = (np.zeros((2, 10), np.float32), np.zeros((2, 6), np.float32))
  np.testing.assert_allclose(
      losses.acgan_real_class_loss(flat, labels[:2]), [np.log(60.0)] * 2,
      rtol=1e-6)
  with pytest.raises(ValueError, match=r"2 attribute logits need labels "
                     r"\[..., 2\]; got \(4,\)"):
    losses.acgan_real_class_loss((digit, color), labels[:, 0])


def test_infogan_continuous_code_loss():
  rng = np.random.default_rng(7)
  means = rng.normal(size=(4, 2)).astype(np.float32)
  codes = rng.uniform(-1, 1, size=(4, 2)).astype(np.float32)
  # -log N(c; mu, 1) summed over the codes, by hand
  want = np.sum(0.5 * (codes - means) ** 2 + 0.5 * np.log(2 * np.pi), -1)
  got = losses.infogan_continuous_code_loss(means, codes)
  assert got.shape == (4,)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(
      losses.infogan_continuous_code_loss(codes, codes), np.log(2 * np.pi),
      rtol=1e-6)  # two codes at the mean: 2 * log(2 pi) / 2
  g = jax.grad(lambda m: jnp.sum(losses.infogan_continuous_code_loss(
      m, codes)))(means)
  np.testing.assert_allclose(g, means - codes, rtol=1e-5)


def test_feature_matching_loss():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(6, 2, 3)).astype(np.float32)
  fake = rng.normal(size=(4, 2, 3)).astype(np.float32)
  want = np.sum((real.mean(0) - fake.mean(0)) ** 2)
  got = losses.feature_matching_loss(real, fake)
  assert got.shape == (4,)
  np.testing.assert_allclose(got, np.full(4, want), rtol=1e-5)
  np.testing.assert_allclose(jnp.mean(got), want, rtol=1e-5)
  # Gradient of the mean w.r.t. fake: -2 (mu_real - mu_fake) / B_fake.
  g = jax.grad(lambda f: jnp.mean(losses.feature_matching_loss(real, f)))(fake)
  want_g = np.broadcast_to(-2 * (real.mean(0) - fake.mean(0)) / 4, fake.shape)
  np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-6)


PAIRED = {
    "minimax_d": lambda r, f: losses.minimax_discriminator_loss(
        r, f, real_label_smoothing=0.1),
    "least_squares_d": losses.least_squares_discriminator_loss,
    "wasserstein_d": losses.wasserstein_discriminator_loss,
    "hinge_d": losses.hinge_discriminator_loss,
    "minimax_g": lambda r, f: losses.minimax_generator_loss(f),
    "non_saturating_g": lambda r, f: losses.non_saturating_generator_loss(f),
    "least_squares_g": lambda r, f: losses.least_squares_generator_loss(f),
    "wasserstein_g": lambda r, f: losses.wasserstein_generator_loss(f),
    "hinge_g": lambda r, f: losses.hinge_generator_loss(f),
    "relativistic_pairing_d": losses.relativistic_pairing_discriminator_loss,
    "relativistic_pairing_g": losses.relativistic_pairing_generator_loss,
}


@pytest.mark.parametrize("name", sorted(PAIRED))
def test_finite_gradients_and_shape(name):
  fn = PAIRED[name]
  real = jnp.array(LOGITS[:6]).reshape(2, 3)
  fake = jnp.array(FAKE[:6]).reshape(2, 3)
  real = real.at[0, 0].set(1e4).at[1, 2].set(-1e4)
  fake = fake.at[0, 1].set(1e4).at[1, 0].set(-1e4)
  out = fn(real, fake)
  assert out.shape == (2, 3)
  assert np.all(np.isfinite(out))
  gr, gf = jax.grad(lambda r, f: jnp.sum(fn(r, f)), argnums=(0, 1))(real, fake)
  assert np.all(np.isfinite(gr)) and np.all(np.isfinite(gf))


def test_class_loss_gradients_finite_at_large_logits():
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
  g = jax.grad(lambda l: jnp.sum(losses.acgan_real_class_loss(
      l, jnp.array([1, 0]))))(logits)
  assert np.all(np.isfinite(g))
  # d/dl of -log softmax_y = softmax - onehot; row 0: softmax = [1, 0, 0].
  np.testing.assert_allclose(g[0], [1.0, -1.0, 0.0], atol=1e-6)


def test_gradient_penalty_linear_critic():
  w = jnp.array([0.6, -0.8, 1.2, 0.0, 0.5, 2.0])  # ||w|| computed below
  norm_w = np.sqrt(np.sum(np.square(np.asarray(w, np.float64))))
  critic = lambda x: x.reshape(x.shape[0], -1) @ w
  key = jax.random.key(0)
  real = jax.random.normal(jax.random.key(1), (5, 2, 3))
  fake = jax.random.normal(jax.random.key(2), (5, 2, 3))
  gp = losses.gradient_penalty(critic, real, fake, key)
  assert gp.shape == (5,)
  np.testing.assert_allclose(gp, np.full(5, (norm_w - 1) ** 2), rtol=1e-5)
  # A critic of unit gradient norm everywhere has no penalty.
  unit = lambda x: x.reshape(x.shape[0], -1) @ (w / norm_w)
  np.testing.assert_allclose(
      losses.gradient_penalty(unit, real, fake, key), 0.0, atol=1e-6)


def test_gradient_penalty_interpolates_per_example():
  # critic(x) = 0.5 * ||x||^2 has gradient x_hat, so the penalty reveals
  # x_hat = e * real + (1 - e) * fake with e the key's uniforms.
  real = jnp.ones((4, 3))
  fake = jnp.zeros((4, 3))
  key = jax.random.key(7)
  gp = losses.gradient_penalty(lambda x: 0.5 * jnp.sum(x ** 2, -1), real,
                               fake, key)
  eps = np.asarray(jax.random.uniform(key, (4, 1)))[:, 0]
  np.testing.assert_allclose(gp, (np.sqrt(3) * eps - 1) ** 2, rtol=1e-5)
  with pytest.raises(ValueError, match="same shape"):
    losses.gradient_penalty(lambda x: x[:, 0], real, fake[:2], key)


def test_clip_weights_keeps_params_in_range():
  params = {"w": jnp.array([0.005, -0.009, 0.0, 0.02]), "b": jnp.array(-0.5)}
  tx = optax.chain(optax.sgd(1.0), losses.clip_weights(0.01))
  state = tx.init(params)
  grads = {"w": jnp.array([-0.5, 0.5, -0.003, 0.0]), "b": jnp.array(-0.495)}
  updates, state = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["w"], [0.01, -0.01, 0.003, 0.01], atol=1e-7)
  np.testing.assert_allclose(new["b"], -0.005, atol=1e-7)
  for _ in range(3):
    updates, state = tx.update(grads, state, new)
    new = optax.apply_updates(new, updates)
    for leaf in jax.tree_util.tree_leaves(new):
      assert np.all(np.abs(leaf) <= 0.01 + 1e-7)


def test_clip_weights_errors():
  with pytest.raises(ValueError, match="positive limit"):
    losses.clip_weights(0.0)
  tx = losses.clip_weights(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.zeros(2)}, tx.init({"w": jnp.zeros(2)}))


def test_relativistic_average_losses_match_numpy():
  r = np.array([2.0, -1.0, 0.3], np.float32)
  f = np.array([0.5, 3.0, -2.0], np.float32)
  softplus = lambda x: np.log1p(np.exp(x))
  d = softplus(-(r - f.mean())) + softplus(f - r.mean())
  g = softplus(-(f - r.mean())) + softplus(r - f.mean())
  np.testing.assert_allclose(
      losses.relativistic_average_discriminator_loss(r, f), d, rtol=1e-6)
  np.testing.assert_allclose(
      losses.relativistic_average_generator_loss(r, f), g, rtol=1e-6)


def test_r1_penalty_is_the_squared_input_gradient_norm():
  # D(x) = sum(w * x^2) per example: grad = 2 w x, ||.||^2 = sum 4 w^2 x^2.
  w = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  x = np.array([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.5], [2.0, 1.0]]],
               np.float32)
  critic = lambda xs: jnp.sum(w * xs ** 2, axis=(1, 2))
  expected = np.sum((2 * w * x) ** 2, axis=(1, 2))
  np.testing.assert_allclose(losses.r1_penalty(critic, x), expected,
                             rtol=1e-6)


def test_r2_penalty_is_the_squared_input_gradient_norm_at_fakes():
  # D(x) = sum(w * x^3) per example: grad = 3 w x^2.
  w = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  x = np.array([[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.5], [2.0, 1.0]]],
               np.float32)
  critic = lambda xs: jnp.sum(w * xs ** 3, axis=(1, 2))
  expected = np.sum((3 * w * x ** 2) ** 2, axis=(1, 2))
  np.testing.assert_allclose(losses.r2_penalty(critic, x), expected,
                             rtol=1e-6)


def test_relativistic_pairing_losses_match_numpy():
  r = np.array([2.0, -1.0, 0.3, 30.0], np.float64)
  f = np.array([0.5, 3.0, -2.0, -30.0], np.float64)
  softplus = lambda x: np.logaddexp(0.0, x)
  np.testing.assert_allclose(
      losses.relativistic_pairing_discriminator_loss(r, f),
      softplus(-(r - f)), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(
      losses.relativistic_pairing_generator_loss(r, f),
      softplus(-(f - r)), rtol=1e-6)


def test_lecam_penalty_matches_numpy():
  r = np.array([2.0, -1.0, 0.3], np.float32)
  f = np.array([0.5, 3.0, -2.0], np.float32)
  alpha_r, alpha_f = 0.7, -0.4
  want = (r - alpha_f) ** 2 + (f - alpha_r) ** 2
  np.testing.assert_allclose(losses.lecam_penalty(r, f, alpha_r, alpha_f),
                             want, rtol=1e-6)


def test_balanced_consistency_loss_matches_numpy():
  r, rt = np.array([2.0, -1.0]), np.array([1.5, 0.0])
  f, ft = np.array([0.5, 3.0]), np.array([0.5, 1.0])
  np.testing.assert_allclose(losses.consistency_loss(r, rt), (r - rt) ** 2)
  np.testing.assert_allclose(
      losses.balanced_consistency_loss(r, rt, f, ft),
      (r - rt) ** 2 + (f - ft) ** 2, rtol=1e-6)


def np_d2d_ce(embed, proxies, labels, tau, m_p, m_n):
  """The paper's formula, one example at a time, in float64."""
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  f, v = unit(embed.astype(np.float64)), unit(proxies.astype(np.float64))
  out = []
  for i in range(len(labels)):
    pos = np.exp(min(f[i] @ v[labels[i]] - m_p, 0.0) / tau)
    neg = sum(np.exp(max(f[i] @ f[j] - m_n, 0.0) / tau)
              for j in range(len(labels)) if labels[j] != labels[i])
    out.append(-np.log(pos / (pos + neg)))
  return np.array(out)


@pytest.mark.parametrize("tau,m_p,m_n", [(0.5, 0.98, 0.02), (0.1, 0.5, 0.0)])
def test_d2d_ce_matches_the_papers_formula(tau, m_p, m_n):
  rng = np.random.default_rng(0)
  embed = rng.normal(size=(6, 5)).astype(np.float32)
  proxies = rng.normal(size=(3, 5)).astype(np.float32)
  labels = np.array([0, 1, 1, 2, 0, 0], np.int32)
  got = losses.d2d_ce_loss(embed, proxies, labels, temperature=tau,
                           positive_margin=m_p, negative_margin=m_n)
  np.testing.assert_allclose(got, np_d2d_ce(embed, proxies, labels, tau, m_p,
                                            m_n), rtol=1e-5)
  g = jax.grad(lambda e: jnp.sum(losses.d2d_ce_loss(
      e, proxies, labels, temperature=tau, positive_margin=m_p,
      negative_margin=m_n)))(jnp.asarray(embed))
  assert np.all(np.isfinite(g))


def test_d2d_ce_without_negatives_is_the_positive_margin_term():
  # every sample of one class: no negatives, the loss is exactly 0
  embed = np.eye(3, 4, dtype=np.float32)
  proxies = np.ones((2, 4), np.float32)
  got = losses.d2d_ce_loss(embed, proxies, np.zeros(3, np.int32))
  np.testing.assert_allclose(got, 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="integer class labels"):
    losses.d2d_ce_loss(embed, proxies, np.zeros(3, np.float32))
