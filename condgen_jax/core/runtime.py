"""Process-wide defaults set by the entry points before JAX starts.

XLA:CPU's experimental YNN fusion routes the weight-gradient convolutions of
the conv GANs to a path ~18x slower than the default one on some CPUs; the
entry points turn it off unless the user's XLA_FLAGS already say otherwise.

JAX lowers its threefry2x32 hash on CPU to a rolled 5-iteration while loop
(smaller programs, faster compiles), where other backends get the unrolled
rounds. Each random draw then costs a loop of small kernels; in a fused
training step of a small model that is a large share of the step. The entry
points register the unrolled lowering for CPU too: the same hash, the same
bits, one elementwise fusion.

XLA:CPU mallocs each call's scratch space (for the AC-GAN step at batch
256, one 124 MB buffer and three of 34 MB). glibc serves blocks that large
with fresh mmap'd pages and unmaps them on free, so every step faults its
scratch space back in page by page (≈ 30,000 faults and ≈ 55 ms of kernel
time per step on a 2-core CPU). The entry points tell glibc to keep freed
memory for reuse (`keep_freed_memory`) and, for models with convolutions,
run CPU computations on the calling thread (`synchronous_cpu_dispatch`), so
that scratch space comes from the main heap, which can hold blocks of any
size; JAX's dispatch thread gets a per-thread arena whose heaps stop at
64 MB, and glibc mmaps anything larger requested there.

Set `CONDGEN_KEEP_XLA_FLAGS=1` to leave XLA_FLAGS, JAX's lowerings and
settings and glibc's malloc entirely untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys

import numpy as np

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _keep_defaults() -> bool:
  """Whether the user opted out of every CPU default below."""
  return bool(os.environ.get("CONDGEN_KEEP_XLA_FLAGS"))


def set_default_xla_flags() -> str:
  """Adds `CPU_FLAGS` to XLA_FLAGS (those not already named); returns them.

  Must run before JAX initialises its backends (the first computation).
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if _keep_defaults():
    return flags
  for flag in CPU_FLAGS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
  return flags


def threefry2x32(key1, key2, count1, count2):
  """The Threefry-2x32 block cipher with 20 rounds (Salmon et al. 2011,
  "Parallel random numbers: as easy as 1, 2, 3"), rounds unrolled.

  Same arithmetic as JAX's `threefry2x32_p`: five groups of four
  add-rotate-xor rounds, each group followed by a key injection. All four
  arguments are uint32 arrays of broadcast-compatible shapes.
  """
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  ks = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
  x0, x1 = count1 + ks[0], count2 + ks[1]
  for i in range(5):
    for r in rotations[i % 2]:
      x0 = x0 + x1
      x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
      x1 = x0 ^ x1
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def unroll_threefry_on_cpu() -> bool:
  """Lowers `jax.extend.random.threefry2x32_p` on CPU with `threefry2x32`
  (unrolled) instead of JAX's rolled loop. Returns whether it did.

  Bits are unchanged (tests/test_runtime.py checks the published test
  vectors and JAX's own values); programs compiled afterwards use it.
  """
  if _keep_defaults():
    return False
  from jax.extend import random as jex_random  # pylint: disable=g-import-not-at-top
  from jax.interpreters import mlir  # pylint: disable=g-import-not-at-top
  mlir.register_lowering(
      jex_random.threefry2x32_p,
      mlir.lower_fun(threefry2x32, multiple_results=True), platform="cpu")
  return True


# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
  """Tells glibc's malloc to serve large blocks from the heap and never
  shrink it: `mallopt(M_MMAP_MAX, 0)`, `mallopt(M_TRIM_THRESHOLD, INT_MAX)`.

  Freed memory then stays in the process, and the next training step reuses
  its scratch space instead of faulting fresh pages in. The process keeps
  its peak memory until it exits. Returns whether it applied (glibc only).
  """
  if _keep_defaults():
    return False
  if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
    return False
  libc = ctypes.CDLL("libc.so.6")
  return (libc.mallopt(M_MMAP_MAX, 0) == 1
          and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1)


def synchronous_cpu_dispatch(convolutional: bool) -> bool:
  """For models with convolutions (`families.convolutional(config)`), runs
  CPU computations on the calling thread
  (`jax_cpu_enable_async_dispatch=False`). Returns whether it did.

  Their steps take tens to hundreds of milliseconds, so overlapping Python's
  dispatch with them gains nothing; running them on the main thread takes
  their scratch space from glibc's main heap (see `keep_freed_memory`).
  Models without convolutions keep asynchronous dispatch, which hides the
  per-call cost of their short steps. Must run before JAX's first
  computation.
  """
  if _keep_defaults() or not convolutional:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_enable_async_dispatch", False)
  return True


def apply_cpu_defaults(convolutional: bool | None = None) -> None:
  """`set_default_xla_flags`, `unroll_threefry_on_cpu`, `keep_freed_memory`
  and, told whether the model convolves, `synchronous_cpu_dispatch`: what
  the entry points do; notebooks call it before importing jax."""
  set_default_xla_flags()
  unroll_threefry_on_cpu()
  keep_freed_memory()
  if convolutional is not None:
    synchronous_cpu_dispatch(convolutional)


@contextlib.contextmanager
def user_errors():
  """Turns the errors a user can fix (bad names and values, missing or
  unreadable files, foreign workdirs, non-finite losses) into one line on
  stderr and exit status 2."""
  try:
    yield
  except (ValueError, OSError, FloatingPointError) as e:
    fail(e)


def fail(error) -> None:
  """Prints `error` as one line on stderr and exits with status 2."""
  message = " ".join(str(error).split())
  if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):
    message = f"{type(error).__name__}: {message}"
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def quiet_logs() -> None:
  """INFO logs of orbax/absl off unless --verbosity was given."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags(argv):
  """absl flags parser that turns a bad `--config` file (missing, not
  loadable) or a bad `--config.key=value` override (an unknown key, a value
  of the wrong type) into one error line and exit 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      # config_flags defers a load failure to the first attribute access.
      getattr(flags.FLAGS["config"].value, "to_dict")
    return rest
  except flags.Error as e:
    fail(e)
  except (OSError, SyntaxError, ImportError) as e:
    path = _config_argument(argv)
    reason = (_root_cause(e) if os.path.isfile(path) or os.path.isdir(path)
              else "no such file")
    fail(f"--config: cannot load {path!r}: {reason}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    fail(f"bad config override among {bad}: {e}. Overrides must name keys "
         "that the config file defines, with values of their type.")


def _config_argument(argv) -> str:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "?"


def _root_cause(e: BaseException) -> str:
  """The innermost exception of a chain, as `Type: first line`."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  if isinstance(e, SyntaxError):
    return f"SyntaxError: {e.msg} (line {e.lineno})"
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def start(argv, convolutional: bool | None = None) -> None:
  """What every entry point's main() does first: refuse stray arguments,
  apply the CPU defaults (before JAX starts; the dispatch mode needs to know
  whether the model convolves) and quieten INFO logs."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  apply_cpu_defaults(convolutional)
  quiet_logs()
