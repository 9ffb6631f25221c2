"""GAN losses: pure functions of discriminator LOGITS, never probabilities.

D(x) = sigmoid(logit). Every log D is written with `jax.nn.log_sigmoid` /
`softplus`, so logits of +-1e4 give finite values and gradients. They are
elementwise in the logits and keep their leading shape (`[B]`, or
`[B, H, W]` for a patch discriminator); the caller reduces.

- minimax (Goodfellow et al. 2014), with one-sided label smoothing
  (Salimans et al. 2016), and the non-saturating generator loss;
- least squares (Mao et al. 2017);
- Wasserstein (Arjovsky et al. 2017), `clip_weights`, and the gradient
  penalty (Gulrajani et al. 2017);
- hinge (Lim & Ye 2017; Miyato et al. 2018);
- relativistic average (Jolicoeur-Martineau 2019), whose generator loss
  needs the real logits, and the R1 penalty (Mescheder et al. 2018);
- AC-GAN class terms (Odena et al. 2017), one cross-entropy per attribute
  summed for a condition of several attributes;
- feature matching (Salimans et al. 2016);
- the relativistic pairing loss (RpGAN: Jolicoeur-Martineau 2019; Huang
  et al. 2024) and the R2 penalty (Mescheder et al. 2018);
- LeCam regularisation (Tseng et al. 2021), balanced consistency
  regularisation (bCR, Zhao et al. 2021) and ReACGAN's data-to-data
  cross-entropy (D2D-CE, Kang et al. 2021).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

# GAN losses. D(x) = sigmoid(l) for a logit l, so
#   -log D(x)     = -log_sigmoid(l)  = softplus(-l),
#   -log(1 - D(x)) = -log_sigmoid(-l) = softplus(l).


def minimax_discriminator_loss(real_logits, fake_logits, *,
                               real_label_smoothing: float = 0.0):
  """-log D(x) - log(1 - D(G(z))), with one-sided label smoothing.

  Goodfellow et al. 2014, "Generative Adversarial Nets", eq. 1 (the
  discriminator maximises it; this is its negation, the cross-entropy). With
  `real_label_smoothing` s the real target is 1 - s (Salimans et al. 2016,
  "Improved Techniques for Training GANs", sec. 3.4; fake targets stay 0):

    loss = -[(1 - s) log s(l_real) + s log(1 - s(l_real))]
           - log(1 - s(l_fake)).

  `real_logits` and `fake_logits` are paired per example (same shape, or
  broadcastable); returns their broadcast shape.
  """
  s = real_label_smoothing
  if isinstance(s, (int, float)) and not 0.0 <= s < 1.0:
    raise ValueError(f"real_label_smoothing must be in [0, 1); got {s!r}.")
  real_term = -((1.0 - s) * jax.nn.log_sigmoid(real_logits)
                + s * jax.nn.log_sigmoid(-real_logits))
  fake_term = -jax.nn.log_sigmoid(-fake_logits)
  return real_term + fake_term


def minimax_generator_loss(fake_logits):
  """log(1 - D(G(z))), the saturating minimax generator loss (minimised).

  Goodfellow et al. 2014, eq. 1. Its gradient vanishes when D confidently
  rejects the samples (l_fake -> -inf), hence `non_saturating_generator_loss`.
  """
  return jax.nn.log_sigmoid(-fake_logits)


def non_saturating_generator_loss(fake_logits):
  """-log D(G(z)) = softplus(-l_fake).

  The "-log D trick" of Goodfellow et al. 2014, sec. 3: same fixed point as the
  minimax loss, strong gradients early in training.
  """
  return -jax.nn.log_sigmoid(fake_logits)


def least_squares_discriminator_loss(real_logits, fake_logits):
  """1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2, with D(x) the raw output (the "logit").

  Mao et al. 2017, "Least Squares Generative Adversarial Networks", eq. 2 with
  the 0-1 coding a = 0 (fake), b = 1 (real).
  """
  return 0.5 * jnp.square(real_logits - 1.0) + 0.5 * jnp.square(fake_logits)


def least_squares_generator_loss(fake_logits):
  """1/2 (D(G(z)) - 1)^2: Mao et al. 2017, eq. 2 with c = 1."""
  return 0.5 * jnp.square(fake_logits - 1.0)


def wasserstein_discriminator_loss(real_logits, fake_logits):
  """f(G(z)) - f(x): the critic maximises E f(x) - E f(G(z)).

  Arjovsky et al. 2017, "Wasserstein GAN", eq. 3 (the critic f is the raw
  output; a Lipschitz constraint comes from `clip_weights` or
  `gradient_penalty`).
  """
  return fake_logits - real_logits


def wasserstein_generator_loss(fake_logits):
  """-f(G(z)) (Arjovsky et al. 2017)."""
  return -fake_logits


def hinge_discriminator_loss(real_logits, fake_logits):
  """relu(1 - D(x)) + relu(1 + D(G(z))).

  Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral Normalization
  for Generative Adversarial Networks", eq. 16.
  """
  return jax.nn.relu(1.0 - real_logits) + jax.nn.relu(1.0 + fake_logits)


def hinge_generator_loss(fake_logits):
  """-D(G(z)) (Lim & Ye 2017; Miyato et al. 2018, eq. 17)."""
  return -fake_logits


def gradient_penalty(critic_fn: Callable, real, fake, key):
  """(||grad_x critic(x_hat)||_2 - 1)^2 at x_hat = e x + (1 - e) G(z).

  Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Alg. 1, with
  e ~ U[0, 1] drawn per example from `key`. `critic_fn` maps a batch `[B, ...]`
  to per-example scalars `[B]`; each output must depend on its own input only
  (no batch norm, no minibatch discrimination), so that the gradient of the
  sum is the per-example gradient. The norm runs over all non-batch axes.
  Returns `[B]`; the paper's term is lambda * mean.
  """
  real = jnp.asarray(real)
  fake = jnp.asarray(fake)
  if real.shape != fake.shape:
    raise ValueError(f"real and fake must have the same shape; got "
                     f"{real.shape} and {fake.shape}.")
  eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
  eps = jax.random.uniform(key, eps_shape, dtype=real.dtype)
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
  sq_norm = jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1)
  # The tiny constant keeps the gradient of the norm finite at zero.
  return jnp.square(jnp.sqrt(sq_norm + 1e-12) - 1.0)


def clip_weights(limit: float) -> optax.GradientTransformation:
  """An optax transform keeping every parameter in [-limit, limit] (WGAN).

  Arjovsky et al. 2017, Alg. 1: after each critic update the weights are
  clipped to [-c, c]. Chained after the optimiser,

    tx = optax.chain(optax.rmsprop(5e-5), clip_weights(0.01)),

  it rewrites the updates to u' = clip(p + u, -c, c) - p, so that
  `optax.apply_updates(p, u')` is the clipped parameter. `update` needs
  `params`.
  """
  if not limit > 0:
    raise ValueError(f"clip_weights needs a positive limit; got {limit!r}.")

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("clip_weights needs the params: call "
                       "tx.update(updates, state, params).")
    updates = jax.tree_util.tree_map(
        lambda u, p: jnp.clip(p + u, -limit, limit) - p, updates, params)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def _class_cross_entropy(class_logits, labels):
  """-log softmax(logits)[label]; with a sequence of A logits `[..., K_a]`
  and labels `[..., A]`, the sum over attributes of each one's term."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer class indices; got dtype "
                     f"{labels.dtype}.")
  if isinstance(class_logits, (tuple, list)):
    if labels.shape[-1:] != (len(class_logits),):
      raise ValueError(f"{len(class_logits)} attribute logits need labels "
                       f"[..., {len(class_logits)}]; got {labels.shape}.")
    return sum(_class_cross_entropy(logits, labels[..., a])
               for a, logits in enumerate(class_logits))
  log_probs = jax.nn.log_softmax(class_logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def acgan_real_class_loss(class_logits, labels):
  """-log q(c | x) on real data: the AC-GAN term L_C on real images.

  Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier
  GANs", eq. 3, first term. `class_logits` `[..., K]`, integer `labels`
  `[...]`; log-softmax cross-entropy, returns `[...]`.

  A condition of A attributes c = (c_1, ..., c_A) has one class head per
  attribute: `class_logits` is a sequence of A arrays `[..., K_a]` and
  `labels` is `[..., A]`. q then factorises over the attributes,
  q(c | x) = prod_a q_a(c_a | x), each q_a a softmax, so
  -log q(c | x) = -sum_a log q_a(c_a | x), the sum of the A
  cross-entropies (also for `acgan_fake_class_loss` and
  `tacgan_twin_class_loss`).
  """
  return _class_cross_entropy(class_logits, labels)


def acgan_fake_class_loss(class_logits, labels):
  """-log q(c | G(z, c)) on generated data: AC-GAN's L_C on fakes.

  Odena et al. 2017, eq. 3, second term. The same cross-entropy as
  `acgan_real_class_loss`; a separate name because the two terms are weighted
  (and routed to D and/or G) separately.
  """
  return _class_cross_entropy(class_logits, labels)


def tacgan_twin_class_loss(twin_class_logits, labels):
  """-log q_mi(c | G(z, c)): TAC-GAN's twin classifier term on generated data.

  Gong et al. 2019, "Twin Auxiliary Classifiers GAN", eq. 9: the twin
  classifier q_mi is trained on generated samples only (D minimises this
  term) while G maximises it (minimises its negative), which cancels the
  -H(c | G(z, c)) bias of AC-GAN's generated-sample term. Cross-entropy as in
  `acgan_real_class_loss`; returns `[...]`.
  """
  return _class_cross_entropy(twin_class_logits, labels)


def infogan_continuous_code_loss(code_means, codes):
  """-log Q(c | G(z, c)) for continuous codes, Q = N(mu(x), I).

  Chen et al. 2016, "InfoGAN", eq. 5: the mutual-information lower bound
  L_I = E[log Q(c | G(z, c))] + H(c); H(c) is a constant, so G and Q
  minimise the negative log-likelihood of the codes under Q's factored
  Gaussian, with unit standard deviation as in the authors' code
  (`fix_std=True`): sum_i (c_i - mu_i)^2 / 2 + log(2 pi) / 2. `code_means`,
  `codes`: `[..., n]`; returns `[...]`. (The categorical code's term is the
  class cross-entropy `acgan_fake_class_loss`.)
  """
  return jnp.sum(0.5 * jnp.square(codes - code_means)
                 + 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def feature_matching_loss(real_features, fake_features):
  """||E_x f(x) - E_z f(G(z))||_2^2, broadcast to one value per fake example.

  Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 3.1: f
  is an intermediate discriminator layer, the expectations are batch means.
  The objective is a statistic of the whole batch, not a sum of per-example
  terms, so this returns that scalar broadcast to shape `[B_fake]`: the
  caller's usual mean over the batch gives exactly the paper's value (and its
  gradient). Features are `[B, ...]`; all non-batch axes are summed. The two
  batches may differ in size. The generator trains on it; stop gradients to
  the real features if D's parameters are differentiated too.
  """
  real = jnp.asarray(real_features).reshape(real_features.shape[0], -1)
  fake = jnp.asarray(fake_features).reshape(fake_features.shape[0], -1)
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"real and fake features must have the same size; got "
                     f"{real_features.shape} and {fake_features.shape}.")
  value = jnp.sum(jnp.square(jnp.mean(real, 0) - jnp.mean(fake, 0)))
  return jnp.broadcast_to(value, (fake.shape[0],))


def relativistic_average_discriminator_loss(real_logits, fake_logits):
  """-log s(C(x) - E C(G(z))) - log(1 - s(C(G(z)) - E C(x))).

  The relativistic average standard GAN (RaSGAN) of Jolicoeur-Martineau 2019,
  "The relativistic discriminator: a key element missing from standard GAN",
  eq. 7 (s = sigmoid, C the critic's logit). The expectations are means over
  the batch's other half, so one value per (real, fake) pair:
    loss_i = softplus(-(r_i - mean f)) + softplus(f_i - mean r).
  """
  real_logits = jnp.asarray(real_logits)
  fake_logits = jnp.asarray(fake_logits)
  return (jax.nn.softplus(-(real_logits - jnp.mean(fake_logits)))
          + jax.nn.softplus(fake_logits - jnp.mean(real_logits)))


def relativistic_average_generator_loss(real_logits, fake_logits):
  """-log s(C(G(z)) - E C(x)) - log(1 - s(C(x) - E C(G(z)))).

  Jolicoeur-Martineau 2019, eq. 8: the discriminator's loss with the roles
  of real and fake swapped, so the generator needs the real logits too:
    loss_i = softplus(-(f_i - mean r)) + softplus(r_i - mean f).
  """
  return relativistic_average_discriminator_loss(fake_logits, real_logits)


def r1_penalty(critic_fn: Callable, real):
  """||grad_x D(x)||_2^2 on real data, per example.

  Mescheder et al. 2018, "Which Training Methods for GANs do actually
  Converge?", eq. 9: R1 = gamma/2 E_x ||grad D(x)||^2, added to the
  discriminator's loss with any GAN objective (gamma/2 is the caller's
  weight). `critic_fn` maps `[B, ...]` to per-example logits `[B]`, each
  depending on its own input only. Returns `[B]`.
  """
  real = jnp.asarray(real)
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(real)
  return jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1)


