"""A run's workdir: its config and config history, orbax checkpoints, and
the checks that keep both safe to resume after a kill at any moment.

A workdir holds
- `config.json`: the config the run is continuing with;
- `config_history.jsonl`: one record per config the run has used (the first
  one, then each change allowed by `allow_config_change`, with its step);
- orbax checkpoints under `checkpoints/` (the latest few, for resuming) and
  `best/` (the best by a chosen metric, when asked for);
- `skipped_checkpoints/`: checkpoints that failed to restore, set aside (not
  deleted) when a resume fell back to an earlier one.

Every path goes through `etils.epath`, so a workdir may be local or remote
(`gs://bucket/run`). Files are rewritten atomically (write, then rename);
orbax writes each checkpoint to a temporary folder and renames it when
complete. No checkpoint ever holds a non-finite value: `save` checks the
state first (one compiled reduction).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
SKIPPED_DIR = "skipped_checkpoints"
# Keys that decide the shape of a run's state: a workdir made with other
# values cannot be resumed by this config, whatever the override.
IDENTITY_KEYS = ("model", "dataset", "condition_kind", "held_out")
# Keys that only extend or observe a run, say where its data is, or pick an
# implementation of the same function (kernels): they may differ on resume.
# Every other key changes what the run computes.
OBSERVER_KEYS = ("num_steps", "log_every", "checkpoint_every",
                 "sample_every", "eval_every", "eval_num_per_class",
                 "samples_per_class", "max_to_keep", "steps_per_call",
                 "data_dir", "tfds_dir", "download", "allow_config_change",
                 "kernels", "param_sharding",
                 # sampling only (the diffusion family's defaults for sample)
                 "sampler", "nfe", "guidance_scale", "guidance_interval",
                 "clip_x0")


class NonFiniteError(FloatingPointError):
  """Training produced a non-finite loss or state."""


class WriteError(OSError):
  """A file of the run could not be written (a full disk, an I/O error)."""


@contextlib.contextmanager
def writing(path):
  """Re-raises an OSError while writing `path` as a `WriteError` naming it
  (the entry points print it as one line and exit with status 2)."""
  try:
    yield
  except WriteError:
    raise
  except OSError as e:
    raise WriteError(e.errno, f"cannot write {path}: "
                     f"{e.strerror or e}") from e


def as_path(path) -> epath.Path:
  """`path` as an epath.Path; local paths made absolute (orbax needs it)."""
  path = epath.Path(path)
  if is_local(path):
    path = epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
  return path


def is_local(path) -> bool:
  return "://" not in str(path)


def write_text_atomic(path, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename: `path`
  holds the old text or the new, never a part. WriteError on failure."""
  path = epath.Path(path)
  tmp = path.parent / f".{path.name}.tmp"
  with writing(path):
    tmp.write_text(text)
    tmp.replace(path)


# ----------------------------------------------------------------------------
# The run's config.


def read_config(workdir) -> ml_collections.ConfigDict:
  """The config a run was made with, from `workdir/config.json`."""
  path = as_path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist: {str(workdir)!r} is not "
                            "a condgen-jax workdir (train into it first).")
  config = _read_json(path)
  if not isinstance(config, dict) or not isinstance(config.get("model"), str):
    held = sorted(config)[:8] if isinstance(config, dict) else type(
        config).__name__
    raise ValueError(f"{path} has no 'model' (it holds {held}): "
                     f"{str(workdir)!r} is not a condgen-jax workdir; use "
                     "another --workdir.")
  return ml_collections.ConfigDict(config)


def _read_json(path) -> dict:
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); use another "
                     "--workdir.") from None


