#!/usr/bin/env bash
# Install the OpenMMLab bridge (mmengine, mmcv with its compiled ops, mmdet, mmsegmentation,
# mmpose) into a Python environment that already has hcbench with its pinned torch.
#
#   adapters/openmmlab_install.sh [PYTHON]        # default: .venv/bin/python
#
# Why a script and not only `pip install hcbench[openmmlab]`:
# - mmcv 2.1.0 (the newest mmcv that mmdet 3.3.0 and mmsegmentation 1.2.2 accept) has no wheel
#   for torch 2.14: it is built from source, which needs setuptools<80 and a C++20 flag in place
#   of its hard-coded C++17 (torch 2.14's headers need C++20).  The build takes about 13 minutes
#   on 2 cores, so the wheel is cached in $HCBENCH_WHEELS (default ~/.cache/hcbench/wheels) and
#   reused by the next run.  mmcv-lite lacks the compiled ops (RoIAlign, NMS) that mmdet uses.
# - mmengine, mmcv and mmpose declare opencv-python, which would overwrite the core's
#   opencv-python-headless (and need libGL); mmpose declares chumpy, which does not build on
#   Python 3.11 with numpy 2 and which only its SMPL code uses.  These three are installed
#   with --no-deps; the extra `hcbench[openmmlab]` lists everything else they need.
# - xtcocotools (mmpose's COCO keypoint evaluation) is built from source against numpy 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
WHEELS="${HCBENCH_WHEELS:-$HOME/.cache/hcbench/wheels}"
C="-c requirements.lock -c adapters/openmmlab_constraints.txt"
pip() { "$PY" -m pip "$@"; }
mkdir -p "$WHEELS"

echo "== hcbench with the openmmlab extra"
pip install -q $C -e ".[openmmlab]"
pip install -q $C --no-deps mmengine mmpose
# build tools for the two source builds (both import numpy/torch in setup.py, so they are
# built without pip's build isolation, against the numpy and torch installed here)
pip install -q "setuptools<80" wheel ninja "cython>=3"
pip install -q $C --no-build-isolation --no-binary xtcocotools xtcocotools

MMCV_WHEEL=$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
if [[ -z "$MMCV_WHEEL" ]]; then
    echo "== building mmcv 2.1.0 with its ops (about 13 minutes on 2 idle cores, 37 on busy ones; cached in $WHEELS)"
    # built in a kept folder: an interrupted build resumes where it stopped (ninja)
    SRC="${HCBENCH_BUILD:-$HOME/.cache/hcbench/build}"
    if [[ ! -f "$SRC"/mmcv-2.1.0/setup.py ]]; then
        mkdir -p "$SRC"
        # the sdist's setup.py imports torch, so it is fetched without build isolation
        pip download -q --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d "$SRC"
        tar -xzf "$SRC"/mmcv-2.1.0.tar.gz -C "$SRC"
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC"/mmcv-2.1.0/setup.py
    fi
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        pip wheel -q --no-deps --no-build-isolation "$SRC"/mmcv-2.1.0 -w "$WHEELS"
    MMCV_WHEEL=$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n1)
    rm -rf "$SRC"/mmcv-2.1.0 "$SRC"/mmcv-2.1.0.tar.gz
fi
echo "== mmcv from $MMCV_WHEEL"
pip install -q --no-deps "$MMCV_WHEEL"

"$PY" - <<'EOF'
import mmcv, mmcv.ops, mmdet, mmengine, mmpose, mmseg
print("OpenMMLab ready: mmengine", mmengine.__version__, "mmcv", mmcv.__version__,
      "mmdet", mmdet.__version__, "mmseg", mmseg.__version__, "mmpose", mmpose.__version__)
EOF
