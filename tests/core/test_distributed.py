"""Data parallelism: 4 CPU devices compute what 1 does; two processes train together."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO_ROOT

TINY = ("width=32,num_envs=16,batch=64,epochs=2,train.unroll_length=10,train.sgd_steps=4,"
        "train.prefill_steps=20,train.train_steps_per_epoch=2,replay.capacity=100,"
        "replay.window_length=20,eval.num_envs=16,log.tensorboard=false")

_EQUIVALENCE = """
import json, sys
import jax
jax.config.update("jax_compilation_cache_dir", {cache!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
from deepcrl_core import train as train_lib
from tests.conftest import load_config as load
out = {{}}
for n in (1, 4):
  cfg = load("pointmass", {tiny!r} + f",distributed.num_devices={{n}}")
  c = train_lib.build(cfg)
  run = train_lib.init_run_state(c, cfg.seed)
  out[f"shards{{n}}"] = [len(run.replay.obs.sharding.device_set),
                        len(run.env_state.obs.sharding.device_set),
                        len(run.training.log_alpha.sharding.device_set)]
  out[n] = train_lib.train(cfg, f"{{sys.argv[1]}}/run{{n}}", log_fn=lambda s: None)
# The 4-device run's checkpoint resumes on 1 device (host arrays, any device count).
cfg = load("pointmass", {tiny!r} + ",epochs=3,distributed.num_devices=1")
out["resumed"] = train_lib.train(cfg, f"{{sys.argv[1]}}/run4", resume=True, log_fn=lambda s: None)
out["devices"] = jax.device_count()
print("RESULT" + json.dumps(out))
"""


def _env(extra_flags=""):
  flags = "--xla_cpu_use_fusion_emitters=false " + extra_flags
  return {**os.environ, "XLA_FLAGS": flags.strip(), "PYTHONPATH": REPO_ROOT}


def test_four_devices_match_one_device(tmp_path):
  code = _EQUIVALENCE.format(root=REPO_ROOT, tiny=TINY, cache=jax.config.jax_compilation_cache_dir)
  proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                        text=True, timeout=600, cwd=REPO_ROOT,
                        env=_env("--xla_force_host_platform_device_count=4"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  assert out["devices"] == 4
  assert out["shards1"] == [1, 1, 1]
  assert out["shards4"] == [4, 4, 4]  # replay and envs sharded, params replicated on all 4
  one, four = out["1"], out["4"]
  assert len(one) == len(four) == 2
  for r1, r4 in zip(one, four):
    for key in ("critic_loss", "actor_loss", "alpha_loss", "alpha", "logsumexp", "entropy"):
      np.testing.assert_allclose(r4[key], r1[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert r4["eval/success"] == pytest.approx(r1["eval/success"], abs=1 / 16 + 1e-9)
  assert [r["epoch"] for r in out["resumed"]] == [3]
  assert np.isfinite(out["resumed"][0]["critic_loss"])


_WORKER = """
import json, sys
import jax
from deepcrl_core import train as train_lib
from tests.conftest import load_config as load
pid = int(sys.argv[1])
# env.kwargs makes validation build the env before jax.distributed.initialize: building an env
# must not start a JAX backend.
cfg = load("pointmass", {tiny!r} + ",epochs=1,distributed.coordinator_address='127.0.0.1:{port}',"
           f"distributed.num_processes=2,distributed.process_id={{pid}},env.kwargs.arena_size=1.0")
rows = train_lib.train(cfg, {workdir!r}, log_fn=lambda s: None)
print("RESULT" + json.dumps({{"pid": pid, "processes": jax.process_count(),
                             "devices": jax.device_count(), "critic_loss": rows[-1]["critic_loss"]}}))
jax.distributed.shutdown()
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_one_synchronised_step(tmp_path):
  workdir = str(tmp_path / "run")
  code = _WORKER.format(root=REPO_ROOT, tiny=TINY, port=_free_port(), workdir=workdir)
  procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=_env())
           for i in range(2)]
  results = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.split("RESULT", 1)[1]))
  assert [r["processes"] for r in results] == [2, 2]
  assert [r["devices"] for r in results] == [2, 2]
  assert results[0]["critic_loss"] == results[1]["critic_loss"]  # one synchronised update
  # Only process 0 wrote the run directory.
  with open(os.path.join(workdir, "metrics.csv")) as f:
    assert len(f.read().strip().splitlines()) == 2
  # One checkpoint: process 0's state and each process's own replay shard.
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["step_00000001"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "step_00000001"))) == [
      "replay-00000-of-00002.npz", "replay-00001-of-00002.npz", "state.npz"]
