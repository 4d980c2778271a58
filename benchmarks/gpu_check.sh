#!/usr/bin/env bash
# One command for a bare GPU machine with no network: install xpmlp, run the CUDA tests, the
# launch-overhead microbenchmark, 5 epochs of training on the GPU (and on NumPy, to compare
# test accuracy) and `xpmlp bench`.
#
#   benchmarks/gpu_check.sh OUTDIR          (run from anywhere; it works in the repository root)
#
# Each step logs to OUTDIR/<step>.log; a step that fails does not stop the others; the exit
# status is non-zero if any step failed. Every step has a time limit and the whole run stops
# starting steps after GPU_CHECK_BUDGET seconds (default 570), so it ends within 10 minutes.
#
# Expected on the machine: Python 3.12, CuPy 14 (CUDA 13), numba, numba-cuda, PyTorch, pytest
# (setuptools for an editable install; without it a copy of the package goes on PYTHONPATH).
# numba-cuda 0.30 fails on NumPy 2.5 (numpy.row_stack is gone); xpmlp.kernels.compat puts the
# alias back, so the machine's NumPy is used as it is. To test with NumPy 2.4 instead, put a
# NumPy 2.4 wheel in benchmarks/wheels/ (numpy-2.4*.whl): it is then installed, offline, into
# a virtual environment that sees the system packages (OUTDIR/venv, --system-site-packages).
# Fetch that wheel beforehand on a machine with network:
#   pip download 'numpy>=2.4,<2.5' --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_27_x86_64 -d benchmarks/wheels
# Set PYTHON to choose the interpreter (default: python3).
set -u

OUTDIR=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-570}
START=$(date +%s)
FAILED=()
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
# A fresh Numba cache per run. Not needed for correctness: Numba keys a cached kernel on its own
# file, but each kernel's name carries a fingerprint of the bytecode of every formula it reaches
# (kernels/compiler.py), so an edited formula compiles afresh; a fresh cache keeps runs apart.
export NUMBA_CACHE_DIR="$OUTDIR/numba-cache"
unset CUPY_TF32  # FP32 matrix products on both sides of every comparison
rm -rf "$NUMBA_CACHE_DIR"

# step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, log to OUTDIR/NAME.log
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 10)); then
        echo "skipped: no time left in the ${BUDGET}s budget" >"$OUTDIR/$name.log"
        echo "[gpu_check] $name: SKIPPED (time budget spent)"
        FAILED+=("$name")
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$(date +%s)
    echo "[gpu_check] $name (limit ${limit}s): $*"
    { echo "\$ $*"; echo; } >"$OUTDIR/$name.log"
    timeout --kill-after=10 "$limit" "$@" >>"$OUTDIR/$name.log" 2>&1
    local rc=$?
    echo "[gpu_check] $name: rc=$rc in $(($(date +%s) - t0))s (log: $OUTDIR/$name.log)"
    ((rc == 124)) && echo "timed out after ${limit}s" >>"$OUTDIR/$name.log"
    ((rc != 0)) && FAILED+=("$name")
}

environment() {
    echo "date: $(date -u +%FT%TZ)"
    echo "python: $PY ($("$PY" --version 2>&1))"
    git rev-parse HEAD 2>/dev/null && git status --short | head -20
    nvidia-smi || echo "nvidia-smi failed"
    "$PY" - <<'EOF2'
import importlib
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "pytest", "setuptools"):
    try:
        print(f"{name}: {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name}: unavailable ({type(exc).__name__}: {exc})")
EOF2
}

# NumPy 2.5+ with numba-cuda 0.30: make OUTDIR/venv (system packages visible) holding the
# NumPy 2.4 wheel from benchmarks/wheels, if there is one. The system pip installs into it
# (pip --python), so the venv needs no pip of its own.
numpy_24_venv() {
    local version wheel
    version=$("$PY" -c 'import numpy; print(numpy.__version__)') || return 1
    echo "system NumPy: $version"
    if ! "$PY" -c 'import sys, numpy; sys.exit(tuple(map(int, numpy.__version__.split(".")[:2])) < (2, 5))'; then
        echo "NumPy < 2.5: nothing to do"
        return 0
    fi
    wheel=$(ls benchmarks/wheels/numpy-2.4*.whl 2>/dev/null | head -1)
    if [[ -z $wheel ]]; then
        echo "NumPy $version >= 2.5 and no benchmarks/wheels/numpy-2.4*.whl: numba-cuda 0.30"
        echo "may fail on it. Carrying on with NumPy $version (see the script's header)."
        return 0
    fi
    "$PY" -m venv --system-site-packages --without-pip "$OUTDIR/venv" || return 1
    "$PY" -m pip --python "$OUTDIR/venv/bin/python" install --no-index --no-deps "$wheel" \
        || return 1
    echo "using $OUTDIR/venv: NumPy $("$OUTDIR/venv/bin/python" -c 'import numpy; print(numpy.__version__)')"
}
export -f environment numpy_24_venv
export PY OUTDIR

