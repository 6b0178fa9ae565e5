"""Maze layouts of the paper's locomotion tasks and their conversion to wall boxes.

A layout is a grid of characters: ``#`` wall, ``R`` start cell, ``G`` goal cell, ``.`` free.
Cell (row i, column j) is centred at world ``(x, y) = (i * scale, j * scale)``; a wall cell is a
box of the cell's footprint and half its width in height. Training layouts list every reachable
cell as a goal; the ``*_eval`` layouts keep only the far goals used for evaluation.

For rendering, walls are merged greedily into few rectangles (:func:`wall_boxes`). For
collisions, MJX (which has no dynamic broad phase: every geom pair that may touch is a fixed
contact slot) gets only the wall cells next to the robot: :func:`neighbour_walls` tabulates,
for every cell, the centres of the wall cells among its 8 neighbours, and the envs move a few
cell-sized collider boxes onto the nearest of them each control step. A robot whose torso lies
in a cell can only reach its neighbour cells as long as its reach beyond the torso is less
than one cell, and at most 3 of them while the reach is under half a cell (ant: 1.33 m vs
4 m cells; a standing humanoid: < 1 m vs 2 m cells).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

# Height (in cells) at which unused collider boxes are parked, far below the floor.
PARKED_Z = -10.0

_LAYOUTS: Dict[str, str] = {
    "u": """
        #####
        #RGG#
        ###G#
        #GGG#
        #####""",
    "u_eval": """
        #####
        #R..#
        ###.#
        #GGG#
        #####""",
    "u4": """
        #####
        #GGG#
        #R#G#
        ###G#
        #G#G#
        #GGG#
        #####""",
    "u4_eval": """
        #####
        #...#
        #R#.#
        ###.#
        #G#.#
        #GGG#
        #####""",
    "u5": """
        ########
        #GGGGGG#
        #R####G#
        ######G#
        #G####G#
        #GGGGGG#
        ########""",
    "u5_eval": """
        ########
        #......#
        #R####.#
        ######.#
        #G####G#
        #GGGGGG#
        ########""",
    "big": """
        ########
        #RG##GG#
        #GG#GGG#
        ##GGG###
        #GG#GGG#
        #G#GG#G#
        #GGG#GG#
        ########""",
    # Far goals of the ant's big-maze evaluation.
    "big_eval": """
        ########
        #R.##GG#
        #..#..G#
        ##...###
        #..#...#
        #.#G.#G#
        #.GG#GG#
        ########""",
    # The humanoid's big-maze evaluation keeps one more goal (row 2, column 5).
    "big_eval_humanoid": """
        ########
        #R.##GG#
        #..#.GG#
        ##...###
        #..#...#
        #.#G.#G#
        #.GG#GG#
        ########""",
    "hardest": """
        ############
        #RGGG#GGGGG#
        #G##G#G#G#G#
        #GGGGGG#GGG#
        #G####G###G#
        #GG#G#GGGGG#
        ##G#G#G#G###
        #GG#GGG#GGG#
        ############""",
}
# The hardest maze has no separate far-goal layout in the published code: evaluation uses all
# of its goals.
_LAYOUTS["hardest_eval"] = _LAYOUTS["hardest"]


