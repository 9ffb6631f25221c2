"""The training loop shared by every model family.

`train_and_evaluate(config, workdir)` trains `config.model` on
`config.dataset`, resuming from the latest checkpoint in `workdir`. The data
lives on the device and batches are drawn there from a per-epoch permutation
that is a pure function of (seed, epoch); the step's randomness is
`fold_in(key, step)`. So a run stopped and resumed continues exactly as if it
had not stopped. A streaming dataset ('tfds:NAME') stays on disk instead:
each process reads its rows of step t's batch, a pure function of (seed, t),
on the host and the compiled step takes them as an argument
(`condgen_jax.data.streaming`); resume is as exact.

The workdir receives config.json, metrics.jsonl (one JSON object per logged
step; `wall_s` is the training commands' wall time up to that step, summed
over resumes, compiles and periodic evaluations included), sessions.jsonl (one line per training command: its first
step, time and hardware), samples/step_XXXXXXXX.png (one row per class),
checkpoints/ (orbax) and TensorBoard event files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm
from absl import logging
from etils import epath

from condgen_jax.core import checkpointing
from condgen_jax.data import colored
from condgen_jax.data import datasets as data_lib
from condgen_jax.data import streaming
from condgen_jax.evaluation import evaluate as evaluation
from condgen_jax import families
from condgen_jax.core import hardware
from condgen_jax.data import images as images_lib
from condgen_jax.core import locking
from condgen_jax.core import options
from condgen_jax.core import parallel
from condgen_jax.core import preemption
from condgen_jax.evaluation import sampling

INTERVAL_KEYS = ("log_every", "checkpoint_every", "sample_every")
# Marks settings that `resolve` made, so resolving them again is a no-op.
_RESOLVED = "_resolved"
SESSIONS_FILE = "sessions.jsonl"
CONDITION_KINDS = ("label", "attributes", "image")

# The runner's config keys, shared by every model's config
# (`condgen_jax/configs/common.py`); `config.model` names the family.
OPTIONS = {
    "dataset": options.Option(
        "mnist", "the data: in memory, or 'tfds:NAME' any TFDS image "
        "dataset streamed from disk (`condgen_jax.data.streaming`)",
        streaming.check_dataset_name,
        " | ".join(data_lib.DATASETS) + " | tfds:NAME"),
    "image_size": options.integer(
        0, "tfds: datasets: side of the square images, center-cropped and "
        "resized; 0 = the dataset's own (square) size", minimum=0),
    "attributes": options.text(
        "", "tfds: datasets: binary attributes to condition on (with "
        "condition_kind='attributes'), e.g. 'Male,Young,Eyeglasses' of "
        "celeb_a; '' = the class label", "NAME,..."),
    "data_dir": options.text(
        "", "folder with <dataset>/ IDX files; '' = $CONDGEN_DATA_DIR",
        "a path"),
    "tfds_dir": options.text(
        "", "TFDS data dir; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets",
        "a path"),
    "download": options.flag(
        False, "let tensorflow-datasets download when nothing is local"),
    "condition_kind": options.choice(
        "label", CONDITION_KINDS, "what the model is conditioned on: the "
        "class label, every attribute of a dataset that has them "
        "(colored_*: digit and color), or an image derived from each "
        "target by the family (`image_conditions`)"),
    "held_out": options.text(
        "default", "colored_* datasets: DIGIT:COLOR combinations kept out "
        "of training, e.g. '7:red,3:blue'; 'default' = one per digit, "
        "digit d in palette color (d - 1) mod 6, a red 7 among them; '' = "
        "none",
        "DIGIT:COLOR,..."),
    "seed": options.integer(0, "the run's root key", minimum=0),
    "prng_impl": options.text(
        "threefry2x32", "jax.random implementation of the run's keys "
        "('philox4x32' is the other counter-based one)",
        "a jax.random implementation"),
    "num_steps": options.integer(10_000, "training steps"),
    "batch_size": options.integer(64, "examples per step, over all "
                                  "devices"),
    "steps_per_call": options.integer(
        0, "steps fused into one compiled call; 0 = what measured fastest "
        "for the model on this backend", minimum=0),
    "log_every": options.integer(100, "steps between metrics lines; 0 = "
                                 "only the last", minimum=0),
    "checkpoint_every": options.integer(
        1000, "steps between checkpoints; 0 = only the last", minimum=0),
    "sample_every": options.integer(
        1000, "steps between sample grids; 0 = only the last", minimum=0),
    "eval_every": options.integer(
        0, "steps between evaluations during training; 0 = never",
        minimum=0),
    "eval_num_per_class": options.integer(
        100, "samples per class of those evaluations"),
    "best_metric": options.text(
        "fid", "kept under workdir/best/ when eval_every > 0; '' = none",
        "a metric the model reports"),
    "samples_per_class": options.integer(10, "columns of the sample grid"),
    "max_to_keep": options.integer(2, "checkpoints kept"),
    "param_sharding": options.choice(
        "replicated", parallel.PARAM_SHARDINGS, "the train state's layout "
        "over the devices: 'replicated' on each, or 'fsdp', parameters and "
        "optimizer state sharded over them (each holds ~1/devices; "
        "`parallel.state_shardings`) and gathered layer by layer in the "
        "step; the same math either way"),
    "compute_dtype": options.choice(
        "float32", ("float32", "bfloat16"), "dtype of the networks' matmuls "
        "and convolutions; parameters, optimizer state, norm statistics, "
        "EMA and losses stay float32 (docs/training.md, Mixed precision)"),
    "allow_config_change": options.flag(
        False, "resume a workdir whose run used other values of keys that "
        "change what it computes (recorded in config_history.jsonl)"),
}


def config_defaults(model: str) -> dict:
  """Every key a config for `model` has, at its declared default: the
  runner's `OPTIONS`, then the family's with the name's presets."""
  return {**options.defaults(OPTIONS), **families.config_defaults(model)}


