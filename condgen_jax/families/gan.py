"""Training, sampling and evaluation of the GAN family (cgan_mlp, cgan_conv,
acgan), through the runner's interface: `create_state`, `make_train_step`,
`make_sample_fn`, `evaluate` (see `condgen_jax.families.cvae`).

One training step = `n_critic` discriminator updates, then one generator
update, each with its own optimiser. The step's batch of real images is
reused by every discriminator update (fresh noise each time); generated
samples are conditioned on the real batch's labels, so p(c) is the data's.

Config keys: `OPTIONS` below, the networks' `MODEL_OPTIONS` and the
training keys `TRAIN_OPTIONS`, each with its default, allowed values and meaning;
`options.describe(OPTIONS)` prints them. `gan_loss` names a
`gan_objectives` objective.

AC-GAN presets (model='acgan'): AC-GAN (real_class_weight=1,
fake_class_weight=1, d_fake_class=True); InfoGAN-style, the term on generated
samples only, as mapped by Shu et al. 2017 (real_class_weight=0,
fake_class_weight=1, d_fake_class=True); classifier trained on real data
only (real_class_weight=1, fake_class_weight=1, d_fake_class=False);
TAC-GAN, that and the twin classifier (twin_class_head=True,
twin_class_weight=1; Gong et al. 2019). InfoGAN (Chen et al. 2016,
`experiments/configs/infogan.py`): G's class is a categorical code drawn
uniformly (code_prior='uniform'), `continuous_codes` U[-1, 1] codes are
appended to z, D's Q network predicts both, and no label is read
(real_class_weight=0); with code_augmentation Q reads the categorical
code from randomly warped copies of the generated images
(`condgen_jax.nn.augmentation`).

Conditions: a class label, or (condition_kind='attributes') every
attribute of a dataset that has them, `[B, A]` with `num_classes` the tuple
of the attributes' sizes: G and the conditional Ds read the attributes'
one-hots concatenated (`conditioning.condition_vector`), AC-GAN's D has one
class head per attribute and its class terms sum the attributes'
cross-entropies (`losses.acgan_real_class_loss`). InfoGAN's codes are
drawn in place of the label, so `code_prior='uniform'` and
`continuous_codes` are refused with attributes (`check_condition`).

Augmentation and D's regularisers (docs/gan_quality.md, "Augmentation and
regularisers"): `augment` ('diffaugment' or 'ada', `condgen_jax.nn.
diffaugment`) transforms every image D sees, real and generated, in both
players' updates, with independent draws per batch; ADA's p and LeCam's
EMAs live in the state (`RegularizedGANState.extras`, only when used);
R2, LeCam and bCR are named terms of D's loss
(`gan_objectives.regularizer_terms`), `class_loss='d2d_ce'` swaps AC-GAN's
class terms for ReACGAN's D2D-CE on a head of its own (`D2DHead`). All off
by default.

Data range: the conv models, and cgan_mlp with g_output='tanh', generate in
[-1, 1] (tanh), so real images are mapped x -> 2x - 1 for D and samples back
to [0, 1] by `sample`; cgan_mlp with g_output='sigmoid' (the paper's)
generates in [0, 1] and sees real images as they come.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import flax.struct as struct
import jax
import jax.numpy as jnp
import optax

from condgen_jax.nn import augmentation
from condgen_jax.nn import diffaugment
from condgen_jax.data import datasets as data_lib
from condgen_jax.families import common
from condgen_jax.families import ema as ema_lib
from condgen_jax.losses import gan_objectives
from condgen_jax.models import gans
from condgen_jax.models import r3gan
from condgen_jax.core import options

# A label, or every attribute of the dataset (concatenated one-hots into G
# and the conditional Ds; one AC-GAN class head per attribute).
CONDITION_KINDS = ("label", "attributes")
Z_PRIORS = ("uniform", "uniform_signed", "normal")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
CODE_PRIORS = ("data", "uniform")

# The networks' keys (`models.gans`); a model name's presets in
# `families.MODELS` take precedence over these defaults.
MODEL_OPTIONS = {
    "architecture": options.choice(
        "conv", gans.ARCHITECTURES + ("r3gan",),
        "'mlp': Mirza & Osindero's fixed MLPs; 'conv': DCGAN; 'r3gan': "
        "Huang et al. 2024's residual networks without normalisation "
        "(`models.r3gan`)"),
    "r3gan_g_widths": options.integers(
        (128, 64, 32), "r3gan: G's stage widths from the lowest "
        "resolution (image side = basis side * 2^(stages - 1))"),
    "r3gan_d_widths": options.integers(
        (32, 64, 128), "r3gan: D's stage widths from the image's "
        "resolution"),
    "r3gan_blocks": options.integer(1, "r3gan: residual blocks per stage"),
    "r3gan_group_size": options.integer(
        16, "r3gan: channels per group of the blocks' 3x3 convs"),
    "r3gan_features": options.integer(
        128, "r3gan: D's last features (logit and projection)"),
    "class_head": options.flag(False, "AC-GAN: D also predicts the class"),
    "q_hidden": options.integer(
        0, "InfoGAN's Q network: a hidden LeakyReLU layer of this width "
        "under D's class and code heads; 0 = linear heads (AC-GAN)",
        minimum=0),
    "q_norm": options.choice(
        "none", gans.NORMS, "normalisation of the Q network's hidden layer "
        "(InfoGAN: batch)"),
    "continuous_codes": options.integer(
        0, "InfoGAN: U[-1, 1] codes appended to G's z and predicted by D's "
        "code head (needs the conv models)", minimum=0),
    "twin_class_head": options.flag(
        False, "TAC-GAN: D also has a twin class head, trained on generated "
        "samples only (needs class_head)"),
    "g_conditioning": options.choice(
        "concat", gans.G_CONDITIONINGS,
        "how G sees the condition: concatenated to z, or FiLM after each "
        "norm"),
    "d_conditioning": options.choice(
        "projection", gans.D_CONDITIONINGS + ("none",),
        "how D sees the condition (`conditioning`); 'none' only with a "
        "class head"),
    "g_width": options.integer(64, "channels of G's last hidden layer"),
    "g_hidden": options.integer(
        0, "conv G: a dense hidden layer of this width (norm, ReLU) before "
        "the dense layer to H/4 x W/4 x 2w (InfoGAN's G: 1024); 0 = none",
        minimum=0),
    "g_upsample": options.choice(
        "transpose", gans.UPSAMPLES,
        "stride-2 transposed convolutions (DCGAN), or sub-pixel "
        "convolutions (Shi et al. 2016)"),
    "d_width": options.integer(64, "channels of D's first conv"),
    "d_hidden": options.integer(
        0, "conv D: a dense hidden layer of this width (d_norm, LeakyReLU) "
        "on the flattened convs, shared by the logit and the heads "
        "(InfoGAN's D: 1024); 0 = none", minimum=0),
    "d_kernel_size": options.integer(4, "kernel size of D's convs"),
    "d_leaky_slope": options.number(
        0.2, "negative slope of the conv D's LeakyReLUs (DCGAN: 0.2; "
        "InfoGAN's code: 0.01)", 0.0, 1.0),
    "init": options.choice(
        "flax", gans.INITS,
        "'flax': the layers' own initialisers (LeCun normal kernels, unit "
        "norm scales); 'dcgan': every kernel N(0, 0.02) and every norm scale "
        "N(1, 0.02) (Radford et al. 2016; InfoGAN's code)"),
    "g_norm": options.choice("batch", gans.NORMS, "normalisation in G"),
    "d_norm": options.choice("none", gans.NORMS, "normalisation in D"),
    "spectral_norm": options.flag(False, "spectral norm on D's layers "
                                  "(Miyato et al. 2018)"),
    "minibatch_discrimination": options.flag(
        False, "minibatch discrimination in D (Salimans et al. 2016)"),
    "mbd_kernels": options.integer(50, "minibatch discrimination kernels"),
    "mbd_kernel_dim": options.integer(5, "their dimension"),
    "dropout_rate": options.number(0.5, "cgan_mlp D's dropout", 0.0, 1.0),
    "g_dropout_rate": options.number(0.0, "cgan_mlp G's dropout", 0.0, 1.0),
    "g_activation": options.choice("relu", gans.G_ACTIVATIONS,
                                   "cgan_mlp G's hidden activation"),
    "g_output": options.choice(
        "sigmoid", gans.G_OUTPUTS,
        "cgan_mlp G's output: [0, 1] (the paper) or [-1, 1]; the conv "
        "models' is tanh"),
    "virtual_batch_norm": options.flag(
        False, "VBN in the conv G (Salimans et al. 2016) with a reference "
        "batch of vbn_batch_size"),
    "kernels": common.KERNELS_OPTION,
}


TRAIN_OPTIONS = {
    "gan_loss": options.text(
        "non_saturating",
        "the objective: a name of `gan_objectives.BUILTINS` or "
        "'package.module:attribute'", "a built-in name or an import path"),
    "z_dim": options.integer(100, "size of G's noise z"),
    "z_prior": options.choice(
        "uniform", Z_PRIORS,
        "U[0, 1] (Mirza & Osindero 2014), U[-1, 1] (DCGAN) or N(0, I)"),
    "n_critic": options.integer(1, "D updates per G update (WGAN: 5)"),
    "real_label_smoothing": options.number(
        0.0, "one-sided label smoothing; minimax / non_saturating only",
        0.0, 1.0),
    "gp_weight": options.number(10.0, "lambda of 'wasserstein_gp'"),
    "clip_value": options.positive(0.01, "c of 'wasserstein' weight "
                                   "clipping"),
    "r1_gamma": options.number(
        0.0, "gamma of the R1 penalty (Mescheder et al. 2018), with any "
        "objective; 0 = off"),
    "ema_decay": options.number(
        0.0, "EMA of G's params used for sampling, its decay at update n "
        "min(ema_decay, (1 + n) / (10 + n)) (`condgen_jax.families.ema`); 0 = off",
        0.0, 1.0),
    "feature_matching": options.number(
        0.0, "weight of the feature-matching G term (Salimans et al. 2016)"),
    "g_adv_weight": options.number(1.0, "weight of the adversarial G loss"),
    "real_class_weight": options.number(
        1.0, "AC-GAN: -log q(c|x) on real data (trains D)"),
    "fake_class_weight": options.number(
        1.0, "AC-GAN: -log q(c|G(z,c)) (trains G, and D if d_fake_class)"),
    "d_fake_class": options.flag(
        True, "AC-GAN: the class term on generated samples also trains D"),
    "code_prior": options.choice(
        "data", CODE_PRIORS,
        "the class G is given: the real batch's labels ('data'), or a "
        "categorical code uniform over the K classes ('uniform', InfoGAN: "
        "training reads no labels when D is unconditional and "
        "real_class_weight=0)"),
    "continuous_code_weight": options.number(
        1.0, "InfoGAN: lambda of the continuous codes' -log Q(c|x)"),
    "code_augmentation": options.flag(
        False, "the class term on generated samples, -log q(c|T(G(z,c))), "
        "reads randomly rotated, stretched and shifted copies T "
        "(`condgen_jax.nn.augmentation`): InfoGAN's categorical code cannot "
        "then be carried by slant, width or position"),
    "twin_class_weight": options.number(
        1.0, "TAC-GAN (twin_class_head): -log q_mi(c|G(z,c)) trains the "
        "twin head; G is trained on its negative"),
    "optimizer": options.choice(
        "adam", OPTIMIZERS,
        "'sgd': Mirza & Osindero's momentum SGD, the rate decayed by "
        "1.00004 per step down to 1e-6; 'rmsprop': the WGAN paper's"),
    "momentum": options.number(0.5, "sgd momentum", 0.0, 1.0),
    "g_learning_rate": options.positive(2e-4, "G's learning rate"),
    "d_learning_rate": options.positive(2e-4, "D's learning rate"),
    "adam_b1": options.number(0.5, "Adam beta1 (DCGAN)", 0.0, 1.0),
    "adam_b2": options.number(0.999, "Adam beta2", 0.0, 1.0),
    "vbn_batch_size": options.integer(
        64, "size of the virtual-batch-norm reference batch"),
    # Augmentation of every image D sees, and D's regularisers
    # (docs/gan_quality.md, "Augmentation and regularisers").
    "augment": options.choice(
        "none", diffaugment.MODES,
        "augmentation of every image D sees, real and generated, in D's "
        "and G's updates (`condgen_jax.nn.diffaugment`): DiffAugment (Zhao "
        "et al. 2020), or ADA (Karras et al. 2020) with DiffAugment's ops, "
        "each applied with the adaptive probability p"),
    "augment_policy": options.choice(
        "color,translation,cutout", diffaugment.POLICIES,
        "the ops of augment (DiffAugment's policy names)"),
    "ada_target": options.number(
        0.6, "ADA: the target of r_t = E[sign(D(real))]", 0.0, 1.0,
        high_open=False),
    "ada_kimg": options.positive(
        100.0, "ADA: p moves by at most 1 per ada_kimg thousand real images "
        "(paper: 500; 100 for MNIST-sized budgets)"),
    "ada_interval": options.integer(
        4, "ADA: steps between adjustments of p (paper: 4)"),
    "r2_gamma": options.number(
        0.0, "gamma of the R2 penalty gamma/2 E||grad D(G(z))||^2 "
        "(Mescheder et al. 2018), with any objective; 0 = off"),
    "lecam_weight": options.number(
        0.0, "lambda of LeCam regularisation (Tseng et al. 2021; their "
        "CIFAR runs: 0.3); 0 = off"),
    "lecam_decay": options.number(
        0.99, "LeCam: decay of the EMAs alpha_R, alpha_F of D's mean "
        "outputs", 0.0, 1.0),
    "bcr_weight": options.number(
        0.0, "lambda_real = lambda_fake of balanced consistency "
        "regularisation (Zhao et al. 2021; paper: 10); 0 = off"),
    "bcr_policy": options.choice(
        "translation", diffaugment.POLICIES,
        "bCR's augmentation T (DiffAugment ops; the paper: flips and "
        "translations, no flips for digits)"),
    "class_loss": options.choice(
        "ce", gan_objectives.CLASS_LOSSES,
        "AC-GAN's class term: the cross-entropy of the class head, or "
        "ReACGAN's data-to-data cross-entropy (Kang et al. 2021) on a "
        "projection of D's features and learned class proxies"),
    "d2d_embed_dim": options.integer(
        128, "D2D-CE: size of the embedding and the class proxies"),
    "d2d_temperature": options.positive(0.5, "D2D-CE: temperature tau"),
    "d2d_positive_margin": options.number(
        0.98, "D2D-CE: m_p, no pull past this cosine to the proxy", -1.0,
        1.0, high_open=False),
    "d2d_negative_margin": options.number(
        0.02, "D2D-CE: m_n, no push under this cosine to a negative", -1.0,
        1.0, high_open=False),
}
OPTIONS = {**MODEL_OPTIONS, **TRAIN_OPTIONS}


def tanh_output(s) -> bool:
  """Whether G generates in [-1, 1] (real images are then mapped there)."""
  return s.architecture != "mlp" or s.g_output == "tanh"


def validate_config(s) -> None:
  """The checks across the GAN keys, before anything is written;
  ValueError names the values."""
  if s.d_conditioning == "none" and not s.class_head:
    raise ValueError("Unknown d_conditioning 'none' for a model without a "
                     "class head (acgan); expected one of "
                     f"{gans.D_CONDITIONINGS}.")
  if s.twin_class_head and not s.class_head:
    raise ValueError("twin_class_head=True (TAC-GAN) needs class_head=True "
                     "(model acgan).")
  if s.architecture == "mlp" and s.continuous_codes:
    raise ValueError(f"continuous_codes={s.continuous_codes} needs the conv "
                     "models (cgan_conv, acgan); cgan_mlp's D has no code "
                     "head.")
  if s.architecture == "mlp" and (s.g_hidden or s.d_hidden):
    raise ValueError(f"g_hidden={s.g_hidden}, d_hidden={s.d_hidden} need "
                     "the conv models (cgan_conv, acgan); cgan_mlp has the "
                     "paper's fixed sizes.")
  if s.q_norm != "none" and not s.q_hidden:
    raise ValueError(f"q_norm={s.q_norm!r} needs q_hidden > 0 (the Q "
                     "network's hidden layer); got q_hidden=0.")
  if s.architecture == "mlp" and s.virtual_batch_norm:
    raise ValueError("virtual_batch_norm=True needs a generator with "
                     "normalisation layers (cgan_conv or acgan); cgan_mlp "
                     "has none.")
  if s.architecture == "r3gan":
    bad = [f"{k}={s[k]!r}" for k, off in (
        ("class_head", False), ("continuous_codes", 0), ("g_hidden", 0),
        ("d_hidden", 0), ("virtual_batch_norm", False), ("init", "flax"),
        ("spectral_norm", False), ("minibatch_discrimination", False))
           if s[k] != off]
    if bad:
      raise ValueError(f"architecture='r3gan' does not take {', '.join(bad)}"
                       ": its D conditions by projection, without class "
                       "heads or norms, and its fix-up init is its own.")
  if s.class_loss != "ce" and not s.class_head:
    raise ValueError(f"class_loss={s.class_loss!r} needs class_head=True "
                     "(model acgan).")
  if s.class_loss != "ce" and s.condition_kind == "attributes":
    raise ValueError(f"class_loss={s.class_loss!r} takes one label; "
                     "condition_kind='attributes' needs class_loss='ce'.")
  check_condition(s, s.condition_kind == "attributes")
  common.check_precision(s)
  gan_objectives.get_objective(s)


def make_models(s, image_shape, num_classes):
  """(generator, discriminator) of settings `s` (the keys: `MODEL_OPTIONS`).
  `num_classes`: the class count, or the tuple of the attributes' sizes.

  cgan_mlp has the paper's fixed sizes; of the model keys it reads g_norm
  (its hidden layers), g_dropout_rate, g_activation, g_output and the
  discriminator switches.
  """
  image_shape = tuple(int(n) for n in image_shape)
  kernels = common.layer_kernels(s)
  dtype = common.compute_dtype(s)
  if s.architecture == "r3gan":
    return (r3gan.Generator(image_shape, num_classes,
                            widths=tuple(s.r3gan_g_widths),
                            blocks=s.r3gan_blocks,
                            group_size=s.r3gan_group_size, dtype=dtype),
            r3gan.Discriminator(image_shape, num_classes,
                                widths=tuple(s.r3gan_d_widths),
                                blocks=s.r3gan_blocks,
                                group_size=s.r3gan_group_size,
                                features=s.r3gan_features, dtype=dtype))
  if s.architecture == "mlp":
    return (gans.MLPGenerator(image_shape, num_classes,
                              dropout_rate=s.g_dropout_rate, norm=s.g_norm,
                              activation=s.g_activation, output=s.g_output,
                              kernels=kernels, dtype=dtype),
            gans.MLPDiscriminator(
                image_shape, num_classes, dropout_rate=s.dropout_rate,
                spectral_norm=s.spectral_norm,
                minibatch_discrimination=s.minibatch_discrimination,
                mbd_kernels=s.mbd_kernels, mbd_kernel_dim=s.mbd_kernel_dim,
                dtype=dtype))
  if image_shape[0] % 4 or image_shape[1] % 4:
    raise ValueError("The conv GANs need H and W divisible by 4; got "
                     f"image_shape {image_shape}.")
  generator = gans.ConvGenerator(
      image_shape, num_classes, conditioning=s.g_conditioning,
      width=s.g_width, norm=s.g_norm, upsample=s.g_upsample,
      virtual_batch_norm=s.virtual_batch_norm, hidden=s.g_hidden,
      kernels=kernels, dtype=dtype)
  discriminator = gans.ConvDiscriminator(
      image_shape, num_classes, conditioning=s.d_conditioning,
      width=s.d_width, kernel_size=s.d_kernel_size, norm=s.d_norm,
      spectral_norm=s.spectral_norm,
      minibatch_discrimination=s.minibatch_discrimination,
      mbd_kernels=s.mbd_kernels, mbd_kernel_dim=s.mbd_kernel_dim,
      class_head=s.class_head, twin_class_head=s.twin_class_head,
      continuous_codes=s.continuous_codes, q_hidden=s.q_hidden,
      q_norm=s.q_norm, hidden=s.d_hidden, leaky_slope=s.d_leaky_slope,
      kernels=kernels, dtype=dtype)
  return generator, discriminator


def check_condition(s, attributes: bool) -> None:
  """ValueError naming the keys that do not take a condition of attributes:
  InfoGAN's uniform categorical code (code_prior='uniform') and continuous
  codes stand in for one label (a code per class, a traversal row per
  class); an attribute condition is given, never drawn."""
  bad = []
  if attributes and s.code_prior != "data":
    bad.append(f"code_prior={s.code_prior!r}")
  if attributes and s.continuous_codes:
    bad.append(f"continuous_codes={s.continuous_codes}")
  if bad:
    raise ValueError(f"condition_kind='attributes' does not take "
                     f"{' or '.join(bad)} (InfoGAN's codes); it needs "
                     "code_prior='data' and continuous_codes=0.")


def has_convolutions(s) -> bool:
  """The conv GANs and R3GAN convolve; Mirza & Osindero's MLPs do not."""
  return s.architecture != "mlp"


