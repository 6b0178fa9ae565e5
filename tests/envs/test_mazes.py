"""Maze layouts, wall merging and the neighbour-wall table (pure numpy, fast)."""

import numpy as np
import pytest

from deepcrl_core.envs import mazes

# name -> (rows, cols, wall cells, goal cells, start cell); published table (envs.md §4).
PUBLISHED = {
    "u": (5, 5, 18, 6, (1, 1)),
    "u_eval": (5, 5, 18, 3, (1, 1)),
    "u4": (7, 5, 24, 10, (2, 1)),
    "u4_eval": (7, 5, 24, 4, (2, 1)),
    "u5": (7, 8, 39, 16, (2, 1)),
    "u5_eval": (7, 8, 39, 8, (2, 1)),
    "big": (8, 8, 38, 25, (1, 1)),
    "big_eval": (8, 8, 38, 9, (1, 1)),
    "big_eval_humanoid": (8, 8, 38, 10, (1, 1)),
    "hardest": (9, 12, 62, 45, (1, 1)),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_layout_matches_published_counts(name):
  rows, cols, n_walls, n_goals, start = PUBLISHED[name]
  maze = mazes.get_maze(name)
  assert maze.shape == (rows, cols)
  assert len(maze.cells("#")) == n_walls
  assert len(maze.cells("G")) == n_goals
  np.testing.assert_array_equal(maze.cells("R")[0], start)
  np.testing.assert_allclose(maze.start_xy(4.0), np.array(start) * 4.0)


@pytest.mark.parametrize("name", ["u", "u4", "u5", "big"])
def test_eval_layout_is_far_subset_of_training_goals(name):
  train = mazes.get_maze(name)
  evals = [mazes.get_maze(n) for n in mazes.maze_names() if n.startswith(name + "_eval")]
  assert evals
  for ev in evals:
    np.testing.assert_array_equal(ev.cells("#"), train.cells("#"))
    train_goals = {tuple(c) for c in train.cells("G")}
    eval_goals = {tuple(c) for c in ev.cells("G")}
    assert eval_goals < train_goals
    start = train.cells("R")[0]
    # far goals: on average farther from the start than the training goals
    mean_d = lambda cells: np.mean([np.abs(np.array(c) - start).sum() for c in cells])
    assert mean_d(eval_goals) > mean_d(train_goals)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_wall_rectangles_cover_walls_exactly_once(name):
  maze = mazes.get_maze(name)
  count = np.zeros(maze.shape, int)
  for i0, j0, i1, j1 in mazes.wall_rectangles(maze):
    count[i0:i1 + 1, j0:j1 + 1] += 1
  wall = np.array([[c == "#" for c in row] for row in maze.grid])
  np.testing.assert_array_equal(count, wall.astype(int))
  # merged: far fewer boxes than wall cells
  assert len(mazes.wall_rectangles(maze)) <= wall.sum() // 2


def test_wall_boxes_geometry():
  maze = mazes.get_maze("u")
  boxes = mazes.wall_boxes(maze, 2.0)
  # first rectangle is the top row: cells (0, 0)..(0, 4) -> x 0, y 0..8
  centre, half = boxes[0]
  np.testing.assert_allclose(centre, [0.0, 4.0, 0.5])
  np.testing.assert_allclose(half, [1.0, 5.0, 0.5])


@pytest.mark.parametrize("name", ["u", "big", "hardest"])
def test_neighbour_walls_lists_exactly_adjacent_wall_cells(name):
  maze = mazes.get_maze(name)
  scale = 4.0
  table = mazes.neighbour_walls(maze, scale)
  rows, cols = maze.shape
  assert table.shape == (rows, cols, 8, 3)
  for i in range(rows):
    for j in range(cols):
      expected = {(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2)
                  if (a, b) != (i, j) and 0 <= a < rows and 0 <= b < cols
                  and maze.grid[a][b] == "#"}
      placed = table[i, j][table[i, j, :, 2] > 0]
      got = {(int(round(x / scale)), int(round(y / scale))) for x, y, _ in placed}
      assert got == expected
      assert len(placed) == len(expected)
      np.testing.assert_allclose(placed[:, 2], 0.25 * scale)
      parked = table[i, j][table[i, j, :, 2] <= 0]
      np.testing.assert_allclose(parked[:, 2], mazes.PARKED_Z * scale)


def test_path_lengths_follow_corridors_not_straight_lines():
  u4 = mazes.get_maze("u4")   # R at (2, 1); its far goal (4, 1) is 2 rows below, 10 moves away
  paths = u4.path_lengths()
  assert paths[2, 1] == 0 and paths[1, 1] == 1 and paths[1, 3] == 3
  assert paths[4, 1] == 10 and paths[5, 3] == 7
  assert (paths[np.array([[c == "#" for c in row] for row in u4.grid])] == -1).all()
  # Every goal cell of every layout is reachable from its start.
  for name in mazes.maze_names():
    maze = mazes.get_maze(name)
    cells = maze.cells("G")
    assert (maze.path_lengths()[cells[:, 0], cells[:, 1]] > 0).all(), name


def test_is_wall():
  maze = mazes.get_maze("u")
  assert maze.is_wall(np.array([0.0, 0.0]), 2.0)
  assert not maze.is_wall(np.array([2.0, 2.0]), 2.0)
  assert maze.is_wall(np.array([-5.0, 2.0]), 2.0)  # off the grid


def test_unknown_maze():
  with pytest.raises(ValueError, match="unknown maze"):
    mazes.get_maze("nope")
