#!/usr/bin/env bash
# The GPU path, run for real (issue 28, item 4). On a CUDA machine, in under 8 minutes:
#   1. tests  the tests marked `device` (pytest -m device) with CNNKIT_TEST_DEVICE=cuda
#   2. cifar  recipes/cifar10_fast.yaml on CUDA, torch.compile'd, 3 seeds (benchmarks/cifar10_speed.py), against
#             airbench94_muon's figure on the JPEG copy on one H100: >= 90.7 % mean in < 1.76 s a run, compile apart
#   3. ddp    two-process DDP over NCCL (benchmarks/ddp_throughput.py), when the machine has two GPUs or more
# Everything it writes goes to --out (default: $OUT when set, else runs/gpu-check-<time>): gpu_check.log (all
# output), summary.txt, environment.txt, results.jsonl (the figures, in benchmarks/results.jsonl's format: append
# them there to keep them) and pytest.xml. Exit status: 0 all steps passed, 1 a step failed, 2 it could not start
# (no CUDA GPU, a missing package, bad option).
#
#   bash benchmarks/gpu_check.sh              # on the CUDA machine, from the repository's root
#   bash benchmarks/gpu_check.sh --dry-run    # here: the steps on the CPU with tiny budgets (a minute or two); the
#                                             # tests are only collected (CI runs them on the CPU anyway)
#   bash benchmarks/gpu_check.sh --skip ddp   # leave steps out (tests, cifar, ddp; comma-separated)
#   bash benchmarks/gpu_check.sh --stage      # here, before sending the tree to a machine without the datasets:
#                                             # copies them (CIFAR-10 JPEG copy, MNIST: ~31 MB) to .gpu-data/
#                                             # (git-ignored: carry it) and notes the commit the copy is of
#
# Python: $CNNKIT_PYTHON if set; else .venv-cuda/bin/python, python3, .venv/bin/python, the first whose torch sees
# a GPU (on --dry-run: the first with torch). cnnkit is imported from src/ (PYTHONPATH), so nothing is installed.
# When that Python lacks a package cnnkit needs and the tree has wheels in .whl/ (no network there), it makes
# .venv-cuda (--system-site-packages, so the machine's CUDA torch stays) and installs them from .whl/ only.
# Datasets: $CNNKIT_DATA, else .gpu-data/, ../shared/datasets or shared/datasets, the first holding cifar10/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD

MODE=gpu
OUT_DIR=${OUT:-}
SKIP=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --stage) MODE=stage ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --skip) SKIP=",${2:?--skip needs step names: tests, cifar, ddp},"; shift
            for name in ${SKIP//,/ }; do
              case $name in tests|cifar|ddp) ;; *) echo "gpu_check: --skip $name: the steps are tests, cifar and ddp" >&2; exit 2 ;; esac
            done ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (use --dry-run, --stage, --skip STEPS, --out DIR or --help)" >&2; exit 2 ;;
  esac
  shift
done

# ------------------------------------------------------------------------------------------------ --stage
first_data_root() {  # the first folder holding cifar10/, in the order the header lists
  local root
  for root in "${CNNKIT_DATA:-}" "$REPO/.gpu-data" "$REPO/../shared/datasets" "$REPO/shared/datasets"; do
    if [ -n "$root" ] && [ -d "$root/cifar10" ]; then (cd "$root" && pwd); return 0; fi
  done
  return 1
}

if [ "$MODE" = stage ]; then
  src=$(first_data_root) || { echo "gpu_check --stage: no datasets found (set CNNKIT_DATA to a folder holding cifar10/ and mnist/)" >&2; exit 2; }
  if [ "$src" = "$REPO/.gpu-data" ]; then echo "gpu_check --stage: .gpu-data/ is already the datasets' folder"; exit 0; fi
  mkdir -p .gpu-data
  for name in cifar10 mnist; do
    [ -d "$src/$name" ] || { echo "gpu_check --stage: $src has no $name/" >&2; exit 2; }
    rm -rf ".gpu-data/$name" && cp -rL "$src/$name" ".gpu-data/$name" && chmod -R u+w ".gpu-data/$name"
  done
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD 2>/dev/null || commit="$commit+uncommitted"
  echo "$commit" > .gpu-data/COMMIT
  size=$(du -sm .gpu-data | cut -f1)
  echo "staged $src/{cifar10,mnist} in .gpu-data/ ($size MB, commit $commit); send the tree with .gpu-data carried"
  [ "$size" -lt 60 ] || echo "gpu_check --stage: warning: $size MB may exceed what travels with the tree" >&2
  exit 0