def metric_modes(s) -> dict:
  """{name: 'min' | 'max'} of what `evaluate` reports (besides the runner's
  sample metrics)."""
  return ({"test_class_acc": "max"}
          if s.class_head and s.code_prior == "data" else {})


@struct.dataclass
class GANState(common.TwoPlayerState):
  """Both players' parameters, norm statistics and optimiser states: those
  of `common.TwoPlayerState` and

  `g_stats` / `d_stats`: the 'batch_stats' collections (batch-norm running
  averages, spectral-norm u and sigma), `{}` when a model has none.
  `ema_params`: EMA of `g_params` (None when ema_decay = 0). `vbn_ref`: the
  virtual-batch-norm reference batch {'z', 'label'} (None when unused).
  """
  g_stats: Any
  d_stats: Any
  ema_params: Any
  vbn_ref: Any


@struct.dataclass
class RegularizedGANState(GANState):
  """`GANState` and `extras`, the state of ADA and LeCam: {'ada_p',
  'ada_sign_sum', 'ada_count'} (`diffaugment.ada_init`) with augment='ada',
  {'lecam_real', 'lecam_fake'} (the EMAs alpha_R, alpha_F) with
  lecam_weight > 0. A subclass, so that the runs without either keep
  GANState's tree, and their checkpoints, unchanged."""
  extras: Any


