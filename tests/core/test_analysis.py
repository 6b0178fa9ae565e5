"""deepcrl_core.analysis and launch/analyze.py: the plain-jnp trunk against Haiku, residual
norms (hand case, float64 reference, the CSV a training run writes), critic maps and the
critic-map launcher end to end on a tiny maze run."""

import csv
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import analysis
from deepcrl_core import checkpoint as ckpt
from deepcrl_core import envs
from deepcrl_core import networks as nets
from deepcrl_core import train as train_lib
from tests.conftest import REPO_ROOT, assert_close_to_rounding
from tests.conftest import load_config as load

DEPTH, WIDTH = 8, 32
# A maze run that trains for seconds (TINY_RUN-like sizes, short episodes, 2 evaluations).
TINY_MAZE = ("width=32,num_envs=16,batch=64,epochs=2,train.unroll_length=10,train.sgd_steps=4,"
             "train.prefill_steps=20,train.train_steps_per_epoch=2,replay.capacity=100,"
             "replay.window_length=20,eval.num_envs=16,env.episode_length=20,checkpoint.every=1,"
             "log.tensorboard=false")


def _perturbed(params, key, scale=0.3):
  """Params moved off their initialisation (zero biases, unit LayerNorm scales) so every term
  of the forward pass matters."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def networks():
  spec = nets.NetworkSpec(state_size=4, goal_size=2, action_size=2, actor_depth=DEPTH,
                          critic_depth=DEPTH, width=WIDTH, repr_dim=16, kernel_impl="xla")
  n = nets.make_networks(spec)
  actor, critic = nets.init_params(n, jax.random.PRNGKey(0))
  actor = _perturbed(actor, jax.random.PRNGKey(1), 0.05)
  critic = _perturbed(critic, jax.random.PRNGKey(2), 0.05)
  obs = jax.random.normal(jax.random.PRNGKey(3), (64, 6))
  return n, actor, critic, obs


def test_trunk_forward_equals_haiku_to_rounding(networks):
  n, actor, critic, obs = networks
  mean, _ = n.actor.apply(actor, obs)
  out, _, _ = analysis.trunk_forward(analysis.trunk_params(actor, "actor"), obs)
  terms = DEPTH * WIDTH
  assert_close_to_rounding(out[:, :2], mean, terms=terms)
  action = jnp.tanh(mean)
  phi, psi = n.critic.apply(critic, obs[:, :4], action, obs[:, 4:])
  inputs = analysis.network_inputs(obs, 4, action_size=2, actor_params=actor,
                                   critic_params=critic)
  assert set(inputs) == set(analysis.NETWORKS)
  phi2 = analysis.trunk_forward(analysis.trunk_params(critic, "sa_encoder"),
                                inputs["sa_encoder"])[0]
  psi2 = analysis.trunk_forward(analysis.trunk_params(critic, "goal_encoder"),
                                inputs["goal_encoder"])[0]
  assert_close_to_rounding(phi2, phi, terms=terms)
  assert_close_to_rounding(psi2, psi, terms=terms)
  # The tolerance is far below a real difference: one bias of the last block moved by 1e-3
  # already fails it.
  moved = jax.tree.map(lambda x: x, critic)
  moved["goal_encoder"] = dict(moved["goal_encoder"])
  moved["goal_encoder"]["blocks_b"] = moved["goal_encoder"]["blocks_b"].at[-1, 0, 0].add(1e-3)
  psi3 = analysis.trunk_forward(analysis.trunk_params(moved, "goal_encoder"),
                                inputs["goal_encoder"])[0]
  with pytest.raises(AssertionError):
    assert_close_to_rounding(psi3, psi, terms=terms)


def _reference_norms64(tp, x):
  """Float64 numpy forward of a residual trunk, written out layer by layer."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), tp._asdict())

  def layer(h, w, b, s, o):
    z = h @ w + b
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5) * s + o
    return z / (1.0 + np.exp(-z))

  h = layer(np.asarray(x, np.float64), p["input_w"], p["input_b"], p["input_scale"],
            p["input_offset"])
  branch, stream = [], [np.linalg.norm(h, axis=-1).mean()]
  blocks = p["blocks"]
  for k in range(blocks["w"].shape[0]):
    f = h
    for i in range(4):
      f = layer(f, blocks["w"][k, i], blocks["b"][k, i], blocks["scale"][k, i],
                blocks["offset"][k, i])
    h = h + f
    branch.append(np.linalg.norm(f, axis=-1).mean())
    stream.append(np.linalg.norm(h, axis=-1).mean())
  return np.array(branch), np.array(stream)


