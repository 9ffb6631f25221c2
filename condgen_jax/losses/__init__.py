"""Losses as pure functions: logits in, one value per example out.

Reduction (mean over the batch, weighting) is always the caller's. Every
function accepts any leading shape; per-example terms sum over the event
axes. By role: `vae` (ELBO terms), `gan` (GAN losses and penalties),
`diffusion` (eps, v, EDM and flow-matching losses), `gan_objectives` (a GAN loss
as one object the families compose), `estimators` (importance-sampled
likelihoods). The functions of the first three are re-exported here, as
optax re-exports its losses.
"""

# pylint: disable=g-importing-member,unused-import
from condgen_jax.losses.diffusion import ddpm_eps_loss
from condgen_jax.losses.diffusion import edm_loss
from condgen_jax.losses.diffusion import flow_matching_loss
from condgen_jax.losses.diffusion import v_prediction_loss
from condgen_jax.losses.gan import minimax_discriminator_loss
from condgen_jax.losses.gan import minimax_generator_loss
from condgen_jax.losses.gan import non_saturating_generator_loss
from condgen_jax.losses.gan import least_squares_discriminator_loss
from condgen_jax.losses.gan import least_squares_generator_loss
from condgen_jax.losses.gan import wasserstein_discriminator_loss
from condgen_jax.losses.gan import wasserstein_generator_loss
from condgen_jax.losses.gan import hinge_discriminator_loss
from condgen_jax.losses.gan import hinge_generator_loss
from condgen_jax.losses.gan import gradient_penalty
from condgen_jax.losses.gan import clip_weights
from condgen_jax.losses.gan import acgan_real_class_loss
from condgen_jax.losses.gan import acgan_fake_class_loss
from condgen_jax.losses.gan import tacgan_twin_class_loss
from condgen_jax.losses.gan import infogan_continuous_code_loss
from condgen_jax.losses.gan import feature_matching_loss
from condgen_jax.losses.gan import relativistic_average_discriminator_loss
from condgen_jax.losses.gan import relativistic_average_generator_loss
from condgen_jax.losses.gan import r1_penalty
from condgen_jax.losses.gan import r2_penalty
from condgen_jax.losses.gan import relativistic_pairing_discriminator_loss
from condgen_jax.losses.gan import relativistic_pairing_generator_loss
from condgen_jax.losses.gan import lecam_penalty
from condgen_jax.losses.gan import consistency_loss
from condgen_jax.losses.gan import balanced_consistency_loss
from condgen_jax.losses.gan import d2d_ce_loss
from condgen_jax.losses.vae import gaussian_kl
from condgen_jax.losses.vae import LOG_2PI
from condgen_jax.losses.vae import gaussian_log_prob
from condgen_jax.losses.vae import bernoulli_log_likelihood
from condgen_jax.losses.vae import negative_elbo
