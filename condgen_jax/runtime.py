"""Process-wide defaults set by the entry points before JAX starts.

XLA:CPU's experimental YNN fusion routes the weight-gradient convolutions of
the conv GANs to a path ~18x slower than the default one on some CPUs; the
entry points turn it off unless the user's XLA_FLAGS already say otherwise.
Set `CONDGEN_KEEP_XLA_FLAGS=1` to leave XLA_FLAGS entirely untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys

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
  set the default XLA flags (before JAX starts) and quieten INFO logs."""
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  set_default_xla_flags()
  quiet_logs()
