"""Checkpoint cost at a paper task's replay size: how long training is held up, and the bytes.

    python profiling/checkpoint_cost.py --task=humanoid --env_fraction=0.125 --repeats=2

The run state of a paper run is dominated by its replay buffer (``replay.capacity`` x
``train.num_envs`` time-major observations and actions). This builds a replay state of the
task's paper shape -- or ``--env_fraction`` of its envs, to fit a small machine -- on the
default device and checkpoints it two ways, best of ``--repeats``:

* ``run_checkpointer``: :class:`deepcrl_core.checkpoint.RunCheckpointer` as training uses it.
  ``blocking_s`` is what the training loop waits for (this process's device-to-host copy of its
  shards); ``write_s`` runs on a background thread while the next epoch trains.
* ``gather_npz``: what checkpoints did before -- gather the whole state to host and write one
  ``.npz`` synchronously; all of it blocks training.

Sizes at the full paper shape are exact byte counts from the shapes; times at the full shape
are the measured per-byte rates times those bytes -- labelled a linear model, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import deepcrl_core

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from deepcrl_core import checkpoint as ckpt  # noqa: E402
from deepcrl_core import config as config_lib  # noqa: E402
from deepcrl_core import envs  # noqa: E402
from deepcrl_core import replay  # noqa: E402
from profiling_common import machine_facts  # noqa: E402  (this folder)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # configs/ lives here


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def measure(task: str, env_fraction: float, repeats: int, out_dir: str) -> dict:
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", f"{task}.py"))
  env = envs.make(task)
  capacity, full_envs = cfg.replay.capacity, cfg.train.num_envs
  num_envs = max(1, int(round(full_envs * env_fraction)))
  shapes = jax.eval_shape(lambda: replay.init(capacity, num_envs, env.observation_size,
                                              env.action_size))
  buf = jax.jit(lambda: jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes))()
  jax.block_until_ready(buf)
  arrays, rest = ckpt.split_sharded(buf)
  state = {"replay_pos": rest, "params": jnp.ones((1_000_000,), jnp.float32)}
  data_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((arrays, state)))
  full_bytes = data_bytes / num_envs * full_envs  # replay bytes scale with envs; params do not
  full_bytes -= state["params"].nbytes * (full_envs / num_envs - 1)

  best = {"run_checkpointer": {"blocking_s": float("inf"), "write_s": float("inf")},
          "gather_npz": {"blocking_s": float("inf")}}
  for r in range(repeats):
    d = os.path.join(out_dir, f"new{r}")
    c = ckpt.RunCheckpointer(d, keep=1, asynchronous=True)
    t0 = time.perf_counter()
    c.save(1, state, arrays, {"epoch": 1})
    blocking = time.perf_counter() - t0
    c.wait()
    total = time.perf_counter() - t0
    best["run_checkpointer"]["blocking_s"] = min(best["run_checkpointer"]["blocking_s"], blocking)
    best["run_checkpointer"]["write_s"] = min(best["run_checkpointer"]["write_s"], total - blocking)
    best["run_checkpointer"]["disk_bytes"] = _dir_bytes(d)
    shutil.rmtree(d)
    d = os.path.join(out_dir, f"old{r}")
    t0 = time.perf_counter()
    ckpt.save(d, 1, jax.device_get({"state": state, "replay": arrays}), {"epoch": 1}, keep=1)
    best["gather_npz"]["blocking_s"] = min(best["gather_npz"]["blocking_s"],
                                           time.perf_counter() - t0)
    best["gather_npz"]["disk_bytes"] = _dir_bytes(d)
    shutil.rmtree(d)

  scale = full_bytes / data_bytes
  return {
      "task": task, "capacity": capacity, "num_envs_measured": num_envs,
      "num_envs_paper": full_envs, "observation_size": env.observation_size,
      "action_size": env.action_size, "measured_bytes": data_bytes,
      "paper_bytes": int(full_bytes), **{
          f"{way}_{k}": v for way, d in best.items() for k, v in d.items()},
      "model_paper_blocking_s_run_checkpointer": best["run_checkpointer"]["blocking_s"] * scale,
      "model_paper_write_s_run_checkpointer": best["run_checkpointer"]["write_s"] * scale,
      "model_paper_blocking_s_gather_npz": best["gather_npz"]["blocking_s"] * scale,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--task", default="humanoid")
  parser.add_argument("--env_fraction", type=float, default=0.125)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
  args = parser.parse_args()
  out_dir = args.dir or tempfile.mkdtemp(prefix="deepcrl_ckpt_cost_")
  try:
    out = measure(args.task, args.env_fraction, args.repeats, out_dir)
  finally:
    if args.dir is None:
      shutil.rmtree(out_dir, ignore_errors=True)
  out.update(machine_facts())
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
