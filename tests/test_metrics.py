"""Metrics against values computed independently (numpy / scipy / by hand)."""

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import polynomial_kernel

from condgen_jax.data import datasets as data
from condgen_jax.evaluation import metrics


def _random_spd(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d + 2))
  return a @ a.T / a.shape[1]


def _scipy_fid(mu1, s1, mu2, s2):
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(covmean))


# ---------------------------------------------------------------- accuracy


def test_class_accuracy_by_hand():
  logits = np.array([[5., 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
  requested = np.array([0, 1, 2, 2, 1])
  # correct: yes, yes, no, yes, no -> 3/5; per class: 1/1, 1/2, 1/2.
  np.testing.assert_allclose(metrics.class_accuracy(logits, requested), 0.6)
  np.testing.assert_allclose(metrics.per_class_accuracy(logits, requested),
                             [1.0, 0.5, 0.5])
  per = metrics.per_class_accuracy(logits, requested, num_classes=4)
  assert np.isnan(per[3])  # no samples requested for class 3


def test_matched_class_accuracy_by_hand():
  # Codes 0, 1, 2 come out as classes 2, 0, 1 (one code-1 sample is a 1).
  requested = np.array([0, 0, 1, 1, 1, 2, 2])
  predicted = np.array([2, 2, 0, 0, 1, 1, 1])
  logits = 5.0 * np.eye(3)[predicted]
  np.testing.assert_allclose(metrics.class_accuracy(logits, requested), 1 / 7)
  acc, mapping = metrics.matched_class_accuracy(logits, requested)
  assert mapping == [2, 0, 1]
  np.testing.assert_allclose(acc, 6 / 7)
  # Labels that already mean their classes: the identity, plain accuracy.
  logits = np.array([[5., 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
  acc, mapping = metrics.matched_class_accuracy(logits,
                                                np.array([0, 1, 2, 2, 1]))
  assert mapping == [0, 1, 2] and np.isclose(acc, 0.6)
  with pytest.raises(ValueError, match="disagree"):
    metrics.matched_class_accuracy(np.zeros((4, 3)), np.zeros(5, np.int32))


def test_class_accuracy_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="disagree"):
    metrics.class_accuracy(np.zeros((4, 3)), np.zeros(5, np.int32))


# ---------------------------------------------------------------- FID


def test_gaussian_statistics_matches_numpy():
  x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
  mu, sigma = metrics.gaussian_statistics(x)
  np.testing.assert_allclose(mu, x.mean(0), atol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), atol=1e-5)


def test_frechet_distance_of_identical_statistics_is_zero():
  rng = np.random.default_rng(1)
  # A full-rank and a rank-deficient (post-ReLU-like) covariance.
  for sigma in (_random_spd(rng, 16), _random_spd(rng, 16, rank=5)):
    mu = rng.normal(size=16)
    d = metrics.frechet_distance(mu, sigma, mu, sigma)
    assert abs(float(d)) < 1e-4 * np.trace(sigma)


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(2)
  for d in (2, 8, 32):
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    expected = _scipy_fid(mu1, s1, mu2, s2)
    got = metrics.frechet_distance(*(np.float32(a) for a in (mu1, s1, mu2, s2)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-4, atol=1e-4)


def test_frechet_distance_is_accurate_for_ill_conditioned_covariances():
  # Eigenvalues 1 .. 1e-8 (like features with many near-dead units): the
  # singular-value route stays ~1e-5 from scipy's float64 answer, where
  # sqrt(eigvalsh(S1^1/2 S2 S1^1/2)) in float32 is off by ~1e-2.
  rng = np.random.default_rng(10)
  d = 64
  ev = np.logspace(0, -8, d)
  q1 = np.linalg.qr(rng.normal(size=(d, d)))[0]
  q2 = np.linalg.qr(rng.normal(size=(d, d)))[0]
  s1, s2, mu = (q1 * ev) @ q1.T, (q2 * ev) @ q2.T, np.zeros(d)
  for a, b in ((s1, s1), (s1, s2)):
    got = metrics.frechet_distance(*(np.float32(x) for x in (mu, a, mu, b)))
    np.testing.assert_allclose(float(got), _scipy_fid(mu, a, mu, b),
                               atol=1e-4)


def test_batched_frechet_distance_makes_one_eigh_call():
  # Two independent batched eigh calls (one per covariance) deadlocked
  # intra-FID on 2-core CPUs: each blocks an XLA:CPU pool thread while its
  # chunks wait for a free one. Both square roots must share one call.
  k, d = 10, 8
  mu, sigma = jnp.zeros((k, d)), jnp.broadcast_to(jnp.eye(d), (k, d, d))
  hlo = jax.jit(jax.vmap(metrics.frechet_distance)).lower(
      mu, sigma, mu, sigma).compile().as_text()
  eighs = re.findall(r'custom_call_target="(\w*(?:syevd|eigh)\w*)"', hlo)
  assert len(eighs) == 1, eighs


def test_fid_of_1d_gaussians_closed_form():
  # d^2 = (m1 - m2)^2 + (s1 - s2)^2 in one dimension.
  np.testing.assert_allclose(
      metrics.frechet_distance(np.array([1.]), np.array([[4.]]),
                               np.array([3.]), np.array([[9.]])),
      4.0 + 1.0, rtol=1e-6)


def test_fid_from_features_matches_scipy():
  rng = np.random.default_rng(3)
  real = rng.normal(size=(200, 6)).astype(np.float32)
  fake = (rng.normal(size=(150, 6)) * 1.5 + 0.3).astype(np.float32)
  expected = _scipy_fid(real.mean(0), np.cov(real, rowvar=False),
                        fake.mean(0), np.cov(fake, rowvar=False))
  np.testing.assert_allclose(float(metrics.fid(real, fake)), expected,
                             rtol=1e-4)
  assert abs(float(metrics.fid(real, real))) < 1e-4


def test_intra_fid_is_mean_of_per_class_scipy_fids():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(90, 3)).astype(np.float32)
  fake = (rng.normal(size=(60, 3)) + 0.5).astype(np.float32)
  real_labels = np.arange(90) % 3
  fake_labels = np.arange(60) % 3
  expected = []
  for c in range(3):
    r, f = real[real_labels == c], fake[fake_labels == c]
    expected.append(_scipy_fid(r.mean(0), np.cov(r, rowvar=False),
                               f.mean(0), np.cov(f, rowvar=False)))
  per = metrics.per_class_fid(real, real_labels, fake, fake_labels, 3)
  np.testing.assert_allclose(per, expected, rtol=1e-4)
  np.testing.assert_allclose(
      metrics.intra_fid(real, real_labels, fake, fake_labels, 3),
      np.mean(expected), rtol=1e-4)


def test_intra_fid_needs_two_samples_per_class():
  x = np.zeros((6, 2), np.float32)
  with pytest.raises(ValueError, match=r"classes \[2\]"):
    metrics.intra_fid(x, np.array([0, 0, 1, 1, 2, 2]), x,
                      np.array([0, 0, 1, 1, 1, 2]), 3)


# ---------------------------------------------------------------- KID


def _numpy_mmd2(x, y):
  """Unbiased MMD^2 with sklearn's (gamma x.y + coef0)^degree kernel."""
  x, y = np.float64(x), np.float64(y)
  kern = functools.partial(polynomial_kernel, degree=3, gamma=1 / x.shape[1],
                           coef0=1)
  m, n = len(x), len(y)
  kxx, kyy = kern(x, x), kern(y, y)
  return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
          + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
          - 2 * kern(x, y).mean())


def test_polynomial_mmd2_by_hand():
  # D = 1: k(x, y) = (xy + 1)^3. X = {0, 1}, Y = {0, -1}:
  # k(0, 1) = 1, k(0, -1) = 1 -> XX and YY terms 2 / 2 = 1 each;
  # cross k(0,0) + k(0,-1) + k(1,0) + k(1,-1) = 1 + 1 + 1 + 0 = 3 -> 2 * 3 / 4.
  x, y = np.array([[0.], [1.]]), np.array([[0.], [-1.]])
  np.testing.assert_allclose(metrics.polynomial_mmd2(x, y), 0.5, rtol=1e-6)
  np.testing.assert_allclose(_numpy_mmd2(x, y), 0.5)


def test_polynomial_mmd2_matches_sklearn_kernel():
  rng = np.random.default_rng(11)
  x = rng.normal(size=(40, 6)).astype(np.float32)
  y = (rng.normal(size=(30, 6)) * 1.3 + 0.4).astype(np.float32)
  for a, b in ((x, y), (x, x[:25]), (y, x)):
    np.testing.assert_allclose(float(metrics.polynomial_mmd2(a, b)),
                               _numpy_mmd2(a, b), rtol=1e-4, atol=1e-5)


def test_kid_matches_numpy_over_the_documented_subsets():
  rng = np.random.default_rng(12)
  real = np.abs(rng.normal(size=(120, 8))).astype(np.float32)
  fake = np.abs(rng.normal(size=(90, 8)) * 1.2 + 0.2).astype(np.float32)

  def numpy_kid(num_subsets, m, seed):
    draws = np.random.default_rng(seed)
    values = []
    for _ in range(num_subsets):
      r = real[draws.choice(len(real), m, replace=False)]
      f = fake[draws.choice(len(fake), m, replace=False)]
      values.append(_numpy_mmd2(r, f))
    return np.array(values)

  for num_subsets, size, m, seed in ((7, 50, 50, 0), (3, 1000, 90, 5)):
    expected = numpy_kid(num_subsets, m, seed)
    per = metrics.kid_per_subset(real, fake, num_subsets, size, seed)
    np.testing.assert_allclose(per, expected, rtol=1e-4, atol=1e-6)
    mean, std = metrics.kid(real, fake, num_subsets, size, seed)
    np.testing.assert_allclose([mean, std], [expected.mean(), expected.std()],
                               rtol=1e-4, atol=1e-6)
  assert metrics.kid_subset_size(120, 90) == 90
  assert metrics.kid_subset_size(5000, 2000) == 1000
  # Deterministic in the seed, and the seed matters.
  a = metrics.kid_per_subset(real, fake, 4, 30, seed=1)
  np.testing.assert_array_equal(a, metrics.kid_per_subset(real, fake, 4, 30,
                                                          seed=1))
  assert not np.allclose(a, metrics.kid_per_subset(real, fake, 4, 30, seed=2))


def test_kid_is_near_zero_for_one_distribution():
  rng = np.random.default_rng(13)
  a, b = (rng.normal(size=(400, 4)).astype(np.float32) for _ in range(2))
  same, std = metrics.kid(a, b, num_subsets=10, subset_size=200)
  shifted, _ = metrics.kid(a, b + 1.0, num_subsets=10, subset_size=200)
  # Unbiased: about 0 (here -0.03 +- 0.03 over subsets); a mean shift of 1
  # per coordinate gives ~10.
  assert abs(float(same)) < 2 * float(std) < 0.1
  assert float(shifted) > 5.0


def test_kid_rejects_bad_inputs():
  x = np.zeros((10, 3), np.float32)
  with pytest.raises(ValueError, match=">= 2 samples"):
    metrics.kid(x, x[:1])
  with pytest.raises(ValueError, match=r"\[N, D\] and \[M, D\]"):
    metrics.kid(x, np.zeros((10, 4), np.float32))
  with pytest.raises(ValueError, match="num_subsets"):
    metrics.kid(x, x, num_subsets=0)


# ---------------------------------------------------------------- IS


def test_inception_score_extremes():
  k = 10
  assert np.isclose(float(metrics.inception_score(np.zeros((40, k)))), 1.0)
  confident = 100.0 * np.eye(k)[np.arange(40) % k]  # one-hot, balanced
  np.testing.assert_allclose(metrics.inception_score(confident), k, rtol=1e-5)
  # All samples confidently the same class: no diversity -> 1.
  same = 100.0 * np.eye(k)[np.zeros(40, int)]
  np.testing.assert_allclose(metrics.inception_score(same), 1.0, rtol=1e-5)


def test_inception_score_matches_numpy_with_splits():
  logits = np.random.default_rng(5).normal(size=(33, 4)) * 2

  def numpy_is(lg):
    p = np.exp(lg - logsumexp(lg, axis=1, keepdims=True))
    py = p.mean(0, keepdims=True)
    return np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), 1)))

  np.testing.assert_allclose(metrics.inception_score(logits),
                             numpy_is(logits), rtol=1e-5)
  per = metrics.inception_score_per_split(logits, splits=3)  # 11 each
  np.testing.assert_allclose(
      per, [numpy_is(logits[i * 11:(i + 1) * 11]) for i in range(3)],
      rtol=1e-5)
  with pytest.raises(ValueError, match="splits"):
    metrics.inception_score(logits, splits=0)