def r2_penalty(critic_fn: Callable, fake):
  """||grad_x D(x)||_2^2 at generated samples x = G(z), per example.

  The zero-centred gradient penalty on the generated distribution
  (Mescheder et al. 2018, eq. 10: R2 = gamma/2 E_z ||grad D(G(z))||^2;
  Roth et al. 2017, "Stabilizing Training of Generative Adversarial
  Networks through Regularization"). `r1_penalty` at the generated batch
  (held fixed: no gradient to G); gamma/2 is the caller's weight.
  """
  return r1_penalty(critic_fn, fake)


def relativistic_pairing_discriminator_loss(real_logits, fake_logits):
  """softplus(-(D(x_i) - D(G(z_i)))), one value per (real, fake) pair.

  The relativistic pairing GAN (RpGAN) of Jolicoeur-Martineau 2019,
  "The relativistic discriminator: a key element missing from standard
  GAN", RSGAN (f = softplus(-.)); the loss of Huang et al. 2024,
  "The GAN is dead; long live the GAN! A Modern GAN Baseline" (R3GAN),
  there with R1 and R2. Real and fake logits are paired by index.
  """
  return jax.nn.softplus(-(jnp.asarray(real_logits)
                           - jnp.asarray(fake_logits)))


def relativistic_pairing_generator_loss(real_logits, fake_logits):
  """softplus(-(D(G(z_i)) - D(x_i))): RpGAN's D loss, roles swapped."""
  return relativistic_pairing_discriminator_loss(fake_logits, real_logits)