def test_norms_match_a_float64_reference(networks):
  _, actor, critic, obs = networks
  inputs = analysis.network_inputs(obs, 4, action_size=2, actor_params=actor,
                                   critic_params=critic)
  norms = analysis.network_residual_norms(inputs, actor, critic)
  for name in analysis.NETWORKS:
    params = actor if name == "actor" else critic
    branch, stream = _reference_norms64(analysis.trunk_params(params, name), inputs[name])
    assert norms[name][0].shape == (DEPTH // 4,) and norms[name][1].shape == (DEPTH // 4 + 1,)
    np.testing.assert_allclose(norms[name][0], branch, rtol=2e-5)
    np.testing.assert_allclose(norms[name][1], stream, rtol=2e-5)


def test_norms_by_hand_with_zero_block_weights(networks):
  """With zero block weights and biases, each block layer's LayerNorm sees a constant row and
  outputs its offset, so every block adds the same vector swish(offset of its last layer):
  branch norm = ||swish(o)||, stream after block k = mean ||h0 + (k + 1) swish(o)||."""
  _, actor, _, obs = networks
  tp = analysis.trunk_params(actor, "actor")
  n = tp.blocks["w"].shape[0]
  offset = jnp.linspace(-1.0, 2.0, WIDTH)
  blocks = {"w": jnp.zeros_like(tp.blocks["w"]), "b": jnp.zeros_like(tp.blocks["b"]),
            "scale": tp.blocks["scale"], "offset": jnp.broadcast_to(offset, tp.blocks["b"].shape)}
  tp = tp._replace(blocks=blocks)
  _, branch, stream = analysis.trunk_forward(tp, obs)
  add = np.asarray(offset / (1 + np.exp(-offset)), np.float64)
  z = np.asarray(obs, np.float64) @ np.asarray(tp.input_w, np.float64) + np.asarray(tp.input_b)
  z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)
  z = z * np.asarray(tp.input_scale) + np.asarray(tp.input_offset)
  h0 = z / (1 + np.exp(-z))
  np.testing.assert_allclose(branch, np.full(n, np.linalg.norm(add)), rtol=1e-5)
  want = [np.linalg.norm(h0 + k * add, axis=-1).mean() for k in range(n + 1)]
  np.testing.assert_allclose(stream, want, rtol=1e-5)


def test_a_simba_trunk_is_refused_by_name():
  spec = nets.NetworkSpec(4, 2, 2, 8, 8, 16, block="simba", kernel_impl="xla")
  actor, _ = nets.init_params(nets.make_networks(spec), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="not a residual trunk.*simba"):
    analysis.trunk_params(actor, "actor")
  with pytest.raises(ValueError, match="no trunk 'sa_encoder'"):
    analysis.trunk_params(actor, "sa_encoder")


def test_networks_that_do_not_exist_are_skipped(networks):
  _, actor, critic, obs = networks
  only_goal = {k: v for k, v in critic.items() if k.startswith("goal_encoder")}
  inputs = analysis.network_inputs(obs, 4, action_size=2, actor_params=None,
                                   critic_params=only_goal)
  assert set(inputs) == {"goal_encoder"}
  # No actor and no policy: the sa_encoder has no action to read.
  assert set(analysis.network_inputs(obs, 4, action_size=2, critic_params=critic)) == {
      "goal_encoder"}
  assert set(analysis.network_inputs(obs, 4, action_size=2, actor_params=actor)) == {"actor"}