fi

# ------------------------------------------------------------------------------------------ where output goes
[ -n "$OUT_DIR" ] || OUT_DIR="runs/gpu-check-$(date -u +%Y%m%d-%H%M%S)$([ "$MODE" = dry ] && echo -dry-run)"
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG=$OUT_DIR/gpu_check.log
RESULTS=$OUT_DIR/results.jsonl
SUMMARY=$OUT_DIR/summary.txt
: > "$LOG"; : > "$SUMMARY"
say() { echo "$*" | tee -a "$LOG"; }
fail_setup() { say "gpu_check: $*"; echo "could not start: $*" >> "$SUMMARY"; exit 2; }
say "gpu_check ($MODE) in $REPO, output in $OUT_DIR, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"

# ------------------------------------------------------------------------------------------------- Python
has_torch() { "$1" -c 'import torch' >/dev/null 2>&1; }
sees_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
PY=
if [ -n "${CNNKIT_PYTHON:-}" ]; then
  PY=$CNNKIT_PYTHON
  has_torch "$PY" || fail_setup "CNNKIT_PYTHON=$PY cannot import torch."
else
  for candidate in "$REPO/.venv-cuda/bin/python" "$(command -v python3 || true)" "$REPO/.venv/bin/python"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] && has_torch "$candidate" || continue
    if [ "$MODE" = dry ] || sees_cuda "$candidate"; then PY=$candidate; break; fi
    [ -n "$PY" ] || PY=$candidate  # kept to name in the error below if no candidate sees a GPU
  done
  [ -n "$PY" ] || fail_setup "no Python with torch found (tried .venv-cuda/bin/python, python3, .venv/bin/python); set CNNKIT_PYTHON."
fi
if [ "$MODE" = gpu ] && ! sees_cuda "$PY"; then
  why=$("$PY" -c 'import torch; print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda or \"(none: a CPU build)\"}, sees {torch.cuda.device_count()} GPU(s)")' 2>&1 | tail -1)
  fail_setup "CUDA was asked for but $PY has no usable CUDA GPU ($why). Run this on a CUDA machine, or --dry-run to check the script on the CPU."
fi

