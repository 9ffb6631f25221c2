"""Mixed precision (`compute_dtype`) across the model families.

With 'bfloat16' every network computes its matmuls and convolutions in
bfloat16 while parameters, optimizer state, norm statistics and losses stay
float32; with 'float32' (the default) no bfloat16 appears anywhere. The
lowering checks read the StableHLO of each family's train step (nothing is
compiled); the tracking check trains three tiny models on `digits` both ways.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from condgen_jax import families
from condgen_jax.data import datasets as data_lib
from condgen_jax.families import common
from condgen_jax.nn import kernels as kernels_lib
from condgen_jax.runner import train

BATCH = 8
# One tiny config per family, switching on the layers that take a dtype of
# their own (FiLM, minibatch discrimination, virtual batch norm, the class,
# twin and code heads, self-attention, the image conditions).
FAMILIES = {
    "cvae": {"model": "cvae", "architecture": "conv", "conditioning": "film",
             "hidden": (16,), "channels": (4, 8), "latent_dim": 4},
    "cgan_mlp": {"model": "cgan_mlp", "z_dim": 8,
                 "minibatch_discrimination": True, "mbd_kernels": 4,
                 "mbd_kernel_dim": 3},
    "infogan": {"model": "acgan", "z_dim": 8, "g_width": 8, "d_width": 8,
                "continuous_codes": 2, "q_hidden": 8, "g_hidden": 8,
                "d_hidden": 8, "twin_class_head": True,
                "g_conditioning": "film", "virtual_batch_norm": True,
                "vbn_batch_size": 4},
    "cgan_conv": {"model": "cgan_conv", "z_dim": 8, "g_width": 8,
                  "d_width": 8, "d_conditioning": "embed_channel",
                  "g_norm": "layer", "d_norm": "batch"},
    "diffusion": {"model": "diffusion", "channels": (8,),
                  "num_res_blocks": 1, "attention": True, "num_groups": 4},
    "cvae_sop": {"model": "cvae_sop", "condition_kind": "image",
                 "hidden": (16,), "latent_dim": 4},
    "pix2pix": {"model": "pix2pix", "condition_kind": "image",
                "g_channels": (8, 16, 16), "d_channels": (8, 16)},
}


def _settings(dtype: str, **values):
  return train.resolve(ml_collections.ConfigDict(
      {"dataset": "digits", "batch_size": BATCH, "compute_dtype": dtype,
       **values}))


def _lowered_train_step(s, digits) -> str:
  family = families.get_family(s.model)
  shape, k = digits.image_shape, digits.num_classes
  state = jax.eval_shape(lambda r: family.create_state(s, shape, k, r),
                         jax.random.key(0))
  batch = {"image": jax.ShapeDtypeStruct((BATCH,) + shape, jnp.float32),
           "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
  step = family.make_train_step(s, shape, k)
  return jax.jit(step).lower(state, batch, jax.random.key(1)).as_text()


def _operand_types(text: str) -> list[str]:
  """The operand types of every dot_general and convolution, e.g.
  'tensor<8x64xbf16>, tensor<64x32xbf16>'."""
  return re.findall(
      r"stablehlo\.(?:dot_general|convolution)[^\n]*?:\s*\(([^)]*)\)\s*->",
      text)


def _main_signature(text: str) -> str:
  """The argument and result types of the lowered step (`@main`)."""
  start = text.index("func.func public @main(")
  return text[start:text.index("{\n", start)]


def _is_prior_lookup(operands: str, s) -> bool:
  """The CVAE's learned prior, one-hot [B, K] @ [K, latent] (or its
  transpose in the gradient): a lookup of distribution parameters that
  enters the KL directly, kept float32 on purpose."""
  return s.model == "cvae" and "x10xf32" in operands and (
      f"10x{s.latent_dim}xf32" in operands
      or f"{BATCH}x{s.latent_dim}xf32" in operands)


@pytest.mark.parametrize("name", tuple(FAMILIES))
def test_bfloat16_steps_multiply_in_bfloat16_and_keep_float32_state(
    name, digits):
  s = _settings("bfloat16", **FAMILIES[name])
  text = _lowered_train_step(s, digits)
  operands = _operand_types(text)
  assert len(operands) >= 4, "the step has no matmuls or convolutions?"
  wide = [o for o in operands if "bf16" not in o
          and not _is_prior_lookup(o, s)]
  assert not wide, f"float32 matmuls/convolutions: {wide[:3]}"
  for o in operands:  # no operation mixes the two
    assert ("f32" not in o) or ("bf16" not in o), o
  # Parameters, optimizer state, norm statistics and metrics in and out of
  # the step are float32: no bfloat16 crosses its boundary.
  signature = _main_signature(text)
  assert "f32" in signature and "bf16" not in signature


@pytest.mark.parametrize("name", tuple(FAMILIES))
def test_float32_steps_have_no_bfloat16(name, digits):
  s = _settings("float32", **FAMILIES[name])
  text = _lowered_train_step(s, digits)
  assert _operand_types(text)
  assert "bf16" not in text


def test_compute_dtype_is_declared_once_and_checked():
  assert train.OPTIONS["compute_dtype"].default == "float32"
  assert "compute_dtype" in train.config_defaults("diffusion")
  with pytest.raises(ValueError, match="compute_dtype"):
    _settings("float16", model="cvae")
  # The XLA:CPU kernels compute in float32 only: refused with bfloat16 ...
  for model in ("cvae", "cgan_conv", "pix2pix"):
    with pytest.raises(ValueError, match="kernels='cpu'.*bfloat16"):
      _settings("bfloat16", model=model, kernels="cpu",
                **({"condition_kind": "image"} if model == "pix2pix"
                   else {}))
  # ... and 'auto' picks the stock flax layers, computing in bfloat16 (the
  # batch norm in float32).
  kernels = common.layer_kernels(_settings("bfloat16", model="cvae"))
  for layer in (kernels.conv, kernels.strided_conv, kernels.conv_transpose):
    assert layer(4, (3, 3)).dtype == jnp.bfloat16
  assert kernels.batch_norm().dtype == jnp.float32
  # float32 runs build the layers `kernels.resolve` names, as before.
  for name, expected in (("cpu", kernels_lib.CPU),
                         ("stock", kernels_lib.STOCK)):
    s = _settings("float32", model="cvae", kernels=name)
    assert common.layer_kernels(s) is expected
    assert common.compute_dtype(s) is None


# Each family trains TRACK_STEPS steps from the same initial state, keys and
# batches in both dtypes. Measured on this host (XLA:CPU), the largest
# relative gap of the loss over the 10 steps: cvae 2.4e-4, cgan_mlp 1.5e-3
# (5.9e-4 at step 0, then between 5e-5 and 1.5e-3), diffusion 7.7e-5 (0 at
# step 0: the U-Net's zero-initialised output layers predict the same zeros
# either way).
# bfloat16 keeps 8 bits of mantissa, a relative rounding error of up to
# 2^-8 = 3.9e-3 per operation on the activations; the losses, means over
# many pixels and examples, average most of it out, and the float32
# parameters drift apart only slowly over so few steps. The bound, 1e-2,
# is about 7x the largest gap measured (2.5 bfloat16 roundings): room for
# the GAN's noisier gap on another host, while a run that computes
# something else or drifts away from float32 (gaps of percents) fails.
TRACK_STEPS = 10
TRACK_RTOL = 1e-2
TRACKED = {
    "cvae": {"model": "cvae", "hidden": (64,), "latent_dim": 8},
    "cgan_mlp": {"model": "cgan_mlp", "z_dim": 8},
    "diffusion": {"model": "diffusion", "channels": (8,),
                  "num_res_blocks": 1, "attention": False,
                  "prng_impl": "philox4x32"},
}


def _train_losses(s, state, digits, steps: int):
  """(losses, final state) of `steps` steps from `state` on the first
  batches of the training split, each with the same key."""
  step = jax.jit(families.get_family(s.model).make_train_step(
      s, digits.image_shape, digits.num_classes))
  b = s.batch_size
  images = data_lib.to_float(digits.train_images[:b * steps],
                             digits.max_value)
  losses = []
  for i in range(steps):
    batch = {"image": images[i * b:(i + 1) * b],
             "label": digits.train_labels[i * b:(i + 1) * b]}
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


@pytest.mark.slow
@pytest.mark.parametrize("name", tuple(TRACKED))
def test_bfloat16_training_tracks_float32(name, digits):
  values = {"batch_size": 32, **TRACKED[name]}
  full_s, half_s = _settings("float32", **values), _settings("bfloat16",
                                                               **values)
  family = families.get_family(full_s.model)
  # Parameters are float32 in both: one initial state serves both runs.
  state = jax.jit(lambda r: family.create_state(
      full_s, digits.image_shape, digits.num_classes, r))(jax.random.key(0))
  full, _ = _train_losses(full_s, state, digits, TRACK_STEPS)
  half, state = _train_losses(half_s, state, digits, TRACK_STEPS)
  assert np.all(np.isfinite(half))
  gap = np.abs(half - full) / np.abs(full)
  assert gap.max() < TRACK_RTOL, (gap.max(), full, half)
  assert gap.max() > 0, "bfloat16 computed the float32 losses bit for bit"
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state)
             if jnp.issubdtype(x.dtype, jnp.floating))
  if name == "cvae":  # a bfloat16-trained state samples float32 images
    sample = family.make_sample_fn(half_s, digits.image_shape,
                                   digits.num_classes)
    x = jax.jit(sample)(state, jnp.arange(10), jax.random.key(2))
    assert x.dtype == jnp.float32 and x.shape == (10, 8, 8, 1)
