"""The training loop shared by every model family.

`train_and_evaluate(config, workdir)` trains `config.model` on
`config.dataset`, resuming from the latest checkpoint in `workdir`. The data
lives on the device and batches are drawn there from a per-epoch permutation
that is a pure function of (seed, epoch); the step's randomness is
`fold_in(key, step)`. So a run stopped and resumed continues exactly as if it
had not stopped.

The workdir receives config.json, metrics.jsonl (one JSON object per logged
step), samples/step_XXXXXXXX.png (one row per class), checkpoints/ (orbax) and
TensorBoard event files.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from condgen_jax import checkpointing
from condgen_jax import data as data_lib
from condgen_jax import evaluation
from condgen_jax import families
from condgen_jax import images as images_lib
from condgen_jax import parallel

INTERVAL_KEYS = ("log_every", "checkpoint_every", "sample_every")


def validate_config(config) -> None:
  """Raises ValueError naming the first bad value and what is allowed."""
  families.get_family(config.model)
  if config.dataset not in data_lib.DATASETS:
    raise ValueError(f"Unknown dataset {config.dataset!r}; expected one of "
                     f"{data_lib.DATASETS}.")
  for key in ("num_steps", "batch_size"):
    if int(config.get(key, 1)) < 1:
      raise ValueError(f"config.{key} must be >= 1; got {config[key]!r}.")
  if int(config.get("steps_per_call", 0)) < 0:
    raise ValueError("config.steps_per_call must be >= 0 (0 = auto); got "
                     f"{config.steps_per_call!r}.")
  if config.get("prng_impl") is not None:
    try:
      jax.random.key(0, impl=config.prng_impl)
    except ValueError as e:
      raise ValueError(f"config.prng_impl={config.prng_impl!r} is not a "
                       f"jax.random implementation: {e}") from None
  for key in INTERVAL_KEYS + ("eval_every",):
    if int(config.get(key, 0)) < 0:
      raise ValueError(f"config.{key} must be >= 0 (0 = never); got "
                       f"{config[key]!r}.")


def load_data(config) -> data_lib.Dataset:
  return data_lib.load_dataset(config.dataset, config.get("data_dir"),
                               tfds_dir=config.get("tfds_dir"),
                               download=config.get("download", False))


@dataclasses.dataclass
class Run:
  """Everything compiled for one run: built by `setup`, used by the loop."""
  config: ml_collections.ConfigDict
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

  def steps(self, k: int) -> Callable:
    """The compiled function running `k` training steps in one call (compiled
    ahead of time on first request, so calls never retrace)."""
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
  """Builds the data, mesh and initial (replicated) state of a run."""
  validate_config(config)
  dataset = dataset or load_data(config)
  family = families.get_family(config.model)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated(mesh)
  rngs = jax.jit(lambda: run_keys(config.seed, config.get("prng_impl")),
                 out_shardings=replicated)()

  def init(rng):
    return family.create_state(config, dataset.image_shape,
                               dataset.num_classes, rng)

  abstract = jax.eval_shape(init, rngs["init"])
  state = jax.jit(init, out_shardings=jax.tree.map(lambda _: replicated,
                                                   abstract))(rngs["init"])
  return Run(config, dataset, family, mesh, state, rngs,
             parallel.replicate_host_array(dataset.train_images, mesh),
             parallel.replicate_host_array(dataset.train_labels, mesh),
             data_lib.steps_per_epoch(len(dataset.train_labels),
                                      config.batch_size),
             abstract_state=jax.tree.map(
                 lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                sharding=x.sharding), state))


def resolve_steps_per_call(config, platform: str | None = None) -> int:
  """`config.steps_per_call`, or with 0 (auto) what measured fastest here.

  On CPU, conv models run one step per call (a step is ~100 ms and fusing
  gains nothing); MLP models fuse 16 steps, since their steps are short
  enough for the per-call overhead to matter. On GPU/TPU every model fuses 8.
  """
  k = int(config.get("steps_per_call", 0))
  if k > 0:
    return k
  platform = platform or jax.default_backend()
  if platform == "cpu":
    return 1 if families.has_convolutions(config) else 16
  return 8


def loop_unroll(config, k: int, platform: str | None = None) -> int:
  """How many of the k fused steps to unroll: all of them for conv models on
  CPU (XLA:CPU runs convolutions inside a while loop ~100x slower), else none
  (a `lax.scan` loop: compile time independent of k)."""
  platform = platform or jax.default_backend()
  return k if platform == "cpu" and families.has_convolutions(config) else 1


def make_multi_step(run: Run, k: int) -> Callable:
  """jit of k training steps in one call; each draws its batch on the device
  from the epoch's permutation, then calls the family's train_step. The
  metrics returned are the last step's."""
  config, ds = run.config, run.dataset
  train_step = run.family.make_train_step(config, ds.image_shape,
                                          ds.num_classes)
  replicated = parallel.replicated(run.mesh)
  batch_sharding = parallel.batch_sharded(run.mesh)

  def one_step(state, images, labels, permutation, rng):
    batch = data_lib.get_batch(images, labels, permutation, state.step,
                               config.batch_size, ds.max_value)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return train_step(state, batch, rng)

  def steps(state, images, labels, permutation, rng):
    if k == 1:
      return one_step(state, images, labels, permutation, rng)
    state, metrics = jax.lax.scan(
        lambda s, _: one_step(s, images, labels, permutation, rng), state,
        None, length=k, unroll=loop_unroll(config, k))
    return state, jax.tree.map(lambda m: m[-1], metrics)

  state_sharding = jax.tree.map(lambda _: replicated, run.state)
  return jax.jit(steps, donate_argnums=0,
                 in_shardings=(state_sharding, replicated, replicated,
                               replicated, replicated),
                 out_shardings=(state_sharding, replicated))


