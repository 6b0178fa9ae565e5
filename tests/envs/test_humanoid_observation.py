"""The humanoid's published observation (``observation="published"``): brax's com inertia and
com velocity blocks, checked against C MuJoCo's own body quantities after MJX steps."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from deepcrl_core import config as config_lib
from deepcrl_core import envs

LINKS = slice(1, 13)  # torso ... left_lower_arm, target
INERTIA = slice(26 + 25, 26 + 25 + 120)
VELOCITY = slice(26 + 25 + 120, 26 + 25 + 120 + 72)


def _reference_blocks(m, qpos, qvel):
  """The published blocks written the way brax computes them, from C MuJoCo at qpos/qvel:
  the unit inertia moved to the centre of mass with brax's cross-product matrix ``h``, and the
  body's 6-d velocity at its centre of mass from ``mj_objectVelocity``."""
  d = mujoco.MjData(m)
  d.qpos[:], d.qvel[:] = qpos, qvel
  mujoco.mj_forward(m, d)
  mass = m.body_mass[LINKS]
  pos = d.xipos[LINKS]
  com = (mass[:, None] * pos).sum(0) / mass.sum()
  inertia, velocity = [], []
  for k, body in enumerate(range(1, 13)):
    h = np.cross(pos[k] - com, -np.eye(3))
    inertia.append(np.append((np.eye(3) + h @ h.T * mass[k]).ravel(), mass[k]))
    v = np.zeros(6)
    mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, body, v, 0)  # [ang, lin], world
    velocity.append(np.concatenate([mass[k] * v[3:] / mass.sum(), v[:3]]))
  return np.array(inertia), np.array(velocity)


# The maze env holds every part of the open one (and is the cheaper to compile).
@pytest.mark.parametrize("name", ["humanoid_u_maze", pytest.param("humanoid", marks=pytest.mark.slow)])
def test_published_observation_matches_brax_formulas_after_reset_and_steps(name):
  env = envs.make(name, observation="published")
  mujoco_env = envs.make(name)
  actions = jax.random.uniform(jax.random.PRNGKey(3), (6, env.action_size), minval=-1.0,
                               maxval=1.0)
  key = jax.random.PRNGKey(0)
  states = [jax.jit(env.reset)(key)]
  step = jax.jit(env.step)
  for a in actions:
    states.append(step(states[-1], a))
  mujoco_reset = jax.jit(mujoco_env.reset)(key)
  for t, state in enumerate(states):
    obs = np.asarray(state.obs, np.float64)
    qpos, qvel = np.asarray(state.data.qpos), np.asarray(state.data.qvel)
    np.testing.assert_array_equal(obs[:26], qpos)
    np.testing.assert_array_equal(obs[26:51], qvel)
    inertia, velocity = _reference_blocks(env.mj_model, qpos, qvel)
    got_inertia = obs[INERTIA].reshape(12, 10)
    got_velocity = obs[VELOCITY].reshape(12, 6)
    # the target's parallel-axis term grows with the goal distance (up to ~25 at 5 m)
    np.testing.assert_allclose(got_inertia, inertia, rtol=1e-4, atol=1e-4, err_msg=f"step {t}")
    np.testing.assert_allclose(got_velocity, velocity, rtol=1e-3, atol=1e-4, err_msg=f"step {t}")
    if t:
      assert np.abs(velocity[:11, 3:]).max() > 0.1  # the links move: the check has teeth
  # the rest of the state is the MuJoCo encoding's
  np.testing.assert_array_equal(np.asarray(states[0].obs)[:51], np.asarray(mujoco_reset.obs)[:51])
  np.testing.assert_array_equal(np.asarray(states[0].obs)[VELOCITY.stop:],
                                np.asarray(mujoco_reset.obs)[VELOCITY.stop:])
  assert not np.allclose(np.asarray(states[0].obs)[INERTIA], np.asarray(mujoco_reset.obs)[INERTIA])


def test_published_observation_ignores_the_physics_inertias():
  """The published code computes the blocks with the spring engine's unit inertias whatever
  the physics: the MJCF-inertia and unit-inertia humanoids observe the same blocks."""
  a = envs.make("humanoid", observation="published")
  b = envs.make("humanoid", observation="published", inertia="published")
  key = jax.random.PRNGKey(1)
  np.testing.assert_allclose(np.asarray(jax.jit(a.reset)(key).obs),
                             np.asarray(jax.jit(b.reset)(key).obs), rtol=1e-6)


def test_unknown_observation_is_named_by_the_validator():
  problems = config_lib.validation_problems(
      config_lib.paper_task_config("humanoid", "env.kwargs.observation=brax"))
  assert any("unknown humanoid observation 'brax'" in p for p in problems), problems
  with pytest.raises(ValueError, match="choose from"):
    envs.make("humanoid", observation="brax")
