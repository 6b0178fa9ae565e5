"""Data parallelism with JAX's own sharding: one code path for 1 CPU, N GPUs and N hosts.

A 1-D device mesh with axis ``"data"`` spans every device of every process (or the first
``distributed.num_devices``). Envs, their states and the replay buffer are sharded over the
env axis; parameters and optimiser state are replicated; each minibatch is sharded over its
rows, so XLA inserts the gradient all-reduce from the sharding annotations alone. Random
numbers are sharding-invariant (``jax_threefry_partitionable``), so a run on N devices computes
the same numbers as on one, up to reduction order.

Several hosts: call :func:`initialize` (``jax.distributed.initialize``) in every process with
the same coordinator address; every process runs the same program.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
_initialized = False


def initialize(config) -> None:
  """Starts JAX's multi-process runtime when ``distributed.coordinator_address`` is set."""
  global _initialized
  d = config.distributed
  if not d.coordinator_address or _initialized:
    return
  host = d.coordinator_address.rsplit(":", 1)[0].strip("[]")
  if host in ("localhost", "127.0.0.1", "::1"):
    _cpu_collectives_on_loopback()
  jax.distributed.initialize(coordinator_address=d.coordinator_address,
                             num_processes=d.num_processes, process_id=d.process_id)
  _initialized = True


def _cpu_collectives_on_loopback() -> None:
  """All processes share this machine: make CPU (gloo) collectives connect over 127.0.0.1
  rather than whatever address the host name resolves to (which sandboxes may not route)."""
  try:
    import functools  # pylint: disable=g-import-not-at-top
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    make = xla_bridge._jax.make_gloo_tcp_collectives  # pylint: disable=protected-access
    if not isinstance(make, functools.partial):
      xla_bridge._jax.make_gloo_tcp_collectives = functools.partial(make, hostname="127.0.0.1")
  except (ImportError, AttributeError):  # another jax layout: keep gloo's default
    pass


def make_mesh(num_devices: int = 0) -> Mesh:
  """1-D ``("data",)`` mesh over all devices (``num_devices=0``) or the first ``num_devices``."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"distributed.num_devices={num_devices} but only {len(devices)} devices "
                       f"are visible")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
  return NamedSharding(mesh, P(*([None] * axis + [DATA])))


def env_sharding_tree(tree, mesh: Mesh, axis: int = 0):
  """Shards every array leaf of ``tree`` over ``axis`` (scalars stay replicated)."""
  return jax.tree.map(
      lambda x: batch_sharded(mesh, axis) if len(x.shape) > axis else replicated(mesh), tree)


def constrain_batch(tree, mesh: Mesh):
  """Marks arrays whose leading axis is the batch as sharded over ``"data"`` (no-op on 1 device)."""
  if mesh.size == 1:
    return tree
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharded(mesh)), tree)


def to_host(tree):
  """Fetches a (possibly multi-host sharded) pytree as host numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)


def from_host(tree, shardings):
  """Places host arrays (the same on every process) onto devices with ``shardings``."""
  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])
  return jax.tree.map(put, tree, shardings)


def barrier(name: str, timeout_s: float = 1800.0) -> None:
  """Blocks until every process reaches ``name`` (no-op with one process). Uses the
  coordination service, not a device collective, so slow compiles do not time it out."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  jax_distributed.global_state.client.wait_at_barrier(name, int(timeout_s * 1000))


def is_main_process() -> bool:
  return jax.process_index() == 0