def resolve(config) -> ml_collections.FrozenConfigDict:
  """A run's settings, resolved once from its config: `model` and every key
  of the runner (`OPTIONS`) and of the model's family (its `OPTIONS`, with
  the model name's presets) at its value (the config's, else the preset,
  else the default), each checked, then the checks across keys. Raises
  ValueError naming the first bad value and what is allowed. Everything
  downstream of the entry points reads these frozen settings."""
  if isinstance(config, ml_collections.FrozenConfigDict) and (
      config.get(_RESOLVED)):
    return config
  family = families.get_family(config.model)
  s = ml_collections.FrozenConfigDict({
      # a key no one declares (a family without OPTIONS) is kept as given
      **{k: (tuple(v) if isinstance(v, list) else v)
         for k, v in config.items()}, _RESOLVED: True,
      **options.resolve(config, OPTIONS).to_dict(),
      **options.resolve(config, getattr(family, "OPTIONS", {}),
                        families.presets(config.model)).to_dict()})
  try:
    jax.random.key(0, impl=s.prng_impl)
  except ValueError as e:
    raise ValueError(f"config.prng_impl={s.prng_impl!r} is not a "
                     f"jax.random implementation: {e}") from None
  colored.parse_combinations(s.held_out)
  kinds = getattr(family, "CONDITION_KINDS", ("label",))
  if s.condition_kind not in kinds:
    raise ValueError(f"config.condition_kind={s.condition_kind!r} is "
                     f"not supported by model {s.model!r}; it takes "
                     f"{kinds}.")
  family.validate_config(s)
  streaming.check_settings(s, evaluation.SAMPLE_METRIC_MODES)
  if s.best_metric:
    allowed = evaluation.metric_modes(family.metric_modes(s))
    if s.best_metric not in allowed:
      raise ValueError(f"Unknown best_metric {s.best_metric!r} for "
                       f"model {s.model!r}; expected one of "
                       f"{tuple(allowed)}.")
  return s


