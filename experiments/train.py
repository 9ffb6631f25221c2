r"""Trains (or resumes) a model.

  python -m experiments.train --config=experiments/configs/cvae.py \
      --workdir=/tmp/cvae [--config.dataset=digits] [--config.num_steps=500]

Running the same command again on the same workdir resumes from its latest
checkpoint and continues exactly. SIGTERM or SIGINT (Ctrl-C) saves a
checkpoint of the step reached and exits with 128 + the signal's number; a
second Ctrl-C interrupts at once.
"""

import sys

from condgen_jax.core import preemption

if __name__ == "__main__":
  # A SIGTERM or SIGINT from here on stops the run cleanly at its first step
  # boundary, even one that arrives while JAX starts or the step compiles.
  preemption.early()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from condgen_jax import families
from condgen_jax.core import runtime
# pylint: enable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  runtime.start(argv, families.convolutional(_CONFIG.value))
  from condgen_jax.core import parallel  # pylint: disable=g-import-not-at-top
  from condgen_jax.runner import train  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed()
  with runtime.user_errors():
    try:
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except preemption.Preempted as e:
      print(e, file=sys.stderr)
      sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
