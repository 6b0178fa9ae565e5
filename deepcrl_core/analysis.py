"""Looks inside trained networks: per-block residual norms and critic distance maps over mazes.

Residual norms (the paper's appendix A.7 figure): for a residual trunk
(:class:`deepcrl_core.networks.ResidualTrunk`: ``Dense -> LayerNorm -> Swish``, then blocks
``h <- h + f(h)`` with ``f`` four ``Dense -> LayerNorm -> Swish`` layers, then an output
``Dense``), :func:`trunk_forward` recomputes the forward pass in plain ``jnp`` from the
trunk's Haiku parameters and returns, per block, the mean over the batch of the L2 norm of the
branch output ``f(h)`` (before the skip add) and of the residual stream after the block.
:func:`network_residual_norms` does it for the actor and both critic encoders
(``sa_encoder`` on ``[state, deterministic action]``, ``goal_encoder`` on the goal), and
:class:`ResidualNormsLogger` appends them to ``RUN/residual_norms.csv`` at every evaluation
(columns :data:`NORM_COLUMNS`; ``block`` -1 is the stream after the input layer, with an empty
``branch_norm``).

Critic maps (the paper's section 4.5): :func:`critic_map` evaluates the critic's distance
``||phi(s, pi(s, g)) - psi(g)||`` (or ``-energy`` for other energies) over a grid of positions
covering a maze, for a fixed goal; ``launch/analyze.py`` draws it.

Goal breakdown: :func:`by_goal_cell` groups evaluation episodes
(:func:`deepcrl_core.agents.evaluate_episodes`) by the maze goal cell they aimed at, so a
success rate of 0.67 over three goal cells reads as "two solved, one never" rather than an
average; :func:`by_path_length` pools the cells by their corridor distance from the start;
``launch/evaluate.py --by_goal`` prints both.

Episode ends: :func:`episode_ends` groups evaluation episodes by how they ended -- the time
limit, or which of the env's termination causes (the ant's torso below or above its healthy
height range, ...) -- so a falling episode length reads as "the ant jumps" or "the ant flips";
``launch/evaluate.py`` prints it whenever an episode terminated.
"""

from __future__ import annotations

import csv
import functools
import os
import time
import tempfile
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl_core import callbacks as cb_lib
from deepcrl_core import distributed

# Haiku module names of the CRL networks (deepcrl_core.networks.make_networks).
NETWORKS = ("actor", "sa_encoder", "goal_encoder")
NORM_COLUMNS = ("epoch", "env_steps", "network", "block", "branch_norm", "stream_norm")
LAYERS_PER_BLOCK = 4
LN_EPS = 1e-5   # networks.ResidualTrunk's LayerNorm eps (input LayerNorm and block layers)
RESIDUAL_PARAMS = ("blocks_w", "blocks_b", "blocks_scale", "blocks_offset")


class TrunkParams(NamedTuple):
  """A residual trunk's parameters, unpacked from its Haiku dict (:func:`trunk_params`)."""
  input_w: jax.Array       # [in, W]
  input_b: jax.Array       # [W]
  input_scale: jax.Array   # [W] input LayerNorm
  input_offset: jax.Array  # [W]
  blocks: Dict[str, jax.Array]  # w [n, 4, W, W], b / scale / offset [n, 4, W]
  output_w: jax.Array      # [W, out]
  output_b: jax.Array      # [out]


def has_trunk(params, name: str) -> bool:
  """Whether the Haiku ``params`` hold a trunk module called ``name`` (of any block type)."""
  return hasattr(params, "keys") and name in params