def replace(s, **changes) -> ml_collections.FrozenConfigDict:
  """Settings `s` with some keys changed, resolved and checked again."""
  unknown = [k for k in changes if k not in s]
  if unknown:
    raise ValueError(f"{unknown[0]!r} is not a key of model {s.model!r}.")
  values = {**s.to_dict(), **changes}
  del values[_RESOLVED]
  return resolve(ml_collections.ConfigDict(values))


def with_sampling_options(run, **values):
  """`run` with sampling-only settings replaced (for the diffusion family:
  sampler, nfe, guidance_scale, clip_x0); None values are left as trained.
  ValueError when the model has no such key, or a value is not allowed
  (checked as `resolve` checks the config)."""
  values = {k: v for k, v in values.items() if v is not None}
  if not values:
    return run
  declared = getattr(run.family, "OPTIONS", {})
  for key in values:
    if key not in declared or key not in checkpointing.OBSERVER_KEYS:
      raise ValueError(f"--{key} does not apply to model "
                       f"{run.settings.model!r}: it has no sampling option "
                       f"{key!r}.")
  changes = {"settings": replace(run.settings, **values)}
  if hasattr(run, "sample_fn"):  # a training Run's compiled sampler
    changes["sample_fn"] = None
  return dataclasses.replace(run, **changes)


def run_dataset(s, dataset: data_lib.Dataset | None = None
                ) -> data_lib.Dataset:
  """The dataset a run of settings `s` trains on: `dataset` or the
  settings', labelled by its attributes when `condition_kind='attributes'`."""
  dataset = dataset or load_data(s)
  if s.condition_kind == "attributes" and (
      dataset.attribute_names is None):
    dataset = data_lib.conditioned_on_attributes(dataset)
  return dataset


def load_data(s) -> data_lib.Dataset:
  if streaming.is_streaming(s.dataset):  # tfds:NAME, read as it trains
    return streaming.load_dataset(s)
  return data_lib.load_dataset(
      s.dataset, s.data_dir, tfds_dir=s.tfds_dir, download=s.download,
      held_out=colored.parse_combinations(s.held_out))


@dataclasses.dataclass
class Run:
  """Everything compiled for one run: built by `setup`, used by the loop."""
  settings: ml_collections.FrozenConfigDict
  dataset: data_lib.Dataset
  family: Any
  mesh: jax.sharding.Mesh
  state: Any
  rngs: dict
  images: jax.Array  # the training split on the device (uint8, replicated)
  labels: jax.Array
  steps_per_epoch: int
  abstract_state: Any = None
  step_fns: dict = dataclasses.field(default_factory=dict)
  sample_fn: Callable | None = None
  classifier: Any = None
  # streaming datasets: the host batches (images, labels are None then)
  source: streaming.BatchSource | None = None

  def steps(self, k: int) -> Callable:
    """The compiled function running `k` training steps in one call (compiled
    ahead of time on first request, so calls never retrace)."""
    if k not in self.step_fns and self.source is not None:
      self.step_fns[k] = self.source.feeding(make_multi_step(self, k).lower(
          self.abstract_state, self.source.abstract_batches(k),
          self.rngs["step"]).compile(), k)
    if k not in self.step_fns:
      perm = jax.ShapeDtypeStruct((len(self.dataset.train_labels),),
                                  jnp.int32,
                                  sharding=parallel.replicated(self.mesh))
      self.step_fns[k] = make_multi_step(self, k).lower(
          self.abstract_state, self.images, self.labels, perm,
          self.rngs["step"]).compile()
    return self.step_fns[k]


def run_keys(seed: int, impl: str | None = None) -> dict:
  root = jax.random.key(seed, impl=impl)
  return {name: jax.random.fold_in(root, i) for i, name in
          enumerate(("init", "data", "step", "sample", "eval"))}