def next_boundary(step: int, config, steps_per_epoch: int) -> int:
  """The next step at which the host must act (log, save, sample, evaluate,
  new epoch or the end): training calls never cross one."""
  candidates = [int(config.num_steps),
                (step // steps_per_epoch + 1) * steps_per_epoch]
  for key in INTERVAL_KEYS + ("eval_every",):
    every = int(config.get(key, 0))
    if every > 0:
      candidates.append((step // every + 1) * every)
  return min(candidates)


def _due(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


def train_steps(run: Run, state, start: int, stop: int, permutation):
  """Runs steps [start, stop) in calls of `steps_per_call`, remainder 1 by 1."""
  k = resolve_steps_per_call(run.config)
  n = stop - start
  metrics = None
  for size in [k] * (n // k) + [1] * (n % k):
    state, metrics = run.steps(size)(state, run.images, run.labels,
                                     permutation, run.rngs["step"])
  return state, metrics


def check_finite(metrics: dict, step: int) -> None:
  for name, value in metrics.items():
    if not np.all(np.isfinite(value)):
      raise FloatingPointError(
          f"Non-finite {name}={value} at step {step}: training stopped. The "
          "last good checkpoint is kept; lower the learning rate or change "
          "the loss, then run the same command to resume from it.")


def sample_grid(run: Run, state, per_class: int, rng) -> np.ndarray:
  if run.sample_fn is None:
    ds = run.dataset
    fn = run.family.make_sample_fn(run.config, ds.image_shape, ds.num_classes)
    run.sample_fn = jax.jit(fn, out_shardings=parallel.replicated(run.mesh))
  labels = images_lib.class_rows(run.dataset.num_classes, per_class)
  labels = parallel.replicate_host_array(labels, run.mesh)
  return parallel.to_host(run.sample_fn(state, labels, rng))


class MetricWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: pathlib.Path):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.path = workdir / "metrics.jsonl"
      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict, filename: str | None = None):
    if not self.enabled:
      return
    record = {"step": step, **{k: float(v) for k, v in scalars.items()}}
    path = self.path.with_name(filename) if filename else self.path
    with path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in scalars.items():
      self.tb.add_scalar(k, float(v), step)
    self.tb.flush()

  def close(self):
    if self.enabled:
      self.tb.close()


def _truncate_metrics_log(path: pathlib.Path, step: int) -> None:
  """Drops records after `step` (written before a crash) so a resumed run's
  metrics.jsonl has each step once."""
  if not path.exists():
    return
  lines = [l for l in path.read_text().splitlines() if l.strip()]
  keep = []
  for line in lines:
    try:
      if json.loads(line)["step"] <= step:
        keep.append(line)
    except (json.JSONDecodeError, KeyError):
      pass
  path.write_text("".join(l + "\n" for l in keep))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: data_lib.Dataset | None = None):
  """Trains (or resumes) the run in `workdir`; returns the final state."""
  workdir = pathlib.Path(workdir)
  validate_config(config)
  checkpointing.check_workdir(workdir, config)
  run = setup(config, dataset)
  is_main = jax.process_index() == 0

  mngr = checkpointing.manager(workdir / "checkpoints",
                               max_to_keep=config.get("max_to_keep", 2))
  best_mngr = None
  if config.get("eval_every", 0) and config.get("best_metric"):
    best_mngr = checkpointing.manager(
        workdir / "best", max_to_keep=1, best_metric=config.best_metric,
        best_mode=evaluation.metric_mode(config.best_metric))
  state, restored_step = checkpointing.restore_latest(mngr, run.state)
  if is_main:
    checkpointing.write_config(workdir, config)
    for name in ("metrics.jsonl", "eval_metrics.jsonl"):
      _truncate_metrics_log(workdir / name, restored_step or 0)
  step = int(parallel.to_host(state.step))
  if restored_step is not None:
    logging.info("Resumed from checkpoint %d in %s", restored_step, workdir)

  writer = MetricWriter(workdir)
  per_class = int(config.get("samples_per_class", 10))
  perm_fn = jax.jit(data_lib.epoch_permutation, static_argnums=2,
                    out_shardings=parallel.replicated(run.mesh))
  num_train = len(run.dataset.train_labels)
  perm, perm_epoch = None, None
  last_log_time, last_log_step = time.perf_counter(), step
  bar = tqdm.tqdm(total=config.num_steps, initial=step, disable=not is_main,
                  dynamic_ncols=True, desc=config.model)
  metrics = None
  k = resolve_steps_per_call(config)
  for size in {k, 1}:
    run.steps(size)  # compile now, so images_per_s measures training alone
  last_log_time = time.perf_counter()
  try:
    while step < config.num_steps:
      stop = next_boundary(step, config, run.steps_per_epoch)
      epoch = step // run.steps_per_epoch
      if epoch != perm_epoch:
        perm, perm_epoch = perm_fn(run.rngs["data"], epoch, num_train), epoch
      state, metrics = train_steps(run, state, step, stop, perm)
      bar.update(stop - step)
      step = stop
      last = step == config.num_steps
      host_metrics = None
      if _due(step, config.log_every) or last or \
          _due(step, config.checkpoint_every):
        host_metrics = parallel.to_host(metrics)
        check_finite(host_metrics, step)
      if _due(step, config.log_every) or last:
        now = time.perf_counter()
        rate = ((step - last_log_step) * config.batch_size
                / max(now - last_log_time, 1e-9))
        last_log_time, last_log_step = now, step
        writer.write(step, {**host_metrics, "images_per_s": rate})
        bar.set_postfix(loss=f"{float(host_metrics['loss']):.4g}",
                        img_s=f"{rate:.0f}")
      if _due(step, config.sample_every) or last:
        grid = sample_grid(run, state, per_class, run.rngs["sample"])
        if is_main:
          images_lib.save_grid(
              grid, workdir / "samples" / f"step_{step:08d}.png",
              run.dataset.num_classes)
      if _due(step, config.get("eval_every", 0)):
        periodic_evaluation(run, state, step, writer, best_mngr)
      if _due(step, config.checkpoint_every) or last:
        checkpointing.save(mngr, step, state)
  finally:
    bar.close()
    writer.close()
    for m in (mngr, best_mngr):
      if m is not None:
        m.wait_until_finished()
        m.close()
  return state


def periodic_evaluation(run: Run, state, step: int, writer, best_mngr) -> dict:
  """Evaluates during training (`eval_every`): logs `eval/*` scalars to
  eval_metrics.jsonl and TensorBoard, and keeps the best checkpoint by
  `best_metric` under workdir/best/ (GANs often peak, then collapse)."""
  config = run.config
  if run.classifier is None:
    run.classifier = evaluation.classifier_lib.load_or_train_classifier(
        run.dataset, verbose=jax.process_index() == 0)
  results = evaluation.evaluate_state(
      run, state, num_per_class=int(config.get("eval_num_per_class", 100)),
      seed=0, classifier=run.classifier)
  values = evaluation.scalars(results)
  writer.write(step, {f"eval/{k}": v for k, v in values.items()},
               filename="eval_metrics.jsonl")
  if best_mngr is not None:
    if config.best_metric not in values:
      raise ValueError(f"best_metric={config.best_metric!r} is not among the "
                       f"evaluation's metrics {sorted(values)}.")
    checkpointing.save(best_mngr, step, state, metrics=values)
  return results



def restore_run(workdir, *, step: int | None = None, best: bool = False,
                dataset: data_lib.Dataset | None = None):
  """(run, state, step) of a trained workdir, from its config.json and its
  latest checkpoint (or `step`; or with `best`, the best one kept by periodic
  evaluation). Raises ValueError / FileNotFoundError with a clear message when
  the workdir holds no usable checkpoint."""
  workdir = pathlib.Path(workdir)
  config = checkpointing.read_config(workdir)
  run = setup(config, dataset)
  ckpt_dir = workdir / ("best" if best else "checkpoints")
  if not ckpt_dir.exists():
    raise FileNotFoundError(f"{ckpt_dir} does not exist: nothing to restore.")
  mngr = checkpointing.manager(ckpt_dir, read_only=True)
  try:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {ckpt_dir}.")
    state = checkpointing.restore(mngr, step, run.state)
  finally:
    mngr.close()
  return run, state, step
