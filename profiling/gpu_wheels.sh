#!/usr/bin/env bash
# Downloads the Python 3.12 wheels the lent GPU machine lacks into the git-ignored .whl/ folder,
# at the versions installed here (run from a machine with internet and this repo installed).
#
#   bash profiling/gpu_wheels.sh        # then carry ".whl" in the device run
#
# On the GPU machine, before profiling/gpu_suite.sh:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# The list: what the training and env steps import that the GPU image does not hold (its image
# has jax, absl-py, chex, optax, etils, PyYAML, scipy, tabulate, numpy). mujoco's mujoco-studio
# (12.8 MB) is not imported by `import mujoco` and stays behind.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="dm-haiku jmp ml_collections mujoco mujoco-core mujoco-mjx glfw PyOpenGL trimesh tensorboardX"
mkdir -p .whl
for name in $PACKAGES; do
  version="$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl "$name==$version"
done
ls -l .whl
du -sh .whl