def test_norm_rows_format():
  norms = {"goal_encoder": (np.array([1.0, 2.0]), np.array([0.5, 1.5, 2.5])),
           "actor": (np.array([3.0, 4.0]), np.array([1.0, 2.0, 3.0]))}
  rows = analysis.norm_rows(7, 1234, norms)
  assert [(r["network"], r["block"]) for r in rows] == [
      ("actor", -1), ("actor", 0), ("actor", 1),
      ("goal_encoder", -1), ("goal_encoder", 0), ("goal_encoder", 1)]
  assert rows[0]["branch_norm"] == "" and float(rows[0]["stream_norm"]) == 1.0
  assert float(rows[2]["branch_norm"]) == 4.0 and float(rows[2]["stream_norm"]) == 3.0
  assert all(tuple(r) == analysis.NORM_COLUMNS for r in rows)


def test_resume_drops_rows_after_the_restored_epoch(tmp_path):
  path = str(tmp_path / "residual_norms.csv")
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=analysis.NORM_COLUMNS)
    w.writeheader()
    for epoch in (1, 2, 3):
      w.writerows(analysis.norm_rows(epoch, 10 * epoch, {"actor": ([1.0], [1.0, 2.0])}))
  analysis._truncate_after(path, 2)
  with open(path) as f:
    rows = list(csv.DictReader(f))
  assert {int(r["epoch"]) for r in rows} == {1, 2} and len(rows) == 4


def test_default_callbacks_include_the_logger_unless_disabled(tmp_path):
  for enabled in (True, False):
    c = train_lib.build(load("pointmass_u_maze", f"{TINY_MAZE},eval.residual_norms={enabled}"))
    kinds = [type(cb) for cb in train_lib.default_callbacks(c, str(tmp_path))]
    assert (analysis.ResidualNormsLogger in kinds) == enabled


# --- a tiny trained maze run ------------------------------------------------------------


@pytest.fixture(scope="module")
def maze_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("analysis") / "maze")
  config = load("pointmass_u_maze", TINY_MAZE)
  train_lib.train(config, path, log_fn=lambda s: None)
  c = train_lib.build(config)
  directory = os.path.join(path, "checkpoints")
  step = ckpt.latest_complete_step(directory)
  tree, _, _ = ckpt.RunCheckpointer(directory).restore(
      step, {"training": c.shapes.training, "env_state": c.shapes.env_state})
  return path, c, jax.tree.map(jnp.asarray, tree)


def test_training_writes_residual_norms_csv(maze_run):
  path, c, tree = maze_run
  with open(os.path.join(path, "residual_norms.csv"), newline="") as f:
    header = next(csv.reader(f))
    f.seek(0)
    rows = list(csv.DictReader(f))
  assert tuple(header) == analysis.NORM_COLUMNS
  blocks = c.config.network.depth // 4
  assert len(rows) == 2 * 3 * (blocks + 1)   # 2 evaluations x 3 networks x (blocks + input)
  assert [int(r["epoch"]) for r in rows[::blocks + 1]] == [1, 1, 1, 2, 2, 2]
  assert [r["network"] for r in rows[:3 * (blocks + 1):blocks + 1]] == list(analysis.NETWORKS)
  for r in rows:
    assert (r["branch_norm"] == "") == (r["block"] == "-1")
    assert float(r["stream_norm"]) > 0
  # The last evaluation's norms are those of the final state's params and env observations
  # (both in the final checkpoint), with actions from the deterministic policy.
  training, obs = tree["training"], tree["env_state"].obs
  policy = lambda o: c.agent.policy(training.actor_params, o)
  inputs = analysis.network_inputs(obs, c.env.state_size, action_size=c.env.action_size,
                                   actor_params=training.actor_params,
                                   critic_params=training.critic_params, policy=policy)
  want = analysis.norm_rows(2, int(rows[-1]["env_steps"]), analysis.network_residual_norms(
      inputs, training.actor_params, training.critic_params))
  for got, ref in zip(rows[3 * (blocks + 1):], want):
    assert (got["network"], int(got["block"])) == (ref["network"], ref["block"])
    for key in ("branch_norm", "stream_norm"):
      if ref[key]:
        assert float(got[key]) == pytest.approx(float(ref[key]), rel=1e-5)