def trunk_params(params, name: str) -> TrunkParams:
  """The residual trunk ``name`` of Haiku ``params`` (e.g. the actor's, or the critic's
  ``sa_encoder``); raises ValueError naming what is missing, or the block type when the trunk
  is not a residual one (``network.block=simba`` has no branch/skip split to measure)."""
  if not has_trunk(params, name):
    known = sorted(k for k in (params if hasattr(params, "keys") else ()) if "/" not in k)
    raise ValueError(f"no trunk {name!r} in these parameters (top-level modules: {known})")
  core = params[name]
  if "blocks_scaler" in core or "blocks_alpha" in core:
    raise ValueError(
        f"trunk {name!r} is not a residual trunk (parameters {sorted(core)}): residual norms "
        "support network.block=residual only, not simba")
  missing = [k for k in RESIDUAL_PARAMS if k not in core]
  missing += [f"{name}/{m}" for m in ("input", "input_ln", "output") if f"{name}/{m}" not in params]
  if missing:
    raise ValueError(f"trunk {name!r} lacks {missing} (has {sorted(core)})")
  return TrunkParams(
      params[f"{name}/input"]["w"], params[f"{name}/input"]["b"],
      params[f"{name}/input_ln"]["scale"], params[f"{name}/input_ln"]["offset"],
      {"w": core["blocks_w"], "b": core["blocks_b"], "scale": core["blocks_scale"],
       "offset": core["blocks_offset"]},
      params[f"{name}/output"]["w"], params[f"{name}/output"]["b"])


def _dense_ln_swish(h, w, b, scale, offset, matmul_dtype=None):
  dtype = matmul_dtype or jnp.float32
  z = jnp.dot(h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32) + b
  mean = jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
  z = (z - mean) / jnp.sqrt(var + LN_EPS) * scale + offset
  return z * jax.nn.sigmoid(z)


def _mean_norm(x):
  return jnp.mean(jnp.linalg.norm(x, axis=-1))


def trunk_forward(tp: TrunkParams, x, matmul_dtype=None):
  """``x [batch, in]`` through the trunk ``tp`` -> ``(out [batch, out], branch [n],
  stream [n + 1])``: ``branch[k]`` is the batch mean of ``||f_k(h)||`` (block k's MLP output
  before the skip add), ``stream[0]`` of ``||h||`` after the input layer and ``stream[k + 1]``
  after block k. ``matmul_dtype`` as the trunk's (``None``: float32 matmuls; the input and
  output layers are float32 either way, as in the trunk). Blocks run in one ``lax.scan``."""
  x = jnp.asarray(x, jnp.float32)
  h = _dense_ln_swish(x, tp.input_w, tp.input_b, tp.input_scale, tp.input_offset)

  def block(h, p):
    f = h
    for i in range(LAYERS_PER_BLOCK):
      f = _dense_ln_swish(f, p["w"][i], p["b"][i], p["scale"][i], p["offset"][i], matmul_dtype)
    h = h + f
    return h, (_mean_norm(f), _mean_norm(h))

  stream0 = _mean_norm(h)
  h, (branch, stream) = jax.lax.scan(block, h, tp.blocks)
  out = jnp.dot(h, tp.output_w) + tp.output_b
  return out, branch, jnp.concatenate([stream0[None], stream])


def network_inputs(obs, state_size: int, *, action_size: int, actor_params=None,
                   critic_params=None, policy=None) -> Dict[str, jax.Array]:
  """The inputs of each CRL network present in the params for observations ``obs [B, obs]``:
  ``actor`` <- obs, ``sa_encoder`` <- [state, a] with ``a`` the deterministic action (from
  ``policy(obs)`` if given, else ``tanh`` of the actor's mean), ``goal_encoder`` <- goal.
  Networks whose params are absent are left out (``sa_encoder`` also without an actor)."""
  obs = jnp.asarray(obs, jnp.float32)
  state, goal = obs[:, :state_size], obs[:, state_size:]
  inputs = {}
  if actor_params is not None and has_trunk(actor_params, "actor"):
    inputs["actor"] = obs
  if critic_params is not None:
    if has_trunk(critic_params, "sa_encoder") and (policy is not None or "actor" in inputs):
      if policy is not None:
        action = policy(obs)
      else:
        mean = trunk_forward(trunk_params(actor_params, "actor"), obs)[0][:, :action_size]
        action = jnp.tanh(mean)
      inputs["sa_encoder"] = jnp.concatenate([state, action], axis=-1)
    if has_trunk(critic_params, "goal_encoder"):
      inputs["goal_encoder"] = goal
  return inputs


