"""Evaluation of a trained run: the metrics written to `workdir/eval.json`."""

from __future__ import annotations

import json
import pathlib

import jax

from condgen_jax import train


def evaluate_workdir(workdir, *, seed: int = 0) -> dict:
  """Evaluates the latest checkpoint of `workdir`; writes and returns eval.json.

  Family metrics (for VAEs: test negative ELBO in nats, IWAE bound) computed
  on the whole test split.
  """
  workdir = pathlib.Path(workdir)
  run, state, step = train.restore_run(workdir)
  results = {"step": int(step), "model": run.config.model,
             "dataset": run.config.dataset}
  results.update(run.family.evaluate(run.config, state, run.dataset,
                                     jax.random.key(seed)))
  if jax.process_index() == 0:
    path = workdir / "eval.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
    tmp.replace(path)
  return results