# The packages cnnkit's training path and these tests import (constriction, for compression only, is not needed).
MODULES="numpy PIL safetensors yaml tqdm matplotlib pytest"
missing() { "$1" -c "
import importlib.util, sys
print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))" $MODULES; }
lacking=$(missing "$PY")
if [ -n "$lacking" ] && ls "$REPO"/.whl/*.whl >/dev/null 2>&1 && [ "$PY" != "$REPO/.venv-cuda/bin/python" ]; then
  say "$PY lacks: $lacking; making .venv-cuda from it with the wheels in .whl/"
  "$PY" -m venv --system-site-packages "$REPO/.venv-cuda" >>"$LOG" 2>&1 \
    && "$REPO/.venv-cuda/bin/python" -m pip install -q --no-index --no-deps "$REPO"/.whl/*.whl >>"$LOG" 2>&1 \
    || fail_setup "could not make .venv-cuda from $PY with .whl/ (see $LOG)"
  PY=$REPO/.venv-cuda/bin/python
  lacking=$(missing "$PY")
fi
[ -z "$lacking" ] || fail_setup "$PY lacks the Python package(s) for the module(s): $lacking. With no network there, bring them as wheels in .whl/ (see /work/.library/device/README.md or pip download --only-binary=:all:)."

export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA_ROOT=$(first_data_root) && export CNNKIT_DATA=$DATA_ROOT
if [ -z "${CNNKIT_COMMIT:-}" ]; then  # for the results' rows where the tree came without .git
  CNNKIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || cat "$REPO/.gpu-data/COMMIT" 2>/dev/null || echo unknown)
  export CNNKIT_COMMIT
fi

if [ "$MODE" = dry ]; then
  DEVICE=cpu
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a check of the script, not a measurement: stay off shared cores
  TEST_FILES=$(grep -l "mark.device" tests/test_*.py | tr '\n' ' ')
  TEST_ARGS="--collect-only"  # which tests the GPU run would run; CI runs them on the CPU
  CIFAR_ARGS="--device cpu --runs 1 --epochs 1 --train-subset 256 --test-subset 128 --skip-baseline"
  DDP_ARGS="--device cpu --nproc 1,2 --models lenet5 --images 256 --epochs 1"
  LIMIT_TESTS=120 LIMIT_CIFAR=120 LIMIT_DDP=120
else
  DEVICE=cuda
  TEST_FILES=$(grep -l "mark.device" tests/test_*.py | tr '\n' ' ')  # only these: the others import test-only
  TEST_ARGS=
  CIFAR_ARGS="--device cuda --compile --runs 3"                       # packages a GPU image may not have
  DDP_ARGS="--device cuda --nproc 1,2 --models lenet5,resnet20"
  LIMIT_TESTS=120 LIMIT_CIFAR=240 LIMIT_DDP=90  # 7.5 minutes at most, with set-up
fi
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)

{
  echo "mode: $MODE (device under test: $DEVICE)"
  echo "python: $PY"
  "$PY" -c '
import os, platform, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, Python {platform.python_version()}")
for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
print(f"CPU: {os.cpu_count()} cores")' 2>&1
  echo "commit: $CNNKIT_COMMIT"
  echo "datasets: ${DATA_ROOT:-none found (looked in \$CNNKIT_DATA, .gpu-data, ../shared/datasets, shared/datasets)}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
} > "$OUT_DIR/environment.txt" 2>&1
tee -a "$LOG" < "$OUT_DIR/environment.txt"

# -------------------------------------------------------------------------------------------------- steps
STATUS=0
step() {  # step NAME LIMIT_SECONDS COMMAND...: run it under a time limit, logged; its outcome goes to the summary
  local name=$1 limit=$2 start code outcome
  shift 2
  say ""
  say "== $name (limit ${limit}s): $*"
  start=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  code=${PIPESTATUS[0]}
  case $code in
    0) outcome=passed ;;
    124|137) outcome="FAILED: stopped at its ${limit}s limit" ;;
    *) outcome="FAILED (exit status $code)" ;;
  esac
  [ "$code" = 0 ] || STATUS=1
  printf '%-6s %-40s %4ss\n' "$name" "$outcome" "$(( $(date +%s) - start ))" | tee -a "$SUMMARY" "$LOG"
}
skip() { printf '%-6s %s\n' "$1" "skipped: $2" | tee -a "$SUMMARY" "$LOG"; }
skipped() { case $SKIP in *",$1,"*) skip "$1" "--skip"; return 0 ;; esac; return 1; }

# 1. The tests that are written to run on any device, on this one.
# shellcheck disable=SC2086  # TEST_FILES and the *_ARGS are word lists
if skipped tests; then :; else
  step tests "$LIMIT_TESTS" env CNNKIT_TEST_DEVICE=$DEVICE "$PY" -m pytest -q -p no:cacheprovider -m device \
    --junitxml="$OUT_DIR/pytest.xml" $TEST_ARGS $TEST_FILES
fi

# 2. The CIFAR-10 recipe.
if skipped cifar; then :
elif [ -z "$DATA_ROOT" ]; then
  say "no datasets folder: set CNNKIT_DATA, or run 'bash benchmarks/gpu_check.sh --stage' where they are and carry .gpu-data"
  printf '%-6s %s\n' cifar "FAILED: no datasets (see gpu_check.log)" | tee -a "$SUMMARY"; STATUS=1
else
  # shellcheck disable=SC2086
  step cifar "$LIMIT_CIFAR" "$PY" benchmarks/cifar10_speed.py $CIFAR_ARGS --results "$RESULTS"
  grep -h "^target\|^compile time\|^on [a-z]*: " "$LOG" >> "$SUMMARY"
fi

# 3. Data-parallel training over NCCL: one process per GPU, so two GPUs at least (gloo on the CPU in a dry run).
if skipped ddp; then :
elif [ "$MODE" = gpu ] && [ "$GPUS" -lt 2 ]; then
  skip ddp "this machine has $GPUS GPU; two-process DDP over NCCL needs two"
elif [ -z "$DATA_ROOT" ] || [ ! -d "$DATA_ROOT/mnist" ]; then
  printf '%-6s %s\n' ddp "FAILED: no mnist/ in the datasets folder" | tee -a "$SUMMARY"; STATUS=1
else
  # shellcheck disable=SC2086
  step ddp "$LIMIT_DDP" "$PY" benchmarks/ddp_throughput.py $DDP_ARGS --results "$RESULTS"
fi

say ""
say "== summary ($MODE, $(date -u '+%H:%M:%S UTC'))"
tee -a "$LOG" < "$SUMMARY"
if [ -s "$RESULTS" ]; then
  say "figures: $RESULTS$([ "$MODE" = gpu ] && echo "; to keep them: cat results.jsonl >> benchmarks/results.jsonl && python benchmarks/report.py")"
fi
exit $STATUS