# ---------------------------------------------------------------- P / R


def test_precision_recall_on_a_line():
  real = np.arange(5, dtype=np.float32)[:, None]  # 0..4, 1-NN radius 1
  fake = np.array([[0.5], [1.8], [10.], [11.5]], np.float32)
  # fake 0.5, 1.8 lie in real balls; 10, 11.5 do not -> precision 1/2.
  # fake 1-NN radii: 1.3, 1.3, 1.5, 1.5 -> real 0..3 covered, 4 not
  # (|4 - 1.8| = 2.2 > 1.3, |4 - 10| = 6 > 1.5) -> recall 4/5.
  p, r = metrics.precision_recall(real, fake, k=1)
  np.testing.assert_allclose([p, r], [0.5, 0.8])
  # k=2: real radii 2 (ends) / 1 (inner): fakes 0.5, 1.8 still in, 10, 11.5
  # out; fake radii = 9.5, 8.2, 8.2, 9.7 -> everything covered.
  p, r = metrics.precision_recall(real, fake, k=2)
  np.testing.assert_allclose([p, r], [0.5, 1.0])


def test_precision_recall_identical_sets_and_chunking():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(57, 5)).astype(np.float32)
  fake = (rng.normal(size=(43, 5)) * 2).astype(np.float32)
  p, r = metrics.precision_recall(real, real, k=3, batch_size=10)
  np.testing.assert_allclose([p, r], [1.0, 1.0])

  def brute(a, b, k):  # fraction of b inside the k-NN manifold of a
    daa = np.linalg.norm(a[:, None] - a[None], axis=-1)
    radii = np.sort(daa, axis=1)[:, k]
    dba = np.linalg.norm(b[:, None] - a[None], axis=-1)
    return np.mean(np.any(dba <= radii[None], axis=1))

  p, r = metrics.precision_recall(real, fake, k=3, batch_size=16)
  np.testing.assert_allclose([p, r], [brute(real, fake, 3),
                                      brute(fake, real, 3)])


