r"""Evaluates the latest checkpoint of a run and writes DIR/eval.json.

  python -m experiments.evaluate --workdir=DIR [--seed=0]
"""

import json

from absl import app
from absl import flags

from condgen_jax import runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  runtime.set_default_xla_flags()
  runtime.quiet_logs()
  from condgen_jax import evaluation  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    results = evaluation.evaluate_workdir(_WORKDIR.value, seed=_SEED.value)
  print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
