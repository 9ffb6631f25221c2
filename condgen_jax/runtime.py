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

Set `CONDGEN_KEEP_XLA_FLAGS=1` to leave XLA_FLAGS and JAX's lowerings
entirely untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def set_default_xla_flags() -> str:
  """Adds `CPU_FLAGS` to XLA_FLAGS (those not already named); returns them.

  Must run before JAX initialises its backends (the first computation).
  """
  if os.environ.get("CONDGEN_KEEP_XLA_FLAGS"):
    return os.environ.get("XLA_FLAGS", "")
  flags = os.environ.get("XLA_FLAGS", "")
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
  if os.environ.get("CONDGEN_KEEP_XLA_FLAGS"):
    return False
  from jax.extend import random as jex_random  # pylint: disable=g-import-not-at-top
  from jax.interpreters import mlir  # pylint: disable=g-import-not-at-top
  mlir.register_lowering(
      jex_random.threefry2x32_p,
      mlir.lower_fun(threefry2x32, multiple_results=True), platform="cpu")
  return True


def apply_cpu_defaults() -> None:
  """`set_default_xla_flags` and `unroll_threefry_on_cpu`: what the entry
  points do; notebooks call it before importing jax."""
  set_default_xla_flags()
  unroll_threefry_on_cpu()


@contextlib.contextmanager
def user_errors():
  """Turns the errors a user can fix (bad names, missing data, foreign
  workdirs, non-finite losses) into one line on stderr and exit status 2."""
  try:
    yield
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def quiet_logs() -> None:
  """INFO logs of orbax/absl off unless --verbosity was given."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags(argv):
  """absl flags parser that turns a bad `--config.key=value` override (an
  unknown key, a value of the wrong type) into one error line and exit 2."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"error: bad config override among {bad}: {e}. Overrides must "
          "name keys that the config file defines, with values of their "
          "type.", file=sys.stderr)
    sys.exit(2)


def start(argv) -> None:
  """What every entry point's main() does first: refuse stray arguments,
  set the default XLA flags (before JAX starts), unroll threefry on CPU and
  quieten INFO logs."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  apply_cpu_defaults()
  quiet_logs()
