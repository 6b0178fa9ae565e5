"""Every env's compiled MuJoCo model, against facts recorded from the models as they were built
before the MJCF moved to ``deepcrl_core/envs/assets/`` (``models.json``, recorded with the env
code of commit b621b76: XML templates, f-strings and gymnasium's installed humanoid).

Two checks per model: the recorded facts (sizes, names in order, geometry, masses, joints,
actuators, contact pairs and options) agree to 12 significant digits on any MuJoCo version, and the
digest of every array of the compiled model is bit-identical on the MuJoCo version that
recorded it (other versions may lay out or derive fields differently, so the digest is skipped
there). Regenerate with ``python tests/envs/test_models.py`` only for an intended model change.
"""

import hashlib
import json
import os
import sys

import mujoco
import numpy as np
import pytest

from deepcrl_core import envs

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.json")

# (registered env, constructor kwargs): every registered env, plus the non-default presets.
# The ``*_eval`` mazes differ from their training mazes in goals only (same model, tested below).
CASES = [(name, {}) for name in (
    "pointmass", "ant", "ant_u4_maze", "ant_u5_maze", "ant_big_maze", "ant_hardest_maze",
    "humanoid", "humanoid_u_maze", "humanoid_big_maze", "humanoid_hardest_maze",
    "arm_push_easy", "arm_push_hard", "arm_binpick_hard")] + [
        ("pointmass", {"arena_size": 2.0, "ball_radius": 0.1, "damping": 3.0}),
        ("humanoid", {"actuation": "published"}),
        ("humanoid_u_maze", {"actuation": "published"}),
        ("arm_push_easy", {"physics": "published"}),
        ("arm_push_hard", {"physics": "published"}),
        ("arm_binpick_hard", {"physics": "published"}),
    ]

_COUNTS = ("nq", "nv", "nu", "nbody", "njnt", "ngeom", "nsite", "ncam", "nlight", "nmocap",
           "npair", "nexclude", "neq", "ntendon", "nnumeric", "nmat", "ntex")
_OPTIONS = ("timestep", "impratio", "iterations", "ls_iterations", "solver", "integrator",
            "cone", "disableflags", "enableflags")
# Arrays compared value by value (to 12 significant digits); names are compared in order.
_ARRAYS = ("body_parentid", "body_pos", "body_quat", "body_mass", "body_inertia", "body_ipos",
           "body_mocapid", "jnt_type", "jnt_qposadr", "jnt_range", "jnt_limited", "jnt_axis",
           "dof_damping", "dof_armature", "jnt_stiffness", "geom_type", "geom_bodyid",
           "geom_size", "geom_pos", "geom_quat", "geom_contype", "geom_conaffinity",
           "geom_condim", "geom_priority", "geom_friction", "geom_group", "actuator_trnid",
           "actuator_gear", "actuator_gainprm", "actuator_biasprm", "actuator_ctrlrange",
           "actuator_forcerange", "pair_geom1", "pair_geom2", "pair_dim", "pair_friction",
           "numeric_data", "eq_data", "qpos0")
_NAMED = (("body", "nbody"), ("geom", "ngeom"), ("joint", "njnt"), ("actuator", "nu"),
          ("numeric", "nnumeric"))


def case_id(name, kwargs):
  return name + "".join(f",{k}={v}" for k, v in sorted(kwargs.items()))


def _values(values):
  """Floats to 12 significant digits (compact; the digest checks every bit)."""
  return [float(f"{v:.12g}") if np.isfinite(v) else str(v)
          for v in np.asarray(values, np.float64).ravel()]


def model_digest(m: mujoco.MjModel) -> str:
  """sha256 over every array attribute of ``m`` (sorted by name) and ``m.opt``'s fields."""
  h = hashlib.sha256()
  for attr in sorted(dir(m)):
    if attr.startswith("_"):
      continue
    value = getattr(m, attr)
    if isinstance(value, np.ndarray):
      h.update(attr.encode())
      h.update(str(value.dtype).encode() + str(value.shape).encode())
      h.update(np.ascontiguousarray(value).tobytes())
  for attr in sorted(dir(m.opt)):
    value = getattr(m.opt, attr)
    if not attr.startswith("_") and isinstance(value, (int, float, np.ndarray)):
      h.update(attr.encode() + np.asarray(value, np.float64).tobytes())
  return h.hexdigest()


def model_facts(m: mujoco.MjModel) -> dict:
  facts = {"counts": {k: int(getattr(m, k)) for k in _COUNTS},
           "opt": {k: float(getattr(m.opt, k)) for k in _OPTIONS},
           "names": {kind: [getattr(m, kind)(i).name for i in range(getattr(m, count))]
                     for kind, count in _NAMED},
           "arrays": {k: {"shape": list(np.shape(getattr(m, k))), "values": _values(getattr(m, k))}
                      for k in _ARRAYS}}
  return facts


def _build(name, kwargs):
  return envs.make(name, **kwargs).mj_model


def _record():
  out = {"mujoco": mujoco.__version__, "models": {}}
  for name, kwargs in CASES:
    m = _build(name, kwargs)
    out["models"][case_id(name, kwargs)] = {"digest": model_digest(m), **model_facts(m)}
  with open(FIXTURE, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")


@pytest.fixture(scope="module")
def recorded():
  with open(FIXTURE) as f:
    return json.load(f)


def test_fixture_covers_the_cases(recorded):
  assert {case_id(n, k) for n, k in CASES} == set(recorded["models"])
  assert {n for n, _ in CASES} <= set(envs.registered_names())


@pytest.mark.parametrize("name, kwargs", CASES, ids=[case_id(n, k) for n, k in CASES])
def test_compiled_model_is_unchanged(name, kwargs, recorded):
  want = recorded["models"][case_id(name, kwargs)]
  m = _build(name, kwargs)
  got = model_facts(m)
  assert got["counts"] == want["counts"]
  assert got["names"] == want["names"]
  for key, value in want["opt"].items():
    assert got["opt"][key] == pytest.approx(value, rel=1e-12), key
  for key, value in want["arrays"].items():
    assert got["arrays"][key]["shape"] == value["shape"], key
    a = np.array([float(v) for v in got["arrays"][key]["values"]])
    b = np.array([float(v) for v in value["values"]])
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-300, err_msg=key)
  if mujoco.__version__ == recorded["mujoco"]:
    assert model_digest(m) == want["digest"], "compiled model differs from the recorded one"


@pytest.mark.parametrize("name", sorted(n for n in envs.registered_names() if n.endswith("_eval")))
def test_eval_layouts_share_the_training_model(name):
  assert model_digest(_build(name, {})) == model_digest(_build(name[:-len("_eval")], {}))


if __name__ == "__main__":
  sys.exit(_record())
