"""Sample-quality metrics for conditional generators, in JAX.

Every metric but CAS (which trains a classifier on the images) works on
classifier outputs (logits or penultimate features of the
`classifier.ReferenceClassifier`, the domain-classifier protocol) or on raw
vectors, and is batched so that ~10k x 10k comparisons fit in memory.

- `class_accuracy`, `per_class_accuracy`: how often the classifier assigns a
  sample generated for class c to c; `matched_class_accuracy`: the same after
  the best one-to-one relabelling of the codes (for models whose codes are
  not tied to the labels, e.g. InfoGAN-style).
- `frechet_distance`, `gaussian_statistics`, `fid`: FID (Heusel et al. 2017).
- `per_class_fid`, `intra_fid`: FID within each class, averaged (Miyato &
  Koyama 2018).
- `polynomial_mmd2`, `kid_per_subset`, `kid`: Kernel Inception Distance, the
  unbiased MMD^2 under a cubic polynomial kernel over random subsets
  (Binkowski et al. 2018).
- `inception_score`: exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016).
- `precision_recall`: k-NN manifold precision / recall (Kynkaanniemi et al.
  2019).
- `density_coverage`: k-NN density and coverage (Naeem et al. 2020).
- `classification_accuracy_score`: a classifier trained on the samples only,
  tested on real data (CAS, Ravuri & Vinyals 2019).
- `parzen_log_likelihood`, `select_parzen_sigma`: Gaussian Parzen-window
  log-likelihood (Goodfellow et al. 2014; Mirza & Osindero 2014).
- `evaluate_samples`: all metrics of the reference classifier's outputs at
  once (all the above but the Parzen window and CAS), with the sample counts
  behind each.

Matrix products use `Precision.HIGHEST`, so results do not depend on an
accelerator's reduced-precision matmul defaults.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from condgen_jax.evaluation import classifier as classifier_lib
from condgen_jax.data import datasets as data_lib

HIGHEST = jax.lax.Precision.HIGHEST
_matmul = functools.partial(jnp.matmul, precision=HIGHEST)


def _as_float(x):
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


# ----------------------------------------------------------------------------
# Class accuracy.


def per_class_accuracy(classifier_logits, requested_labels,
                       num_classes: int | None = None):
  """acc_c = #{i : y_i = c, argmax logits_i = c} / #{i : y_i = c}, `[K]`.

  `requested_labels` `[N]` are the classes the samples were generated for;
  classes without samples give NaN. K defaults to `logits.shape[-1]`.
  """
  logits = jnp.asarray(classifier_logits)
  labels = jnp.asarray(requested_labels)
  k = num_classes or logits.shape[-1]
  onehot = jax.nn.one_hot(labels, k)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  counts = onehot.sum(0)
  return jnp.where(counts > 0, correct @ onehot / jnp.maximum(counts, 1),
                   jnp.nan)


def class_accuracy(classifier_logits, requested_labels):
  """Fraction of all samples the classifier assigns to their requested class:
  mean_i [argmax logits_i == y_i]."""
  logits = jnp.asarray(classifier_logits)
  labels = jnp.asarray(requested_labels)
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits {logits.shape} and labels {labels.shape} "
                     "disagree on the number of samples.")
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def matched_class_accuracy(classifier_logits, requested_labels,
                           num_classes: int | None = None):
  """Class accuracy under the best one-to-one map from codes to classes.

  With confusion counts N[c, k] = #{i : y_i = c, argmax logits_i = k}, returns
  (max_pi sum_c N[c, pi(c)] / N, pi as a list: pi[c] is the class matched to
  code c), the maximum over permutations pi found by the Hungarian algorithm
  (`scipy.optimize.linear_sum_assignment`). It equals `class_accuracy` when
  the codes already mean their classes; it is what an InfoGAN-style code, which
  the model may assign to classes in any order, can be judged by (Chen et
  al. 2016 report their categorical code's accuracy this way).
  """
  logits = np.asarray(classifier_logits)
  labels = np.asarray(requested_labels)
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"logits {logits.shape} and labels {labels.shape} "
                     "disagree on the number of samples.")
  k = num_classes or logits.shape[-1]
  confusion = np.zeros((k, k), np.int64)
  np.add.at(confusion, (labels, logits.argmax(-1)), 1)
  codes, classes = scipy.optimize.linear_sum_assignment(confusion,
                                                        maximize=True)
  mapping = [int(c) for c in classes[np.argsort(codes)]]
  return float(confusion[codes, classes].sum() / labels.size), mapping


def attribute_accuracy(predicted, requested, names, held_out=()) -> dict:
  """Per-attribute and joint accuracy, on seen and on held-out combinations.

  `predicted`, `requested`: `[N, A]` integer attributes (a reference
  classifier's argmax per attribute; what the samples were generated for);
  `held_out`: the combinations (tuples of A values) kept out of training.
  For each attribute a, `<a>_accuracy_<part>` = mean_i [pred_ia == req_ia]
  over the samples whose requested combination is in `part` (`seen`: not
  held out; `held_out`), and `joint_accuracy_<part>` = mean_i [all a:
  pred_ia == req_ia]; `num_<part>` counts the samples. A part without
  samples is left out.
  """
  predicted = np.asarray(predicted)
  requested = np.asarray(requested)
  if predicted.shape != requested.shape or requested.ndim != 2 or (
      requested.shape[1] != len(names)):
    raise ValueError(f"predicted {predicted.shape} and requested "
                     f"{requested.shape} must both be [N, {len(names)}].")
  held = {tuple(int(v) for v in c) for c in held_out}
  is_held = np.array([tuple(int(v) for v in r) in held for r in requested],
                     bool).reshape(len(requested))
  correct = predicted == requested
  out = {}
  for part, mask in (("seen", ~is_held), ("held_out", is_held)):
    if not mask.any():
      continue
    out[f"num_{part}"] = int(mask.sum())
    for i, name in enumerate(names):
      out[f"{name}_accuracy_{part}"] = float(correct[mask, i].mean())
    out[f"joint_accuracy_{part}"] = float(correct[mask].all(1).mean())
  return out


# ----------------------------------------------------------------------------
# Frechet distance, FID and intra-FID.


def gaussian_statistics(features):
  """(mu `[D]`, sigma `[D, D]`): mean and unbiased covariance (ddof=1, as
  `np.cov`) of `features` `[N, D]`."""
  x = _as_float(features)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"features must be [N, D] with N >= 2; got {x.shape}.")
  mu = jnp.mean(x, axis=0)
  xc = x - mu
  return mu, _matmul(xc.T, xc) / (x.shape[0] - 1)


def _psd_sqrt(sigma):
  """Symmetric PSD square roots of `[..., D, D]` via eigh, negative
  eigenvalues clipped."""
  sigma = 0.5 * (sigma + jnp.swapaxes(sigma, -1, -2))
  w, v = jnp.linalg.eigh(sigma)
  return _matmul(v * jnp.sqrt(jnp.clip(w, 0.0))[..., None, :],
                 jnp.swapaxes(v, -1, -2))


@jax.jit
def frechet_distance(mu1, sigma1, mu2, sigma2):
  """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

  The Frechet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2),
  Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium". Tr (S1 S2)^(1/2) equals the trace of
  (S1^(1/2) S2 S1^(1/2))^(1/2), whose eigenvalues are the squared singular
  values of A = S1^(1/2) S2^(1/2); so it is computed as the nuclear norm of A
  (two symmetric `eigh` with tiny negative eigenvalues clipped, then one SVD).
  Unlike sqrt(eigvalsh(...)), this keeps rounding errors at O(eps ||S||)
  instead of O(sqrt(eps) ||S||) for the (many) near-zero directions.
  """
  mu1, mu2 = _as_float(mu1), _as_float(mu2)
  sigma1, sigma2 = _as_float(sigma1), _as_float(sigma2)
  # Both roots come from ONE (batched) eigh. On CPU, jaxlib's batched LAPACK
  # kernels queue their chunks on XLA's intra-op thread pool and block the
  # pool thread they run on until the chunks are done; two independent
  # batched calls (two eighs under vmap, as in intra-FID) can take every
  # thread of a 2-core machine's pool and wait forever.
  root1, root2 = _psd_sqrt(jnp.stack([sigma1, sigma2]))
  a = _matmul(root1, root2)
  tr_covmean = jnp.sum(jnp.linalg.svd(a, compute_uv=False))
  diff = mu1 - mu2
  return (jnp.dot(diff, diff, precision=HIGHEST) + jnp.trace(sigma1)
          + jnp.trace(sigma2) - 2.0 * tr_covmean)


def fid(real_features, fake_features):
  """FID between two feature sets `[N, D]`, `[M, D]` (Heusel et al. 2017)."""
  return frechet_distance(*gaussian_statistics(real_features),
                          *gaussian_statistics(fake_features))


@functools.partial(jax.jit, static_argnames="num_classes")
def _class_statistics(features, labels, num_classes: int):
  """Per-class (mu `[K, D]`, sigma `[K, D, D]`) with ddof=1, shape-static."""
  x = _as_float(features)
  w = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)  # [N, K]
  counts = w.sum(0)
  mus = _matmul(w.T, x) / jnp.maximum(counts, 1.0)[:, None]

  def cov(mu, wc, n):
    xc = x - mu
    return _matmul((xc * wc[:, None]).T, xc) / jnp.maximum(n - 1.0, 1.0)

  return mus, jax.vmap(cov, in_axes=(0, 1, 0))(mus, w, counts)


def _check_class_counts(labels, num_classes: int, what: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{what} labels must lie in [0, {num_classes}); got "
                     f"values in [{labels.min()}, {labels.max()}].")
  counts = np.bincount(labels, minlength=num_classes)
  if (counts < 2).any():
    missing = np.flatnonzero(counts < 2).tolist()
    raise ValueError(f"Intra-FID needs >= 2 {what} samples per class; classes "
                     f"{missing} have {counts[missing].tolist()}.")
  return counts


def per_class_fid(real_features, real_labels, fake_features, fake_labels,
                  num_classes: int):
  """`[K]`: FID_c between the real and the fake features of class c."""
  _check_class_counts(real_labels, num_classes, "real")
  _check_class_counts(fake_labels, num_classes, "fake")
  mr, sr = _class_statistics(real_features, jnp.asarray(real_labels),
                             num_classes)
  mf, sf = _class_statistics(fake_features, jnp.asarray(fake_labels),
                             num_classes)
  return jax.vmap(frechet_distance)(mr, sr, mf, sf)


def intra_fid(real_features, real_labels, fake_features, fake_labels,
              num_classes: int):
  """(1/K) sum_c FID(real | y=c, fake | y=c), Miyato & Koyama 2018, "cGANs
  with Projection Discriminator". Every class needs >= 2 samples in both
  sets (ValueError otherwise)."""
  return jnp.mean(per_class_fid(real_features, real_labels, fake_features,
                                fake_labels, num_classes))


# ----------------------------------------------------------------------------
# Kernel Inception Distance.

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _cubic_kernel(a, b):
  """k(x, y) = (x^T y / D + 1)^3 for every row pair, `[len(a), len(b)]`."""
  return (_matmul(a, b.T) / a.shape[-1] + 1.0) ** 3


@jax.jit
def polynomial_mmd2(x, y):
  """Unbiased MMD^2 between `x` `[m, D]` and `y` `[n, D]` (m, n >= 2):

    MMD^2_u = sum_{i != i'} k(x_i, x_i') / (m (m - 1))
              + sum_{j != j'} k(y_j, y_j') / (n (n - 1))
              - 2 sum_{i, j} k(x_i, y_j) / (m n),

  with the cubic polynomial kernel k(x, y) = (x^T y / D + 1)^3 of KID
  (Binkowski et al. 2018, "Demystifying MMD GANs"). Unbiased, so it can be
  slightly negative when both sets come from one distribution.
  """
  x, y = _as_float(x), _as_float(y)
  m, n = x.shape[0], y.shape[0]
  kxx, kyy = _cubic_kernel(x, x), _cubic_kernel(y, y)
  return ((jnp.sum(kxx) - jnp.trace(kxx)) / (m * (m - 1))
          + (jnp.sum(kyy) - jnp.trace(kyy)) / (n * (n - 1))
          - 2.0 * jnp.sum(_cubic_kernel(x, y)) / (m * n))


def kid_subset_size(num_real: int, num_fake: int,
                    subset_size: int = KID_SUBSET_SIZE) -> int:
  """The subset size KID uses: `subset_size` clipped to both set sizes."""
  return min(subset_size, num_real, num_fake)


@jax.jit
def _subset_mmd2(real, fake, real_idx, fake_idx):
  return jax.lax.map(lambda idx: polynomial_mmd2(real[idx[0]], fake[idx[1]]),
                     (real_idx, fake_idx))


def kid_per_subset(real_features, fake_features,
                   num_subsets: int = KID_SUBSETS,
                   subset_size: int = KID_SUBSET_SIZE, seed: int = 0):
  """`[num_subsets]` values of `polynomial_mmd2` on random subsets.

  Each subset takes m = `kid_subset_size(N, M, subset_size)` real and m fake
  rows without replacement, as the reference implementations do (Binkowski
  et al. 2018; 100 subsets of 1000 by default, as in torch-fidelity and
  clean-fid). The indices come from `np.random.default_rng(seed)`: for each
  subset in turn, `rng.choice(N, m, replace=False)` for the real rows, then
  `rng.choice(M, m, replace=False)` for the fake ones; so the result is a
  pure function of the features and `seed`. The subsets are evaluated one
  at a time (memory ~3 m^2 floats).
  """
  real, fake = _as_float(real_features), _as_float(fake_features)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"features must be [N, D] and [M, D]; got {real.shape} "
                     f"and {fake.shape}.")
  if num_subsets < 1:
    raise ValueError(f"num_subsets must be >= 1; got {num_subsets}.")
  m = kid_subset_size(real.shape[0], fake.shape[0], subset_size)
  if m < 2:
    raise ValueError(f"KID needs subsets of >= 2 samples; got {m} (from "
                     f"{real.shape[0]} real, {fake.shape[0]} fake, "
                     f"subset_size={subset_size}).")
  rng = np.random.default_rng(seed)
  idx = [(rng.choice(real.shape[0], m, replace=False),
          rng.choice(fake.shape[0], m, replace=False))
         for _ in range(num_subsets)]
  real_idx, fake_idx = (np.stack(i).astype(np.int32) for i in zip(*idx))
  return _subset_mmd2(real, fake, jnp.asarray(real_idx), jnp.asarray(fake_idx))


def kid(real_features, fake_features, num_subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0):
  """Kernel Inception Distance, Binkowski et al. 2018, "Demystifying MMD
  GANs": (mean, standard deviation (ddof=0, as torch-fidelity)) over subsets
  of the unbiased MMD^2 with kernel k(x, y) = (x^T y / D + 1)^3; see
  `polynomial_mmd2` and `kid_per_subset` for the estimator and the subsets.
  Lower is better; 0 in expectation for samples of the real distribution.
  """
  values = kid_per_subset(real_features, fake_features, num_subsets,
                          subset_size, seed)
  return jnp.mean(values), jnp.std(values)


# ----------------------------------------------------------------------------
# Inception Score.


def inception_score_per_split(logits, splits: int = 1):
  """`[splits]` scores exp(E_x KL(p(y|x) || p(y))), p(y) = the split's mean
  prediction, on `splits` consecutive equal parts (remainder dropped, as in
  the reference implementation of Salimans et al. 2016)."""
  logits = _as_float(logits)
  n = logits.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f"splits must be in [1, {n}] (the number of samples); "
                     f"got {splits}.")
  per = n // splits
  log_p = jax.nn.log_softmax(logits[:splits * per], axis=-1)
  log_p = log_p.reshape(splits, per, -1)
  log_py = jax.nn.logsumexp(log_p, axis=1, keepdims=True) - jnp.log(per)
  kl = jnp.sum(jnp.exp(log_p) * (log_p - log_py), axis=-1)  # [splits, per]
  return jnp.exp(jnp.mean(kl, axis=1))


def inception_score(logits, splits: int = 1):
  """IS = exp(E_x KL(p(y|x) || p(y))), Salimans et al. 2016, "Improved
  Techniques for Training GANs"; here p(y|x) = softmax of the reference
  classifier's `logits` `[N, K]`. Between 1 (all predictions identical) and
  K (confident and balanced). With `splits` > 1, the mean over splits (the
  spread is `inception_score_per_split(...).std()`)."""
  return jnp.mean(inception_score_per_split(logits, splits))


# ----------------------------------------------------------------------------
# Batched pairwise distances.


def _row_chunks(x, batch_size: int):
  """[N, D] -> ([C, batch_size, D], N), zero-padded."""
  n = x.shape[0]
  chunks = -(-n // batch_size)
  x = jnp.pad(x, ((0, chunks * batch_size - n), (0, 0)))
  return x.reshape(chunks, batch_size, x.shape[-1]), n


def _sq_dists(a, b, b_sq):
  """Squared Euclidean distances `[len(a), len(b)]` (clipped at 0)."""
  a_sq = jnp.sum(a * a, axis=-1)
  return jnp.maximum(a_sq[:, None] + b_sq[None, :]
                     - 2.0 * _matmul(a, b.T), 0.0)


@functools.partial(jax.jit, static_argnames=("k", "batch_size"))
def knn_radii(x, k: int, batch_size: int = 1000):
  """Squared distance of each row of `x` `[N, D]` to its k-th nearest other
  row, `[N]` (batched over rows; memory `batch_size x N`)."""
  x = _as_float(x)
  x_sq = jnp.sum(x * x, axis=-1)
  chunks, n = _row_chunks(x, batch_size)

  def one(rows):
    d = _sq_dists(rows, x, x_sq)
    return -jax.lax.top_k(-d, k + 1)[0][:, k]  # index 0 is the row itself

  return jax.lax.map(one, chunks).reshape(-1)[:n]


@functools.partial(jax.jit, static_argnames="batch_size")
def in_manifold(queries, support, support_radii, batch_size: int = 1000):
  """`[M]` bool: is query j within some ball B(support_i, r_i)? (`radii` are
  squared, as from `knn_radii`)."""
  queries, support = _as_float(queries), _as_float(support)
  s_sq = jnp.sum(support * support, axis=-1)
  chunks, m = _row_chunks(queries, batch_size)

  def one(rows):
    return jnp.any(_sq_dists(rows, support, s_sq) <= support_radii[None, :],
                   axis=1)

  return jax.lax.map(one, chunks).reshape(-1)[:m]


def precision_recall(real_features, fake_features, k: int = 3,
                     batch_size: int = 1000):
  """Improved precision and recall, Kynkaanniemi et al. 2019.

  The real (fake) manifold is the union of balls around each real (fake)
  feature vector with radius the distance to its k-th nearest neighbour in
  the same set. precision = fraction of fake samples inside the real
  manifold; recall = fraction of real samples inside the fake manifold.
  Distances are computed `batch_size` rows at a time. Returns two scalars.
  """
  real, fake = _as_float(real_features), _as_float(fake_features)
  for name, x in (("real", real), ("fake", fake)):
    if x.ndim != 2 or x.shape[0] <= k:
      raise ValueError(f"{name}_features must be [N, D] with N > k={k}; got "
                       f"{x.shape}.")
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}.")
  real_radii = knn_radii(real, k, batch_size)
  fake_radii = knn_radii(fake, k, batch_size)
  precision = jnp.mean(in_manifold(fake, real, real_radii, batch_size))
  recall = jnp.mean(in_manifold(real, fake, fake_radii, batch_size))
  return precision, recall


@functools.partial(jax.jit, static_argnames="batch_size")
def _ball_hits(support, support_radii, queries, batch_size: int = 1000):
  """(`[M]` int: how many balls B(support_i, r_i) hold query j, `[N]` bool:
  does ball i hold some query), `radii` squared as from `knn_radii`; batched
  over the support rows (memory `batch_size x M`)."""
  support, queries = _as_float(support), _as_float(queries)
  q_sq = jnp.sum(queries * queries, axis=-1)
  chunks, n = _row_chunks(support, batch_size)
  # Padding rows get radius -1: they hold nothing.
  radii = jnp.pad(support_radii, (0, chunks.shape[0] * batch_size - n),
                  constant_values=-1.0).reshape(chunks.shape[:2])

  def one(args):
    rows, r = args
    inside = _sq_dists(rows, queries, q_sq) <= r[:, None]
    return jnp.sum(inside, axis=0, dtype=jnp.int32), jnp.any(inside, axis=1)

  counts, holds = jax.lax.map(one, (chunks, radii))
  return jnp.sum(counts, axis=0), holds.reshape(-1)[:n]


def density_coverage(real_features, fake_features, k: int = 5,
                     batch_size: int = 1000):
  """Density and coverage, Naeem et al. 2020, "Reliable Fidelity and
  Diversity Metrics for Generative Models".

  With real X_1..X_N, fake Y_1..Y_M and B(X_i, NND_k(X_i)) the closed ball
  around X_i reaching its k-th nearest other real sample (`knn_radii`):

    density  = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))],
    coverage = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))].

  Density is ~1 for fakes distributed like the reals (it can exceed 1);
  coverage, in [0, 1], is the fraction of real neighbourhoods that hold a
  fake sample. Only real-sample balls are used, so outlying reals matter
  less than in `precision_recall`. Distances are computed `batch_size` rows
  at a time. Returns two scalars. (The authors' `prdc` package tests
  d < NND_k, an open ball; the two differ only on ties.)
  """
  real, fake = _as_float(real_features), _as_float(fake_features)
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}.")
  if real.ndim != 2 or real.shape[0] <= k:
    raise ValueError(f"real_features must be [N, D] with N > k={k}; got "
                     f"{real.shape}.")
  if fake.ndim != 2 or fake.shape[0] < 1 or fake.shape[1] != real.shape[1]:
    raise ValueError(f"fake_features must be [M, {real.shape[1]}] with M >= "
                     f"1; got {fake.shape}.")
  counts, holds = _ball_hits(real, knn_radii(real, k, batch_size), fake,
                             batch_size)
  return jnp.sum(counts) / (k * fake.shape[0]), jnp.mean(holds)


# ----------------------------------------------------------------------------
# Parzen-window log-likelihood.


@functools.partial(jax.jit, static_argnames="batch_size")
def parzen_log_densities(samples, test, sigma, batch_size: int = 100):
  """`[M]`: log p(x_j) under a Gaussian Parzen window on `samples`.

  log p(x) = logsumexp_i[-||x - s_i||^2 / (2 sigma^2)] - log n
             - (d / 2) log(2 pi sigma^2),
  with n samples `[n, ...]` and test points `[M, ...]` flattened to d values
  (Goodfellow et al. 2014, Mirza & Osindero 2014; Breuleux et al. 2011).
  Both sets are centred on the samples' mean before the distance expansion
  to limit float32 cancellation.
  """
  s = _as_float(samples).reshape(samples.shape[0], -1)
  x = _as_float(test).reshape(test.shape[0], -1)
  if s.shape[1] != x.shape[1]:
    raise ValueError(f"samples have {s.shape[1]} values each, test points "
                     f"{x.shape[1]}.")
  center = jnp.mean(s, axis=0)
  s, x = s - center, x - center
  s_sq = jnp.sum(s * s, axis=-1)
  n, d = s.shape
  sigma = jnp.asarray(sigma, s.dtype)
  chunks, m = _row_chunks(x, batch_size)

  def one(rows):
    return jax.nn.logsumexp(-_sq_dists(rows, s, s_sq) / (2 * sigma**2), 1)

  lse = jax.lax.map(one, chunks).reshape(-1)[:m]
  return lse - jnp.log(n) - 0.5 * d * jnp.log(2 * jnp.pi * sigma**2)


def parzen_log_likelihood(samples, test, sigma, batch_size: int = 100):
  """(mean, standard error) of `parzen_log_densities` over the test points;
  standard error = std (ddof=1) / sqrt(M). In nats."""
  ll = parzen_log_densities(samples, test, sigma, batch_size)
  return jnp.mean(ll), jnp.std(ll, ddof=1) / jnp.sqrt(ll.shape[0])


def select_parzen_sigma(samples, validation, sigmas, batch_size: int = 100):
  """Picks sigma on a validation split, as Goodfellow et al. 2014 do.

  Returns (best sigma as a float, `[len(sigmas)]` mean validation
  log-likelihoods). Evaluate the test split with the chosen sigma.
  """
  sigmas = [float(s) for s in np.ravel(sigmas)]
  if not sigmas or min(sigmas) <= 0:
    raise ValueError(f"sigmas must be a non-empty list of positive values; "
                     f"got {sigmas}.")
  scores = jnp.stack([
      jnp.mean(parzen_log_densities(samples, validation, s, batch_size))
      for s in sigmas])
  return sigmas[int(jnp.argmax(scores))], scores


# ----------------------------------------------------------------------------
# Classification Accuracy Score.

CAS_STEPS = 300


def classification_accuracy_score(train_images, train_labels, test_images,
                                  test_labels, *, num_classes: int,
                                  num_steps: int = CAS_STEPS,
                                  batch_size: int = 64,
                                  learning_rate: float = 3e-3,
                                  max_shift: int = 0, seed: int = 0) -> float:
  """Classification Accuracy Score, Ravuri & Vinyals 2019, "Classification
  Accuracy Score for Conditional Generative Models".

  A classifier f is trained on generated samples only, `train_images`
  (float in [0, 1], `[N, H, W, C]`) with the classes they were generated for
  `train_labels`, and tested on real data:

    CAS = 1/M sum_j 1[argmax f(x_j) = y_j]   over `test_images`, `test_labels`

  (real, e.g. the test split, float in [0, 1]). f is the reference
  `classifier.CNN`, trained by `classifier.train_classifier` (Adam with
  cosine decay from `learning_rate`, `num_steps` steps of `batch_size`,
  clipped to N; random +-`max_shift` pixel shifts; all from `seed`). A few
  hundred steps keep it affordable on CPU, so CAS is below what a longer
  training on the same samples would give; compare it with the same setting
  trained on real data. Returns a float in [0, 1].
  """
  train_images = np.asarray(train_images, np.float32)
  test_images = np.asarray(test_images, np.float32)
  if train_images.ndim != 4 or train_images.shape[1:] != test_images.shape[1:]:
    raise ValueError(f"train and test images must be [N, H, W, C] of one "
                     f"shape; got {train_images.shape} and "
                     f"{test_images.shape}.")
  ds = data_lib.Dataset(
      "cas", train_images, np.asarray(train_labels, np.int32), test_images,
      np.asarray(test_labels, np.int32),
      tuple(str(c) for c in range(num_classes)), 1.0, "generated")
  _, accuracy = classifier_lib.train_classifier(
      ds, seed=seed, num_steps=num_steps,
      batch_size=min(batch_size, len(train_images)),
      learning_rate=learning_rate, max_shift=max_shift)
  return accuracy


# ----------------------------------------------------------------------------
# Everything at once.


def evaluate_samples(classifier, fake_images, fake_labels, real_images,
                     real_labels, *, num_classes: int, k: int = 3,
                     density_k: int = 5, kid_subsets: int = KID_SUBSETS,
                     kid_size: int = KID_SUBSET_SIZE, seed: int = 0,
                     batch_size: int = 1000) -> dict:
  """Classifier-based metrics of conditional samples, as plain Python values.

  Args:
    classifier: a `classifier.ReferenceClassifier` (or anything with
      `logits_and_features(images)`).
    fake_images, fake_labels: generated images (float32 in [0, 1],
      `[N, H, W, C]`) and the classes they were generated for.
    real_images, real_labels: held-out real images and their labels, same
      layout (e.g. the test split).
    num_classes: K.
    k: neighbourhood size of precision / recall.
    density_k: neighbourhood size of density / coverage.
    kid_subsets, kid_size, seed: KID's number of subsets, their size (clipped
      to the sample counts, see `kid_subset_size`) and the seed of their
      draws.

  Returns a dict with class_accuracy, matched_class_accuracy and its
  code_to_class map (see `matched_class_accuracy`), per_class_accuracy
  (list of K),
  fid, intra_fid, inception_score (of the fake samples), precision, recall,
  kid and kid_std (mean and standard deviation over subsets), density,
  coverage, num_fake, num_real, num_fake_per_class, num_real_per_class and
  sample_counts: for each metric, the number of fake / real samples it used
  (with k for the k-NN metrics; subsets and subset_size for KID).
  """
  fake_labels, real_labels = np.asarray(fake_labels), np.asarray(real_labels)
  fake_logits, fake_feats = classifier.logits_and_features(fake_images)
  _, real_feats = classifier.logits_and_features(real_images)
  num_fake, num_real = len(fake_labels), len(real_labels)
  if fake_feats.shape[0] != num_fake or real_feats.shape[0] != num_real:
    raise ValueError("Images and labels differ in number: fake "
                     f"{fake_feats.shape[0]} vs {num_fake}, real "
                     f"{real_feats.shape[0]} vs {num_real}.")
  fake_counts = np.bincount(fake_labels, minlength=num_classes).tolist()
  real_counts = np.bincount(real_labels, minlength=num_classes).tolist()
  out = _label_metrics(fake_logits, fake_labels, num_classes)
  out.update(_feature_metrics(real_feats, real_labels, fake_feats,
                              fake_labels, num_classes, k=k,
                              density_k=density_k, kid_subsets=kid_subsets,
                              kid_size=kid_size, seed=seed,
                              batch_size=batch_size))
  out["inception_score"] = float(inception_score(fake_logits))
  out.update(num_fake=num_fake, num_real=num_real,
             num_fake_per_class=fake_counts, num_real_per_class=real_counts)
  out["sample_counts"] = _sample_counts(
      num_fake, num_real, fake_counts, real_counts, k=k, density_k=density_k,
      kid_counts={"subsets": kid_subsets, "subset_size": kid_subset_size(
          num_real, num_fake, kid_size)})
  return out


def _sample_counts(num_fake, num_real, fake_counts, real_counts, *, k,
                   density_k, kid_counts) -> dict:
  """For each metric of `evaluate_samples`: the samples it used."""
  both = {"fake": num_fake, "real": num_real}
  return {
      "class_accuracy": {"fake": num_fake, "real": 0},
      "matched_class_accuracy": {"fake": num_fake, "real": 0},
      "per_class_accuracy": {"fake": fake_counts, "real": 0},
      "fid": both,
      "intra_fid": {"fake": fake_counts, "real": real_counts},
      "inception_score": {"fake": num_fake, "real": 0},
      "precision": dict(both, k=k),
      "recall": dict(both, k=k),
      "kid": dict(both, **kid_counts),
      "kid_std": dict(both, **kid_counts),
      "density": dict(both, k=density_k),
      "coverage": dict(both, k=density_k),
  }


def _label_metrics(fake_logits, fake_labels, num_classes: int) -> dict:
  """The metrics of the classifier's predictions on the samples."""
  matched, code_to_class = matched_class_accuracy(fake_logits, fake_labels,
                                                  num_classes)
  return {
      "class_accuracy": float(class_accuracy(fake_logits, fake_labels)),
      "matched_class_accuracy": matched,
      "code_to_class": code_to_class,
      "per_class_accuracy": [float(a) for a in per_class_accuracy(
          fake_logits, fake_labels, num_classes)],
  }


def _feature_metrics(real_feats, real_labels, fake_feats, fake_labels,
                     num_classes: int, *, k, density_k, kid_subsets,
                     kid_size, seed, batch_size) -> dict:
  """The metrics comparing the samples' and the real images' features."""
  precision, recall = precision_recall(real_feats, fake_feats, k, batch_size)
  density, coverage = density_coverage(real_feats, fake_feats, density_k,
                                       batch_size)
  kid_mean, kid_std = kid(real_feats, fake_feats, kid_subsets, kid_size, seed)
  return {
      "fid": float(fid(real_feats, fake_feats)),
      "intra_fid": float(intra_fid(real_feats, real_labels, fake_feats,
                                   fake_labels, num_classes)),
      "precision": float(precision), "recall": float(recall),
      "kid": float(kid_mean), "kid_std": float(kid_std),
      "density": float(density), "coverage": float(coverage),
  }
