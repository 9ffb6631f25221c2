"""Devices, meshes and shardings for data-parallel training.

Every run uses a 1-D mesh over all devices (of all processes) with the axis
'data': each batch is split along its first axis, and the train state is
laid out by `state_shardings` (`param_sharding`: replicated, or FSDP-sharded
over the same axis). Batch-norm statistics and metrics are computed over the
global batch because the step is one SPMD program (XLA inserts the
cross-device reductions, and with FSDP the per-layer gathers).
"""

from __future__ import annotations

import os

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

# How the train state is laid out over the mesh (the runner's
# `param_sharding`): replicated on every device, or FSDP (see
# `state_shardings`).
PARAM_SHARDINGS = ("replicated", "fsdp")
# FSDP leaves with fewer elements stay replicated: biases, norm scales,
# optimizer counts. Sharding them would save almost no memory and cost a
# gather each.
FSDP_MIN_SIZE = 1024

# Read by `maybe_initialize_distributed`: the standard variables of
# `jax.distributed.initialize` (cluster environments such as SLURM, Open MPI
# and Cloud TPU are detected by JAX itself when `force` is set).
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                   "JAX_PROCESS_ID")


def maybe_initialize_distributed(force: bool = False) -> bool:
  """Calls `jax.distributed.initialize()` when its environment is set.

  Set JAX_COORDINATOR_ADDRESS (host:port), JAX_NUM_PROCESSES and
  JAX_PROCESS_ID for each process; or CONDGEN_DISTRIBUTED=1 where JAX detects
  the cluster itself (Cloud TPU pod slices, SLURM, Open MPI).

  Returns True when this is a multi-process run. Call before any other JAX
  work.
  """
  force = force or os.environ.get("CONDGEN_DISTRIBUTED", "") == "1"
  if force or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    if not jax.distributed.is_initialized():
      kwargs = {}
      if os.environ.get("JAX_NUM_PROCESSES"):
        kwargs["num_processes"] = int(os.environ["JAX_NUM_PROCESSES"])
      if os.environ.get("JAX_PROCESS_ID"):
        kwargs["process_id"] = int(os.environ["JAX_PROCESS_ID"])
      jax.distributed.initialize(**kwargs)
    return jax.process_count() > 1
  return False


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape, dtype, num_devices: int) -> P:
  """The FSDP layout of one array: `P()` (replicated) or its largest
  dimension split over the data axis.

  The rule: a PRNG key array, an array of fewer than `FSDP_MIN_SIZE`
  elements or one with no dimension divisible by `num_devices` is
  replicated; otherwise the largest dimension divisible by `num_devices`
  (the first of equal ones) is split into `num_devices` equal parts. An
  even split keeps every device's shard the same shape, so XLA needs no
  padding; the largest dimension leaves the most balanced shards.
  """
  if num_devices <= 1 or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return P()
  if int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return P()
  dims = [i for i, n in enumerate(shape) if n % num_devices == 0]
  if not dims:
    return P()
  axis = max(dims, key=lambda i: (shape[i], -i))
  return P(*([None] * axis + [DATA_AXIS]))


def state_shardings(abstract_state, mesh, mode: str = "replicated"):
  """The sharding of every leaf of a train state (arrays or
  `jax.ShapeDtypeStruct`s), as a pytree of `NamedSharding`s of `mesh`.

  `mode='replicated'`: every leaf on every device (plain data parallelism).
  `mode='fsdp'`: parameters and optimizer state sharded over the data axis
  by `fsdp_spec` (scalars such as the step and optimizer counts, PRNG keys
  and small leaves stay replicated), so each device holds about
  1/`mesh.size` of them. The computation is unchanged: inside the jitted
  step XLA's SPMD partitioner gathers each layer's parameters where they
  are used, and each device updates its own shard. `mesh` may be an
  `AbstractMesh`.
  """
  if mode not in PARAM_SHARDINGS:
    raise ValueError(f"Unknown param_sharding {mode!r}; expected one of "
                     f"{PARAM_SHARDINGS}.")
  n = mesh.shape[DATA_AXIS]
  if mode == "replicated":
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), abstract_state)
  return jax.tree.map(
      lambda x: NamedSharding(mesh, fsdp_spec(x.shape, x.dtype, n)),
      abstract_state)


def check_batch_size(batch_size: int, mesh) -> None:
  if batch_size % mesh.size:
    raise ValueError(f"batch_size={batch_size} is not divisible by the "
                     f"{mesh.size} devices of the mesh; use a multiple of "
                     f"{mesh.size}.")


def check_prng_impl(impl: str, mesh) -> None:
  """philox4x32 does not compile on a multi-device XLA:CPU mesh (jax 0.10:
  its mul_hi carries a sharding that MHLO -> StableHLO cannot legalize), so
  that combination is one clear error instead of an MLIR dump."""
  if (impl == "philox4x32" and mesh.size > 1 and
      jax.default_backend() == "cpu"):
    raise ValueError(f"prng_impl={impl!r} does not compile on a mesh of "
                     f"{mesh.size} CPU devices; use 'threefry2x32' (the "
                     "default) or one device.")


def replicate_host_array(array: np.ndarray, mesh) -> jax.Array:
  """A host array (the same on every process) as a replicated global array."""
  return jax.make_array_from_process_local_data(replicated(mesh),
                                                np.asarray(array))


def to_host(tree):
  """Fetches a pytree of global arrays to numpy: a replicated array from
  this process's first shard, a sharded one spanning processes (an FSDP
  leaf) gathered from all of them (every process must call it then)."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(fetch, tree)