def _plain(config) -> dict:
  """The config as JSON values (tuples as lists), as config.json holds it."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json(sort_keys=True))
  return json.loads(json.dumps(dict(config), sort_keys=True))


def config_changes(old: dict, new, defaults: dict | None = None) -> dict:
  """{key: (old value, new value)} for the keys that change what the run
  computes. A key absent from `old` (added to the library since the run
  started) ran at its default: it is compared as that value from
  `defaults`, and skipped when `defaults` does not declare it. A key the
  run held as None (unset) and `new` no longer has is no change."""
  new = _plain(new)
  defaults = _plain({k: v for k, v in (defaults or {}).items() if k in new})
  missing = "<absent>"
  before = {k: v for k, v in {**defaults, **old}.items()
            if k not in OBSERVER_KEYS and (v is not None or k in new)}
  return {k: (before[k], new.get(k, missing)) for k in sorted(before)
          if before[k] != new.get(k, missing)}


def check_workdir(workdir, config, defaults: dict | None = None) -> dict:
  """Checks that `config` may train into `workdir`; touches nothing.

  Raises ValueError when the workdir is not a folder, holds a run of another
  model, dataset, condition kind or held-out set, or holds a run whose
  config differs from `config` in a key that changes what the run computes
  (unless `config.allow_config_change`); OSError when it cannot be written.
  `defaults`: the declared default of each key, the value a config.json
  written before the key existed ran at. Returns the allowed changes,
  {key: (old, new)}.
  """
  workdir = as_path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {str(workdir)!r} is a file, not a folder.")
  check_writable(workdir)
  path = workdir / CONFIG_FILE
  if not path.exists():
    ckpt_dir = workdir / "checkpoints"
    if ckpt_dir.exists() and any(ckpt_dir.iterdir()):
      raise ValueError(f"{ckpt_dir} holds checkpoints but {path} is missing: "
                       "not a workdir this config can resume. Use another "
                       "--workdir.")
    return {}
  old = _read_json(path)
  defaults = defaults or {}
  for key in IDENTITY_KEYS:
    # a key absent from an older run's config.json ran at its default
    if old.get(key, defaults.get(key)) != config.get(key, defaults.get(key)):
      raise ValueError(
          f"--workdir {str(workdir)!r} holds a run with {key}="
          f"{old.get(key)!r}, but the config asks for {key}="
          f"{config.get(key)!r}. Use another --workdir, or the same "
          f"{key} to resume it.")
  changes = config_changes(old, config, defaults)
  if changes and not config.get("allow_config_change", False):
    listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in
                       changes.items())
    raise ValueError(
        f"--workdir {str(workdir)!r} holds a run made with another config "
        f"({listed}). Resume it with its own values, use another --workdir, "
        "or pass --config.allow_config_change=True to continue with the new "
        "values (recorded in config_history.jsonl).")
  return changes


def check_writable(workdir) -> None:
  """OSError (PermissionError) when a local workdir, or a file in it that a
  run rewrites, cannot be written."""
  if not is_local(workdir):
    return
  folder = os.fspath(workdir)
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir {folder!r}: {existing!r} is not "
                          "writable.")
  for name in (CONFIG_FILE, HISTORY_FILE, "metrics.jsonl",
               "eval_metrics.jsonl"):
    path = os.path.join(folder, name)
    if os.path.exists(path) and not os.access(path, os.W_OK):
      raise PermissionError(f"{path} is not writable; the run rewrites it.")


def write_config(workdir, config, *, step: int = 0,
                 changes: dict | None = None) -> None:
  """Writes `config.json`, and appends to `config_history.jsonl` when the run
  is new (no history yet) or `changes` were allowed at `step`."""
  workdir = as_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  history = workdir / HISTORY_FILE
  record = None
  if not history.exists():
    record = {"step": step, "config": _plain(config)}
  elif changes:
    record = {"step": step, "changes": {k: list(v) for k, v in
                                        changes.items()},
              "config": _plain(config)}
  if record is not None:
    record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    old = history.read_text() if history.exists() else ""
    write_text_atomic(history, old + json.dumps(record, sort_keys=True) + "\n")
  write_text_atomic(workdir / CONFIG_FILE,
                    config.to_json(indent=2, sort_keys=True))


# ----------------------------------------------------------------------------
# Checkpoints.


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
  if not read_only:
    return ocp.CheckpointManager(as_path(directory), options=options)
  # orbax logs a warning that a read-only manager is read-only: on stderr,
  # before the one line of an entry point's error.
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    return ocp.CheckpointManager(as_path(directory), options=options)
  finally:
    logger.setLevel(level)


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def nonfinite_leaves(tree) -> list[str]:
  """Paths of the floating-point leaves of `tree` holding a NaN or an inf
  ([] when all are finite: one compiled reduction, then names on failure)."""
  if bool(jax.device_get(_all_finite(tree))):
    return []
  bad = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(
        jax.device_get(jnp.all(jnp.isfinite(leaf)))):
      bad.append(jax.tree_util.keystr(path))
  return bad


def check_finite_state(state, step: int) -> None:
  """NonFiniteError naming the non-finite leaves of `state` at `step`."""
  bad = nonfinite_leaves(state)
  if bad:
    raise NonFiniteError(
        f"non-finite values in the state at step {step} ({', '.join(bad[:3])}"
        f"{' and more' if len(bad) > 3 else ''})")


def save(mngr: ocp.CheckpointManager, step: int, state,
         metrics: dict | None = None) -> bool:
  """Saves `state` as checkpoint `step`; returns False when that step is
  already saved (a resumed run reaching it again computes the same state).

  Raises NonFiniteError, saving nothing, if the state is not all finite.
  """
  check_finite_state(state, step)
  if step in mngr.all_steps():
    return False
  try:
    mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics,
              force=True)
  except Exception as e:  # orbax and its storage raise many types.
    cause = _oserror_in(e)
    raise WriteError(
        getattr(cause, "errno", None),
        f"cannot write checkpoint {step} in {mngr.directory}: "
        f"{_first_line(cause or e)}; the earlier checkpoints are intact") from e
  return True


def _oserror_in(e: BaseException) -> OSError | None:
  """The first OSError in `e`'s chain of causes, if any."""
  while e is not None:
    if isinstance(e, OSError):
      return e
    e = e.__cause__ or e.__context__
  return None


