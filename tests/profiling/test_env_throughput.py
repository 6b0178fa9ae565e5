"""profiling/env_throughput.py: argument checks, and the constructor arguments each task is
measured with (its config's, updated by ``--env_kwargs``)."""

import pytest

import env_throughput


@pytest.mark.parametrize("argv, message", [
    (["--tasks=ant,antt"], "--tasks: "),
    (["--env_kwargs=observation"], "--env_kwargs: malformed override 'observation'"),
    (["--num_envs=0"], "--num_envs=0: expected >= 1"),
    (["--tasks=pointmass,humanoid", "--env_kwargs=observation=brax"],
     "--env_kwargs: task 'pointmass' rejects {'observation': 'brax'}"),
    (["--tasks=humanoid", "--env_kwargs=observation=brax"],
     "task 'humanoid' rejects {'observation': 'brax'}: unknown humanoid observation 'brax'"),
])
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    env_throughput.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_tasks_are_measured_with_their_configs_env_kwargs_and_the_flag(monkeypatch, capsys):
  built = []

  def fake_measure(name, num_envs, scan_length, repeats, env_kwargs=None, **_):
    built.append((name, env_kwargs))
    return {"task": name, "reset_mode": "fresh", "steps_per_s": 1.0, "cpu_us_per_step": 1.0,
            "compile_s": 0.0, "dt": 0.05, "slots": 4, "finite": True, "reset_cpu_us": None}

  monkeypatch.setattr(env_throughput, "measure", fake_measure)
  assert env_throughput.main(["--tasks=ant,humanoid,pointmass",
                              "--env_kwargs=episode_length=7"]) == 0
  assert built == [("ant", {"mass": "published", "episode_length": 7}),
                   ("humanoid", {"observation": "published", "episode_length": 7}),
                   ("pointmass", {"episode_length": 7})]
  assert "and env kwargs episode_length=7" in capsys.readouterr().out
  built.clear()
  assert env_throughput.main(["--tasks=humanoid", "--env_kwargs=observation=mujoco"]) == 0
  assert built == [("humanoid", {"observation": "mujoco"})]


def test_a_real_measurement_runs_with_the_kwargs():
  r = env_throughput.measure("pointmass", 2, 2, 1, env_kwargs={"episode_length": 3})
  assert r["finite"] and r["steps_per_s"] > 0
