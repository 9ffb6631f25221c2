"""XLA:CPU implementations of the models' layers, injected on CPU only.

Each computes the same function as the stock flax layer it replaces, with
the same parameter tree, so a checkpoint moves between backends
(`tests/test_kernels.py` checks values and gradients per kernel):

- `BatchNorm` for `nn.BatchNorm`: the per-channel sums of the statistics
  and of the gradient as matvecs with ones (XLA:CPU splits a sum over the
  batch into a tree of reduce-windows, several times slower).
- `conv_general_dilated` for `lax.conv_general_dilated` inside `nn.Conv`:
  thin-output convolutions as one matmul plus shifted taps, and the input
  gradient of thin-input ones the same way (XLA:CPU runs such convolutions
  at ~10 % of its matmul peak).
- `StridedConv` for `nn.Conv(..., strides=2, padding='SAME')` with a square
  kernel: the gradient of space-to-depth followed by a stride-1 conv, whose
  weight gradient is a plain convolution (a strided conv's is a
  window-dilated one, several times slower on XLA:CPU).
- `ConvTranspose` for `nn.ConvTranspose(..., strides=2, padding='SAME')`: a
  stride-1 conv with the taps of each output phase, then depth-to-space
  (the same function; a transposed conv's weight gradient is a
  window-dilated convolution on XLA:CPU, 10-50x slower).

`Kernels` names the implementations a model is built with; `resolve`
picks them from `config.kernels` ('auto' = 'cpu' on the CPU backend, else
'stock'; `resolve_name` says it for the platforms a program is lowered
for, e.g. by `jax.export` on a CPU host). The custom-VJP paths support
reverse mode and forward-over-reverse, not forward mode alone: `jax.jvp`
needs the stock kernels. Measurements: docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from condgen_jax.nn.layers import depth_to_space
from condgen_jax.nn.layers import space_to_depth

ModuleDef = Any
KERNELS = ("auto", "stock", "cpu")

# On CPU, `conv_general_dilated` computes a stride-1 NHWC convolution whose
# kernel [kh, kw, C, F] has kh*kw*F <= TAPS_MAX_N as one matmul plus a
# shifted sum of its taps (a generator's 64 -> 4 channel output layer); above
# it lax's convolution is faster (docs/performance.md).
TAPS_MAX_N = 72

def _channel_sum(x2d):
  """`[M, C] -> [C]` column sums as a matvec with ones. XLA:CPU runs large
  reductions over the batch axis (split into reduce-windows) 5-10x slower
  than this BLAS call; HIGHEST keeps full fp32 on TPU/GPU."""
  ones = jnp.ones((x2d.shape[0],), x2d.dtype)
  return jnp.dot(ones, x2d, precision=jax.lax.Precision.HIGHEST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon: float = 1e-5):
  """Batch-normalises `x` `[..., C]` over all but its last axis (Ioffe &
  Szegedy 2015): y = scale (x - mean) / sqrt(var + epsilon) + bias, with the
  biased batch variance. Returns (y, mean, var). Every per-channel sum, in
  the forward pass and in its hand-written VJP, is a matmul (`_channel_sum`).
  """
  return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
  c = x.shape[-1]
  x2d = x.reshape(-1, c)
  m = x2d.shape[0]
  mean = _channel_sum(x2d) / m
  xc = x2d - mean
  var = _channel_sum(jnp.square(xc)) / m
  rstd = jax.lax.rsqrt(var + epsilon)
  xhat = xc * rstd
  y = (xhat * scale + bias).reshape(x.shape)
  return (y, mean, var), (xhat, rstd, scale)


def _batch_norm_bwd(epsilon, res, cotangents):
  del epsilon  # only through rstd
  xhat, rstd, scale = res
  dy, dmean, dvar = cotangents
  shape = dy.shape
  dy = dy.reshape(xhat.shape)
  m = xhat.shape[0]
  dbias = _channel_sum(dy)
  dscale = _channel_sum(dy * xhat)
  # d/dx of y through xhat, then of the mean and var outputs themselves.
  dx = (scale * rstd) * (dy - dbias / m - xhat * (dscale / m))
  dx = dx + dmean / m + xhat * (2.0 * dvar / (m * rstd))
  return dx.reshape(shape), dscale, dbias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """Batch norm over all but the last axis, variables as `nn.BatchNorm`'s
  (params 'scale', 'bias'; 'batch_stats' 'mean', 'var').

  Training (`use_running_average=False`) normalises with the batch mean and
  biased variance and updates the running averages
  ra <- momentum ra + (1 - momentum) batch statistic (the unbiased variance
  is not used, as in flax); evaluation normalises with the running averages.
  The statistics and the gradient's per-channel sums are matmuls
  (`batch_norm_train`): XLA:CPU splits a sum over the batch into a tree of
  reduce-windows, several times slower than a matvec with ones. Under
  `jax.jit` with the
  batch sharded over a mesh, the sums (and so the statistics) span every
  device. Training mode is a `jax.custom_vjp`: reverse mode and
  forward-over-reverse work, forward mode alone does not.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean",
                            lambda: jnp.zeros((c,), jnp.float32))
    ra_var = self.variable("batch_stats", "var",
                           lambda: jnp.ones((c,), jnp.float32))
    scale = (self.param("scale", nn.initializers.ones, (c,))
             if self.use_scale else jnp.ones((c,), x.dtype))
    bias = (self.param("bias", nn.initializers.zeros, (c,))
            if self.use_bias else jnp.zeros((c,), x.dtype))
    if self.use_running_average:
      rstd = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return (x - ra_mean.value) * (rstd * scale) + bias
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      m = self.momentum
      ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
      ra_var.value = m * ra_var.value + (1.0 - m) * var
    return y


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with thin-output convolutions computed as a
  matmul on CPU; a drop-in (`nn.Conv(..., conv_general_dilated=this)`).

  For a stride-1, undilated, ungrouped NHWC/HWIO conv with kernel
  [kh, kw, C, F] on CPU: kh*kw*F <= TAPS_MAX_N goes to `taps_conv`;
  otherwise kh*kw*C <= TAPS_MAX_N (few input channels, whose input gradient
  is a thin-output convolution) goes to `thin_input_conv`. The same sums as
  the convolution, to float rounding. Everything else, and every other
  backend, goes to lax. Those two paths are `jax.custom_vjp` functions:
  reverse mode, reverse-over-reverse and forward-over-reverse (`jax.hessian`)
  work through them, forward mode alone (`jax.jvp`, `jax.jacfwd`) does not.
  """
  def lax_conv():
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)

  if (jax.default_backend() != "cpu" or lhs.ndim != 4 or rhs.ndim != 4
      or dimension_numbers is None):
    return lax_conv()
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                        ("NHWC", "HWIO", "NHWC"))
  kh, kw, _, cout = rhs.shape
  if (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                     dimension_numbers) != nhwc
      or tuple(window_strides) != (1, 1)
      or any(d is not None and tuple(d) != (1, 1)
             for d in (lhs_dilation, rhs_dilation))
      or feature_group_count != 1 or batch_group_count != 1
      or preferred_element_type is not None or precision is not None):
    return lax_conv()
  cin = rhs.shape[2]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (1, 1),
                                      padding)
  pads = tuple(tuple(int(p) for p in pair) for pair in padding)
  if kh * kw * cout <= TAPS_MAX_N and min(min(pair) for pair in pads) >= 0:
    return taps_conv(lhs, rhs, pads)
  if (kh * kw * cin <= TAPS_MAX_N and pads[0][0] < kh and pads[0][1] < kh
      and pads[1][0] < kw and pads[1][1] < kw):
    return thin_input_conv(lhs, rhs, pads)
  return lax_conv()


def _taps_matrix(w):
  """[kh, kw, C, F] -> [C, kh*kw*F], column (a*kw + b)*F + f = tap (a, b)."""
  kh, kw, cin, cout = w.shape
  return w.transpose(2, 0, 1, 3).reshape(cin, kh * kw * cout)


def _taps_forward(x, w, pads):
  kh, kw, _, cout = w.shape
  n, h, wd, _ = x.shape
  (pt, pb), (pl, pr) = pads
  ho, wo = h + pt + pb - kh + 1, wd + pl + pr - kw + 1
  z = jnp.dot(x, _taps_matrix(w))
  z = jnp.pad(z, ((0, 0), *pads, (0, 0)))
  z = z.reshape(n, h + pt + pb, wd + pl + pr, kh * kw, cout)
  return functools.reduce(operator.add, [
      z[:, a:a + ho, b:b + wo, a * kw + b]
      for a in range(kh) for b in range(kw)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def taps_conv(x, w, pads):
  """Stride-1 NHWC conv of x [N, H, W, C] with w [kh, kw, C, F] and explicit
  `pads` ((top, bottom), (left, right)), as z = x @ w laid out
  [C, kh*kw*F] followed by y[i, j] = sum_{a,b} pad(z)[i + a, j + b, tap(a, b)].

  The gradient is written by hand: autodiff of the shifted sum would pad
  every tap's cotangent to the full size of z. Here dz is the kh*kw shifted
  windows of dy side by side, dx = dz @ w^T and dw = x^T @ dz.
  """
  return _taps_forward(x, w, pads)


def _taps_fwd(x, w, pads):
  return _taps_forward(x, w, pads), (x, w)


def _taps_bwd(pads, res, dy):
  x, w = res
  kh, kw, cin, cout = w.shape
  _, h, wd, _ = x.shape
  (pt, _), (pl, _) = pads
  # dz[n, u, v, tap(a, b)] = dy[n, u + pt - a, v + pl - b], zero outside.
  dyp = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  dz = jnp.concatenate([
      dyp[:, kh - 1 + pt - a:kh - 1 + pt - a + h,
          kw - 1 + pl - b:kw - 1 + pl - b + wd]
      for a in range(kh) for b in range(kw)], axis=-1)
  dx = jnp.dot(dz, _taps_matrix(w).T)
  dwt = jnp.dot(x.reshape(-1, cin).T, dz.reshape(-1, kh * kw * cout))
  return dx, dwt.reshape(cin, kh, kw, cout).transpose(1, 2, 0, 3)


taps_conv.defvjp(_taps_fwd, _taps_bwd)


def _flipped_kernel(w):
  """[kh, kw, C, F] -> [kh, kw, F, C], spatially reversed: the kernel of the
  convolution that is the input gradient of a stride-1 conv with w."""
  return w[::-1, ::-1].transpose(0, 1, 3, 2)


def _input_grad_pads(pads, kh, kw):
  (pt, pb), (pl, pr) = pads
  return ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))


def _lax_conv(x, w, pads, strides=(1, 1)):
  return jax.lax.conv_general_dilated(
      x, w, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def thin_input_conv(x, w, pads):
  """Stride-1 NHWC conv of x [N, H, W, C] with w [kh, kw, C, F], explicit
  `pads` (each < the kernel size), for few input channels (kh*kw*C <=
  TAPS_MAX_N). The forward pass and weight gradient are lax's; the input
  gradient, a convolution of dy with the flipped kernel down to C channels,
  which XLA:CPU runs far below its peak, is computed as in `taps_conv`.
  """
  return _lax_conv(x, w, pads)


def _thin_input_fwd(x, w, pads):
  return _lax_conv(x, w, pads), (x, w)


def _thin_input_bwd(pads, res, dy):
  x, w = res
  kh, kw = w.shape[:2]
  # The plain function, not the custom_vjp `taps_conv`: this backward pass
  # must itself be differentiable forward-mode (forward-over-reverse).
  dx = _taps_forward(dy, _flipped_kernel(w), _input_grad_pads(pads, kh, kw))
  dw = jax.vjp(lambda w: _lax_conv(x, w, pads), w)[1](dy)[0]
  return dx, dw


thin_input_conv.defvjp(_thin_input_fwd, _thin_input_bwd)


# `StridedConv` runs its forward pass as lax's strided convolution from this
# many input channels on, below it through space-to-depth (the faster of the
# two on each side, docs/performance.md). Its gradient always goes through
# space-to-depth.
STRIDED_FORWARD_MIN_CHANNELS = 16


def _stride2_pads(shape, k):
  """'SAME' padding of a stride-2 k x k conv over the H, W of `shape`."""
  return tuple(jax.lax.padtype_to_pads(shape[1:3], (k, k), (2, 2), "SAME"))


def _stride2_s2d(x, kernel):
  """The stride-2 'SAME' conv as space-to-depth then a stride-1 conv."""
  k, _, cin, cout = kernel.shape
  x = jnp.pad(x, ((0, 0), *_stride2_pads(x.shape, k), (0, 0)))
  x = space_to_depth(x, 2)
  w = kernel.reshape(k // 2, 2, k // 2, 2, cin, cout)
  w = w.transpose(0, 2, 1, 3, 4, 5).reshape(k // 2, k // 2, 4 * cin, cout)
  return conv_general_dilated(x, w.astype(x.dtype), (1, 1), "VALID",
                              dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _stride2_lax(x, kernel):
  return _lax_conv(x, kernel.astype(x.dtype),
                   _stride2_pads(x.shape, kernel.shape[0]), (2, 2))


@jax.custom_vjp
def stride2_conv(x, kernel):
  """Stride-2 'SAME' NHWC conv of x [N, H, W, C] with kernel [k, k, C, F]
  (k even), forward by lax's strided convolution; the gradient is that of
  the space-to-depth form, whose weight gradient is a plain convolution
  (the strided form's is a window-dilated one, slow on XLA:CPU)."""
  return _stride2_lax(x, kernel)


def _stride2_fwd(x, kernel):
  # The plain function: this must trace under forward-over-reverse too.
  return _stride2_lax(x, kernel), (x, kernel)


def _stride2_bwd(res, dy):
  x, kernel = res
  return jax.vjp(_stride2_s2d, x, kernel)[1](dy)


stride2_conv.defvjp(_stride2_fwd, _stride2_bwd)


def even_kernel(kernel, shape):
  """An odd k x k kernel as the (k + 1) x (k + 1) kernel whose stride-2
  'SAME' conv over the H, W of `shape` is the same function: the extra
  tap, zero, goes on the side where the larger kernel's 'SAME' padding
  adds a row (or column), the left when its left padding grows, else the
  right, so every output sums the same inputs with the same weights."""
  k = kernel.shape[0]
  odd, even = _stride2_pads(shape, k), _stride2_pads(shape, k + 1)
  widths = [(1, 0) if e[0] > o[0] else (0, 1) for o, e in zip(odd, even)]
  return jnp.pad(kernel, (*widths, (0, 0), (0, 0)))


class StridedConv(nn.Module):
  """`nn.Conv(features, kernel_size, strides=(2, 2), padding='SAME')`, same
  parameters ('kernel' [kh, kw, C, F], 'bias'). With a square kernel (an
  odd one through `even_kernel`) its gradient is that of space-to-depth
  followed by a stride-1 convolution; the forward pass is lax's strided
  conv from `STRIDED_FORWARD_MIN_CHANNELS` input channels on
  (`stride2_conv`), the space-to-depth form below. Non-square kernels:
  lax's strided conv."""
  features: int
  kernel_size: tuple[int, int] = (4, 4)
  strides: tuple[int, int] = (2, 2)
  padding: str = "SAME"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    if tuple(self.strides) != (2, 2) or self.padding != "SAME":
      raise ValueError("StridedConv is for strides (2, 2) and 'SAME' "
                       f"padding; got {self.strides}, {self.padding!r}.")
    cin = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, cin, self.features))
    if kh != kw:
      y = jax.lax.conv_general_dilated(
          x, kernel.astype(x.dtype), (2, 2), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      even = kernel if kh % 2 == 0 else even_kernel(kernel, x.shape)
      if cin >= STRIDED_FORWARD_MIN_CHANNELS:
        y = stride2_conv(x, even)
      else:
        y = _stride2_s2d(x, even)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


def _conv_transpose_pads(k: int, s: int = 2) -> tuple[int, int]:
  """The 'SAME' padding `lax.conv_transpose` gives one spatial dimension of
  the lhs-dilated input (jax.lax's `_conv_transpose_padding`)."""
  pad_len = k + s - 2
  pad_a = k - 1 if s > k - 1 else -(-pad_len // 2)
  return pad_a, pad_len - pad_a


def _phase_offsets(k: int) -> list[list[tuple[int, int]]]:
  """Per output phase a in {0, 1} of a stride-2 'SAME' transposed conv:
  the (tap t, input offset d) pairs with y[2m + a] = sum x[m + d] K[t]."""
  lo, _ = _conv_transpose_pads(k)
  return [[(t, (a + t - lo) // 2) for t in range(k) if (a + t - lo) % 2 == 0]
          for a in (0, 1)]


def subpixel_kernel(kernel):
  """A stride-2 'SAME' transposed conv kernel [k, k, C, F] as the kernel
  [w, w, C, 4F] and padding of the stride-1 conv whose depth-to-space is
  the same function (each output phase is a stride-1 conv with a subset of
  the taps; Shi et al. 2016). A gather of `kernel`: differentiable in
  both modes."""
  k = kernel.shape[0]
  phases = _phase_offsets(k)
  offsets = [d for taps in phases for _, d in taps]
  dmin, dmax = min(offsets), max(offsets)
  w = dmax - dmin + 1
  idx = np.full((w, w, 4), k * k, np.int32)  # k*k: the zero tap
  for ah, taps_h in enumerate(phases):
    for aw, taps_w in enumerate(phases):
      for th, dh in taps_h:
        for tw, dw in taps_w:
          idx[dh - dmin, dw - dmin, 2 * ah + aw] = th * k + tw
  _, _, cin, cout = kernel.shape
  flat = jnp.concatenate([kernel.reshape(k * k, cin, cout),
                          jnp.zeros((1, cin, cout), kernel.dtype)])
  sub = flat[idx]  # [w, w, 4, C, F]
  sub = sub.transpose(0, 1, 3, 2, 4).reshape(w, w, cin, 4 * cout)
  return sub, ((-dmin, dmax), (-dmin, dmax))


class ConvTranspose(nn.Module):
  """`nn.ConvTranspose(features, (k, k), strides=(2, 2), padding='SAME')`,
  same parameters ('kernel' [k, k, C, F], 'bias' [F]) and function,
  computed as a stride-1 conv with `subpixel_kernel` then depth-to-space:
  its weight gradient is a plain convolution (a transposed conv's is a
  window-dilated one, 10-50x slower on XLA:CPU). Other strides, paddings
  or non-square kernels: lax's transposed conv."""
  features: int
  kernel_size: tuple[int, int] = (4, 4)
  strides: tuple[int, int] = (2, 2)
  padding: str = "SAME"
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features))
    if tuple(self.strides) == (2, 2) and self.padding == "SAME" and kh == kw:
      sub, pads = subpixel_kernel(kernel.astype(x.dtype))
      y = conv_general_dilated(x, sub, (1, 1), pads,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
      y = depth_to_space(y, 2)
    else:
      y = jax.lax.conv_transpose(x, kernel.astype(x.dtype), self.strides,
                                 self.padding)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,))
    return y


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The layer implementations a model is built with (flax ModuleDefs)."""
  conv: ModuleDef = nn.Conv  # stride-1 convolutions
  strided_conv: ModuleDef = nn.Conv  # stride-2 'SAME' convolutions
  conv_transpose: ModuleDef = nn.ConvTranspose  # stride-2 upsampling
  batch_norm: ModuleDef = nn.BatchNorm


STOCK = Kernels()
CPU = Kernels(conv=functools.partial(nn.Conv,
                                     conv_general_dilated=conv_general_dilated),
              strided_conv=StridedConv, conv_transpose=ConvTranspose,
              batch_norm=BatchNorm)


def resolve_name(name: str = "auto",
                 platforms: str | Sequence[str] | None = None) -> str:
  """'stock' or 'cpu': what `config.kernels` = `name` means for programs
  run on `platforms` (one name or several; None = `jax.default_backend()`).

  'auto' is 'cpu' when every platform is CPU, else 'stock': a program
  lowered for an accelerator (`jax.export` on a CPU host included) gets
  the stock flax layers, whatever backend traces it.
  """
  if name not in KERNELS:
    raise ValueError(f"Unknown kernels {name!r}; expected one of {KERNELS}.")
  if name != "auto":
    return name
  if platforms is None:
    platforms = (jax.default_backend(),)
  elif isinstance(platforms, str):
    platforms = (platforms,)
  return "cpu" if all(p == "cpu" for p in platforms) else "stock"


def resolve(name: str = "auto",
            platform: str | Sequence[str] | None = None) -> Kernels:
  """The kernels `config.kernels` names: 'stock', 'cpu', or 'auto' ('cpu'
  when `platform` (default: the backend) is CPU, 'stock' elsewhere;
  `resolve_name`)."""
  return CPU if resolve_name(name, platform) == "cpu" else STOCK
