r"""Prints one JSON line: the config file and its overrides, compile time,
step time, images/s, FLOPs and the fraction of the measured fp32 matmul peak
reached by a config's training step.

  python -m experiments.benchmark --config=experiments/configs/acgan.py \
      [--config.batch_size=256] [--min_seconds=5] [--sample_nfe=20] \
      [--samplers=ddim,dpmpp_2m,unipc,edm_heun] [--peak_size=4096]

With --sample_nfe, the line also holds the sampler's images/s on a batch of
256 (diffusion: at that many network evaluations; 0 = skip), and with
--samplers each named solver's at that NFE.
"""

import json
import math
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from condgen_jax import families
from condgen_jax.core import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 5.0, "Timed duration.")
_SAMPLE_NFE = flags.DEFINE_integer("sample_nfe", 0, "Also time sampling "
                                   "(diffusion: at this NFE); 0 = skip.")
_SAMPLERS = flags.DEFINE_list("samplers", [], "Diffusion, with "
                               "--sample_nfe: also time these samplers.")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", 4096, "n of the n x n fp32 "
                                  "matmul whose speed is the peak.")
flags.mark_flags_as_required(["config"])


def main(argv):
  runtime.start(argv, families.convolutional(_CONFIG.value))
  from condgen_jax.tools import benchmark  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    if not math.isfinite(_MIN_SECONDS.value) or _MIN_SECONDS.value < 0:
      raise ValueError(f"--min_seconds must be a finite number >= 0; got "
                       f"{_MIN_SECONDS.value}.")
    if _SAMPLE_NFE.value < 0:
      raise ValueError(f"--sample_nfe must be >= 0; got {_SAMPLE_NFE.value}.")
    if _SAMPLERS.value and not _SAMPLE_NFE.value:
      raise ValueError(f"--samplers={','.join(_SAMPLERS.value)} needs "
                       "--sample_nfe > 0 (the NFE they are timed at).")
    if _PEAK_SIZE.value < 1:
      raise ValueError(f"--peak_size must be >= 1; got {_PEAK_SIZE.value}.")
    report = benchmark.benchmark(_CONFIG.value, min_seconds=_MIN_SECONDS.value,
                                 peak_size=_PEAK_SIZE.value,
                                 sample_nfe=_SAMPLE_NFE.value or None,
                                 samplers=tuple(_SAMPLERS.value))
  # What was run, so that a line of a saved log names its command.
  config_flag = flags.FLAGS["config"]
  report = {"config": os.path.basename(
                config_flags.get_config_filename(config_flag)),
            "overrides": config_flags.get_override_values(config_flag),
            **report}
  print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
