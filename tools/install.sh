#!/usr/bin/env bash
# Installs replk_mm and its OpenMMLab stack into the current Python environment.
#
# mmcv 2.1.0 (the newest release that mmseg 1.2.2 and mmdet 3.3.0 accept) has no wheel for a
# current torch, so it is built from its source release with compiled ops. pip caches the built
# wheel, so a second run does not rebuild it. Where nvcc and a CUDA build of torch are present,
# the CUDA ops are built too (FORCE_CUDA=1); otherwise the CPU ops.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"

# torch first (mmcv's build imports it). An installed torch is kept; otherwise 2.13.0, whose CPU
# build lies on the CPU machines here (plain `torch` could pull a multi-GB CUDA build).
if ! python -c 'import torch' 2>/dev/null; then
    $PIP install torch==2.13.0
fi
# pkg_resources (mmcv's setup.py, mmengine) left setuptools in 81; torch 2.13 wants >= 77.0.3.
$PIP install 'setuptools>=77.0.3,<81' wheel ninja

if ! python -c 'import mmcv, mmcv._ext' 2>/dev/null; then
    if command -v nvcc >/dev/null && python -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
        export FORCE_CUDA=1
    fi
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" $PIP install --no-build-isolation mmcv==2.1.0
fi
$PIP install --no-build-isolation -e '.[tests]'