def has_extras(s) -> bool:
  """Whether the state carries `RegularizedGANState.extras`."""
  return s.augment == "ada" or s.lecam_weight > 0


def initial_extras(s) -> dict:
  extras = {}
  if s.augment == "ada":
    extras.update(diffaugment.ada_init())
  if s.lecam_weight > 0:
    extras.update(lecam_real=jnp.zeros((), jnp.float32),
                  lecam_fake=jnp.zeros((), jnp.float32))
  return extras


D2D_HEAD = "d2d_ce_head"  # its parameters' key in d_params


class D2DHead(nn.Module):
  """ReACGAN's D2D-CE head on D's `features`: a linear embedding of them and
  one learned proxy per class, both L2-normalised (Kang et al. 2021; their
  D: a linear layer on the pooled features and a class embedding). The
  class logits are the cosines to the proxies / temperature (accuracy and
  `evaluate` read them: the nearest proxy is the prediction)."""
  num_classes: int
  embed_dim: int
  temperature: float

  @nn.compact
  def __call__(self, features):
    embedding = nn.Dense(self.embed_dim, name="embedding")(
        features.astype(jnp.float32))
    proxies = self.param("proxies", nn.initializers.normal(1.0),
                         (self.num_classes, self.embed_dim))
    unit = lambda x: x / jnp.sqrt(jnp.sum(jnp.square(x), -1, keepdims=True)
                                  + 1e-12)
    embedding, proxies = unit(embedding), unit(proxies)
    return {"class_embedding": embedding, "class_proxies": proxies,
            "class_logits": embedding @ proxies.T / self.temperature}


