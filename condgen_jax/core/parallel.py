"""Devices, meshes and shardings for data-parallel training.

Every run uses a 1-D mesh over all devices (of all processes) with the axis
'data': parameters and optimizer state are replicated, each batch is split
along its first axis. Batch-norm statistics and metrics are computed over the
global batch because the step is one SPMD program (XLA inserts the
cross-device reductions).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

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
  """Fetches a pytree of replicated (or fully addressable) arrays to numpy."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree.map(fetch, tree)