step environment 60 bash -c environment
step numpy 90 bash -c numpy_24_venv
PIP=("$PY" -m pip)
if [[ -x $OUTDIR/venv/bin/python ]]; then
    PIP=("$PY" -m pip --python "$OUTDIR/venv/bin/python")
    PY=$OUTDIR/venv/bin/python
fi
step install 120 "${PIP[@]}" install --no-index --no-deps --no-build-isolation -e .
if ! "$PY" -c 'import xpmlp.kernels.cpu, xpmlp.kernels.cuda' >/dev/null 2>&1; then
    # No editable install (no setuptools >= 70.1 on the machine?): a copy of the package, laid
    # out as installed (kernels/ as xpmlp/kernels), on PYTHONPATH.
    rm -rf "$OUTDIR/site" && mkdir -p "$OUTDIR/site" && cp -r src/xpmlp "$OUTDIR/site/" \
        && rm -rf "$OUTDIR/site/xpmlp/kernels" && cp -r kernels "$OUTDIR/site/xpmlp/kernels"
    export PYTHONPATH="$OUTDIR/site${PYTHONPATH:+:$PYTHONPATH}"
    echo "[gpu_check] install: no installed xpmlp; using a copy on PYTHONPATH ($OUTDIR/site)" \
        | tee -a "$OUTDIR/install.log"
    # The copy works: the install step is not a failure.
    if "$PY" -c 'import xpmlp.kernels.cpu, xpmlp.kernels.cuda'; then
        kept=()
        for name in ${FAILED[@]+"${FAILED[@]}"}; do [[ $name == install ]] || kept+=("$name"); done
        FAILED=(${kept[@]+"${kept[@]}"})
    fi
fi
export XPMLP_DATA_DIR="$PWD/data/mnist"
# Only the test files with CUDA or simulator tests: others may need packages (hypothesis) that
# the GPU machine lacks, and one collection error would stop the whole pytest run.
mapfile -t CUDA_TESTS < <(grep -l "pytest.mark.cuda\b" tests/test_*.py)
mapfile -t SIM_TESTS < <(grep -l "pytest.mark.cudasim" tests/test_*.py)
step info 60 "$PY" -m xpmlp info
# Fails when CUDA is not usable (the cuda tests would all be skipped, and pytest passes then).
step probe 60 "$PY" -c '
from xpmlp.backends.cuda_probe import probe_cuda
probe = probe_cuda()
print(probe)
raise SystemExit(0 if probe.usable else 1)
'
step tests-ptx 90 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_ptx.py
step tests-cuda 240 "$PY" -m pytest -q -rs -p no:cacheprovider -m cuda "${CUDA_TESTS[@]}"
step tests-cudasim 120 env NUMBA_ENABLE_CUDASIM=1 "$PY" -m pytest -q -rs -p no:cacheprovider \
    -m cudasim "${SIM_TESTS[@]}"
step launch-overhead 90 "$PY" benchmarks/launch_overhead.py --n 10000 \
    --out "$OUTDIR/launch_overhead.json"
step train 150 "$PY" -m xpmlp train --backend cuda --epochs 5 --no-download --quiet \
    --report "$OUTDIR/train.json"
step train-numpy 120 "$PY" -m xpmlp train --backend numpy --epochs 5 --no-download --quiet \
    --report "$OUTDIR/train-numpy.json"
# The issue's bar: the same test accuracy as the NumPy backend, within 0.3 percentage points.
step train-compare 30 "$PY" -c '
import json, sys
cuda, cpu = (json.load(open(sys.argv[i]))["test_accuracy"] for i in (1, 2))
gap = 100 * abs(cuda - cpu)
print(f"test accuracy after 5 epochs: cuda {cuda:.4f}, numpy {cpu:.4f}, gap {gap:.2f} pp")
sys.exit(0 if gap <= 0.3 else 1)
' "$OUTDIR/train.json" "$OUTDIR/train-numpy.json"
if "$PY" -m xpmlp bench --help >/dev/null 2>&1; then
    step bench 180 "$PY" -m xpmlp bench --quick --rows xpmlp-cuda,torch-cuda \
        --out "$OUTDIR/bench"
else
    echo "[gpu_check] bench: xpmlp bench is not available here; skipped"
fi

echo "[gpu_check] done in $(($(date +%s) - START))s; logs in $OUTDIR"
if ((${#FAILED[@]})); then
    echo "[gpu_check] FAILED: ${FAILED[*]}"
    exit 1
fi
echo "[gpu_check] all steps passed"