def sample_z(key, shape, prior: str):
  """Noise for the generator from the named prior (see `Z_PRIORS`)."""
  if prior == "uniform":
    return jax.random.uniform(key, shape)
  if prior == "uniform_signed":
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
  if prior == "normal":
    return jax.random.normal(key, shape)
  raise ValueError(f"Unknown z_prior {prior!r}; expected one of {Z_PRIORS}.")


def sample_latents(s, key, labels, num_classes: int, *,
                   keep_labels: bool = False):
  """(z, fake_labels, codes): G's input for a batch the size of `labels`.

  z `[B, z_dim + continuous_codes]`: noise from `z_prior`, then the
  continuous codes (U[-1, 1], also returned as `codes`, None without them);
  `fake_labels`: `labels`, or uniform codes when code_prior='uniform' (and
  not `keep_labels`: sampling asks for given codes). With neither option z
  is exactly `sample_z(key, ...)`.
  """
  batch = labels.shape[0]
  if not s.continuous_codes and s.code_prior == "data":
    return sample_z(key, (batch, s.z_dim), s.z_prior), labels, None
  z_key, label_key, code_key = jax.random.split(key, 3)
  z = sample_z(z_key, (batch, s.z_dim), s.z_prior)
  if s.code_prior == "uniform" and not keep_labels:
    labels = jax.random.randint(label_key, (batch,), 0, num_classes,
                                dtype=jnp.int32)
  codes = None
  if s.continuous_codes:
    codes = jax.random.uniform(code_key, (batch, s.continuous_codes),
                               minval=-1.0, maxval=1.0)
    z = jnp.concatenate([z, codes], axis=-1)
  return z, labels, codes