def network_residual_norms(inputs: Dict[str, jax.Array], actor_params=None, critic_params=None,
                           matmul_dtype=None) -> Dict[str, Tuple[jax.Array, jax.Array]]:
  """``{network: (branch [n], stream [n + 1])}`` for each network of ``inputs``
  (:func:`network_inputs`); the actor's trunk is read from ``actor_params``, the encoders'
  from ``critic_params``. Jittable."""
  out = {}
  for name, x in inputs.items():
    params = actor_params if name == "actor" else critic_params
    _, branch, stream = trunk_forward(trunk_params(params, name), x, matmul_dtype)
    out[name] = (branch, stream)
  return out


def norm_rows(epoch: int, env_steps: int, norms) -> List[Dict[str, Any]]:
  """CSV rows (:data:`NORM_COLUMNS`) of one evaluation's norms, networks in :data:`NETWORKS`
  order, block -1 (the stream after the input layer, empty ``branch_norm``) first."""
  rows = []
  for name in NETWORKS:
    if name not in norms:
      continue
    branch, stream = (np.asarray(a, np.float64) for a in norms[name])
    rows.append({"epoch": epoch, "env_steps": env_steps, "network": name, "block": -1,
                 "branch_norm": "", "stream_norm": repr(float(stream[0]))})
    for k in range(len(branch)):
      rows.append({"epoch": epoch, "env_steps": env_steps, "network": name, "block": k,
                   "branch_norm": repr(float(branch[k])),
                   "stream_norm": repr(float(stream[k + 1]))})
  return rows


class ResidualNormsLogger(cb_lib.Callback):
  """``eval.residual_norms``: at each evaluation epoch, the residual norms of the actor and
  both critic encoders on the training envs' current observations (``ctx.run.env_state.obs``,
  up to ``max_batch`` of them), appended to ``RUN/residual_norms.csv`` by process 0 (every
  process takes part in the computation, as in the run's other computations over the mesh).

  Works for any agent whose training state has ``actor_params`` / ``critic_params`` holding
  modules named as CRL's (``actor``, ``sa_encoder``, ``goal_encoder``); networks that do not
  exist are skipped, and the whole logger switches off (one message) when none exists or the
  trunks are not residual (``network.block=simba``). On resume, rows of epochs after the
  restored one are dropped, as metrics.csv's are.
  """

  def __init__(self, path: str, max_batch: int = 256):
    self.path = path
    self.max_batch = int(max_batch)
    self.fn = None
    self.disabled = False
    self.seconds: List[float] = []   # wall time of each computation (incl. its first compile)

  def on_train_start(self, ctx):
    cfg = ctx.config
    block = getattr(cfg.network, "block", "residual")
    if block != "residual":
      ctx.log_fn(f"residual norms: network.block={block!r} has no residual branch to measure; "
                 "not logged (set eval.residual_norms=False to silence this)")
      self.disabled = True
      return
    if ctx.main_process and ctx.start_epoch >= 0 and os.path.exists(self.path):
      _truncate_after(self.path, ctx.start_epoch)
    self.fn = self._make_fn(ctx)

  def _make_fn(self, ctx):
    c = ctx.components
    agent = c.agent
    env = c.env
    spec = getattr(agent, "spec", None)
    matmul_dtype = None
    if spec is not None and getattr(spec, "matmul_dtype", "float32") != "float32":
      matmul_dtype = jnp.dtype(spec.matmul_dtype)
    state_size, action_size = env.state_size, env.action_size
    policy = getattr(agent, "policy", None)
    max_batch = self.max_batch
    # Every process calls it (a computation over the mesh); the outputs are replicated.
    @functools.partial(jax.jit, out_shardings=distributed.replicated(c.mesh))
    def fn(training, obs):
      obs = obs.reshape((-1, obs.shape[-1]))[:max_batch]
      actor = getattr(training, "actor_params", None)
      critic = getattr(training, "critic_params", None)
      act = None
      if policy is not None and actor is not None:
        act = lambda o: policy(agent.policy_params(training), o)
      inputs = network_inputs(obs, state_size, action_size=action_size, actor_params=actor,
                              critic_params=critic, policy=act)
      return network_residual_norms(inputs, actor, critic, matmul_dtype)

    return fn

  def on_epoch_end(self, ctx, row):
    if self.disabled or self.fn is None or not any(k.startswith("eval/") for k in row):
      return
    t0 = time.perf_counter()
    try:
      norms = distributed.to_host(self.fn(ctx.run.training, ctx.run.env_state.obs))
    except ValueError as e:  # params of another layout: say so once and stop
      ctx.log_fn(f"residual norms: {e}; not logged")
      self.disabled = True
      return
    if not norms:
      ctx.log_fn("residual norms: this agent has no actor/sa_encoder/goal_encoder trunk; "
                 "not logged")
      self.disabled = True
      return
    if not ctx.main_process:
      return
    rows = norm_rows(int(row["epoch"]), int(row["env_steps"]), norms)
    new = not os.path.exists(self.path)
    with open(self.path, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=NORM_COLUMNS)
      if new:
        writer.writeheader()
      writer.writerows(rows)
    self.seconds.append(time.perf_counter() - t0)


