#!/usr/bin/env bash
# One command for a bare GPU machine with no network, sized for a short GPU window: install
# xpmlp, probe CUDA, run the CUDA tests, the launch-overhead microbenchmark, the CUDA-graph
# experiment, 5 epochs of training on the GPU and on NumPy (to compare test accuracy), a fast
# GPU training run and `xpmlp bench` (A, B, C). Sized to end within 4 minutes: on an H200
# (2026-11-27) a whole run took 262 s with the tests on 8 workers cut at 90 s; the tests
# alone took 66 s on 14 workers (now the default), the bench 104 s, the rest about 60 s.
#
#   benchmarks/gpu_check.sh OUTDIR          (run from anywhere; it works in the repository root)
#
# OUTDIR receives at most 4 files (nothing else in it is touched):
#   summary.json  device, versions, git commit, budget, total seconds and, for every step, its
#                 status (passed / failed / timed_out / skipped / not_run), rc, seconds, note
#                 and key figures (written after every step, so a killed run still leaves one)
#   logs.tar.gz   logs/<step>.log of every step, steps.tsv, environment.json and the step JSONs
#                 (launch_overhead.json, graph.json, train.json, train-numpy.json,
#                 train-fast.json, bench/)
#   bench.json, bench.md   from `xpmlp bench --out` (when the bench step wrote them)
# Everything else (logs, Numba cache, venv, package copy) lives in a scratch directory,
# ${TMPDIR:-/tmp}/gpu_check.XXXXXX, removed at the end unless GPU_CHECK_KEEP=1.
#
# Steps, in order (names as in summary.json): environment, install, probe, tests-cuda,
# launch-overhead, graph (skipped when benchmarks/graph_experiment.py is absent), train,
# train-numpy (CPU only, run in the background during tests-cuda), train-compare (test accuracy
# of cuda and numpy within 0.3 points), train-fast, bench. Each has a time limit; a step that
# fails does not stop the others; no step starts once GPU_CHECK_BUDGET seconds are spent (it is
# "skipped", note "budget") and each limit is clipped to what is left. The exit status is 1 if
# any step failed or timed out. At the end stdout shows, for each failed step, the last 30 lines
# of its log, then one line per step (name, status, seconds, key figures).
#
# Environment variables:
#   GPU_CHECK_BUDGET     seconds of steps (default 230)
#   GPU_CHECK_ONLY       step1,step2,...: run only these; the others are "skipped" (note
#                        "not selected"). For tests and fast reruns.
#   GPU_BENCH_PROFILE    full (default: on a GPU the full A, B and C take seconds) or quick
#   GPU_CHECK_TESTS_LIMIT  seconds for tests-cuda (default 90)
#   GPU_CHECK_WORKERS    pytest-xdist workers of tests-cuda (default 14; 0: one process)
#   GPU_BENCH_ROWS       rows of the bench step (default: those of xpmlp-cuda,xpmlp-cuda-eager,
#                        torch-cuda that `xpmlp bench` knows)
#   GPU_FAST_TRAIN_ARGS  extra `xpmlp train` arguments of train-fast (default "--epochs 8")
#   PYTHON               the interpreter (default python3)
#   GPU_CHECK_KEEP=1     keep the scratch directory (its path is printed)
#
# Expected on the machine: Python 3.12, CuPy 14 (CUDA 13), numba, numba-cuda, PyTorch, pytest,
# GNU timeout and tar, bash 4+ (setuptools for an editable install; without it a copy of the
# package goes on PYTHONPATH). numba-cuda 0.30 fails on NumPy 2.5 (numpy.row_stack is gone);
# xpmlp.kernels.compat puts the alias back, so the machine's NumPy is used as it is. To test
# with NumPy 2.4 instead, put a NumPy 2.4 wheel in benchmarks/wheels/ (numpy-2.4*.whl): the
# install step then installs it, offline, into a virtual environment in the scratch directory
# that sees the system packages. Fetch that wheel beforehand on a machine with network:
#   pip download 'numpy>=2.4,<2.5' --only-binary=:all: --no-deps --python-version 3.12 \
#       --platform manylinux_2_27_x86_64 -d benchmarks/wheels
set -u

