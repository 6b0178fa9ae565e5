"""profiling/sweep_parallel_cpu.py: argument checks, the throughput it reads, and a real run."""

import os

import pytest

import sweep_parallel_cpu as spc
from tests.conftest import REPO_ROOT, TINY_RUN


@pytest.mark.parametrize("argv, message", [
    (["--modes=single,both"], "--modes: unknown ['both']"),
    (["--modes=,"], "--modes: unknown none given"),
    (["--budget_s=0"], "--budget_s must be > 0, got 0"),
    (["--config=configs/nope.py:depth=4"], "--config: no such file 'configs/nope.py'"),
])
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    spc.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_mode_arguments():
  assert spc.mode_args("single") == ["--seed_list=0"]
  assert spc.mode_args("pinned") == ["--seed_list=0,1", "--parallel=2"]
  assert spc.mode_args("unpinned") == ["--seed_list=0,1", "--parallel=2", "--nopin_cpus"]


def test_throughput_leaves_out_the_first_epoch(tmp_path):
  path = tmp_path / "metrics.csv"
  path.write_text("epoch,env_steps,wall_s\n1,1000,50.0\n2,2000,52.0\n3,3000,54.0\n")
  got = spc.steady_throughput(str(path))
  assert got == {"epochs": 3, "env_steps": 3000.0, "sps": 500.0}  # 2000 steps in 4 s
  path.write_text("epoch,env_steps,wall_s\n1,1000,50.0\n")
  with pytest.raises(ValueError, match="1 epoch\\(s\\) logged; need >= 2"):
    spc.steady_throughput(str(path))


@pytest.mark.slow
def test_a_real_measurement_of_two_modes(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR",
                     os.environ.get("DEEPCRL_TEST_JAX_CACHE", "/tmp/deepcrl_test_jax_cache"))
  config = (os.path.join(REPO_ROOT, "configs", "pointmass.py") + ":" + TINY_RUN +
            ",epochs=3,log.tensorboard=false,log.progress_every_s=0")
  assert spc.main([f"--config={config}", "--budget_s=600", f"--workdir={tmp_path}",
                   "--modes=single,pinned"]) == 0
  table = capsys.readouterr().out.split("| mode |", 1)[1]
  rows = [line.split("|")[1:-1] for line in table.splitlines()[2:] if line.startswith("|")]
  assert [r[0].strip() for r in rows] == ["single", "pinned"]
  assert [r[1].strip() for r in rows] == ["1", "2"]
  assert rows[0][2].strip() == "3" and rows[1][2].strip() == "3, 3"
  assert rows[0][5].strip() == "1.00" and float(rows[1][5]) > 0