@dataclasses.dataclass(frozen=True)
class Maze:
  """A parsed layout. ``grid`` is a tuple of equal-length row strings."""
  name: str
  grid: Tuple[str, ...]

  @property
  def shape(self) -> Tuple[int, int]:
    return len(self.grid), len(self.grid[0])

  def cells(self, char: str) -> np.ndarray:
    """``[n, 2]`` (row, column) indices of the cells holding ``char``."""
    return np.array([(i, j) for i, row in enumerate(self.grid) for j, c in enumerate(row)
                     if c == char], dtype=np.int64).reshape(-1, 2)

  def start_xy(self, scale: float) -> np.ndarray:
    """World xy ``[2]`` of the single ``R`` cell."""
    (start,) = self.cells("R")
    return start.astype(np.float32) * scale

  def goal_xy(self, scale: float) -> np.ndarray:
    """World xy ``[n_goals, 2]`` of the ``G`` cell centres."""
    return self.cells("G").astype(np.float32) * scale

  def path_lengths(self) -> np.ndarray:
    """``[rows, cols]`` int array: the fewest moves between edge-sharing free cells from the
    ``R`` cell to each cell (0 at ``R``), -1 for wall cells and cells it cannot reach. A
    diagonal step counts as two moves, so this is the corridor distance -- what makes a goal
    far in a maze -- not the straight-line one."""
    rows, cols = self.shape
    dist = np.full((rows, cols), -1, np.int64)
    (start,) = self.cells("R")
    dist[tuple(start)] = 0
    frontier = [tuple(start)]
    while frontier:
      nxt = []
      for i, j in frontier:
        for ni, nj in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
          if (0 <= ni < rows and 0 <= nj < cols and self.grid[ni][nj] != "#"
              and dist[ni, nj] < 0):
            dist[ni, nj] = dist[i, j] + 1
            nxt.append((ni, nj))
      frontier = nxt
    return dist

  def is_wall(self, xy: np.ndarray, scale: float) -> np.ndarray:
    """Whether world points ``[..., 2]`` lie inside a wall cell (or outside the grid)."""
    ij = np.floor(np.asarray(xy) / scale + 0.5).astype(np.int64)
    rows, cols = self.shape
    inside = (ij[..., 0] >= 0) & (ij[..., 0] < rows) & (ij[..., 1] >= 0) & (ij[..., 1] < cols)
    walls = np.array([[c == "#" for c in row] for row in self.grid])
    clipped = np.clip(ij, 0, [rows - 1, cols - 1])
    return ~inside | walls[clipped[..., 0], clipped[..., 1]]


def get_maze(name: str) -> Maze:
  if name not in _LAYOUTS:
    raise ValueError(f"unknown maze {name!r}; known: {', '.join(sorted(_LAYOUTS))}")
  rows = tuple(line.strip() for line in _LAYOUTS[name].strip().splitlines())
  if len({len(r) for r in rows}) != 1:
    raise ValueError(f"maze {name!r} rows differ in length")
  maze = Maze(name, rows)
  if len(maze.cells("R")) != 1:
    raise ValueError(f"maze {name!r} needs exactly one R cell")
  return maze


def maze_names() -> Tuple[str, ...]:
  return tuple(sorted(_LAYOUTS))


def wall_rectangles(maze: Maze) -> List[Tuple[int, int, int, int]]:
  """Covers the wall cells with disjoint rectangles ``(row0, col0, row1, col1)`` (inclusive).

  Greedy: scan cells row-major; from each uncovered wall cell grow the longest run to the
  right, then grow that run downwards while the whole span is uncovered wall.
  """
  rows, cols = maze.shape
  wall = np.array([[c == "#" for c in row] for row in maze.grid])
  covered = np.zeros_like(wall)
  rects = []
  for i in range(rows):
    for j in range(cols):
      if not wall[i, j] or covered[i, j]:
        continue
      j1 = j
      while j1 + 1 < cols and wall[i, j1 + 1] and not covered[i, j1 + 1]:
        j1 += 1
      i1 = i
      while i1 + 1 < rows and np.all(wall[i1 + 1, j:j1 + 1] & ~covered[i1 + 1, j:j1 + 1]):
        i1 += 1
      covered[i:i1 + 1, j:j1 + 1] = True
      rects.append((i, j, i1, j1))
  return rects


def wall_boxes(maze: Maze, scale: float) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Box geoms ``(centre [3], half_extents [3])`` covering the walls, height ``scale / 2``."""
  boxes = []
  for i0, j0, i1, j1 in wall_rectangles(maze):
    centre = np.array([(i0 + i1) / 2 * scale, (j0 + j1) / 2 * scale, 0.25 * scale])
    half = np.array([(i1 - i0 + 1) / 2 * scale, (j1 - j0 + 1) / 2 * scale, 0.25 * scale])
    boxes.append((centre, half))
  return boxes


def neighbour_walls(maze: Maze, scale: float) -> np.ndarray:
  """``[rows, cols, 8, 3]`` centres of the wall cells around each cell; unused slots parked.

  Slot order is fixed (the 8 neighbour offsets); a neighbour that is free (or off the grid)
  gets the parked position ``(0, 0, PARKED_Z * scale)``.
  """
  rows, cols = maze.shape
  offsets = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
  table = np.zeros((rows, cols, len(offsets), 3), np.float32)
  table[..., 2] = PARKED_Z * scale
  for i in range(rows):
    for j in range(cols):
      for k, (di, dj) in enumerate(offsets):
        a, b = i + di, j + dj
        if 0 <= a < rows and 0 <= b < cols and maze.grid[a][b] == "#":
          table[i, j, k] = (a * scale, b * scale, 0.25 * scale)
  return table