# ---------------------------------------------------------------- D / C


def _numpy_density_coverage(real, fake, k):
  real, fake = np.float64(real), np.float64(fake)
  d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
  radii = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
  inside = np.linalg.norm(real[:, None] - fake[None], axis=-1) <= radii[:, None]
  return inside.sum() / (k * len(fake)), inside.any(axis=1).mean()


def test_density_coverage_on_a_line():
  real = np.arange(5, dtype=np.float32)[:, None]  # 0..4
  fake = np.array([[0.5], [1.8], [10.]], np.float32)
  # k=1: every real radius is 1. 0.5 lies in the balls of 0 and 1, 1.8 in
  # those of 1 and 2, 10 in none -> density (2 + 2 + 0) / (1 * 3) = 4/3.
  # Reals 0, 1, 2 hold a fake; 3 (nearest fake 1.8, 1.2 away) and 4 do not
  # -> coverage 3/5.
  np.testing.assert_allclose(metrics.density_coverage(real, fake, k=1),
                             [4 / 3, 0.6], rtol=1e-6)
  # k=2: radii 2, 1, 1, 1, 2. 0.5 is in the balls of 0, 1; 1.8 in those of
  # 0, 1, 2 (|4 - 1.8| = 2.2 > 2, |3 - 1.8| > 1) -> density 5 / 6; the same
  # three reals are covered -> 3/5.
  np.testing.assert_allclose(metrics.density_coverage(real, fake, k=2),
                             [5 / 6, 0.6], rtol=1e-6)


