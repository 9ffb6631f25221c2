r"""Plots one or two metrics against a setting, from several results files.

  python -m experiments.plot --results=DIR/eval_w0.json,DIR/eval_w1.json,... \
      --x=guidance_scale --y=class_accuracy,fid --out=guidance.png

Each results file is one `experiments.evaluate --out=...` of a setting (for
diffusion runs, one per --guidance_scale, --nfe or --sampler); the points are
sorted by --x, and the second --y metric goes on a right-hand axis. With
--table=FILE the same points are also written as a markdown table, one
column per metric, or per (--by value, metric):

  python -m experiments.plot --results=... --x=nfe --y=fid --by=sampler \
      --out=nfe.png --table=nfe.md
"""

from absl import app
from absl import flags
from etils import epath

from condgen_jax.evaluation import sampling
from condgen_jax.tools import plots
from condgen_jax.core import runtime

_RESULTS = flags.DEFINE_list("results", None, "Results JSON files.")
_X = flags.DEFINE_string("x", "guidance_scale", "The setting on the x axis.")
_Y = flags.DEFINE_list("y", ["class_accuracy", "fid"], "One or two metrics.")
_OUT = flags.DEFINE_string("out", None, "Output PNG.")
_TITLE = flags.DEFINE_string("title", None, "Optional plot title.")
_TABLE = flags.DEFINE_string("table", None, "Also write the points as a "
                             "markdown table to this file.")
_BY = flags.DEFINE_string("by", None, "With --table: one column group per "
                          "value of this setting (e.g. sampler).")
flags.mark_flags_as_required(["results", "out"])


def main(argv):
  runtime.start(argv)
  with runtime.user_errors():
    # every input and output checked before the first file is written
    sampling.output_path(_OUT.value, "--out")
    if _TABLE.value:
      sampling.output_path(_TABLE.value, "--table")
    results = plots.read_results(_RESULTS.value)
    text = (plots.table(results, _X.value, _Y.value, by=_BY.value,
                        names=_RESULTS.value) if _TABLE.value else None)
    data = plots.tradeoff(results, _X.value, _Y.value, _OUT.value,
                          names=_RESULTS.value, title=_TITLE.value)
    if text is not None:
      table = epath.Path(_TABLE.value)
      table.parent.mkdir(parents=True, exist_ok=True)
      table.write_text(text)
  for y, (xs, vs) in data.items():
    print(f"{y}: " + ", ".join(f"{_X.value}={a:g}: {b:.4g}"
                               for a, b in zip(xs, vs)))
  print(f"wrote {_OUT.value}")
  if text is not None:
    print(text, end="")
    print(f"wrote {_TABLE.value}")


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