def _truncate_after(path: str, epoch: int) -> None:
  with open(path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epoch]
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp_norms_")
  with os.fdopen(fd, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=NORM_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


def require_maze(env, purpose: str, env_name: Optional[str] = None) -> None:
  """ValueError naming the env (``env_name``, else its class) and ``purpose`` when ``env`` has
  no maze (its ``maze`` attribute is None or missing)."""
  if getattr(env, "maze", None) is None:
    raise ValueError(f"env {env_name or type(env).__name__!r} has no maze: {purpose} needs a "
                     "maze env (e.g. pointmass_u_maze, ant_u4_maze)")


# --- evaluation by goal cell ----------------------------------------------------------------


GOAL_COLUMNS = ("cell", "path", "x", "y", "episodes", "success", "time_at_goal", "final_dist",
                "final_x", "final_y")
_GOAL_MEANS = ("success", "time_at_goal", "final_dist")


def by_goal_cell(env, episodes: Dict[str, Any],
                 env_name: Optional[str] = None) -> List[Dict[str, Any]]:
  """Evaluation episodes grouped by maze goal cell: one row per goal cell of ``env``'s layout
  (``env.maze_goals``, in layout order), with the columns :data:`GOAL_COLUMNS`: the cell
  ``(i, j)``, its ``path`` length from the start cell in cells
  (:meth:`deepcrl_core.envs.mazes.Maze.path_lengths`), its centre, the number of episodes
  whose goal lies nearest that cell centre and their mean ``success``, ``time_at_goal``,
  ``final_dist`` and final position (``final_x``, ``final_y``: where they ended up, e.g.
  against a wall), NaN for a cell no episode drew.

  ``episodes``: :func:`deepcrl_core.agents.evaluate_episodes`' output (host or device arrays;
  ``goal``'s first two entries are the goal's xy). ValueError from :func:`require_maze` when
  ``env`` has no maze.
  """
  require_maze(env, "a breakdown by goal cell", env_name)
  centres = np.asarray(env.maze_goals, np.float64)
  paths = env.maze.path_lengths()
  goals = np.asarray(episodes["goal"], np.float64)[:, :2]
  nearest = np.argmin(((goals[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
  final_xy = np.asarray(episodes["final_position"], np.float64)[:, :2]
  values = {k: np.asarray(episodes[k], np.float64) for k in _GOAL_MEANS}
  values.update(final_x=final_xy[:, 0], final_y=final_xy[:, 1])
  rows = []
  for k, (x, y) in enumerate(centres):
    mine = nearest == k
    ij = tuple(int(v) for v in np.floor(np.array([x, y]) / env.maze_scale + 0.5))
    row = {"cell": ij, "path": int(paths[ij]), "x": float(x), "y": float(y),
           "episodes": int(mine.sum())}
    for key, vals in values.items():
      row[key] = float(vals[mine].mean()) if mine.any() else float("nan")
    rows.append(row)
  return rows


def goal_table(rows: Sequence[Dict[str, Any]]) -> str:
  """:func:`by_goal_cell`'s rows as a markdown table."""
  lines = ["| goal cell | path (cells) | x, y | episodes | success | time at goal | "
           "final distance | final x, y (mean) |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['cell']} | {r['path']} | {r['x']:g}, {r['y']:g} | {r['episodes']} | "
                 f"{r['success']:.2f} | {r['time_at_goal']:.1f} | {r['final_dist']:.2f} | "
                 f"{r['final_x']:.2f}, {r['final_y']:.2f} |")
  return "\n".join(lines)


PATH_COLUMNS = ("path", "cells", "episodes", "success", "time_at_goal", "final_dist")


def by_path_length(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """:func:`by_goal_cell`'s rows pooled by path length from the start, shortest first: one row
  per length with the columns :data:`PATH_COLUMNS` (``cells``: goal cells at that length;
  ``episodes``: episodes that drew one of them; the means are over those episodes, NaN when
  none did). On a large maze (45 goal cells in ``hardest``) this is the readable summary:
  how far along the corridors the policy gets."""
  out = []
  for length in sorted({r["path"] for r in rows}):
    mine = [r for r in rows if r["path"] == length]
    n = sum(r["episodes"] for r in mine)
    row = {"path": length, "cells": len(mine), "episodes": n}
    for key in _GOAL_MEANS:
      row[key] = (sum(r[key] * r["episodes"] for r in mine if r["episodes"]) / n if n
                  else float("nan"))
    out.append(row)
  return out


def path_table(rows: Sequence[Dict[str, Any]]) -> str:
  """:func:`by_path_length`'s rows as a markdown table."""
  lines = ["| path (cells) | goal cells | episodes | success | time at goal | final distance |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['path']} | {r['cells']} | {r['episodes']} | {r['success']:.2f} | "
                 f"{r['time_at_goal']:.1f} | {r['final_dist']:.2f} |")
  return "\n".join(lines)


# --- how evaluation episodes end ------------------------------------------------------------


END_COLUMNS = ("end", "episodes", "share", "success", "time_at_goal", "episode_length",
               "median_length")
TIME_LIMIT = "time limit"
UNNAMED_CAUSE = "terminated (cause not named)"


def episode_ends(env, episodes: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Evaluation episodes grouped by how they ended: one row per way, with the columns
  :data:`END_COLUMNS`: ``end`` (:data:`TIME_LIMIT`, one of ``env.termination_causes``, e.g.
  the ant's ``torso_low``/``torso_high``, or :data:`UNNAMED_CAUSE`), the number and share of
  episodes that ended that way, their mean ``success``, ``time_at_goal`` and
  ``episode_length``, and their ``median_length``. Ways no episode took are left out, so the
  shares add up to 1.

  ``episodes``: :func:`deepcrl_core.agents.evaluate_episodes`' output (``terminated`` and
  ``end_cause`` per episode).
  """
  terminated = np.asarray(episodes["terminated"]) > 0.5
  cause = np.asarray(episodes["end_cause"], np.int64)
  names = tuple(env.termination_causes)
  if cause.min(initial=0) < 0 or cause.max(initial=0) > len(names):
    raise ValueError(f"end_cause codes must lie in 0..{len(names)} (the env's termination "
                     f"causes {names}), got {sorted(set(cause.tolist()))}")
  groups = [(TIME_LIMIT, ~terminated)]
  groups += [(name, terminated & (cause == k + 1)) for k, name in enumerate(names)]
  groups.append((UNNAMED_CAUSE, terminated & (cause == 0)))
  total = len(terminated)
  rows = []
  for name, mine in groups:
    if not mine.any():
      continue
    row = {"end": name, "episodes": int(mine.sum()), "share": float(mine.sum()) / total}
    for key in END_COLUMNS[3:6]:
      row[key] = float(np.asarray(episodes[key], np.float64)[mine].mean())
    row["median_length"] = float(np.median(np.asarray(episodes["episode_length"])[mine]))
    rows.append(row)
  return rows


def ends_table(rows: Sequence[Dict[str, Any]]) -> str:
  """:func:`episode_ends`' rows as a markdown table."""
  lines = ["| episode ended by | episodes | share | success | time at goal | mean length | "
           "median length |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['end']} | {r['episodes']} | {r['share']:.2f} | {r['success']:.2f} | "
                 f"{r['time_at_goal']:.1f} | {r['episode_length']:.0f} | "
                 f"{r['median_length']:.0f} |")
  return "\n".join(lines)


def stored_trajectories(replay_state, goal_indices: Sequence[int],
                        state_size: int) -> Dict[str, np.ndarray]:
  """The complete episodes in a replay buffer (host arrays of a
  :class:`deepcrl_core.replay.ReplayState`): per episode, ``length`` (stored steps),
  ``travel`` (distance between its first and last goal coordinates, ``goal_indices`` of the
  state: how far the relabelled goals of that episode can lie from its start) and
  ``goal_distance`` (from its first goal coordinates to the goal it was commanded, the
  observation's last entries after ``state_size``). Each env's oldest stored episode (it may
  have begun before the buffer's oldest step) and its newest one (still running) are left out.
  """
  traj = np.asarray(replay_state.traj_id)
  obs = np.asarray(replay_state.obs)
  size, capacity = int(replay_state.size), traj.shape[0]
  oldest = (int(replay_state.insert_pos) - size) % capacity
  order = (oldest + np.arange(size)) % capacity  # ring indices, oldest first
  idx = list(goal_indices)
  length, travel, goal_distance = [], [], []
  for env in range(traj.shape[1]):
    ids = traj[order, env]
    starts = np.flatnonzero(np.diff(ids) != 0) + 1
    bounds = np.concatenate([[0], starts, [size]])
    for a, b in zip(bounds[1:-2], bounds[2:-1]):  # complete episodes only
      first, last = obs[order[a], env], obs[order[b - 1], env]
      length.append(b - a)
      travel.append(np.linalg.norm(last[idx] - first[idx]))
      goal_distance.append(np.linalg.norm(first[state_size:] - first[idx]))
  return {"length": np.asarray(length, np.int64), "travel": np.asarray(travel, np.float64),
          "goal_distance": np.asarray(goal_distance, np.float64)}


# --- critic maps ----------------------------------------------------------------------------


class CriticMap(NamedTuple):
  xs: np.ndarray      # [nx] grid x coordinates (maze rows' direction): pixel centres
  ys: np.ndarray      # [ny] grid y coordinates
  values: np.ndarray  # [nx, ny] -energy (for l2: the distance ||phi - psi||); NaN where masked
  mask: np.ndarray    # [nx, ny] True where the position is inside a wall (or off the maze)


def maze_bounds(maze, scale: float) -> Tuple[Tuple[float, float], Tuple[float, float]]:
  """World ``((x0, x1), (y0, y1))`` covered by the maze grid's cells."""
  rows, cols = maze.shape
  return (-0.5 * scale, (rows - 0.5) * scale), (-0.5 * scale, (cols - 0.5) * scale)


def check_map_goal(env, goal_xy: Sequence[float], env_name: Optional[str] = None) -> np.ndarray:
  """``goal_xy`` as ``float32 [2]``, or ValueError naming the env (``env_name``, else its
  class) when it has no maze, or the goal when it is not a free position of the maze (inside a
  wall or outside the grid)."""
  require_maze(env, "a critic map", env_name)
  maze = env.maze
  goal = np.asarray(goal_xy, np.float32).reshape(-1)
  if goal.shape != (2,):
    raise ValueError(f"goal must be x,y; got {list(goal_xy)}")
  scale = env.maze_scale
  (x0, x1), (y0, y1) = maze_bounds(maze, scale)
  if not (x0 <= goal[0] <= x1 and y0 <= goal[1] <= y1):
    raise ValueError(f"goal {tuple(goal.tolist())} is outside maze {maze.name!r} "
                     f"(x in [{x0}, {x1}], y in [{y0}, {y1}])")
  if bool(maze.is_wall(goal, scale)):
    ij = tuple(int(v) for v in np.floor(goal / scale + 0.5))
    raise ValueError(f"goal {tuple(goal.tolist())} is inside a wall of maze {maze.name!r} "
                     f"(cell {ij})")
  return goal


def critic_map(env, networks, actor_params, critic_params, goal_xy, *, resolution: int = 64,
               loss_cfg=None, reset_key=None, chunk: int = 4096,
               env_name: Optional[str] = None) -> CriticMap:
  """The critic's distance over a ``resolution x resolution`` grid of positions covering
  ``env``'s maze (the centres of a ``resolution x resolution`` tiling of
  :func:`maze_bounds`), for the goal position ``goal_xy``.

  Each grid point's state is the env's reset observation's state part with the xy (state
  indices ``env.goal_indices[:2]``) set to the point (and, for the point mass, the velocities
  zero); the goal vector is the reset goal with its first two entries set to ``goal_xy`` (so
  e.g. the humanoid's goal height stays); the action is the deterministic policy
  ``tanh(mean)`` of ``networks.actor`` (:class:`deepcrl_core.networks.Networks`). Values are
  ``-energy(phi(s, a), psi(g))`` with ``loss_cfg``'s energy (:func:`deepcrl_core.losses.energy`;
  ``None``: l2), which for ``l2`` is the distance ``||phi - psi||``. Positions inside walls or
  off the grid are masked (``values`` NaN there). ``env_name`` names the env in errors.
  """
  goal = check_map_goal(env, goal_xy, env_name)
  maze, scale = env.maze, env.maze_scale
  if resolution < 2:
    raise ValueError(f"resolution must be >= 2, got {resolution}")
  from deepcrl_core import losses  # pylint: disable=g-import-not-at-top
  from deepcrl_core import networks as nets  # pylint: disable=g-import-not-at-top
  energy = getattr(loss_cfg, "energy", "l2")
  key = jax.random.PRNGKey(0) if reset_key is None else reset_key
  obs0 = np.asarray(jax.device_get(jax.jit(env.reset)(key).obs), np.float32)
  ss = env.state_size
  xy_idx = np.asarray(env.goal_indices[:2])
  state0 = obs0[:ss].copy()
  if type(env).__name__ == "PointMass":
    state0[2:4] = 0.0   # velocities
  goal_vec = obs0[ss:].copy()
  goal_vec[:2] = goal
  (x0, x1), (y0, y1) = maze_bounds(maze, scale)
  # Pixel centres of a resolution x resolution tiling of the maze's bounds.
  xs = (x0 + (np.arange(resolution) + 0.5) * (x1 - x0) / resolution).astype(np.float32)
  ys = (y0 + (np.arange(resolution) + 0.5) * (y1 - y0) / resolution).astype(np.float32)
  gx, gy = np.meshgrid(xs, ys, indexing="ij")
  points = np.stack([gx.ravel(), gy.ravel()], -1)
  mask = maze.is_wall(points, scale).reshape(gx.shape)
  states = np.repeat(state0[None], len(points), 0)
  states[:, xy_idx] = points
  goals = np.repeat(goal_vec[None], len(points), 0)
  e_params = nets.energy_params(critic_params)

  @jax.jit
  def values_fn(s, g):
    mean, _ = networks.actor.apply(actor_params, jnp.concatenate([s, g], -1))
    phi, psi = networks.critic.apply(critic_params, s, nets.deterministic_action(mean), g)
    return -losses.energy(phi, psi, energy, e_params, loss_cfg)

  out = []
  for start in range(0, len(points), chunk):
    out.append(np.asarray(values_fn(jnp.asarray(states[start:start + chunk]),
                                    jnp.asarray(goals[start:start + chunk]))))
  values = np.concatenate(out).reshape(gx.shape).astype(np.float64)
  values[mask] = np.nan
  return CriticMap(xs, ys, values, mask)