def _optimizer(s, lr: float,
               extra: optax.GradientTransformation | None = None):
  if s.optimizer == "adam":
    tx = optax.adam(lr, b1=s.adam_b1, b2=s.adam_b2)
  elif s.optimizer == "sgd":  # Mirza & Osindero 2014's schedule
    schedule = optax.exponential_decay(lr, transition_steps=1,
                                       decay_rate=1 / 1.00004,
                                       end_value=min(lr, 1e-6))
    tx = optax.sgd(schedule, momentum=s.momentum)
  else:
    tx = optax.rmsprop(lr)
  return common.chain_transform(tx, extra)


def condition_batch(num_classes, labels):
  """Int conditions for `labels` `[B]` (class indices, cycled): as they
  are for a class count; for a tuple of attribute sizes, the combinations
  (row-major, `images.class_rows`' order) of those indices, `[B, A]`."""
  if not isinstance(num_classes, tuple):
    return labels % num_classes
  combos = jnp.unravel_index(labels % math.prod(num_classes), num_classes)
  return jnp.stack(combos, axis=-1).astype(jnp.int32)


def _ref(state_or_ref):
  ref = state_or_ref
  return None if ref is None else (ref["z"], ref["label"])


def create_state(s, image_shape, num_classes, rng) -> GANState:
  """Initial parameters and optimiser states of both players."""
  generator, discriminator = make_models(s, image_shape, num_classes)
  g_key, d_key, drop_key, ref_key = jax.random.split(rng, 4)
  vbn_ref = None
  if s.virtual_batch_norm:
    n = s.vbn_batch_size
    ref_labels = condition_batch(num_classes, jnp.arange(n, dtype=jnp.int32))
    z, _, _ = sample_latents(s, ref_key, ref_labels, num_classes)
    vbn_ref = {"z": z, "label": ref_labels}
  z = jnp.zeros((2, s.z_dim + s.continuous_codes), jnp.float32)
  c = condition_batch(num_classes, jnp.zeros((2,), jnp.int32))
  x = jnp.zeros((2,) + tuple(image_shape), jnp.float32)
  g_vars = generator.init({"params": g_key, "dropout": drop_key}, z, c,
                          ref=_ref(vbn_ref))
  d_vars = discriminator.init({"params": d_key, "dropout": drop_key}, x, c)
  g_tx = _optimizer(s, s.g_learning_rate)
  d_tx = _optimizer(s, s.d_learning_rate,
                    gan_objectives.get_objective(s).d_transform)
  # The initialisers draw from keys of their own, so init='flax' keeps the
  # values flax's init drew with g_key and d_key.
  g_params = gans.initialize(g_vars["params"], jax.random.fold_in(g_key, 1),
                             s.init)
  d_params = gans.initialize(d_vars["params"], jax.random.fold_in(d_key, 1),
                             s.init)
  if s.class_loss == "d2d_ce":
    head = _d2d_head(s, num_classes)
    out = discriminator.apply(d_vars, x, c)
    d_params = {**d_params, D2D_HEAD: head.init(
        jax.random.fold_in(d_key, 2), out["features"])["params"]}
  fields = dict(
      step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
      g_stats=g_vars.get("batch_stats", {}),
      d_stats=d_vars.get("batch_stats", {}),
      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
      ema_params=g_params if s.ema_decay > 0 else None, vbn_ref=vbn_ref,
      g_tx=g_tx, d_tx=d_tx)
  if has_extras(s):
    return RegularizedGANState(**fields, extras=initial_extras(s))
  return GANState(**fields)


def _d2d_head(s, num_classes):
  return D2DHead(num_classes, s.d2d_embed_dim, float(s.d2d_temperature))