def lecam_penalty(real_logits, fake_logits, real_anchor, fake_anchor):
  """(D(x) - alpha_F)^2 + (D(G(z)) - alpha_R)^2, per (real, fake) pair.

  LeCam regularisation of Tseng et al. 2021, "Regularizing Generative
  Adversarial Networks under Limited Data":
  R_LC = E_x ||D(x) - alpha_F||^2 + E_z ||D(G(z)) - alpha_R||^2, with
  alpha_R, alpha_F exponential moving averages of D's mean output on real
  and generated images (the caller keeps them; constants here). D is the
  raw output (the logit). The authors' code squares relu(D(x) - alpha_F)
  and relu(alpha_R - D(G(z))) instead (only outputs past the other side's
  anchor are penalised); this is the paper's two-sided formula.
  """
  return (jnp.square(real_logits - fake_anchor)
          + jnp.square(fake_logits - real_anchor))


def consistency_loss(logits, augmented_logits):
  """(D(x) - D(T(x)))^2, per example: one side of bCR.

  Balanced consistency regularisation of Zhao et al. 2021, "Improved
  Consistency Regularization for GANs" (AAAI; Alg. 1):
  lambda_real ||D(x) - D(T(x))||^2 + lambda_fake ||D(G(z)) - D(T(G(z)))||^2,
  D the raw output, T a semantics-preserving augmentation; this is one of
  the two terms (the caller adds both with its lambdas).
  """
  return jnp.square(jnp.asarray(logits) - jnp.asarray(augmented_logits))


