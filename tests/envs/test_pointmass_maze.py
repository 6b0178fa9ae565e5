"""Point-mass mazes: contact-free walls (no tunnelling, never inside a wall, sliding), resets
like the published ant mazes, far-goal evaluation layouts, success, and that the U maze needs
a path around its wall."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import envs
from deepcrl_core.envs import mazes
from deepcrl_core.envs.pointmass import PointMass, next_wall_tables

MAZES = ("u", "u4", "big")


@pytest.fixture(scope="module")
def u_maze():
  return envs.make("pointmass_u_maze")


def _free_cells(maze):
  return {tuple(c) for ch in "RG." for c in maze.cells(ch)}


def _square_in_wall(maze, scale, xy, half):
  """Reference: whether the axis-aligned square of half side ``half`` at ``xy [..., 2]``
  overlaps a wall cell, by sampling its boundary densely (numpy, independent of the env)."""
  t = np.linspace(-half, half, 21)
  ring = np.concatenate([np.stack([t, np.full_like(t, s)], -1) for s in (-half, half)] +
                        [np.stack([np.full_like(t, s), t], -1) for s in (-half, half)])
  pts = np.asarray(xy)[..., None, :] + ring
  return maze.is_wall(pts, scale).any(-1)


def _bfs_path(maze, start, goal):
  grid = maze.grid
  prev = {start: None}
  queue = collections.deque([start])
  while queue:
    cell = queue.popleft()
    if cell == goal:
      break
    i, j = cell
    for nxt in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
      if grid[nxt[0]][nxt[1]] != "#" and nxt not in prev:
        prev[nxt] = cell
        queue.append(nxt)
  path = [goal]
  while prev[path[-1]] is not None:
    path.append(prev[path[-1]])
  return path[::-1]


@pytest.mark.parametrize("name", MAZES)
def test_registry_layouts_and_attributes(name):
  env = envs.make(f"pointmass_{name}_maze")
  ev = envs.make(f"pointmass_{name}_maze_eval")
  assert env.maze.name == name and ev.maze.name == f"{name}_eval"
  assert env.maze_scale == ev.maze_scale == 1.0
  assert env.success_radius == ev.success_radius == 0.2
  assert env.episode_length == ev.episode_length
  assert (env.state_size, env.goal_indices, env.action_size) == (4, (0, 1), 2)
  np.testing.assert_array_equal(env.maze.cells("#"), ev.maze.cells("#"))
  # Contact-free: no geom of the model can collide (visual walls only).
  assert not np.any(env.mj_model.geom_contype | env.mj_model.geom_conaffinity)
  assert env.mj_model.ngeom > envs.make("pointmass").mj_model.ngeom  # the walls are drawn


def test_open_arena_has_no_maze():
  env = envs.make("pointmass")
  assert env.maze is None


def test_next_wall_tables_by_hand():
  t = next_wall_tables(mazes.get_maze("u"))
  # Padded grid 7x7; layout cell (1, 1) = padded (2, 2). Column 1 of the layout: walls at
  # layout rows 0, 2, 4 -> padded 1, 3, 5.
  assert t[0, 2, 2] == 3 and t[1, 2, 2] == 1    # +i / -i from (1, 1)
  assert t[2, 2, 2] == 5 and t[3, 2, 2] == 1    # +j / -j: row 1 is #RGG# -> walls at j 0, 4
  assert t[0, 2, 4] == 5                        # column 3 is open from row 1 down to row 3
  assert t[0, 0, 0] == 0 and t[1, 6, 6] == 6    # the padding is wall


def test_resets_follow_the_published_ant_maze(u_maze):
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  states = jax.jit(jax.vmap(u_maze.reset))(keys)
  start = np.asarray(states.data.qpos)
  np.testing.assert_array_equal(np.asarray(states.data.qvel), 0.0)
  offset = start - u_maze.maze.start_xy(1.0)
  assert np.all(np.abs(offset) <= 0.1) and np.all(np.abs(offset).max(0) > 0.09)
  assert abs(offset.mean()) < 0.01  # uniform, centred
  goals = np.asarray(states.info["goal"])
  cells = {tuple(c) for c in u_maze.maze.cells("G")}
  counts = collections.Counter(tuple(g) for g in goals.astype(np.int64))
  np.testing.assert_array_equal(goals, np.round(goals))  # exact cell centres (scale 1)
  assert set(counts) == cells
  # Uniform over the 6 goal cells: each count within 5 sigma of 2000 / 6.
  p = 1 / len(cells)
  assert all(abs(c - 2000 * p) < 5 * np.sqrt(2000 * p * (1 - p)) for c in counts.values())
  np.testing.assert_array_equal(np.asarray(states.obs[:, 4:]), goals)


@pytest.mark.parametrize("name", MAZES)
def test_eval_layouts_reset_to_far_goals_only(name):
  ev = envs.make(f"pointmass_{name}_maze_eval")
  goals = np.asarray(jax.jit(jax.vmap(ev.reset))(
      jax.random.split(jax.random.PRNGKey(1), 400)).info["goal"])
  assert {tuple(g) for g in goals.astype(np.int64)} == {tuple(c) for c in ev.maze.cells("G")}


def test_goal_noise_is_uniform_around_the_cell_centre():
  env = PointMass(maze="u", goal_noise=0.2)
  goals = np.asarray(jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(2), 500))
                     .info["goal"])
  off = goals - np.round(goals)
  assert np.all(np.abs(off) <= 0.2) and np.abs(off).max() > 0.18


def test_success_is_exactly_the_radius(u_maze):
  goal = jnp.array([3.0, 1.0])
  for offset, success in ((0.199, 1.0), (0.201, 0.0)):
    m = u_maze.goal_metrics(goal + jnp.array([0.0, offset]), goal)
    assert float(m["success"]) == success


@pytest.mark.parametrize("name", ["u", "big"])
def test_resolver_matches_a_swept_reference(name):
  """Per-axis resolution against a numpy reference that sweeps each axis move in 1 mm steps
  and stops before the square first overlaps a wall, for random moves up to 3 m (far longer
  than a control step's 0.21 m, so tunnelling would show)."""
  env = PointMass(maze=name)
  maze, r = env.maze, env.ball_radius
  rng = np.random.default_rng(0)
  free = np.array(sorted(_free_cells(maze)), np.float64)
  old = free[rng.integers(len(free), size=300)] + rng.uniform(-0.45, 0.45, (300, 2))
  old = old[~_square_in_wall(maze, 1.0, old, r)][:150]
  new = old + rng.uniform(-3.0, 3.0, old.shape)
  vel = rng.uniform(-2, 2, old.shape)
  got_pos, got_vel = jax.jit(jax.vmap(env.resolve_walls))(
      jnp.asarray(old, jnp.float32), jnp.asarray(new, jnp.float32), jnp.asarray(vel, jnp.float32))
  got_pos, got_vel = np.asarray(got_pos), np.asarray(got_vel)
  step = 1e-3
  for k in range(len(old)):
    ref = old[k].copy()
    for axis in (0, 1):
      delta = new[k, axis] - ref[axis]
      n = max(1, int(np.ceil(abs(delta) / step)))
      trials = np.repeat(ref[None], n + 1, 0)
      trials[:, axis] += delta * np.arange(n + 1) / n
      inside = _square_in_wall(maze, 1.0, trials, r - 1e-5)
      blocked = bool(inside.any())
      ref = trials[np.argmax(inside) - 1] if blocked else trials[-1]
      if blocked and np.sign(vel[k, axis]) == np.sign(delta):
        assert got_vel[k, axis] == 0.0, (k, axis)   # pushing into the wall it touches
      elif not blocked:
        assert got_vel[k, axis] == np.float32(vel[k, axis]), (k, axis)
      np.testing.assert_allclose(got_pos[k, axis], ref[axis], atol=1.5 * step,
                                 err_msg=f"case {k}, axis {axis}")
      ref[axis] = got_pos[k, axis]  # the y move starts from the resolved x
  assert not _square_in_wall(maze, 1.0, got_pos, r - 1e-4).any()


def test_random_walk_never_enters_a_wall(compiled_env):
  """Many envs, random and full-throttle actions, long runs: the ball's square never overlaps
  a wall and its cell stays free; some balls touch walls (the test exercises them)."""
  ce = compiled_env("pointmass_big_maze")
  env = ce.env
  state = ce.reset(jax.random.split(jax.random.PRNGKey(3), 4))
  touched = 0
  for seed in range(60):
    # Alternate random actions and strong pushes in a random fixed direction.
    offset = np.random.default_rng(seed).uniform(-1, 1, 2) * (seed % 2)
    state = ce.step(state, action_scale=1.0, seed=seed, n=10, action_offset=offset)
    xy = np.asarray(state.data.qpos)
    assert not _square_in_wall(env.maze, 1.0, xy, env.ball_radius - 1e-4).any(), xy
    cells = {tuple(c) for c in np.floor(xy + 0.5).astype(np.int64)}
    assert cells <= _free_cells(env.maze)
    touched += int(_square_in_wall(env.maze, 1.0, xy, env.ball_radius + 1e-3).sum())
  assert touched > 0


def test_sliding_along_a_wall(u_maze):
  """Pushing diagonally into the wall below row 1: x stops at the wall (1.5 - r) with vx = 0,
  while y moves exactly as in an open arena (the axes are independent)."""
  open_env = PointMass(arena_size=10.0)
  steps = (jax.jit(u_maze.step), jax.jit(open_env.step))
  states = [u_maze.reset(jax.random.PRNGKey(4)), open_env.reset(jax.random.PRNGKey(4))]
  start = states[0].data.qpos
  states[1] = states[1].replace(data=states[1].data.replace(qpos=start))
  for _ in range(8):
    states = [step(st, jnp.array([1.0, 1.0])) for step, st in zip(steps, states)]
  x, y = np.asarray(states[0].data.qpos)
  vx, vy = np.asarray(states[0].data.qvel)
  assert x == pytest.approx(1.5 - u_maze.ball_radius, abs=1e-5) and vx == 0.0
  assert float(states[1].data.qpos[0]) > 1.6  # the open ball would have gone on
  np.testing.assert_allclose([y, vy], [states[1].data.qpos[1], states[1].data.qvel[1]],
                             rtol=1e-6)
  assert y - float(start[1]) > 0.5


def _drive(env, start, goal, waypoints, steps):
  """Closed-loop P controller through ``waypoints`` (cell centres), then the goal; returns
  the first step at which the ball is within the success radius (None if never)."""
  step = jax.jit(env.step)
  state = env.reset(jax.random.PRNGKey(0))
  data = state.data.replace(qpos=jnp.asarray(start, jnp.float32))
  state = state.replace(data=data, info={"goal": jnp.asarray(goal, jnp.float32)})
  targets = [np.asarray(w, np.float32) for w in waypoints] + [np.asarray(goal, np.float32)]
  k = 0
  for t in range(steps):
    xy = np.asarray(state.data.qpos)
    while k < len(targets) - 1 and np.linalg.norm(targets[k] - xy) < 0.3:
      k += 1
    state = step(state, jnp.asarray(np.clip(4.0 * (targets[k] - xy), -1, 1)))
    if float(state.metrics["success"]):
      return t + 1
  return None


def test_u_maze_needs_a_path_around_the_wall(u_maze):
  """Heading straight for the far goal never succeeds (the wall blocks it); following the BFS
  cell path reaches every far goal well within the episode."""
  ev = envs.make("pointmass_u_maze_eval")
  start = tuple(ev.maze.cells("R")[0])
  far = (3, 1)
  assert _drive(ev, start, far, [], ev.episode_length) is None
  for goal in map(tuple, ev.maze.cells("G")):
    t = _drive(ev, start, goal, _bfs_path(ev.maze, start, goal)[1:-1], ev.episode_length)
    assert t is not None and t < 0.6 * ev.episode_length, (goal, t)


@pytest.mark.parametrize("name", ["u4", "big"])
def test_far_goals_reachable_within_the_episode(name):
  ev = envs.make(f"pointmass_{name}_maze_eval")
  start = tuple(ev.maze.cells("R")[0])
  goals = list(map(tuple, ev.maze.cells("G")))
  far = max(goals, key=lambda g: len(_bfs_path(ev.maze, start, g)))
  t = _drive(ev, start, far, _bfs_path(ev.maze, start, far)[1:-1], ev.episode_length)
  assert t is not None and t < 0.75 * ev.episode_length, (far, t)


@pytest.mark.parametrize("kwargs, match", [
    ({"maze": "u", "ball_radius": 0.5}, "ball_radius 0.5"),
    ({"maze": "u", "reset_noise": 0.5}, "reset_noise 0.5"),
    ({"maze": "u", "goal_noise": -0.1}, "goal_noise -0.1"),
    ({"maze": "nope"}, "unknown maze 'nope'"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    PointMass(**kwargs)


@pytest.mark.parametrize("name", ["pointmass_u_maze", "pointmass_big_maze"])
def test_maze_configs_validate_and_evaluate_on_the_far_goals(name):
  from deepcrl_core import config as config_lib
  from tests.conftest import load_config
  c = load_config(name)
  assert config_lib.validation_problems(c) == []
  assert config_lib.eval_env_name(c) == f"{name}_eval"
  assert c.env.episode_length == envs.make(name).episode_length
