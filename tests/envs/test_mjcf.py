"""Models as data: the MJCF assets, their packaging, and the shared MjSpec / collider helpers."""

import fnmatch
import os
import pathlib
import re
import sys
import tomllib

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from deepcrl_core.envs import humanoid, mjcf

from tests.conftest import REPO_ROOT

ASSET_DIR = pathlib.Path(REPO_ROOT, "deepcrl_core", "envs", "assets")


def _nearest_reference(point, centres, half, count, valid):
  """Brute force: stable sort by distance to each footprint (float64), invalid ones last."""
  gap = np.maximum(np.abs(point[None] - centres[:, :2]).astype(np.float64) - half, 0.0)
  dist = np.where(valid, np.linalg.norm(gap, axis=-1), np.inf)
  return centres[np.argsort(dist, kind="stable")[:count]]


@pytest.mark.parametrize("count", [1, 3])
def test_nearest_boxes_matches_brute_force(count):
  rng = np.random.default_rng(count)
  nearest = jax.jit(mjcf.nearest_boxes, static_argnums=3)
  for _ in range(30):
    n = 6
    centres = rng.uniform(-2, 2, (n, 3)).astype(np.float32)
    half = rng.uniform(0.05, 0.5, (n, 2)).astype(np.float32)
    point = rng.uniform(-2, 2, 2).astype(np.float32)
    valid = rng.uniform(size=n) < 0.7
    got = np.asarray(nearest(jnp.asarray(point), jnp.asarray(centres), jnp.asarray(half), count,
                             jnp.asarray(valid)))
    np.testing.assert_array_equal(got, _nearest_reference(point, centres, half, count, valid))


def test_nearest_boxes_ties_and_insides():
  # a point inside two boxes (distance 0 to both): the lower index first; a scalar half size
  centres = jnp.array([[5.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.2, 0.0, 3.0]])
  got = np.asarray(mjcf.nearest_boxes(jnp.array([0.1, 0.0]), centres, 0.5, 2))
  np.testing.assert_array_equal(got[:, 2], [2.0, 3.0])
  # an invalid box ranks after every valid one, however near
  got = np.asarray(mjcf.nearest_boxes(jnp.array([0.1, 0.0]), centres, 0.5, 2,
                                      valid=jnp.array([True, False, True])))
  np.testing.assert_array_equal(got[:, 2], [3.0, 1.0])


def test_mocap_slots():
  spec = mujoco.MjSpec()
  for name in ("a", "b", "c"):
    spec.worldbody.add_body(name=name, mocap=True).add_geom(size=[0.1, 0, 0])
  spec.worldbody.add_body(name="free").add_geom(size=[0.1, 0, 0])
  m = spec.compile()
  assert mjcf.mocap_slots(m, ["b", "c"]) == slice(1, 3)
  with pytest.raises(ValueError, match="not contiguous"):
    mjcf.mocap_slots(m, ["a", "c"])
  with pytest.raises(ValueError, match="not contiguous"):
    mjcf.mocap_slots(m, ["free"])


def test_assets_are_declared_package_data():
  with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  patterns = project["tool"]["setuptools"]["package-data"]["deepcrl_core"]
  files = sorted(p.name for p in ASSET_DIR.iterdir() if not p.name.startswith("."))
  assert {"ant.xml", "humanoid.xml", "panda_cube.xml", "pointmass.xml",
          "LICENSE.humanoid"} <= set(files)
  for name in files:
    assert any(fnmatch.fnmatch(f"envs/assets/{name}", p) for p in patterns), name
  assert not any("gymnasium" in d for d in project["project"]["dependencies"])


@pytest.mark.parametrize("name", ["ant.xml", "humanoid.xml", "panda_cube.xml", "pointmass.xml"])
def test_each_asset_compiles_on_its_own(name):
  assert mjcf.load_spec(name).compile().nbody > 1


def test_humanoid_is_vendored_with_its_licence():
  text = (ASSET_DIR / "LICENSE.humanoid").read_text()
  assert "MIT License" in text and "Copyright (c) 2016 OpenAI" in text
  assert "LICENSE.humanoid" in (ASSET_DIR / "humanoid.xml").read_text()


def test_nothing_imports_gymnasium(monkeypatch):
  monkeypatch.setitem(sys.modules, "gymnasium", None)  # any import of it now fails
  assert humanoid.humanoid_spec(in_maze=True).compile().nu == 17
  imports = re.compile(r"^\s*(import|from)\s+gymnasium\b", re.MULTILINE)
  sources = [p for folder in ("deepcrl_core", "kernels", "launch", "profiling", "tests")
             for p in pathlib.Path(REPO_ROOT, folder).glob("**/*.py")]
  assert sources and not [str(p) for p in sources if imports.search(p.read_text())]
