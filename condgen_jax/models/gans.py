"""Conditional GAN generators and discriminators (flax linen).

Inputs: noise z `[B, z_dim]`, a condition c (int labels `[B]`, int
attributes `[B, A]` with `num_classes` the tuple of the A attributes' sizes,
or float `[B, K]`, see `conditioning.condition_vector`), images
`[B, H, W, C]` in the model's range. Every discriminator returns a dict

  {'logit': [B], 'class_logits': [B, K] or None,
   'twin_class_logits': [B, K] or None, 'code_means': [B, n] or None,
   'features': [B, F]}

with `features` the last shared hidden layer (for feature matching). With
attributes, the class heads are one Dense per attribute and
'class_logits' (and 'twin_class_logits') a tuple of A arrays `[B, K_a]`.

- `cgan_mlp` (Mirza & Osindero 2014, "Conditional Generative Adversarial
  Nets", sec. 4.1): `MLPGenerator` (z -> 200 ReLU, y -> 1000 ReLU, joint 1200
  ReLU, sigmoid pixels in [0, 1]) and `MLPDiscriminator` (x -> maxout 240x5,
  y -> maxout 50x5, joint maxout 240x4, dropout, one logit).
- `cgan_conv` (DCGAN, Radford et al. 2016, conditioned): `ConvGenerator`
  (Dense -> H/4 x W/4 x 2w -> ConvT stride 2 -> ConvT stride 2, tanh in
  [-1, 1]) with the condition concatenated to z or applied by FiLM after each
  norm; `ConvDiscriminator` (strided convs w, 2w, LeakyReLU of slope
  `d_leaky_slope`, 0.2 by default, no pooling, one dense logit)
  conditioned by 'vectorize' (Reed et al. 2016), 'embed_channel', 'film'
  (Perez et al. 2018) or 'projection' (Miyato & Koyama 2018).
- `acgan` (Odena et al. 2017): the conv discriminator with a class head
  (Dense num_classes on the shared features), unconditional on c by default
  ('none'); the generator is the conv generator. `twin_class_head` adds
  TAC-GAN's twin classifier (Gong et al. 2019), a second such head.
  InfoGAN (Chen et al. 2016) is the same pair with the categorical code in
  place of the class, `continuous_codes` appended to z, and D's Q network
  (`q_hidden` and `q_norm`, the class head and the `code_means` head);
  `g_hidden` and `d_hidden` add the paper's 1,024-unit dense layers.

Every network takes `dtype`, the computation dtype of its dense and
FiLM layers (its convolutions': the `kernels` it is given; None: float32),
keeps float32 parameters and normalisation statistics, and returns float32.

`make_models(config, image_shape, num_classes)` builds the pair from a
config; `initialize(params, rng, config.init)` redraws their initial
weights as DCGAN's (and InfoGAN's) code does when `init='dcgan'`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from condgen_jax.nn import conditioning
from condgen_jax.nn import kernels as kernels_lib
from condgen_jax.nn import layers

ARCHITECTURES = ("mlp", "conv")
G_CONDITIONINGS = ("concat", "film")
D_CONDITIONINGS = ("vectorize", "embed_channel", "film", "projection")
NORMS = ("none", "batch", "layer")
# cgan_mlp generator: hidden activation and output layer.
G_ACTIVATIONS = ("relu", "leaky_relu")
G_OUTPUTS = ("sigmoid", "tanh")

UPSAMPLES = ("transpose", "pixel_shuffle")
INITS = ("flax", "dcgan")

def _check(name: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"Unknown {name} {value!r}; expected one of "
                     f"{tuple(allowed)}.")


def _float32(outputs):
  """A network's outputs (an array or a dict of arrays and Nones) as
  float32, whatever dtype its layers computed in (a no-op in float32)."""
  return jax.tree.map(lambda x: x.astype(jnp.float32), outputs)


def _dropout(rate: float, train: bool):
  if rate > 0:
    return nn.Dropout(rate, deterministic=not train)
  return lambda x: x


class MLPGenerator(nn.Module):
  """Mirza & Osindero 2014: z -> 200, y -> 1000, joint 1200, sigmoid.

  Output `[B, H, W, C]` in [0, 1] (`output='sigmoid'`, the paper) or [-1, 1]
  (`'tanh'`). `activation`: 'relu' (the paper) or 'leaky_relu' (slope 0.2).
  `dropout_rate` (default 0) drops the hidden units while training (needs a
  'dropout' rng). `norm` ('none', the paper; 'batch' or 'layer') normalises
  each hidden layer before its activation.
  """
  image_shape: tuple[int, int, int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  z_hidden: int = 200
  c_hidden: int = 1000
  joint_hidden: int = 1200
  dropout_rate: float = 0.0
  norm: str = "none"
  activation: str = "relu"
  output: str = "sigmoid"
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None

  @nn.compact
  def __call__(self, z, c, *, train: bool = False, ref: Any = None):
    del ref  # virtual batch norm is for the conv generator.
    _check("g_norm", self.norm, NORMS)
    _check("g_activation", self.activation, G_ACTIVATIONS)
    _check("g_output", self.output, G_OUTPUTS)
    drop = _dropout(self.dropout_rate, train)
    act = (nn.relu if self.activation == "relu" else
           lambda h: nn.leaky_relu(h, 0.2))

    def dense_norm_act(x, features, name):
      x = nn.Dense(features, use_bias=self.norm == "none", dtype=self.dtype,
                   name=name)(x)
      x = conditioning.normalization(self.norm, train, name=f"{name}_norm",
                                     affine=True,
                                     batch_norm=self.kernels.batch_norm)(x)
      return act(x)

    c = conditioning.condition_vector(c, self.num_classes).astype(z.dtype)
    hz = dense_norm_act(z, self.z_hidden, "z_dense")
    hc = dense_norm_act(c, self.c_hidden, "c_dense")
    h = drop(jnp.concatenate([hz, hc], axis=-1))
    h = drop(dense_norm_act(h, self.joint_hidden, "joint_dense"))
    size = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
    x = nn.Dense(size, dtype=self.dtype, name="out")(h)
    x = nn.sigmoid(x) if self.output == "sigmoid" else jnp.tanh(x)
    return _float32(x.reshape((z.shape[0],) + tuple(self.image_shape)))


class MLPDiscriminator(nn.Module):
  """Mirza & Osindero 2014: maxout 240x5 on x, 50x5 on y, joint 240x4.

  Dropout (`dropout_rate`, default 0.5, needs a 'dropout' rng while training)
  on the output of every maxout layer. `features` is the joint maxout layer.
  Optional minibatch discrimination before the logit and spectral norm on
  every layer (then apply with `mutable=['batch_stats']` while training).
  """
  image_shape: tuple[int, int, int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  x_units: tuple[int, int] = (240, 5)
  c_units: tuple[int, int] = (50, 5)
  joint_units: tuple[int, int] = (240, 4)
  dropout_rate: float = 0.5
  spectral_norm: bool = False
  minibatch_discrimination: bool = False
  mbd_kernels: int = 50
  mbd_kernel_dim: int = 5
  dtype: Any = None

  @nn.compact
  def __call__(self, x, c, *, train: bool = False,
               update_stats: bool | None = None):
    update = train if update_stats is None else update_stats
    drop = _dropout(self.dropout_rate, train)

    def sn(layer, name):
      return layers.spectral_norm(layer, self.spectral_norm, name=name)

    c = conditioning.condition_vector(c, self.num_classes).astype(x.dtype)
    maxout = lambda units, name: layers.Maxout(*units, dtype=self.dtype,
                                               name=name)
    hx = sn(maxout(self.x_units, "x_maxout"), "sn_x")(
        x.reshape(x.shape[0], -1), update_stats=update)
    hc = sn(maxout(self.c_units, "c_maxout"), "sn_c")(
        c, update_stats=update)
    h = drop(jnp.concatenate([hx, hc], axis=-1))
    features = sn(maxout(self.joint_units, "joint_maxout"),
                  "sn_joint")(h, update_stats=update)
    h = drop(features)
    if self.minibatch_discrimination:
      h = layers.MinibatchDiscrimination(self.mbd_kernels, self.mbd_kernel_dim,
                                         name="mbd")(h)
    logit = sn(nn.Dense(1, dtype=self.dtype, name="logit"), "sn_logit")(
        h, update_stats=update)
    return _float32({"logit": logit[:, 0], "class_logits": None,
                     "twin_class_logits": None, "code_means": None,
                     "features": features})


class ConvGenerator(nn.Module):
  """DCGAN generator: Dense -> [H/4, W/4, 2w] -> ConvT(w) -> ConvT(C), tanh.

  `hidden` > 0 puts a Dense(hidden) layer first (InfoGAN's G, Chen et al.
  2016, Table 1: 1024). Each hidden layer is norm -> (FiLM) -> ReLU.
  `conditioning`: 'concat' (one-hot c appended to z; norms carry their own
  scale/offset) or 'film' (FiLM(c) after each norm, norms without affine
  parameters). `norm`:
  'batch' (train mode needs `mutable=['batch_stats']`), 'layer' or 'none'.

  `virtual_batch_norm=True` replaces the norms by `layers.VirtualBatchNorm`:
  the call then needs `ref=(z_ref, c_ref)`, a fixed reference batch run
  alongside through the same parameters (Salimans et al. 2016, sec. 3.4).
  Output `[B, H, W, C]` in [-1, 1]; H and W must be multiples of 4.
  """
  image_shape: tuple[int, int, int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditioning: str = "concat"
  width: int = 64
  norm: str = "batch"
  virtual_batch_norm: bool = False
  kernel_size: int = 4
  upsample: str = "transpose"
  hidden: int = 0
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None

  @nn.compact
  def __call__(self, z, c, *, train: bool = False, ref: Any = None):
    _check("g_conditioning", self.conditioning, G_CONDITIONINGS)
    _check("g_upsample", self.upsample, UPSAMPLES)
    _check("g_norm", self.norm, NORMS)
    h_img, w_img, channels = self.image_shape
    if h_img % 4 or w_img % 4:
      raise ValueError(f"ConvGenerator needs H and W divisible by 4; got "
                       f"image_shape {tuple(self.image_shape)}.")
    if self.virtual_batch_norm and ref is None:
      raise ValueError("virtual_batch_norm needs ref=(z_ref, c_ref), the "
                       "reference batch.")
    film = self.conditioning == "film"
    plain = self.norm == "none" and not self.virtual_batch_norm
    # Stream 0 is the batch; stream 1 (VBN only) the reference batch.
    streams = [(z, c)] + ([tuple(ref)] if self.virtual_batch_norm else [])

    def first(zz, cc):
      if film:
        return zz
      cc = conditioning.condition_vector(cc, self.num_classes)
      return jnp.concatenate([zz, cc.astype(zz.dtype)], axis=-1)

    def norm_film_relu(hs, i):
      if self.virtual_batch_norm:
        vbn = layers.VirtualBatchNorm(use_scale=not film, use_bias=not film,
                                      name=f"norm{i}")
        hs = [h.astype(jnp.float32) for h in hs]  # statistics in float32
        hs = [vbn(h, hs[1]) for h in hs]
      else:
        norm = conditioning.normalization(self.norm, train, name=f"norm{i}",
                                          batch_norm=self.kernels.batch_norm,
                                          affine=not film)
        hs = [norm(hs[0])]
      if film:
        f = conditioning.FiLM(self.num_classes, dtype=self.dtype,
                              name=f"film{i}")
        hs = [f(h, s[1]) for h, s in zip(hs, streams)]
      return [nn.relu(h) for h in hs]

    hs = [first(*s) for s in streams]
    if self.hidden:
      hidden = nn.Dense(self.hidden, use_bias=plain, dtype=self.dtype,
                        name="hidden")
      hs = norm_film_relu([hidden(h) for h in hs], "_hidden")
    h4, w4 = h_img // 4, w_img // 4
    dense = nn.Dense(h4 * w4 * 2 * self.width, use_bias=plain,
                     dtype=self.dtype, name="dense")
    hs = [dense(h).reshape(-1, h4, w4, 2 * self.width) for h in hs]
    hs = norm_film_relu(hs, 0)
    k = (self.kernel_size,) * 2

    def up(features, use_bias, name):
      if self.upsample == "pixel_shuffle":
        return layers.SubPixelConv(features, use_bias=use_bias,
                                   conv=self.kernels.conv, name=name)
      return self.kernels.conv_transpose(features, k, strides=(2, 2),
                                         padding="SAME", use_bias=use_bias,
                                         name=name)

    conv1 = up(self.width, plain, "convt1")
    hs = norm_film_relu([conv1(h) for h in hs], 1)
    out = up(channels, True, "convt2")(hs[0])
    return _float32(jnp.tanh(out))


class ConvDiscriminator(nn.Module):
  """DCGAN discriminator: Conv(w) -> Conv(2w), stride 2, LeakyReLU.

  No pooling; flatten, then (with `hidden` > 0) a Dense(hidden) layer with
  the norm and LeakyReLU (InfoGAN's D, Chen et al. 2016, Table 1: 1024);
  that output is the `features`, under one dense logit. `conditioning`:
  'vectorize' / 'embed_channel' (input channels), 'film' (after each conv
  and norm), 'projection' (logit += <embed(c), h>) or 'none'. `norm` ('none',
  'batch', 'layer') acts on the second conv and the hidden layer (DCGAN
  leaves the first conv unnormalised). `class_head` adds AC-GAN class
  logits on the features, `twin_class_head` TAC-GAN's twin class logits
  beside them, and `continuous_codes` > 0 InfoGAN's code means; with
  `q_hidden` > 0 these heads sit on a shared hidden layer (the Q network:
  Dense, `q_norm`, LeakyReLU). `leaky_slope`: the LeakyReLUs' negative
  slope (DCGAN 0.2). With a tuple `num_classes` (attributes),
  each class head is one Dense per attribute ('class_head_0',
  'class_head_1', ...) and its logits a tuple. `spectral_norm` wraps every
  conv and dense layer (not the projection embedding); apply with
  `mutable=['batch_stats']` while training.
  """
  image_shape: tuple[int, int, int]
  num_classes: int | tuple[int, ...]  # a tuple: attribute sizes
  conditioning: str = "projection"
  width: int = 64
  kernel_size: int = 4
  norm: str = "none"
  spectral_norm: bool = False
  minibatch_discrimination: bool = False
  mbd_kernels: int = 50
  mbd_kernel_dim: int = 5
  class_head: bool = False
  twin_class_head: bool = False
  continuous_codes: int = 0
  q_hidden: int = 0
  q_norm: str = "none"
  hidden: int = 0
  leaky_slope: float = 0.2
  kernels: kernels_lib.Kernels = kernels_lib.STOCK
  dtype: Any = None

  @nn.compact
  def __call__(self, x, c, *, train: bool = False,
               update_stats: bool | None = None):
    _check("d_conditioning", self.conditioning, D_CONDITIONINGS + ("none",))
    _check("d_norm", self.norm, NORMS)
    _check("q_norm", self.q_norm, NORMS)
    update = train if update_stats is None else update_stats
    film = self.conditioning == "film"

    def sn(layer, name):
      return layers.spectral_norm(layer, self.spectral_norm, name=name)

    if self.conditioning in ("vectorize", "embed_channel"):
      x = conditioning.image_conditioning(self.conditioning,
                                          self.num_classes, self.dtype)(x, c)
    k = (self.kernel_size,) * 2
    for i, f in enumerate((self.width, 2 * self.width)):
      conv = self.kernels.strided_conv(f, k, strides=(2, 2), padding="SAME",
                                       name=f"conv{i}")
      x = sn(conv, f"sn_conv{i}")(x, update_stats=update)
      if i > 0:
        x = conditioning.normalization(self.norm, train, name=f"norm{i}",
                                       batch_norm=self.kernels.batch_norm,
                                       affine=not film)(x)
      if film:
        x = conditioning.FiLM(self.num_classes, dtype=self.dtype,
                              name=f"film{i}")(x, c)
      x = nn.leaky_relu(x, self.leaky_slope)

    def dense_norm_lrelu(x, width, name, norm, norm_name):
      x = sn(nn.Dense(width, dtype=self.dtype, name=name), f"sn_{name}")(
          x, update_stats=update)
      x = conditioning.normalization(norm, train, name=norm_name,
                                     batch_norm=self.kernels.batch_norm,
                                     affine=True)(x)
      return nn.leaky_relu(x, self.leaky_slope)

    features = x.reshape(x.shape[0], -1)
    if self.hidden:
      features = dense_norm_lrelu(features, self.hidden, "hidden", self.norm,
                                  "norm_hidden")
    h = features
    if self.minibatch_discrimination:
      h = layers.MinibatchDiscrimination(self.mbd_kernels, self.mbd_kernel_dim,
                                         name="mbd")(h)
    logit = sn(nn.Dense(1, dtype=self.dtype, name="logit"), "sn_logit")(
        h, update_stats=update)[:, 0]
    if self.conditioning == "projection":
      logit = logit + conditioning.Projection(self.num_classes,
                                              dtype=self.dtype,
                                              name="projection")(h, c)
    q = features
    if self.q_hidden and (self.class_head or self.continuous_codes):
      q = dense_norm_lrelu(q, self.q_hidden, "q_hidden", self.q_norm,
                           "q_norm")

    def head(name, size):
      return sn(nn.Dense(size, dtype=self.dtype, name=name), f"sn_{name}")(
          q, update_stats=update)

    def class_logits(name):  # one head per attribute: A arrays [B, K_a]
      if isinstance(self.num_classes, tuple):
        return tuple(head(f"{name}_{a}", k)
                     for a, k in enumerate(self.num_classes))
      return head(name, self.num_classes)

    return _float32({
        "logit": logit,
        "class_logits": (class_logits("class_head") if self.class_head
                         else None),
        "twin_class_logits": (class_logits("twin_class_head")
                              if self.twin_class_head else None),
        "code_means": (head("code_head", self.continuous_codes)
                       if self.continuous_codes else None),
        "features": features})


def initialize(params, rng, init: str):
  """`params` as the config's `init` asks. 'flax' returns them unchanged;
  'dcgan' redraws every 'kernel' from N(0, 0.02) and every 'scale' from
  N(1, 0.02), each leaf from its own key (Radford et al. 2016, sec. 4: "All
  weights were initialized from a zero-centered Normal distribution with
  standard deviation 0.02"; InfoGAN's code does the same). Biases,
  embeddings and other leaves keep their values."""
  _check("init", init, INITS)
  if init == "flax":
    return params
  means = {"kernel": 0.0, "scale": 1.0}
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    mean = means.get(getattr(path[-1], "key", None))
    if mean is not None:  # only the redrawn leaves cost a draw
      leaf = mean + 0.02 * jax.random.normal(jax.random.fold_in(rng, i),
                                             leaf.shape, leaf.dtype)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)