def balanced_consistency_loss(real_logits, real_augmented_logits,
                              fake_logits, fake_augmented_logits):
  """bCR with lambda_real = lambda_fake = 1: per example
  (D(x) - D(T(x)))^2 + (D(G(z)) - D(T(G(z))))^2 (`consistency_loss`)."""
  return (consistency_loss(real_logits, real_augmented_logits)
          + consistency_loss(fake_logits, fake_augmented_logits))


def _normalize(x, axis=-1, eps=1e-12):
  return x / jnp.sqrt(jnp.sum(jnp.square(x), axis, keepdims=True) + eps)


def d2d_ce_loss(embeddings, proxies, labels, *, temperature: float = 0.5,
                positive_margin: float = 0.98,
                negative_margin: float = 0.02):
  """ReACGAN's data-to-data cross-entropy, one value per example.

  Kang et al. 2021, "Rebooting ACGAN: Auxiliary Classifier GANs with
  Stable Training" (NeurIPS): with f_i the L2-normalised embedding
  of example i, v_c the normalised proxy of class c, y_i its label,

    p_i  = min(f_i . v_{y_i} - m_p, 0) / tau,
    n_ij = max(f_i . f_j - m_n, 0) / tau   for j != i with y_j != y_i,
    loss_i = -log( exp(p_i) / (exp(p_i) + sum_j exp(n_ij)) ),

  a cross-entropy whose positive is the sample's class proxy and whose
  negatives are the other classes' samples in the batch (data-to-data);
  the margins stop pulling a sample once its similarity to its proxy
  passes m_p and stop pushing once its similarity to a negative is under
  m_n. Computed with a masked logsumexp. The defaults are StudioGAN's
  ReACGAN settings (tau 0.5, m_p 0.98; its code's negative margin is
  1 - m_p = 0.02). `embeddings` `[B, E]`, `proxies` `[K, E]` (normalised
  here), integer `labels` `[B]`; returns `[B]`.
  """
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
    raise ValueError("d2d_ce_loss needs integer class labels [B]; got "
                     f"{labels.dtype} {labels.shape}.")
  f = _normalize(jnp.asarray(embeddings, jnp.float32))
  v = _normalize(jnp.asarray(proxies, jnp.float32))
  positive = jnp.minimum(
      jnp.sum(f * v[labels], -1) - positive_margin, 0.0) / temperature
  negative = jnp.maximum(f @ f.T - negative_margin, 0.0) / temperature
  is_negative = labels[:, None] != labels[None, :]  # excludes i == j too
  negative = jnp.where(is_negative, negative, -jnp.inf)
  every = jnp.concatenate([positive[:, None], negative], axis=1)
  return jax.nn.logsumexp(every, axis=1) - positive