class _Players:
  """Applies G and D with their collections; returns new 'batch_stats'."""

  def __init__(self, s, image_shape, num_classes):
    self.generator, self.discriminator = make_models(
        s, image_shape, num_classes)
    self.d2d_head = (_d2d_head(s, num_classes)
                     if s.class_loss == "d2d_ce" else None)

  def generate(self, params, stats, z, labels, *, ref, train, rng=None):
    variables = {"params": params, "batch_stats": stats}
    rngs = {"dropout": rng} if rng is not None else {}
    if not train:
      return self.generator.apply(variables, z, labels, ref=ref), stats
    x, updates = self.generator.apply(variables, z, labels, ref=ref,
                                      train=True, rngs=rngs,
                                      mutable=["batch_stats"])
    return x, updates.get("batch_stats", stats)

  def discriminate(self, params, stats, x, labels, *, train, rng=None,
                   update_stats=None):
    head = None
    if self.d2d_head is not None:
      head = params[D2D_HEAD]
      params = {k: v for k, v in params.items() if k != D2D_HEAD}
    variables = {"params": params, "batch_stats": stats}
    rngs = {"dropout": rng} if rng is not None else {}
    if not train:
      out = self.discriminator.apply(variables, x, labels)
    else:
      out, updates = self.discriminator.apply(
          variables, x, labels, train=True, update_stats=update_stats,
          rngs=rngs, mutable=["batch_stats"])
      stats = updates.get("batch_stats", stats)
    if head is not None:  # D2D-CE: its embedding, proxies and class logits
      out = {**out, **self.d2d_head.apply({"params": head}, out["features"])}
    return out, stats


def _correct(class_logits, labels):
  """[B] bool: the class predicted right (with one head per attribute,
  every attribute)."""
  if isinstance(class_logits, tuple):
    return jnp.all(jnp.stack([_correct(logits, labels[:, a]) for a, logits
                              in enumerate(class_logits)], -1), -1)
  return jnp.argmax(class_logits, -1) == labels


def _accuracy(class_logits, labels):
  return jnp.mean(_correct(class_logits, labels).astype(jnp.float32))


def _class_metrics(real_logits, fake_logits, labels, fake_labels) -> dict:
  """real/fake_class_acc (joint over the attributes) and, with one head
  per attribute, each attribute a's as real/fake_class_acc_<a>."""
  m = {"real_class_acc": _accuracy(real_logits, labels),
       "fake_class_acc": _accuracy(fake_logits, fake_labels)}
  if isinstance(real_logits, tuple):
    for a, (r, f) in enumerate(zip(real_logits, fake_logits)):
      m[f"real_class_acc_{a}"] = _accuracy(r, labels[:, a])
      m[f"fake_class_acc_{a}"] = _accuracy(f, fake_labels[:, a])
  return m


def _d_metrics(objective, real, fake, labels, s, fake_labels) -> dict:
  """What D's update reports besides its terms."""
  lr, lf = real["logit"], fake["logit"]
  m = {"d_real": jnp.mean(jax.nn.sigmoid(lr)),
       "d_fake": jnp.mean(jax.nn.sigmoid(lf))}
  if objective.metrics is not None:
    m.update(objective.metrics(lr, lf))
  if s.class_head:
    m.update(_class_metrics(real["class_logits"], fake["class_logits"],
                            labels, fake_labels))
  if s.twin_class_head:
    m["fake_twin_class_acc"] = _accuracy(fake["twin_class_logits"],
                                         fake_labels)
  return m


def make_train_step(s, image_shape, num_classes):
  """train_step(state, batch, rng) -> (state, metrics); see the module doc.

  `n_critic` discriminator updates, then one generator update. Each player
  minimises the weighted sum of its terms (`gan_objectives.
  discriminator_terms` / `generator_terms`); every term's mean is a metric
  (d_adv_loss, g_adv_loss, gradient_penalty, r1_penalty, feature_matching,
  d_real_class_loss, d_fake_class_loss, g_fake_class_loss,
  d_twin_class_loss, g_twin_class_loss, r2_penalty, lecam_penalty,
  bcr_penalty), with d_loss, g_loss, loss (their
  sum, for progress displays only), d_real and d_fake (mean sigmoid(D)
  before the last D update), the objective's metrics (wasserstein_estimate)
  and, with a class head, real/fake_class_acc (and fake_twin_class_acc);
  with attributes those are joint (every attribute right), and
  real/fake_class_acc_<a> are attribute a's. With augment='ada': ada_p
  (after this step's adjustment) and ada_rt (E[sign(D(real))] of the last
  D update); with LeCam: lecam_real, lecam_fake (the EMAs).
  """
  parts = _GANStep(s, image_shape, num_classes)

  def train_step(state: GANState, batch, rng):
    return parts.step(state, batch, rng)
  return train_step