def test_critic_map_on_the_u_maze(maze_run):
  _, c, tree = maze_run
  training = tree["training"]
  env = envs.make("pointmass_u_maze_eval")
  cm = analysis.critic_map(env, c.agent.networks, training.actor_params,
                           training.critic_params, (3.0, 1.0), resolution=20,
                           loss_cfg=c.agent.loss_cfg)
  assert cm.values.shape == cm.mask.shape == (20, 20)
  np.testing.assert_allclose(cm.xs, -0.5 + 0.25 * (np.arange(20) + 0.5), atol=1e-6)
  gx, gy = np.meshgrid(cm.xs, cm.ys, indexing="ij")
  np.testing.assert_array_equal(cm.mask, env.maze.is_wall(np.stack([gx, gy], -1), 1.0))
  assert 0 < cm.mask.sum() < cm.mask.size
  assert np.all(np.isnan(cm.values[cm.mask])) and np.all(np.isfinite(cm.values[~cm.mask]))
  # One free point by hand: state (x, y, 0, 0), goal (3, 1), deterministic action.
  i, j = np.argwhere(~cm.mask)[3]
  state = jnp.array([[cm.xs[i], cm.ys[j], 0.0, 0.0]])
  goal = jnp.array([[3.0, 1.0]])
  mean, _ = c.agent.networks.actor.apply(training.actor_params, jnp.concatenate([state, goal], -1))
  phi, psi = c.agent.networks.critic.apply(training.critic_params, state, jnp.tanh(mean), goal)
  assert cm.values[i, j] == pytest.approx(float(jnp.linalg.norm(phi - psi)), rel=1e-5)


def test_critic_map_errors_name_the_problem(maze_run):
  _, c, tree = maze_run
  t = tree["training"]
  args = (c.agent.networks, t.actor_params, t.critic_params)
  with pytest.raises(ValueError, match="env 'pointmass' has no maze"):
    analysis.critic_map(envs.make("pointmass"), *args, (0.0, 0.0), env_name="pointmass")
  maze_env = envs.make("pointmass_u_maze")
  with pytest.raises(ValueError,
                     match=r"goal \(2.0, 1.0\) is inside a wall of maze 'u' \(cell \(2, 1\)\)"):
    analysis.critic_map(maze_env, *args, (2.0, 1.0))
  with pytest.raises(ValueError, match="outside maze 'u'"):
    analysis.critic_map(maze_env, *args, (-3.0, 1.0))


@pytest.mark.parametrize("name", ["ant_u4_maze_eval", "humanoid_u_maze_eval"])
def test_critic_map_on_the_paper_mazes(name):
  """Ant (goal xy) and humanoid (goal xyz) mazes, untrained networks: the grid point's xy go
  into state[0:2] of the reset state, the goal's extra entries come from the reset goal."""
  env = envs.make(name)
  spec = nets.NetworkSpec(env.state_size, env.goal_size, env.action_size, 4, 4, 16,
                          repr_dim=8, kernel_impl="xla")
  n = nets.make_networks(spec)
  actor, critic = nets.init_params(n, jax.random.PRNGKey(0))
  scale = env.maze_scale
  goal = env.maze.goal_xy(scale)[-1]
  cm = analysis.critic_map(env, n, actor, critic, goal, resolution=6)
  assert cm.values.shape == (6, 6) and np.all(np.isfinite(cm.values[~cm.mask]))
  obs0 = np.asarray(jax.jit(env.reset)(jax.random.PRNGKey(0)).obs)
  i, j = np.argwhere(~cm.mask)[0]
  state = obs0[:env.state_size].copy()
  state[:2] = cm.xs[i], cm.ys[j]
  g = obs0[env.state_size:].copy()
  g[:2] = goal
  mean, _ = n.actor.apply(actor, np.concatenate([state, g])[None])
  phi, psi = n.critic.apply(critic, state[None], jnp.tanh(mean), g[None])
  assert cm.values[i, j] == pytest.approx(float(jnp.linalg.norm(phi - psi)), rel=1e-5)