def test_density_coverage_match_brute_force_and_chunking():
  rng = np.random.default_rng(14)
  real = rng.normal(size=(57, 5)).astype(np.float32)
  for fake in (rng.normal(size=(43, 5)).astype(np.float32),
               (rng.normal(size=(31, 5)) * 0.5 + 0.7).astype(np.float32)):
    for k, batch_size in ((5, 1000), (3, 16)):
      got = metrics.density_coverage(real, fake, k=k, batch_size=batch_size)
      np.testing.assert_allclose(got, _numpy_density_coverage(real, fake, k),
                                 rtol=1e-6)
  # Fakes equal to the reals cover every real ball.
  assert float(metrics.density_coverage(real, real, batch_size=16)[1]) == 1.0
  with pytest.raises(ValueError, match="N > k=5"):
    metrics.density_coverage(real[:5], real)
  with pytest.raises(ValueError, match=r"\[M, 5\]"):
    metrics.density_coverage(real, real[:, :3])


# ---------------------------------------------------------------- Parzen


def _numpy_parzen(samples, test, sigma):
  s = samples.reshape(len(samples), -1).astype(np.float64)
  x = test.reshape(len(test), -1).astype(np.float64)
  d2 = ((x[:, None, :] - s[None]) ** 2).sum(-1)
  return (logsumexp(-d2 / (2 * sigma**2), axis=1) - np.log(len(s))
          - 0.5 * s.shape[1] * np.log(2 * np.pi * sigma**2))