class _GANStep:
  """The pieces of one GAN training step: each player's loss and update."""

  def __init__(self, s, image_shape, num_classes):
    self.s = s
    self.num_classes = num_classes
    self.players = _Players(s, image_shape, num_classes)
    self.objective = objective = gan_objectives.get_objective(s)
    self.augmentation = diffaugment.Augmentation(s.augment, s.augment_policy)
    bcr = diffaugment.Augmentation("diffaugment", s.bcr_policy)
    self.d_terms = gan_objectives.discriminator_terms(s, objective, bcr)
    self.g_terms = gan_objectives.generator_terms(s, objective)
    self.g_needs_real = (objective.generator_needs_real
                         or s.feature_matching > 0)

  def augment(self, key, x, extras):
    """x as D sees it (`config.augment`; the identity by default). The key
    is folded with 3 from the pass's key, so each batch has its own draw."""
    if not self.augmentation.active:
      return x
    p = extras["ada_p"] if self.s.augment == "ada" else None
    return self.augmentation(jax.random.fold_in(key, 3), x, p)

  def lecam_anchors(self, extras, real_out, fake_out, first):
    """LeCam's (alpha_R, alpha_F) after this batch: EMAs of D's mean real
    and fake outputs (no gradient), the first update taking the batch's
    means; None when lecam_weight is 0."""
    if not self.s.lecam_weight > 0:
      return None
    decay = jnp.where(first, 0.0, float(self.s.lecam_decay))
    mean = lambda out: jax.lax.stop_gradient(jnp.mean(out["logit"]))
    return (decay * extras["lecam_real"] + (1 - decay) * mean(real_out),
            decay * extras["lecam_fake"] + (1 - decay) * mean(fake_out))

  def warped_class_logits(self, fake_out, d_params, d_stats, fake,
                          fake_labels, key):
    """`fake_out` with its class logits read from warped copies of `fake`
    (code_augmentation with a class head; D's statistics not updated), or
    as it is. The keys are folded from `key`, so runs without it draw as
    before."""
    if not (self.s.code_augmentation and self.s.class_head):
      return fake_out  # without a class head no term reads the logits
    fill = -1.0 if tanh_output(self.s) else 0.0
    warped = augmentation.random_affine(jax.random.fold_in(key, 1), fake,
                                        fill)
    out, _ = self.players.discriminate(
        d_params, d_stats, warped, fake_labels, train=True,
        rng=jax.random.fold_in(key, 2), update_stats=False)
    return {**fake_out, **{k: out[k] for k in ("class_logits",
                                               "class_embedding")
                           if k in out}}

  def d_loss(self, d_params, d_stats, x_real, fake, labels, latents, keys,
             extras=None, first=False):
    """D's loss on a real and a generated batch; (loss, (stats, metrics)).
    `latents`: (fake_labels, codes), what G was given. `extras`: the
    state's ADA / LeCam values (`RegularizedGANState`), `first`: whether
    this is the run's first D update (LeCam's EMAs start there)."""
    players = self.players
    fake_labels, codes = latents
    real_aug = lambda x: self.augment(keys[0], x, extras)
    fake_aug = lambda x: self.augment(keys[1], x, extras)
    real_out, d_stats = players.discriminate(d_params, d_stats,
                                             real_aug(x_real), labels,
                                             train=True, rng=keys[0])
    fake_out, d_stats = players.discriminate(d_params, d_stats,
                                             fake_aug(fake), fake_labels,
                                             train=True, rng=keys[1])
    fake_out = self.warped_class_logits(fake_out, d_params, d_stats, fake,
                                        fake_labels, keys[2])

    def critic(x):  # for penalties: D at the updated statistics, frozen
      out, _ = players.discriminate(d_params, d_stats, real_aug(x), labels,
                                    train=True, rng=keys[0],
                                    update_stats=False)
      return out["logit"]

    def fake_critic(x):  # the same, of generated batches (R2, bCR)
      out, _ = players.discriminate(d_params, d_stats, fake_aug(x),
                                    fake_labels, train=True, rng=keys[1],
                                    update_stats=False)
      return out["logit"]
    anchors = self.lecam_anchors(extras, real_out, fake_out, first)
    context = gan_objectives.Context(real_out, fake_out, labels, critic,
                                     x_real, fake, keys[2], fake_labels,
                                     codes, fake_critic, anchors)
    loss, m = gan_objectives.total(self.d_terms, context)
    m.update(_d_metrics(self.objective, real_out, fake_out, labels, self.s,
                        fake_labels))
    if self.s.augment == "ada":  # r_t of this batch: E[sign(D(real))]
      m["ada_rt"] = jnp.mean(jnp.sign(
          jax.lax.stop_gradient(real_out["logit"])))
    if anchors is not None:
      m["lecam_real"], m["lecam_fake"] = anchors
    m["d_loss"] = loss
    return loss, (d_stats, m)

  def g_loss(self, g_params, g_stats, d_params, d_stats, z, labels, latents,
             ref, real_out, keys, extras=None):
    """G's loss through the current D (and the augmentation: G's gradient
    flows through it); (loss, (stats, metrics))."""
    fake_labels, codes = latents
    fake, g_stats = self.players.generate(g_params, g_stats, z, fake_labels,
                                          ref=ref, train=True, rng=keys[0])
    fake_out, _ = self.players.discriminate(
        d_params, d_stats, self.augment(keys[1], fake, extras), fake_labels,
        train=True, rng=keys[1], update_stats=False)
    fake_out = self.warped_class_logits(fake_out, d_params, d_stats, fake,
                                        fake_labels, keys[1])
    loss, m = gan_objectives.total(self.g_terms, gan_objectives.Context(
        real_out, fake_out, labels, fake_labels=fake_labels, codes=codes))
    m["g_loss"] = loss
    return loss, (g_stats, m)

  def d_update(self, state, d_params, d_stats, d_opt_state, x_real, labels,
               rng, extras=None, first=False):
    z_key, g_key, *d_keys = jax.random.split(rng, 5)
    z, fake_labels, codes = sample_latents(self.s, z_key, labels,
                                           self.num_classes)
    fake, _ = self.players.generate(state.g_params, state.g_stats, z,
                                    fake_labels, ref=_ref(state.vbn_ref),
                                    train=True, rng=g_key)
    grads, (d_stats, m) = jax.grad(self.d_loss, has_aux=True)(
        d_params, d_stats, x_real, jax.lax.stop_gradient(fake), labels,
        (fake_labels, codes), d_keys, extras, first)
    d_params, d_opt_state = common.optimizer_step(state.d_tx, grads,
                                                  d_opt_state, d_params)
    return d_params, d_stats, d_opt_state, m

  def g_update(self, state, d_params, d_stats, x_real, labels, rng,
               extras=None):
    z_key, real_key, *g_keys = jax.random.split(rng, 4)
    z, fake_labels, codes = sample_latents(self.s, z_key, labels,
                                           self.num_classes)
    real_out = None
    if self.g_needs_real:
      real_out, _ = self.players.discriminate(
          d_params, d_stats, self.augment(real_key, x_real, extras), labels,
          train=True, rng=real_key, update_stats=False)
      real_out = jax.lax.stop_gradient(real_out)
    grads, (g_stats, m) = jax.grad(self.g_loss, has_aux=True)(
        state.g_params, state.g_stats, d_params, d_stats, z, labels,
        (fake_labels, codes), _ref(state.vbn_ref), real_out, g_keys, extras)
    g_params, g_opt_state = common.optimizer_step(
        state.g_tx, grads, state.g_opt_state, state.g_params)
    return g_params, g_stats, g_opt_state, m

  def step(self, state: GANState, batch, rng):
    s = self.s
    rng = jax.random.fold_in(rng, state.step)
    x_real, labels = batch["image"].astype(jnp.float32), batch["label"]
    if tanh_output(s):
      x_real = common.to_signed(x_real)
    d_params, d_stats, d_opt = state.d_params, state.d_stats, state.d_opt_state
    extras = getattr(state, "extras", None)
    new_extras = dict(extras) if extras is not None else None
    for i in range(s.n_critic):  # unrolled: n_critic is small and static
      d_params, d_stats, d_opt, d_m = self.d_update(
          state, d_params, d_stats, d_opt, x_real, labels,
          jax.random.fold_in(rng, i), extras,
          first=(state.step == 0) if i == 0 else False)
      if s.lecam_weight > 0:  # the EMAs advance with every D update
        extras = {**extras, "lecam_real": d_m["lecam_real"],
                  "lecam_fake": d_m["lecam_fake"]}
        new_extras.update(lecam_real=d_m["lecam_real"],
                          lecam_fake=d_m["lecam_fake"])
      if s.augment == "ada":  # signs of D(real) over every D update
        new_extras = diffaugment.ada_accumulate(new_extras, d_m["ada_rt"],
                                                x_real.shape[0])
    g_params, g_stats, g_opt, g_m = self.g_update(
        state, d_params, d_stats, x_real, labels,
        jax.random.fold_in(rng, s.n_critic), extras)
    ema = state.ema_params
    if s.ema_decay > 0:
      ema = ema_lib.update(ema, g_params, s.ema_decay, state.step + 1)
    metrics = {**d_m, **g_m, "loss": d_m["d_loss"] + g_m["g_loss"]}
    changes = {}
    if new_extras is not None:
      if s.augment == "ada":  # every ada_interval steps, p moves
        new_extras = diffaugment.ada_update(
            new_extras, (state.step + 1) % s.ada_interval == 0,
            target=float(s.ada_target), kimg=float(s.ada_kimg))
        metrics["ada_p"] = new_extras["ada_p"]
      changes["extras"] = {k: jnp.asarray(v, jnp.float32)
                           for k, v in new_extras.items()}
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, d_params=d_params,
        g_stats=g_stats, d_stats=d_stats, g_opt_state=g_opt,
        d_opt_state=d_opt, ema_params=ema, **changes)
    return new_state, {k: jnp.asarray(v, jnp.float32)
                       for k, v in metrics.items()}