def setup(config, dataset: data_lib.Dataset | None = None) -> Run:
  """Builds the data, mesh and initial state of a run of `config` (or of
  settings already resolved), the state laid out by `s.param_sharding`."""
  s = resolve(config)
  dataset = run_dataset(s, dataset)
  family = families.get_family(s.model)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(s.batch_size, mesh)
  parallel.check_prng_impl(s.prng_impl, mesh)
  replicated = parallel.replicated(mesh)
  rngs = jax.jit(lambda: run_keys(s.seed, s.prng_impl),
                 out_shardings=replicated)()

  def init(rng):
    return family.create_state(s, dataset.image_shape, dataset.num_classes,
                               rng)

  abstract = jax.eval_shape(init, rngs["init"])
  state = jax.jit(init, out_shardings=parallel.state_shardings(
      abstract, mesh, s.param_sharding))(rngs["init"])
  source = streaming.batch_source(s, dataset, mesh)  # None: in memory
  return Run(s, dataset, family, mesh, state, rngs,
             None if source else
             parallel.replicate_host_array(dataset.train_images, mesh),
             None if source else
             parallel.replicate_host_array(dataset.train_labels, mesh),
             source.steps_per_epoch if source else
             data_lib.steps_per_epoch(len(dataset.train_labels),
                                      s.batch_size),
             abstract_state=jax.tree.map(
                 lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                sharding=x.sharding), state),
             source=source)


def resolve_steps_per_call(s, platform: str | None = None) -> int:
  """`s.steps_per_call`, or with 0 (auto) what measured fastest here.

  On CPU, conv models run one step per call (a step is ~100 ms and fusing
  gains nothing); MLP models fuse 16 steps, since their steps are short
  enough for the per-call overhead to matter. On GPU/TPU every model fuses 8.
  """
  if s.steps_per_call > 0:
    return s.steps_per_call
  platform = platform or jax.default_backend()
  if platform == "cpu":
    return 1 if families.has_convolutions(s) else 16
  return 8


def loop_unroll(s, k: int, platform: str | None = None) -> int:
  """How many of the k fused steps to unroll: all of them for conv models on
  CPU (XLA:CPU runs convolutions inside a while loop ~100x slower), else none
  (a `lax.scan` loop: compile time independent of k)."""
  platform = platform or jax.default_backend()
  return k if platform == "cpu" and families.has_convolutions(s) else 1


def make_multi_step(run: Run, k: int) -> Callable:
  """jit of k training steps in one call; each draws its batch on the device
  from the epoch's permutation, then calls the family's train_step. The
  metrics returned are the last step's."""
  s, ds = run.settings, run.dataset
  train_step = run.family.make_train_step(s, ds.image_shape, ds.num_classes)
  replicated = parallel.replicated(run.mesh)
  batch_sharding = parallel.batch_sharded(run.mesh)

  def one_step(state, images, labels, permutation, rng):
    batch = data_lib.get_batch(images, labels, permutation, state.step,
                               s.batch_size, ds.max_value)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return train_step(state, batch, rng)

  def steps(state, images, labels, permutation, rng):
    if k == 1:
      return one_step(state, images, labels, permutation, rng)
    state, metrics = jax.lax.scan(
        lambda s, _: one_step(s, images, labels, permutation, rng), state,
        None, length=k, unroll=loop_unroll(s, k))
    return state, jax.tree.map(lambda m: m[-1], metrics)

  state_sharding = parallel.state_shardings(run.state, run.mesh,
                                            s.param_sharding)
  if run.source is not None:  # host batches [k, B, ...] (data/streaming.py)
    return streaming.jit_steps(train_step, k, state_sharding, run.source,
                               loop_unroll(s, k))
  return jax.jit(steps, donate_argnums=0,
                 in_shardings=(state_sharding, replicated, replicated,
                               replicated, replicated),
                 out_shardings=(state_sharding, replicated))


