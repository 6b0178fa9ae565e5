"""profiling/humanoid_actuation.py: argument checks and one tiny table."""

import pytest

import humanoid_actuation


@pytest.mark.parametrize("argv, message", [
    (["--scripts=zero,jump"], "--scripts=zero,jump: expected a comma-separated subset"),
    (["--inertias=unit"], "--inertias=unit: expected a comma-separated subset"),
    (["--episodes=0"], "--episodes and --steps must be positive"),
])
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    humanoid_actuation.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_a_row_per_actuation_and_inertia(capsys):
  assert humanoid_actuation.main(["--episodes=1", "--steps=3", "--scripts=zero"]) == 0
  rows = [l for l in capsys.readouterr().out.splitlines() if l.startswith("| zero |")]
  assert [tuple(c.strip() for c in r.strip("|").split("|")[1:4]) for r in rows] == [
      ("gymnasium", "mjcf", "1/1"), ("published", "mjcf", "1/1"),
      ("gymnasium", "published", "1/1"), ("published", "published", "1/1")]
