r"""Prints one JSON line: the config file and its overrides, compile time,
step time, images/s, FLOPs and the fraction of the measured fp32 matmul peak
reached by a config's training step.

  python -m experiments.benchmark --config=experiments/configs/acgan.py \
      [--config.batch_size=256] [--min_seconds=5]
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from condgen_jax import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 5.0, "Timed duration.")
flags.mark_flags_as_required(["config"])


def main(argv):
  runtime.start(argv, _CONFIG.value)
  from condgen_jax import benchmark  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    report = benchmark.benchmark(_CONFIG.value, min_seconds=_MIN_SECONDS.value)
  # What was run, so that a line of a saved log names its command.
  config_flag = flags.FLAGS["config"]
  report = {"config": os.path.basename(
                config_flags.get_config_filename(config_flag)),
            "overrides": config_flags.get_override_values(config_flag),
            **report}
  print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