def test_parzen_matches_numpy():
  rng = np.random.default_rng(7)
  samples = rng.uniform(size=(30, 4, 4, 1)).astype(np.float32)
  test = rng.uniform(size=(13, 4, 4, 1)).astype(np.float32)
  for sigma in (0.1, 0.3, 1.0):
    expected = _numpy_parzen(samples, test, sigma)
    got = metrics.parzen_log_densities(samples, test, sigma, batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    mean, se = metrics.parzen_log_likelihood(samples, test, sigma,
                                             batch_size=4)
    np.testing.assert_allclose(mean, expected.mean(), rtol=1e-4)
    np.testing.assert_allclose(
        se, expected.std(ddof=1) / np.sqrt(len(expected)), rtol=1e-3)


def test_parzen_single_sample_is_a_gaussian():
  x = np.array([[0.5, -1.0]], np.float32)
  got = metrics.parzen_log_densities(np.zeros((1, 2), np.float32), x, 2.0)
  expected = scipy_stats_norm_logpdf(x, 2.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def scipy_stats_norm_logpdf(x, sigma):
  from scipy.stats import norm
  return norm.logpdf(x, scale=sigma).sum(-1)


def test_select_parzen_sigma_picks_the_best_validation_score():
  rng = np.random.default_rng(8)
  samples = rng.normal(size=(200, 2)).astype(np.float32)
  valid = rng.normal(size=(100, 2)).astype(np.float32)
  sigmas = [0.01, 0.3, 10.0]
  best, scores = metrics.select_parzen_sigma(samples, valid, sigmas)
  expected = [_numpy_parzen(samples, valid, s).mean() for s in sigmas]
  np.testing.assert_allclose(scores, expected, rtol=1e-4)
  assert best == 0.3 == sigmas[int(np.argmax(expected))]
  with pytest.raises(ValueError, match="positive"):
    metrics.select_parzen_sigma(samples, valid, [0.1, -1.0])


# ---------------------------------------------------------------- CAS

CAS_STEPS = 200  # 98.3% on digits; each training is ~2 s of CPU, mostly
                 # compilation


def test_cas_on_digits(digits):
  x_train = data.to_float(digits.train_images, digits.max_value)
  x_test = data.to_float(digits.test_images, digits.max_value)
  # Baseline: multinomial logistic regression on the pixels, 96.4%.
  logreg = LogisticRegression(max_iter=2000).fit(
      x_train.reshape(len(x_train), -1), digits.train_labels)
  baseline = logreg.score(x_test.reshape(len(x_test), -1), digits.test_labels)
  # "Generated" = the real training images: the CNN trained on them must be
  # at least about as good as the linear baseline.
  cas = metrics.classification_accuracy_score(
      x_train, digits.train_labels, x_test, digits.test_labels,
      num_classes=10, num_steps=CAS_STEPS)
  assert cas >= baseline - 0.01, (cas, baseline)
  # Labels independent of the images: chance level (0.1 for 10 classes;
  # the standard error on 360 test images is ~0.016).
  shuffled = np.random.default_rng(0).permutation(digits.train_labels)
  chance = metrics.classification_accuracy_score(
      x_train, shuffled, x_test, digits.test_labels, num_classes=10,
      num_steps=CAS_STEPS)
  assert 0.02 < chance < 0.2, chance


def test_cas_rejects_bad_inputs():
  x = np.zeros((4, 8, 8, 1), np.float32)
  with pytest.raises(ValueError, match="one shape"):
    metrics.classification_accuracy_score(
        x, np.zeros(4), np.zeros((4, 4, 4, 1)), np.zeros(4), num_classes=2)
  with pytest.raises(ValueError, match=r"must be in \[0, 2\)"):
    metrics.classification_accuracy_score(
        x, np.array([0, 1, 2, 0]), x, np.zeros(4), num_classes=2)


# ---------------------------------------------------------------- all


@dataclasses.dataclass
class _FixedFeatures:
  """A stand-in classifier: logits = first K pixels, features = all pixels."""
  k: int

  def logits_and_features(self, images):
    flat = jnp.asarray(images).reshape(len(images), -1)
    return flat[:, :self.k] * 100.0, flat


def test_evaluate_samples_keys_and_counts():
  k = 3
  rng = np.random.default_rng(9)
  real_labels = np.arange(30) % k
  fake_labels = np.arange(24) % k
  real = np.eye(4)[real_labels][:, :, None, None] + 0.1 * rng.uniform(
      size=(30, 4, 1, 1))
  fake = np.eye(4)[fake_labels][:, :, None, None] + 0.1 * rng.uniform(
      size=(24, 4, 1, 1))
  fake[0, :, 0, 0] = [0, 1, 0, 0]  # one sample of class 0 looks like a 1
  out = metrics.evaluate_samples(_FixedFeatures(k), fake, fake_labels, real,
                                 real_labels, num_classes=k)
  np.testing.assert_allclose(out["class_accuracy"], 23 / 24)
  np.testing.assert_allclose(out["matched_class_accuracy"], 23 / 24)
  assert out["code_to_class"] == [0, 1, 2]
  np.testing.assert_allclose(out["per_class_accuracy"], [7 / 8, 1, 1])
  np.testing.assert_allclose(out["inception_score"], float(
      metrics.inception_score(100.0 * np.asarray(fake).reshape(24, -1)[:, :k])))
  assert out["num_fake"] == 24 and out["num_real"] == 30
  assert out["num_fake_per_class"] == [8, 8, 8]
  assert out["num_real_per_class"] == [10, 10, 10]
  assert out["sample_counts"]["fid"] == {"fake": 24, "real": 30}
  assert out["sample_counts"]["kid"] == {"fake": 24, "real": 30,
                                         "subsets": 100, "subset_size": 24}
  assert out["sample_counts"]["density"] == {"fake": 24, "real": 30, "k": 5}
  assert out["sample_counts"]["coverage"] == {"fake": 24, "real": 30, "k": 5}
  for key in ("fid", "intra_fid", "precision", "recall", "kid", "kid_std",
              "density", "coverage"):
    assert isinstance(out[key], float) and np.isfinite(out[key]), key
  assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1
  # Computed on the classifier's features (here the flattened pixels).
  real_f = np.asarray(real, np.float32).reshape(30, -1)
  fake_f = np.asarray(fake, np.float32).reshape(24, -1)
  np.testing.assert_allclose(
      [out["density"], out["coverage"]],
      _numpy_density_coverage(real_f, fake_f, 5), rtol=1e-6)
  per_subset = []
  draws = np.random.default_rng(0)
  for _ in range(100):  # m = 24: every subset holds all the fakes
    r = real_f[draws.choice(30, 24, replace=False)]
    f = fake_f[draws.choice(24, 24, replace=False)]
    per_subset.append(_numpy_mmd2(r, f))
  np.testing.assert_allclose([out["kid"], out["kid_std"]],
                             [np.mean(per_subset), np.std(per_subset)],
                             rtol=1e-4, atol=1e-6)


def test_attribute_accuracy_by_hand():
  requested = np.array([[7, 0], [7, 0], [3, 1], [3, 1], [2, 2], [5, 4]])
  predicted = np.array([[7, 0], [1, 0], [3, 1], [3, 5], [2, 2], [5, 4]])
  out = metrics.attribute_accuracy(predicted, requested, ("digit", "color"),
                                   held_out=[(7, 0), (9, 9)])
  assert out == {
      "num_seen": 4, "digit_accuracy_seen": 1.0, "color_accuracy_seen": 0.75,
      "joint_accuracy_seen": 0.75,
      "num_held_out": 2, "digit_accuracy_held_out": 0.5,
      "color_accuracy_held_out": 1.0, "joint_accuracy_held_out": 0.5}
  # nothing held out: only the seen part
  assert set(metrics.attribute_accuracy(predicted, requested,
                                        ("digit", "color"))) == {
      "num_seen", "digit_accuracy_seen", "color_accuracy_seen",
      "joint_accuracy_seen"}
  with pytest.raises(ValueError, match=r"\[N, 3\]"):
    metrics.attribute_accuracy(predicted, requested, ("a", "b", "c"))