OUTDIR=${1:?usage: benchmarks/gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
SYS_PY=$PY  # runs gpu_summary.py, which needs no xpmlp
BUDGET=${GPU_CHECK_BUDGET:-230}
ONLY=${GPU_CHECK_ONLY:-}
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
LOGS=$WORK/logs
mkdir -p "$LOGS" || exit 2
STEPS=(environment install probe tests-cuda launch-overhead graph train train-numpy
    train-compare train-fast bench)
STEP_LIST=$(IFS=,; echo "${STEPS[*]}")
for name in ${ONLY//,/ }; do
    [[ ",$STEP_LIST," == *",$name,"* ]] || echo "[gpu_check] GPU_CHECK_ONLY: no step '$name'"
done
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
# A fresh Numba cache per run. Not needed for correctness: Numba keys a cached kernel on its own
# file, but each kernel's name carries a fingerprint of the bytecode of every formula it reaches
# (kernels/compiler.py), so an edited formula compiles afresh; a fresh cache keeps runs apart.
export NUMBA_CACHE_DIR="$WORK/numba-cache"
unset CUPY_TF32  # FP32 matrix products on both sides of every comparison
export XPMLP_DATA_DIR="$PWD/data/mnist"

write_summary() {
    "$SYS_PY" benchmarks/gpu_summary.py summary "$WORK" "$OUTDIR/summary.json" \
        --steps "$STEP_LIST" --budget "$BUDGET" --start "$START" "$@"
}

# logs.tar.gz from the logs folder (a temporary name, then mv: the background step packs too)
pack_logs() {
    local tmp="$OUTDIR/.logs.tar.gz.$BASHPID"
    tar -czf "$tmp" -C "$WORK" logs 2>/dev/null
    mv -f "$tmp" "$OUTDIR/logs.tar.gz"
}

# record NAME STATUS RC SECONDS NOTE: a line of steps.tsv, then summary.json and logs.tar.gz
record() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$LOGS/steps.tsv"
    write_summary >>"$LOGS/summary.log" 2>&1
    pack_logs
}

selected() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

# run_step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, log to LOGS/NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    local log=$LOGS/$name.log
    if ! selected "$name"; then
        record "$name" skipped "" "" "not selected"
        return 0
    fi
    local left=$((BUDGET - ($(date +%s) - START)))
    if ((left < 5)); then
        echo "skipped: the ${BUDGET}s budget is spent" >"$log"
        echo "[gpu_check] $name: skipped (budget)"
        record "$name" skipped "" "" "budget"
        return 0
    fi
    ((limit > left)) && limit=$left
    local t0 t1 rc status
    t0=$(date +%s.%N)
    echo "[gpu_check] $name (limit ${limit}s) ..."
    { echo "\$ $*"; echo; } >"$log"
    timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    local seconds
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
        0) status=passed ;;
        124 | 137) status=timed_out; echo "timed out after ${limit}s" >>"$log" ;;
        *) status=failed ;;
    esac
    echo "[gpu_check] $name: $status (rc=$rc) in ${seconds}s"
    record "$name" "$status" "$rc" "$seconds" ""
}

# skip_step NAME NOTE: a step that cannot run in this tree (not a failure)
skip_step() {
    selected "$1" || { record "$1" skipped "" "" "not selected"; return 0; }
    echo "$2" >"$LOGS/$1.log"
    echo "[gpu_check] $1: skipped ($2)"
    record "$1" skipped "" "" "$2"
}

# shellcheck disable=SC2329  # run by bash -c
environment() {
    echo "date: $(date -u +%FT%TZ)"
    echo "python: $PY ($("$PY" --version 2>&1))"
    git rev-parse HEAD 2>/dev/null && git status --short | head -20
    nvidia-smi || echo "nvidia-smi failed"
    "$PY" benchmarks/gpu_summary.py environment "$LOGS/environment.json"
}

