"""Orbax checkpoints of a run's state, and the run's identity in its workdir.

A workdir holds `config.json` (the config that made it) and orbax checkpoints
under `checkpoints/` (the latest few, for resuming) and `best/` (the best by a
chosen metric, when asked for). Orbax writes each checkpoint to a temporary
folder and renames it when complete, so a run killed at any moment leaves the
last complete checkpoint intact; `restore_latest` uses it.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
# Keys that decide the shape of a run's state: a workdir made with other
# values cannot be resumed by this config.
IDENTITY_KEYS = ("model", "dataset")


def read_config(workdir) -> ml_collections.ConfigDict:
  """The config a run was made with, from `workdir/config.json`."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {str(workdir)!r} is not "
                            "a condgen-jax workdir (train into it first).")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def check_workdir(workdir, config) -> None:
  """Raises ValueError if `workdir` holds a run of another model or dataset.

  Nothing in the workdir is touched.
  """
  path = pathlib.Path(workdir) / CONFIG_FILE
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if not path.exists():
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
      raise ValueError(f"{ckpt_dir} holds checkpoints but {path} is missing: "
                       "not a workdir this config can resume. Use another "
                       "--workdir.")
    return
  try:
    old = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); use another "
                     "--workdir.") from None
  for key in IDENTITY_KEYS:
    if old.get(key) != config.get(key):
      raise ValueError(
          f"--workdir {str(workdir)!r} holds a run with {key}="
          f"{old.get(key)!r}, but the config asks for {key}="
          f"{config.get(key)!r}. Use another --workdir, or the same "
          f"{key} to resume it.")


def write_config(workdir, config) -> None:
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(config.to_json(indent=2, sort_keys=True))
  tmp.replace(path)


def manager(directory, *, max_to_keep: int | None = 2,
            best_metric: str | None = None, best_mode: str = "max",
            read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over `directory`.

  With `best_metric`, it keeps the `max_to_keep` checkpoints with the best
  value of that metric (passed to `save(..., metrics=...)`).
  """
  best_fn = (lambda m: m[best_metric]) if best_metric else None
  if read_only:
    max_to_keep = None
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=0 if read_only else 1, max_to_keep=max_to_keep,
      best_fn=best_fn, best_mode=best_mode,
      create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state,
         metrics: dict | None = None) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics,
            force=True)


def restore(mngr: ocp.CheckpointManager, step: int, target):
  """Restores checkpoint `step` into the structure, shapes and shardings of
  `target` (a state pytree); ValueError if it does not fit."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  try:
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  except Exception as e:  # orbax raises many types for foreign data.
    raise ValueError(
        f"Checkpoint {step} in {mngr.directory} does not fit this config's "
        f"model state ({type(e).__name__}: {str(e)[:300]}). It was written by "
        "another model or config, or is corrupt; use another --workdir.") \
        from e


def restore_latest(mngr: ocp.CheckpointManager, target):
  """(state, step) from the latest complete checkpoint, or (target, None)."""
  step = mngr.latest_step()
  if step is None:
    return target, None
  return restore(mngr, step, target), step