def restore(mngr: ocp.CheckpointManager, step: int, target):
  """Restores checkpoint `step` into the structure, shapes and shardings of
  `target` (a state pytree); ValueError if it does not fit."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  stray = _UnretrievedReads(f"{mngr.directory}/{step}/")
  asyncio_log = logging.getLogger("asyncio")
  asyncio_log.addFilter(stray)
  try:
    try:
      return mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # orbax raises many types for foreign data.
      cause = e
    # The failed reads' futures sit in reference cycles with their
    # tracebacks: free them now, while their log records are filtered.
    traceback.clear_frames(cause.__traceback__)
    gc.collect()
  finally:
    asyncio_log.removeFilter(stray)
  raise ValueError(
      f"Checkpoint {step} in {mngr.directory} does not fit this config's "
      f"model state or is corrupt ({type(cause).__name__}: "
      f"{_first_line(cause)})") from cause


class _UnretrievedReads(logging.Filter):
  """Drops asyncio's "exception was never retrieved" records for reads under
  `path`. orbax reads a checkpoint's arrays concurrently; when one read
  fails (a damaged checkpoint, or one a training run removed meanwhile)
  the first failure is raised, as a ValueError from `restore`, and the
  others are left unretrieved, which asyncio logs as errors whenever their
  futures are freed."""

  def __init__(self, path: str):
    super().__init__()
    self.path = path

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("exception was never retrieved" in message
                and self.path in message)


def _first_line(e: Exception, limit: int = 200) -> str:
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  return text[:limit]


def restore_newest(directory, target, *, finite: bool = True,
                   attempts: int = 3):
  """(state, step, skipped) from the newest checkpoint in `directory` that
  restores cleanly (and, with `finite`, holds finite values only); `skipped`
  lists (step, reason) for the newer ones that did not. (target, None, [])
  when there is no checkpoint. Raises ValueError when none restores.

  Safe while a run trains into the same workdir: orbax writes a checkpoint
  under a temporary name and renames it when complete, so only complete
  ones are listed; one removed by the run while it is being read is passed
  over, and when all listed were removed the folder is listed again (up to
  `attempts` times)."""
  for attempt in range(attempts):
    last = attempt == attempts - 1
    try:
      result = _restore_newest(directory, target, finite)
    except (FileNotFoundError, NotADirectoryError):
      # orbax lists the steps, then reads each one's metadata: a step
      # removed in between by the training run.
      if last:
        raise
      continue
    if result[1] is not None or result[2] or last or not _has_steps(
        directory):
      return result
  raise AssertionError("unreachable")


def _has_steps(directory) -> bool:
  directory = as_path(directory)
  return directory.exists() and any(
      p.name.isdigit() for p in directory.iterdir())


def _restore_newest(directory, target, finite: bool):
  directory = as_path(directory)
  if not directory.exists():
    return target, None, []
  mngr = manager(directory, read_only=True)
  try:
    steps = sorted(mngr.all_steps(), reverse=True)
    skipped = []
    for step in steps:
      try:
        state = restore(mngr, step, target)
      except ValueError as e:
        if not (directory / str(step)).exists():
          # A run training into this workdir removed it (max_to_keep)
          # after it saved a newer one: read on.
          continue
        skipped.append((step, str(e)))
        continue
      bad = nonfinite_leaves(state) if finite else []
      if bad:
        skipped.append((step, f"checkpoint {step} holds non-finite values "
                              f"({', '.join(bad[:3])})"))
        continue
      return state, step, skipped
  finally:
    mngr.close()
  if skipped:
    reasons = "; ".join(reason for _, reason in skipped)
    raise ValueError(
        f"No checkpoint in {directory} restores: {reasons}. It was written "
        "by another model or config, or is corrupt; use another --workdir.")
  return target, None, []


def set_aside(workdir, directory, skipped) -> list[str]:
  """Moves the `skipped` checkpoints of `directory` to
  `workdir/skipped_checkpoints/` (kept, out of orbax's way, so a resumed run
  can save those steps again); returns where each went."""
  moved = []
  for step, _ in skipped:
    src = as_path(directory) / str(step)
    if not src.exists():
      continue
    dst_dir = as_path(workdir) / SKIPPED_DIR
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / f"{as_path(directory).name}_{step}"
    n = 1
    while dst.exists():
      dst, n = dst_dir / f"{as_path(directory).name}_{step}.{n}", n + 1
    src.rename(dst)
    moved.append(str(dst))
  return moved


def report_skipped(skipped, restored_step) -> None:
  """One stderr line per skipped checkpoint (process 0)."""
  if jax.process_index() != 0:
    return
  for step, reason in skipped:
    to = (f"restored step {restored_step} instead" if restored_step is not
          None else "no earlier checkpoint")
    print(f"warning: skipped checkpoint {step}: {reason}; {to}.",
          file=sys.stderr)