def _analyze(*args, timeout=300):
  return subprocess.run([sys.executable, "launch/analyze.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_analyze_draws_a_png_with_masked_walls(maze_run, tmp_path):
  path, _, _ = maze_run
  out = str(tmp_path / "map.png")
  proc = _analyze(f"--workdir={path}", "--goal=3,1", f"--out={out}", "--resolution=25")
  assert proc.returncode == 0, proc.stderr[-2000:]
  # 25 x 25 pixels over the 5 x 5 cells: the 7 free cells of u_eval hold 7 * 25 pixels.
  assert "critic distance over 175 free positions of pointmass_u_maze_eval" in proc.stdout
  assert "450 in walls" in proc.stdout
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  import matplotlib.image as mpimg
  image = mpimg.imread(out)
  assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
  grey = np.all(np.abs(image[..., :3] - 0.35) < 0.02, axis=-1)   # the walls' fill colour
  assert grey.mean() > 0.1


def test_analyze_refuses_a_goal_in_a_wall(maze_run):
  path, _, _ = maze_run
  proc = _analyze(f"--workdir={path}", "--goal=2,2")
  assert proc.returncode == 2 and "inside a wall of maze 'u_eval'" in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr


def test_analyze_refuses_a_run_without_a_maze(tmp_path):
  # A checkpoint as training writes it, of an open-arena run (the refusal needs only its config).
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "open")
  config = config_lib.resolved_dict(load("pointmass", TINY_MAZE))
  ckpt.RunCheckpointer(os.path.join(path, "checkpoints"), asynchronous=False).save(
      1, {"epoch": np.int32(1)}, None, {"epoch": 1, "env_steps": 0, "config": config})
  proc = _analyze(f"--workdir={path}", "--goal=0,0")
  assert proc.returncode == 2, proc.stderr
  assert "env 'pointmass' has no maze" in proc.stderr and "Traceback" not in proc.stderr


def test_by_goal_cell_groups_episodes_by_nearest_goal_cell():
  env = envs.make("pointmass_u_maze_eval")   # goal cells (3, 1), (3, 2), (3, 3), 1 m apart
  # Goals near cell centres (as with goal noise), the humanoid-style extra goal entry ignored.
  goal = np.array([[3.1, 0.9, 7.0], [2.9, 1.2, 7.0], [3.0, 3.3, 7.0], [3.2, 2.8, 7.0]])
  episodes = {"goal": goal, "success": np.array([1.0, 0.0, 1.0, 1.0]),
              "time_at_goal": np.array([10.0, 0.0, 30.0, 50.0]),
              "final_dist": np.array([0.1, 2.0, 0.05, 0.15]), "episode_length": np.ones(4),
              "final_position": np.array([[3.0, 1.0], [1.4, 1.0], [3.0, 3.0], [3.1, 3.0]])}
  rows = analysis.by_goal_cell(env, episodes)
  assert [r["cell"] for r in rows] == [(3, 1), (3, 2), (3, 3)]
  assert [r["episodes"] for r in rows] == [2, 0, 2]
  assert rows[0]["success"] == 0.5 and rows[0]["time_at_goal"] == 5.0
  assert rows[0]["final_dist"] == pytest.approx(1.05)
  assert np.isnan(rows[1]["success"]) and rows[2]["time_at_goal"] == 40.0
  table = analysis.goal_table(rows).splitlines()
  assert len(table) == 5
  assert rows[0]["final_x"] == pytest.approx(2.2) and rows[2]["final_x"] == pytest.approx(3.05)
  assert table[2] == "| (3, 1) | 6 | 3, 1 | 2 | 0.50 | 5.0 | 1.05 | 2.20, 1.00 |"
  assert [r["path"] for r in rows] == [6, 5, 4]
  with pytest.raises(ValueError, match="'pointmass' has no maze"):
    analysis.by_goal_cell(envs.make("pointmass"), episodes, env_name="pointmass")


def test_by_path_length_pools_cells_weighted_by_episodes():
  rows = [{"path": 3, "episodes": 1, "success": 1.0, "time_at_goal": 40.0, "final_dist": 0.1},
          {"path": 1, "episodes": 0, "success": float("nan"), "time_at_goal": float("nan"),
           "final_dist": float("nan")},
          {"path": 3, "episodes": 3, "success": 0.0, "time_at_goal": 0.0, "final_dist": 2.1},
          {"path": 2, "episodes": 2, "success": 0.5, "time_at_goal": 10.0, "final_dist": 1.0}]
  pooled = analysis.by_path_length(rows)
  assert [(r["path"], r["cells"], r["episodes"]) for r in pooled] == [(1, 1, 0), (2, 1, 2),
                                                                      (3, 2, 4)]
  assert np.isnan(pooled[0]["success"])   # no episode drew the path-1 cell
  # Episode-weighted, not the mean of the two cells' means (0.5, 20.0, 1.1).
  assert pooled[2]["success"] == 0.25 and pooled[2]["time_at_goal"] == 10.0
  assert pooled[2]["final_dist"] == pytest.approx(1.6)
  table = analysis.path_table(pooled).splitlines()
  assert table[0].startswith("| path (cells) | goal cells | episodes |") and len(table) == 5
  assert table[4] == "| 3 | 2 | 4 | 0.25 | 10.0 | 1.60 |"


def test_episode_ends_groups_by_cause_and_rejects_unknown_codes():
  class _Env:
    termination_causes = ("torso_low", "torso_high")

  episodes = {"terminated": np.array([0.0, 1.0, 1.0, 1.0, 1.0]),
              "end_cause": np.array([0, 2, 2, 1, 0], np.int32),
              "success": np.array([1.0, 0.0, 1.0, 0.0, 0.0]),
              "time_at_goal": np.array([40.0, 0.0, 10.0, 0.0, 0.0]),
              "episode_length": np.array([1000.0, 100.0, 300.0, 50.0, 20.0])}
  rows = analysis.episode_ends(_Env(), episodes)
  assert [r["end"] for r in rows] == [analysis.TIME_LIMIT, "torso_low", "torso_high",
                                      analysis.UNNAMED_CAUSE]
  assert [r["episodes"] for r in rows] == [1, 1, 2, 1]
  assert sum(r["share"] for r in rows) == pytest.approx(1.0)
  high = rows[2]
  assert high["success"] == 0.5 and high["time_at_goal"] == 5.0
  assert high["episode_length"] == 200.0 and high["median_length"] == 200.0
  assert rows[0]["median_length"] == 1000.0
  assert (analysis.ends_table(rows).splitlines()[4]
          == "| torso_high | 2 | 0.40 | 0.50 | 5.0 | 200 | 200 |")
  # ways no episode took are left out
  only_limit = dict(episodes, terminated=np.zeros(5), end_cause=np.zeros(5, np.int32))
  assert [r["end"] for r in analysis.episode_ends(_Env(), only_limit)] == [analysis.TIME_LIMIT]
  with pytest.raises(ValueError, match="end_cause codes must lie in 0..2"):
    analysis.episode_ends(_Env(), dict(episodes, end_cause=np.array([0, 3, 1, 1, 0])))


def test_stored_trajectories_reads_a_wrapped_ring_buffer():
  from deepcrl_core import replay
  cap, oldest = 10, 3
  ids = np.array([[5, 5, 6, 6, 6, 7, 7, 7, 7, 8], [0] * 10]).T            # chronological
  x = np.stack([np.arange(10.0), np.zeros(10)], axis=1)                   # env 0 moves along x
  obs = np.stack([x, np.zeros((10, 2)), np.full((10, 2), 10.0)], axis=-1)  # [x, y, goal x]
  ring = (oldest + np.arange(cap)) % cap
  buf = replay.ReplayState(obs=np.zeros_like(obs), action=np.zeros((cap, 2, 1)),
                           traj_id=np.zeros_like(ids), insert_pos=np.int32(oldest),
                           size=np.int32(cap))
  buf.obs[ring], buf.traj_id[ring] = obs, ids
  t = analysis.stored_trajectories(buf, goal_indices=(0,), state_size=2)
  # env 0: episodes 6 and 7 are complete (5 may have begun earlier, 8 is running); env 1: none
  np.testing.assert_array_equal(t["length"], [3, 4])
  np.testing.assert_allclose(t["travel"], [2.0, 3.0])
  np.testing.assert_allclose(t["goal_distance"], [8.0, 5.0])
