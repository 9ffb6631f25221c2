"""Training, sampling and evaluation of pix2pix (Isola et al. 2017),
conditioned on an image (`condition_kind='image'`, `image_conditions`).

G maps the condition x to an image, D judges patches of (x, y) pairs
(`condgen_jax.models.pix2pix`); both see images in [-1, 1]. The adversarial
losses are those of `config.gan_loss`, the GAN family's objective
(`condgen_jax.losses.gan_objectives`: a built-in name or an import path),
applied to D's per-patch logits [B, h, w] and averaged over the batch and
the patches. One training step draws G(x) once, then

  D: one Adam step on 1/2 [mean_patches d_loss(D(x, y), D(x, G(x)))
                           + the weighted regulariser and R1 penalty]
  G: one Adam step on mean_patches g_loss(D(x, G(x))) + l1_weight |y - G(x)|_1

with the updated D, the L1 term a mean over pixels. The defaults are the
paper's: gan_loss='non_saturating' (d_loss = -log D(x, y) - log(1 -
D(x, G(x))), g_loss = -log D(x, G(x))), lambda = 100, D's objective halved
to slow D down relative to G. The penalties (wasserstein_gp's gradient
penalty, R1 with r1_gamma > 0) read the critic y -> mean_patches D(x, y)
at the batch's conditions x: the gradient penalty at y interpolated between
the real target and G(x), the condition fixed. wasserstein's weight
clipping is chained after D's Adam. A relativistic objective's expectations
run over the batch and the patches, and its G loss reads D(x, y) too (the
updated D, no gradient). G's dropout, its only noise, is on at sampling
and evaluation too.

Config keys: `OPTIONS` below, each with its default, allowed values and
meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from condgen_jax.data import datasets as data_lib
from condgen_jax.data import image_conditions
from condgen_jax.families import common
from condgen_jax.families import gan as gan_family
from condgen_jax.core import options
from condgen_jax.losses import gan_objectives
from condgen_jax.models import pix2pix

CONDITION_KINDS = ("image",)

OPTIONS = {
    "g_channels": options.integers(
        (32, 64, 128), "U-Net encoder widths, one per stride-2 level (the "
        "paper's 256x256 G: 64, 128, 256, 512, 512, 512, 512, 512)"),
    "d_channels": options.integers(
        (32, 64), "PatchGAN widths, the last of stride 1 (the paper's 70x70 "
        "D: 64, 128, 256, 512)"),
    "dropout_rate": options.number(
        0.5, "dropout of G's innermost decoder layers, in training and at "
        "test time", 0.0, 1.0),
    "l1_weight": options.number(100.0, "lambda of the L1 term of G"),
    "learning_rate": options.positive(2e-4, "Adam's learning rate (G and "
                                      "D)"),
    "adam_b1": options.number(0.5, "Adam beta1", 0.0, 1.0),
    "adam_b2": options.number(0.999, "Adam beta2", 0.0, 1.0),
    "kernels": common.KERNELS_OPTION,
    # The GAN objective's keys, declared as the GAN family declares them
    # (gan_loss='non_saturating': the paper's losses).
    **{key: gan_family.TRAIN_OPTIONS[key]
       for key in gan_objectives.OBJECTIVE_KEYS},
    **image_conditions.OPTIONS,
}


def validate_config(s) -> None:
  """The image condition fits the dataset (`image_conditions.check`), and
  `gan_loss` names an objective (every name the GAN family takes; an
  import path's function is given `s`), `kernels` fits `compute_dtype`;
  ValueError names the value."""
  image_conditions.check(s)
  gan_objectives.get_objective(s)
  common.check_precision(s)


def has_convolutions(s) -> bool:
  del s
  return True


def image_condition(s) -> image_conditions.ImageCondition:
  return image_conditions.from_settings(s)


def metric_modes(s) -> dict:
  """{name: 'min' | 'max'} of what `evaluate` reports."""
  del s
  return {"test_l1": "min"}


# Both players' parameters and Adam states (`common.TwoPlayerState`, whose
# fields are the whole of pix2pix's checkpoints). `d_tx` is `g_tx`, with the
# objective's `d_transform` (wasserstein's weight clipping) chained after it
# when there is one.
Pix2PixState = common.TwoPlayerState


def make_models(s, image_shape):
  """(generator, discriminator) for targets of `image_shape`."""
  kernels = common.layer_kernels(s)  # the convs compute in compute_dtype
  return (pix2pix.UNetGenerator(image_shape[-1], tuple(s.g_channels),
                                s.dropout_rate, kernels),
          pix2pix.PatchDiscriminator(tuple(s.d_channels), kernels))


def create_state(s, image_shape, num_classes, rng) -> Pix2PixState:
  del num_classes
  generator, discriminator = make_models(s, image_shape)
  x = jnp.zeros((1,) + image_condition(s).shape(image_shape))
  y = jnp.zeros((1,) + tuple(image_shape))
  g_key, d_key, drop_key = jax.random.split(rng, 3)
  g_params = generator.init({"params": g_key, "dropout": drop_key},
                            x)["params"]
  d_params = discriminator.init(d_key, x, y)["params"]
  g_tx = optax.adam(s.learning_rate, b1=s.adam_b1, b2=s.adam_b2)
  d_tx = common.chain_transform(g_tx,
                                gan_objectives.get_objective(s).d_transform)
  return Pix2PixState(step=jnp.zeros((), jnp.int32), g_params=g_params,
                      d_params=d_params, g_opt_state=g_tx.init(g_params),
                      d_opt_state=d_tx.init(d_params), g_tx=g_tx, d_tx=d_tx)


class _Networks:
  """G and D applied to images in [-1, 1]."""

  def __init__(self, s, image_shape):
    self.generator, self.discriminator = make_models(s, image_shape)
    self.spec = image_condition(s)

  def inputs(self, images):
    """The condition of targets in [0, 1], mapped to [-1, 1]."""
    return common.to_signed(self.spec.from_images(images))

  def generate(self, g_params, x, rng):
    return self.generator.apply({"params": g_params}, x,
                                rngs={"dropout": rng})

  def discriminate(self, d_params, x, y):
    return self.discriminator.apply({"params": d_params}, x, y)

  def critic(self, d_params, x):
    """y -> D's mean over the patches of (x, y), `[B]`: the critic of the
    penalties, at the conditions x."""
    def critic(y):
      logits = self.discriminate(d_params, x, y)
      return jnp.mean(logits, axis=tuple(range(1, logits.ndim)))
    return critic


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics): one D and one G
  step (module docstring). Metrics: d_loss (half the sum of D's terms),
  each D term's mean (d_adv_loss; gradient_penalty, r1_penalty when on),
  the objective's metrics (wasserstein_estimate), g_loss, g_adv_loss, l1
  (mean |y - G(x)| in [0, 1] pixel units), d_real and d_fake (mean sigmoid
  of D's patches before D's step), loss (d_loss + g_loss)."""
  del num_classes
  nets = _Networks(s, image_shape)
  objective = gan_objectives.get_objective(s)
  d_terms = gan_objectives.adversarial_discriminator_terms(s, objective)
  g_terms = [gan_objectives.adversarial_generator_term(objective)]

  def d_loss_fn(d_params, x, y, fake, key):
    real_logits = nets.discriminate(d_params, x, y)
    fake_logits = nets.discriminate(d_params, x, fake)
    context = gan_objectives.Context(
        {"logit": real_logits}, {"logit": fake_logits}, None,
        nets.critic(d_params, x), y, fake, key)
    loss, m = gan_objectives.total(d_terms, context)
    m.update(d_real=jnp.mean(jax.nn.sigmoid(real_logits)),
             d_fake=jnp.mean(jax.nn.sigmoid(fake_logits)))
    if objective.metrics is not None:
      m.update(objective.metrics(real_logits, fake_logits))
    return 0.5 * loss, m

  def g_loss_fn(fake, d_params, x, y, real_out):
    fake_out = {"logit": nets.discriminate(d_params, x, fake)}
    adv, m = gan_objectives.total(
        g_terms, gan_objectives.Context(real_out, fake_out, None))
    l1 = jnp.mean(jnp.abs(fake - y))
    return adv + s.l1_weight * l1, {**m, "l1": 0.5 * l1}

  def train_step(state: Pix2PixState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    x, y = nets.inputs(batch["image"]), common.to_signed(batch["image"])
    # G(x) once: D's step uses it, G's step pulls its gradient back.
    fake, g_vjp = jax.vjp(lambda p: nets.generate(p, x, rng), state.g_params)
    # The regulariser's key (G's dropout has rng itself).
    key = (jax.random.fold_in(rng, 1) if objective.regularizer is not None
           else None)
    (d_loss, d_m), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params, x, y, jax.lax.stop_gradient(fake), key)
    d_params, d_opt = common.optimizer_step(state.d_tx, d_grads,
                                            state.d_opt_state, state.d_params)
    real_out = None
    if objective.generator_needs_real:
      real_out = {"logit": jax.lax.stop_gradient(
          nets.discriminate(d_params, x, y))}
    (g_loss, g_m), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(
        fake, d_params, x, y, real_out)
    g_grads, = g_vjp(fake_grad)
    g_params, g_opt = common.optimizer_step(state.g_tx, g_grads,
                                            state.g_opt_state, state.g_params)
    new_state = state.replace(
        step=state.step + 1, d_params=d_params, d_opt_state=d_opt,
        g_params=g_params, g_opt_state=g_opt)
    metrics = {**d_m, **g_m, "d_loss": d_loss, "g_loss": g_loss,
               "loss": d_loss + g_loss}
    return new_state, {k: jnp.asarray(v, jnp.float32)
                       for k, v in metrics.items()}

  return train_step


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, conditions, rng) -> G(x) in [0, 1] (dropout on)."""
  del num_classes
  nets = _Networks(s, image_shape)

  def sample(state: Pix2PixState, conditions, rng):
    out = nets.generate(state.g_params, common.to_signed(conditions), rng)
    return common.to_unit(out)

  return sample


def _test_terms(nets, mask, state, images, rng) -> dict:
  """Per-example test metrics `[B]` (see `evaluate`)."""
  x, y = nets.inputs(images), common.to_signed(images)
  fake = nets.generate(state.g_params, x, rng)
  real_logits = nets.discriminate(state.d_params, x, y)
  fake_logits = nets.discriminate(state.d_params, x, fake)
  per_patch = lambda a: jnp.mean(a, axis=(1, 2))  # noqa: E731
  l1 = jnp.sum(mask * jnp.abs(fake - y) / 2.0, axis=(1, 2, 3))
  return {"l1": l1 / (np.sum(mask) * images.shape[-1]),
          "d_real": per_patch(jax.nn.sigmoid(real_logits)),
          "d_fake": per_patch(jax.nn.sigmoid(fake_logits)),
          "patch_accuracy": 0.5 * (per_patch(real_logits > 0)
                                   + per_patch(fake_logits < 0))}


def evaluate(s, state: Pix2PixState, dataset: data_lib.Dataset, rng,
             batch_size: int = 500) -> dict:
  """On the test split, G's dropout drawn from `rng`: `test_l1`, the mean
  |y - G(x)| over the pixels to predict in [0, 1] units; D's mean sigmoid
  on real and generated patches (`test_d_real`, `test_d_fake`) and its
  patch accuracy (real patches with a positive logit, generated ones with
  a negative one, each half), with the number of patches per image."""
  nets = _Networks(s, dataset.image_shape)
  mask = nets.spec.target_mask(dataset.image_shape)
  terms = jax.jit(lambda st, im, k: _test_terms(nets, mask, st, im, k))
  # uint8 -> float32 on the host, outside the jitted terms.
  means, n = common.test_split_mean(
      lambda images, key: terms(
          state, data_lib.to_float(images, dataset.max_value), key),
      dataset, batch_size, rng, with_labels=False)
  x = jnp.zeros((1,) + nets.spec.shape(dataset.image_shape))
  patches = jax.eval_shape(nets.discriminate, state.d_params, x,
                           jnp.zeros((1,) + dataset.image_shape)).shape
  return {**{f"test_{k}": v for k, v in means.items()},
          "num_test_examples": n, "num_patches": patches[1] * patches[2]}
