r"""Evaluates a run's latest (or best) checkpoint and writes DIR/eval.json.

  python -m experiments.evaluate --workdir=DIR [--num_per_class=1000] \
      [--parzen=true] [--best] [--seed=0] [--out=eval.json] \
      [--guidance_scale=W --sampler=NAME --nfe=N]   # diffusion runs
      [--guidance_interval=LO,HI] [--guide_workdir=DIR[:STEP]]

Metrics: class accuracy (overall and per class) under the dataset's reference
classifier, FID and intra-FID in its feature space, its Inception Score,
precision/recall (k=3), the Parzen-window log-likelihood, and for VAEs the
test negative ELBO (and the IWAE bound when the run's config sets
iw_samples). The reference classifier is trained once per dataset and cached.
For runs conditioned on images (`condition_kind=image`) the family's own
metrics (`test_ncll` of the structured-output CVAE and its baseline;
pix2pix's `test_l1` and patch metrics) come with the metrics above of the
outputs for the first --num_per_class test images of each class.
For diffusion runs the sampling options override the run's config (as in
`experiments.sample`, --guide_workdir included: autoguidance) and are
written into the results; `--out` names the
results file inside DIR, so several settings can be kept side by side.
"""

import json

from absl import app
from absl import flags

from condgen_jax.core import runtime
from experiments import sampling_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed.")
_NUM = flags.DEFINE_integer("num_per_class", 1000,
                            "Generated samples per class for the metrics.")
_PARZEN = flags.DEFINE_bool("parzen", True, "Compute the Parzen estimate.")
_BEST = flags.DEFINE_bool("best", False, "Evaluate the best checkpoint kept "
                          "by periodic evaluation instead of the latest.")
_OUT = flags.DEFINE_string("out", "eval.json", "Results file name, inside "
                           "--workdir.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  runtime.start(argv)
  from condgen_jax.evaluation import evaluate as evaluation  # pylint: disable=g-import-not-at-top
  from condgen_jax import api  # pylint: disable=g-import-not-at-top
  with runtime.user_errors():
    if _NUM.value <= 0:
      raise ValueError(f"--num_per_class must be positive; got {_NUM.value}.")
    if "/" in _OUT.value or not _OUT.value.endswith(".json"):
      raise ValueError(f"--out must be a file name ending in .json (written "
                       f"inside --workdir); got {_OUT.value!r}.")
    overrides = sampling_flags.values()
    run = api.load(_WORKDIR.value, best=_BEST.value).with_options(**overrides)
    run = sampling_flags.with_guide(run)
    state, step = run.state, run.step
    results = {"step": int(step), "model": run.settings.model,
               "dataset": run.settings.dataset, "seed": _SEED.value,
               "checkpoint": "best" if _BEST.value else "latest"}
    results.update({k: run.settings[k] for k in overrides
                    if k in run.settings})
    if sampling_flags.guide_workdir():
      results["guide_workdir"] = sampling_flags.guide_workdir()
    results.update(evaluation.evaluate_state(
        run, state, num_per_class=_NUM.value, seed=_SEED.value,
        parzen=_PARZEN.value))
    evaluation.write_results(_WORKDIR.value, results, _OUT.value)
  print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
  app.run(main, flags_parser=runtime.parse_flags)