def make_generate_fn(s, image_shape, num_classes):
  """generate(state, z, labels) -> float32 images in [0, 1], [B, H, W, C].

  G at a given z `[B, z_dim + continuous_codes]` (InfoGAN's continuous
  codes are its last entries) and class / categorical code `labels`; the
  EMA generator weights when config.ema_decay > 0, the generator in
  inference mode (batch-norm running averages). For latent traversals.
  """
  players = _Players(s, image_shape, num_classes)

  def generate(state: GANState, z, labels):
    params = state.ema_params if s.ema_decay > 0 else state.g_params
    x, _ = players.generate(params, state.g_stats, z, jnp.asarray(labels),
                            ref=_ref(state.vbn_ref), train=False)
    if tanh_output(s):
      x = common.to_unit(x, clip=False)
    return jnp.clip(x, 0.0, 1.0).astype(jnp.float32)

  return generate


def latent_traversal(s, state: GANState, image_shape, num_classes, *,
                     code: int, values, seed: int = 0):
  """InfoGAN's latent traversal (Chen et al. 2016, Fig. 2): images
  `[K * len(values), H, W, C]`, row r = categorical code r, column j =
  continuous code `code` at values[j], the other continuous codes 0 and the
  noise z fixed within a row (drawn from `seed`). ValueError when the run
  has no such continuous code."""
  if not 0 <= code < s.continuous_codes:
    raise ValueError(f"continuous code {code} does not exist: the run has "
                     f"{s.continuous_codes} continuous codes (InfoGAN's "
                     "continuous_codes); expected 0 <= code < "
                     f"{s.continuous_codes}.")
  values = jnp.asarray(values, jnp.float32)
  cols = values.shape[0]
  noise = sample_z(jax.random.key(seed), (num_classes, s.z_dim), s.z_prior)
  codes = jnp.zeros((num_classes, cols, s.continuous_codes))
  codes = codes.at[:, :, code].set(values)
  z = jnp.concatenate([jnp.repeat(noise[:, None], cols, 1), codes], -1)
  labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), cols)
  generate = jax.jit(make_generate_fn(s, image_shape, num_classes))
  return generate(state, z.reshape(num_classes * cols, -1), labels)


def make_sample_fn(s, image_shape, num_classes):
  """sample(state, labels, rng) -> float32 images in [0, 1], [B, H, W, C]:
  `make_generate_fn` at z (and continuous codes) drawn from their priors;
  `labels` are the classes `[B]` (InfoGAN: the categorical codes), or the
  attribute rows `[B, A]`, asked for."""
  generate = make_generate_fn(s, image_shape, num_classes)

  def sample(state: GANState, labels, rng):
    labels = jnp.asarray(labels)
    z, _, _ = sample_latents(s, rng, labels, num_classes, keep_labels=True)
    return generate(state, z, labels)

  return sample


def evaluate(s, state: GANState, dataset: data_lib.Dataset, rng,
             batch_size: int = 500) -> dict:
  """acgan: accuracy of D's class head on the test split
  ({'test_class_acc', 'num_test_examples'}; with attributes, every
  attribute right, and each attribute's as 'test_<name>_acc'); {} for the
  other models (sample quality is measured by the runner's classifier-based
  metrics)."""
  del rng
  if not s.class_head or s.code_prior == "uniform":  # InfoGAN's codes are
    return {}  # not the classes; the runner reports matched_class_accuracy
  players = _Players(s, dataset.image_shape, dataset.num_classes)
  names = dataset.attribute_names or ()

  @jax.jit
  def correct(d_params, d_stats, images, labels):
    x = data_lib.to_float(images, dataset.max_value)
    x = common.to_signed(x) if tanh_output(s) else x
    out, _ = players.discriminate(d_params, d_stats, x, labels, train=False)
    logits = out["class_logits"]
    return {"joint": jnp.sum(_correct(logits, labels)),
            **{f"attribute_{a}": jnp.sum(_correct(logits[a], labels[:, a]))
               for a in range(len(names))}}

  # Counts of right predictions per batch; their float64 sums are exact.
  means, n = common.test_split_mean(
      lambda images, labels: correct(state.d_params, state.d_stats, images,
                                     labels),
      dataset, batch_size)
  result = {"test_class_acc": means["joint"], "num_test_examples": n}
  for a, name in enumerate(names):
    result[f"test_{name}_acc"] = means[f"attribute_{a}"]
  return result