def next_boundary(step: int, s, steps_per_epoch: int) -> int:
  """The next step at which the host must act (log, save, sample, evaluate,
  new epoch or the end): training calls never cross one."""
  candidates = [int(s.num_steps),
                (step // steps_per_epoch + 1) * steps_per_epoch]
  for key in INTERVAL_KEYS + ("eval_every",):
    every = s[key]
    if every > 0:
      candidates.append((step // every + 1) * every)
  return min(candidates)


def _due(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


def train_steps(run: Run, state, start: int, stop: int, permutation,
                stop_request: preemption.StopRequest | None = None):
  """Runs steps [start, stop) in calls of `steps_per_call`, remainder 1 by 1.

  Returns (state, the last call's metrics, the step reached): `stop`, or
  the end of the call in flight when `stop_request` fired. The calls are
  laid out from `start`, so a run stopped after any call and resumed there
  makes the same calls as one never stopped.
  """
  k = resolve_steps_per_call(run.settings)
  n = stop - start
  metrics, step = None, start
  sync = jax.process_count() > 1
  for size in [k] * (n // k) + [1] * (n % k):
    if sync and stop_request is not None:
      # XLA:CPU may run the agreement's all-gather beside a step still in
      # flight, and their collectives then pair up wrongly across
      # processes: the step finishes first.
      jax.block_until_ready(state)
    if stop_request is not None and stop_request.requested(sync):
      break
    state, metrics = run.steps(size)(state, run.images, run.labels,
                                     permutation, run.rngs["step"])
    step += size
  return state, metrics, step


def check_finite(metrics: dict, step: int, since: int) -> None:
  """NonFiniteError naming the first non-finite metric of steps (since, step]."""
  for name, value in metrics.items():
    if not np.all(np.isfinite(value)):
      raise checkpointing.NonFiniteError(
          f"non-finite {name}={value} at step {step} (steps {since + 1}-"
          f"{step} ran since the last check)")


def stop_message(error: Exception, saved_step: int | None, ckpt_dir) -> str:
  """What a run stopped by a non-finite value tells the user."""
  if saved_step is None:
    kept = "no checkpoint has been saved, so the next run starts afresh"
  else:
    kept = (f"the latest checkpoint, step {saved_step} in {ckpt_dir}, holds "
            "finite values and the same command resumes from it")
  return (f"{error}: training stopped; {kept}. Lower the learning rate or "
          "change the loss first.")


def sample_grid(run: Run, state, per_class: int, rng) -> np.ndarray:
  """The images of a sample grid with one row per class: `per_class`
  samples of each (of each combination); for image conditions, `per_class`
  input | output | target triplets of each class's first test images."""
  if run.sample_fn is None:
    ds = run.dataset
    fn = run.family.make_sample_fn(run.settings, ds.image_shape,
                                   ds.num_classes)
    run.sample_fn = jax.jit(fn, out_shardings=parallel.replicated(run.mesh))
  if run.settings.condition_kind == "image":
    return _image_grid(run, state, per_class, rng)
  k = run.dataset.num_classes
  labels = images_lib.class_rows(k, images_lib.per_combination(k, per_class))
  labels = parallel.replicate_host_array(labels, run.mesh)
  return parallel.to_host(run.sample_fn(state, labels, rng))


def _image_grid(run: Run, state, per_class: int, rng) -> np.ndarray:
  ds = run.dataset
  counts = np.bincount(ds.test_labels, minlength=ds.num_classes)
  targets, _ = sampling.test_targets(ds, min(per_class, int(counts.min())))
  spec = run.family.image_condition(run.settings)
  conditions = np.asarray(spec.from_images(targets))
  outputs = run.sample_fn(
      state, parallel.replicate_host_array(conditions, run.mesh), rng)
  return images_lib.side_by_side(spec.show(conditions, ds.image_shape),
                                 parallel.to_host(outputs), targets)


class MetricWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir):
    self.enabled = jax.process_index() == 0
    self.tb = None
    if self.enabled:
      self.path = epath.Path(workdir) / "metrics.jsonl"
      self.tb = _summary_writer(epath.Path(workdir) / "tensorboard")

  def write(self, step: int, scalars: dict, filename: str | None = None):
    if not self.enabled:
      return
    record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
    path = self.path.with_name(filename) if filename else self.path
    with checkpointing.writing(path), path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, float(v), step)
      self.tb.flush()

  def close(self):
    if self.tb is not None:
      self.tb.close()


def _summary_writer(folder):
  """A tensorboardX writer; None (with a warning) where tensorboardX cannot
  write, e.g. a remote folder whose client library is not installed."""
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  try:
    return SummaryWriter(str(folder))
  except Exception as e:  # pylint: disable=broad-except
    if checkpointing.is_local(folder):
      raise
    logging.warning("No TensorBoard events in %s: %s", folder, e)
    return None


def truncate_metrics_log(path, step: int) -> None:
  """Drops the records after `step` (written before a kill) and any torn
  last line, atomically, so a resumed run's log has each step once."""
  path = epath.Path(path)
  if not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines():
    try:
      if json.loads(line)["step"] <= step:
        keep.append(line)
    except (json.JSONDecodeError, KeyError, TypeError):
      pass
  checkpointing.write_text_atomic(path, "".join(l + "\n" for l in keep))


@dataclasses.dataclass
class _Progress:
  """What the loop has done so far, for its logs and its stop message."""
  step: int
  saved: int | None  # the latest checkpoint on disk
  log_time: float = 0.0
  log_step: int = 0
  start_time: float = 0.0  # perf_counter() when this command started
  wall_before: float = 0.0  # wall_s of earlier commands, up to `step`

  def wall_s(self, now: float) -> float:
    return self.wall_before + now - self.start_time


def read_jsonl(path) -> list[dict]:
  """The records of a JSON-lines log, skipping a torn or foreign line (a
  kill mid-write); [] where there is no file."""
  path = epath.Path(path)
  records = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and isinstance(record.get("step"), int):
        records.append(record)
  return records


def logged_wall_s(path, step: int) -> float:
  """`wall_s` of the last record at or before `step` in a metrics log (0
  where there is none, e.g. a log written before the key existed)."""
  wall = 0.0
  for record in read_jsonl(path):
    if record["step"] <= step:
      wall = record.get("wall_s", wall)
  return wall


def record_session(workdir, step: int) -> None:
  """Appends this command's first step, time and hardware to
  sessions.jsonl, dropping the commands that started at or after `step`
  (the restored checkpoint): none of their steps is kept."""
  path = epath.Path(workdir) / SESSIONS_FILE
  kept = [r for r in read_jsonl(path) if r["step"] < step]
  kept.append({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "hardware": hardware.describe()})
  checkpointing.write_text_atomic(
      path, "".join(json.dumps(r) + "\n" for r in kept))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir,
                       dataset: data_lib.Dataset | None = None):
  """Trains (or resumes) the run in `workdir`; returns the final state.

  Everything is checked before anything is written: the config's values,
  the workdir (writable, same model, dataset and computing keys), the data
  and the newest checkpoint that restores cleanly (newer damaged ones are
  reported and moved to workdir/skipped_checkpoints/).

  A local workdir is locked while the run trains into it (`core.locking`):
  a second command on it stops before writing anything, naming the holder.
  SIGTERM or SIGINT stops the run at the end of the compiled call in flight
  with a checkpoint of the step reached (`core.preemption.Preempted`).
  """
  start_time = time.perf_counter()
  workdir = checkpointing.as_path(workdir)
  s = resolve(config)
  changes = checkpointing.check_workdir(workdir, config,
                                       config_defaults(s.model))
  run = setup(s, dataset)  # the data are checked before anything is written
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0 and checkpointing.is_local(workdir):
      # Object stores have no file locks: keeping one command per remote
      # workdir is the user's (or the scheduler's) to do.
      stack.enter_context(locking.WorkdirLock(workdir))
    stop_request = stack.enter_context(preemption.catch())
    return _train(config, run, workdir, changes, start_time, stop_request)


def _train(config, run: Run, workdir, changes, start_time,
           stop_request: preemption.StopRequest):
  s = run.settings
  ckpt_dir = workdir / "checkpoints"
  state, restored, skipped = checkpointing.restore_newest(ckpt_dir, run.state)
  if jax.process_count() > 1:
    # Every process has looked at the checkpoints before process 0 writes
    # (or orbax creates) anything: they all took the same path.
    multihost_utils.sync_global_devices("condgen_jax:restored")
  if jax.process_index() == 0:
    checkpointing.report_skipped(skipped, restored)
    checkpointing.set_aside(workdir, ckpt_dir, skipped)
    checkpointing.write_config(workdir, config, step=restored or 0,
                               changes=changes)
    for name in ("metrics.jsonl", "eval_metrics.jsonl"):
      truncate_metrics_log(workdir / name, restored or 0)
    record_session(workdir, restored or 0)
  if restored is not None:
    logging.info("Resumed from checkpoint %d in %s", restored, workdir)
  mngr = checkpointing.manager(ckpt_dir, max_to_keep=s.max_to_keep)
  best_mngr = None
  if s.eval_every and s.best_metric:
    best_mngr = checkpointing.manager(
        workdir / "best", max_to_keep=1, best_metric=s.best_metric,
        best_mode=evaluation.metric_mode(s.best_metric,
                                         run.family.metric_modes(s)))
  progress = _Progress(step=int(parallel.to_host(state.step)), saved=restored,
                       start_time=start_time,
                       # only process 0 writes (and has truncated) the log
                       wall_before=logged_wall_s(workdir / "metrics.jsonl",
                                                 restored or 0)
                       if jax.process_index() == 0 else 0.0)
  try:
    return _train_loop(run, state, workdir, mngr, best_mngr, progress,
                       stop_request)
  except checkpointing.NonFiniteError as e:
    raise checkpointing.NonFiniteError(
        stop_message(e, progress.saved, ckpt_dir)) from None
  finally:
    for m in (mngr, best_mngr):
      if m is not None:
        m.wait_until_finished()
        m.close()


def _train_loop(run: Run, state, workdir, mngr, best_mngr,
                progress: _Progress, stop_request: preemption.StopRequest):
  s = run.settings
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir)
  perm_fn = jax.jit(data_lib.epoch_permutation, static_argnums=2,
                    out_shardings=parallel.replicated(run.mesh))
  num_train = len(run.dataset.train_labels)
  perm, perm_epoch = None, None
  bar = tqdm.tqdm(total=s.num_steps, initial=progress.step,
                  disable=not is_main, dynamic_ncols=True, desc=s.model)
  k = resolve_steps_per_call(s)
  for size in {k, 1}:
    run.steps(size)  # compile now, so images_per_s measures training alone
  progress.log_time, progress.log_step = time.perf_counter(), progress.step
  try:
    while progress.step < s.num_steps:
      step = progress.step
      stop = next_boundary(step, s, run.steps_per_epoch)
      epoch = step // run.steps_per_epoch
      if run.source is not None:  # host batches from `step` on
        run.source.seek(step)
      elif epoch != perm_epoch:
        perm, perm_epoch = perm_fn(run.rngs["data"], epoch, num_train), epoch
      state, metrics, reached = train_steps(run, state, step, stop, perm,
                                            stop_request)
      if reached > step:
        host_metrics = parallel.to_host(metrics)
        check_finite(host_metrics, reached, step)
        checkpointing.check_finite_state(state, reached)
        bar.update(reached - step)
        progress.step = reached
      if reached < stop:  # SIGTERM / SIGINT: save the step reached, stop
        checkpointing.save(mngr, reached, state)
        progress.saved = reached
        raise preemption.Preempted(stop_request.signum, reached,
                                   str(mngr.directory))
      _at_boundary(run, state, workdir, host_metrics, writer, bar, mngr,
                   best_mngr, progress)
  finally:
    bar.close()
    writer.close()
  return state


def _at_boundary(run: Run, state, workdir, host_metrics, writer, bar, mngr,
                 best_mngr, progress: _Progress) -> None:
  """Logs, samples, evaluates and saves as due at `progress.step`."""
  s, step = run.settings, progress.step
  last = step == s.num_steps
  if _due(step, s.log_every) or last:
    now = time.perf_counter()
    rate = ((step - progress.log_step) * s.batch_size
            / max(now - progress.log_time, 1e-9))
    progress.log_time, progress.log_step = now, step
    writer.write(step, {**host_metrics, "images_per_s": rate,
                        "wall_s": progress.wall_s(now)})
    bar.set_postfix(loss=f"{float(host_metrics['loss']):.4g}",
                    img_s=f"{rate:.0f}")
  if _due(step, s.sample_every) or last:
    grid = sample_grid(run, state, s.samples_per_class, run.rngs["sample"])
    if jax.process_index() == 0:
      path = workdir / "samples" / f"step_{step:08d}.png"
      with checkpointing.writing(path):
        images_lib.save_grid(grid, path,
                             images_lib.grid_rows(run.dataset.num_classes))
  if _due(step, s.eval_every):
    periodic_evaluation(run, state, step, writer, best_mngr)
  if _due(step, s.checkpoint_every) or last:
    checkpointing.save(mngr, step, state)
    progress.saved = step


def periodic_evaluation(run: Run, state, step: int, writer, best_mngr) -> dict:
  """Evaluates during training (`eval_every`): logs `eval/*` scalars to
  eval_metrics.jsonl and TensorBoard, and keeps the best checkpoint by
  `best_metric` under workdir/best/ (GANs often peak, then collapse)."""
  s = run.settings
  if run.classifier is None:
    run.classifier = evaluation.reference_classifier(run.dataset,
                                                     data_dir=s.data_dir)
  results = evaluation.evaluate_state(
      run, state, num_per_class=s.eval_num_per_class, seed=0,
      classifier=run.classifier,
      # CAS trains a classifier: only when it picks the best checkpoint.
      cas=s.best_metric == "cas")
  values = evaluation.scalars(results)
  writer.write(step, {f"eval/{k}": v for k, v in values.items()},
               filename="eval_metrics.jsonl")
  if best_mngr is not None:
    checkpointing.save(best_mngr, step, state, metrics=values)
  return results


def restore_state(workdir, target, *, step: int | None = None,
                  best: bool = False):
  """(state, step) of a workdir's newest checkpoint that restores (or
  `step`; or with `best`, the best one kept by periodic evaluation), into
  the structure, shapes and shardings of `target` (a state pytree or its
  `jax.ShapeDtypeStruct`s). Raises ValueError / FileNotFoundError with a
  clear message when there is no usable checkpoint, or when it holds
  non-finite parameters."""
  ckpt_dir = checkpointing.as_path(workdir) / ("best" if best
                                               else "checkpoints")
  if not ckpt_dir.exists():
    raise FileNotFoundError(f"{ckpt_dir} does not exist: nothing to restore.")
  if step is None:
    state, step, skipped = checkpointing.restore_newest(ckpt_dir, target,
                                                        finite=False)
    checkpointing.report_skipped(skipped, step)
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {ckpt_dir}.")
  else:
    mngr = checkpointing.manager(ckpt_dir, read_only=True)
    try:
      steps = sorted(mngr.all_steps())
      if step not in steps:
        raise ValueError(f"No checkpoint of step {step} in {ckpt_dir}; it "
                         f"holds steps {steps}.")
      state = checkpointing.restore(mngr, step, target)
    finally:
      mngr.close()
  bad = checkpointing.nonfinite_leaves(state)
  if bad:
    raise ValueError(f"Checkpoint {step} in {ckpt_dir} holds non-finite "
                     f"values ({', '.join(bad[:3])}); refusing to use it.")
  return state, step


def restore_run(workdir, *, step: int | None = None, best: bool = False,
                dataset: data_lib.Dataset | None = None):
  """(run, state, step) of a trained workdir: the whole `Run` of its
  config.json (to train on), and the state of `restore_state`."""
  config = checkpointing.read_config(workdir)
  run = setup(config, dataset)
  state, step = restore_state(workdir, run.state, step=step, best=best)
  return run, state, step