# NumPy 2.5+ with a NumPy 2.4 wheel in benchmarks/wheels: make WORK/venv (system packages
# visible) holding it; the system pip installs into it (pip --python). Then the editable
# install of xpmlp (offline, no dependencies).
# shellcheck disable=SC2329  # run by bash -c
install_xpmlp() {
    local version wheel wheels pip=("$PY" -m pip)
    version=$("$PY" -c 'import numpy; print(numpy.__version__)') || return 1
    echo "system NumPy: $version"
    wheels=(benchmarks/wheels/numpy-2.4*.whl)
    [[ -f ${wheels[0]} ]] && wheel=${wheels[0]} || wheel=""
    if "$PY" -c 'import sys, numpy; sys.exit(tuple(map(int, numpy.__version__.split(".")[:2])) < (2, 5))' \
        && [[ -n $wheel ]]; then
        "$PY" -m venv --system-site-packages --without-pip "$WORK/venv" || return 1
        "$PY" -m pip --python "$WORK/venv/bin/python" install --no-index --no-deps "$wheel" \
            || return 1
        pip=("$PY" -m pip --python "$WORK/venv/bin/python")
        echo "using $WORK/venv: NumPy $("$WORK/venv/bin/python" -c 'import numpy; print(numpy.__version__)')"
    fi
    "${pip[@]}" install --no-index --no-deps --no-build-isolation -e .
}

# The bench rows: GPU_BENCH_ROWS, else those of the default list that xpmlp bench knows.
# shellcheck disable=SC2329  # run by bash -c
bench() {
    local rows=${GPU_BENCH_ROWS:-}
    if [[ -z $rows ]]; then
        rows=$(PYTHONPATH=benchmarks${PYTHONPATH:+:$PYTHONPATH} "$PY" -c 'import sys
from xpmlp_bench.registry import ROWS
print(",".join(r for r in sys.argv[1].split(",") if r in ROWS))' \
            xpmlp-cuda,xpmlp-cuda-eager,torch-cuda) || rows=xpmlp-cuda,torch-cuda
    fi
    local quick=(--quick)
    [[ ${GPU_BENCH_PROFILE:-full} == full ]] && quick=()
    echo "rows: $rows; profile: ${GPU_BENCH_PROFILE:-full}"
    "$PY" -m xpmlp bench ${quick[@]+"${quick[@]}"} --workloads A,B,C --rows "$rows" \
        --out "$LOGS/bench"
}
export -f environment install_xpmlp bench
export PY LOGS WORK

finish() {
    write_summary --table >"$WORK/table.txt" 2>>"$LOGS/summary.log"
    pack_logs
    for f in bench.json bench.md; do
        [[ -f $LOGS/bench/$f ]] && cp "$LOGS/bench/$f" "$OUTDIR/$f"
    done
    local name status failed=0
    for name in "${STEPS[@]}"; do
        status=$(awk -F'\t' -v n="$name" '$1 == n { s = $2 } END { print s }' \
            "$LOGS/steps.tsv" 2>/dev/null)
        if [[ $status == failed || $status == timed_out ]]; then
            failed=1
            echo "==== $name: last 30 lines ===="
            tail -n 30 "$LOGS/$name.log" 2>/dev/null
        fi
    done
    echo "==== gpu_check: $OUTDIR ($(cd "$OUTDIR" && echo *)) ===="
    cat "$WORK/table.txt" 2>/dev/null || echo "(no summary table: see logs.tar.gz summary.log)"
    if [[ ${GPU_CHECK_KEEP:-0} == 1 ]]; then
        echo "[gpu_check] scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    return "$failed"
}
trap 'echo "[gpu_check] interrupted"; finish; exit 130' INT TERM

run_step environment 40 bash -c environment
run_step install 60 bash -c install_xpmlp
[[ -x $WORK/venv/bin/python ]] && PY=$WORK/venv/bin/python && export PY
if ! "$PY" -c 'import xpmlp.kernels.cpu, xpmlp.kernels.cuda' >/dev/null 2>&1; then
    # No editable install (no setuptools >= 70.1 on the machine?): a copy of the package, laid
    # out as installed (kernels/ as xpmlp/kernels), on PYTHONPATH.
    rm -rf "$WORK/site" && mkdir -p "$WORK/site" && cp -r src/xpmlp "$WORK/site/" \
        && rm -rf "$WORK/site/xpmlp/kernels" && cp -r kernels "$WORK/site/xpmlp/kernels"
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    echo "[gpu_check] no installed xpmlp; using a copy on PYTHONPATH ($WORK/site)" \
        | tee -a "$LOGS/install.log"
    # The copy works: the install step is not a failure.
    if selected install && "$PY" -c 'import xpmlp.kernels.cpu, xpmlp.kernels.cuda'; then
        record install passed 0 "" "editable install failed; a copy on PYTHONPATH"
    fi
fi
# Fails when CUDA is not usable (the cuda tests would all be skipped, and pytest passes then).
run_step probe 30 "$PY" -c '
from xpmlp.backends.cuda_probe import probe_cuda
probe = probe_cuda()
print(probe)
raise SystemExit(0 if probe.usable else 1)
'
# CPU only, in the background while the CUDA tests run (nothing else runs beside a timing).
run_step train-numpy 120 "$PY" -m xpmlp train --backend numpy --epochs 5 --no-download \
    --quiet --report "$LOGS/train-numpy.json" &
TRAIN_NUMPY=$!
# Only the test files with CUDA tests: others may need packages (hypothesis) that the GPU
# machine lacks, and one collection error would stop the whole pytest run.
mapfile -t CUDA_TESTS < <(grep -l "pytest.mark.cuda\b" tests/test_*.py)
# Hundreds of kernels compile for the first time here: with pytest-xdist (on the GPU image),
# 14 worker processes compile them side by side (GPU_CHECK_WORKERS, 0 for one process).
XDIST=()
if ((${GPU_CHECK_WORKERS:-14} > 0)) && "$PY" -c 'import xdist' 2>/dev/null; then
    XDIST=(-n "${GPU_CHECK_WORKERS:-14}")
fi
run_step tests-cuda "${GPU_CHECK_TESTS_LIMIT:-90}" "$PY" -m pytest -q -rs -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    -m cuda "${CUDA_TESTS[@]}"
wait "$TRAIN_NUMPY"
run_step launch-overhead 40 "$PY" benchmarks/launch_overhead.py --n 1500 \
    --out "$LOGS/launch_overhead.json"
if [[ -f benchmarks/graph_experiment.py ]]; then
    run_step graph 60 "$PY" benchmarks/graph_experiment.py --epochs 2 --out "$LOGS/graph.json"
else
    skip_step graph "benchmarks/graph_experiment.py is not in this tree"
fi
run_step train 60 "$PY" -m xpmlp train --backend cuda --epochs 5 --no-download --quiet \
    --report "$LOGS/train.json"
# The issue's bar: the same test accuracy as the NumPy backend, within 0.3 percentage points.
run_step train-compare 20 "$PY" -c '
import json, sys
cuda, cpu = (json.load(open(sys.argv[i]))["test_accuracy"] for i in (1, 2))
gap = 100 * abs(cuda - cpu)
print(f"test accuracy after 5 epochs: cuda {cuda:.4f}, numpy {cpu:.4f}, gap {gap:.2f} pp")
sys.exit(0 if gap <= 0.3 else 1)
' "$LOGS/train.json" "$LOGS/train-numpy.json"
# shellcheck disable=SC2086  # GPU_FAST_TRAIN_ARGS is a list of arguments
run_step train-fast 60 "$PY" -m xpmlp train --backend cuda --no-download --quiet \
    --report "$LOGS/train-fast.json" ${GPU_FAST_TRAIN_ARGS:---epochs 8}
run_step bench 110 bash -c bench

trap - INT TERM
echo "[gpu_check] done in $(($(date +%s) - START))s"
finish
exit $?
