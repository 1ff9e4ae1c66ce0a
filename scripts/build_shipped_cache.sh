#!/usr/bin/env bash
# Rebuild everything shipped beside the checkpoints: the main checkpoint's HDF5 cache (synopsis
# on the evaluation prompts with the evaluator's verdicts, screening, the relation and object
# head sweeps, the word-level robustness contrast, variance), the comparison checkpoints'
# synopsis and screening, and docs/reproduction.md from all of them.
#
# Usage: bash scripts/build_shipped_cache.sh [MAIN_CHECKPOINT [COMPARISON_CHECKPOINT...]]
# Environment: N_PER_PROMPT (seeds per evaluation prompt, default 4: 1,056 images),
# N_ABLATE (paired prompts and seeds per relation-sweep and word condition, default 128),
# N_ABLATE_SHAPE (the same for the object-head sweep, default 64), CACHE (cache folder,
# default ./cache), DEVICE (auto: CUDA when present).
#
# Resumable: each finished step leaves a marker in $CACHE/build-state/, so running the script
# again after an interruption skips what is done (a synopsis also resumes inside its run). On two
# idle CPU cores the default settings take about 100 minutes for the mini checkpoints (about 2.5
# images/s); on a GPU, minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=${1:-checkpoints/mini-rte}
shift || true
if [ "$#" -gt 0 ]; then COMPARE=("$@"); else
  COMPARE=(checkpoints/mini-rte-lr4e-4 checkpoints/mini-rte-nopos-lr4e-4)
fi
N_PER_PROMPT=${N_PER_PROMPT:-4}
N_ABLATE=${N_ABLATE:-128}
N_ABLATE_SHAPE=${N_ABLATE_SHAPE:-64}
CACHE=${CACHE:-cache}
DEVICE=${DEVICE:-auto}
STATE="$CACHE/build-state"
mkdir -p "$STATE"

# step NAME COMMAND...: run COMMAND unless NAME finished before with the same settings.
step() {
  local name=$1
  shift
  local marker="$STATE/$(echo "$name" | tr '/ *=,' '_____')"
  if [ -f "$marker" ]; then echo "== $name: done before, skipped"; return; fi
  echo "== $name: $(date -u +%H:%M:%S)"
  "$@"
  date -u +%FT%TZ >"$marker"
}

for CKPT in "$MAIN" "${COMPARE[@]}"; do
  step "synopsis $CKPT n$N_PER_PROMPT" dit-workbench synopsis "$CKPT" --prompts eval \
    --n-per-prompt "$N_PER_PROMPT" --seed 0 --steps 14 --cache "$CACHE"
  step "screen $CKPT" dit-workbench screen "$CKPT" --best --top 5 --cache "$CACHE"
  # only the main checkpoint gets the interventions; the others are compared by their samples
  [ "$CKPT" = "$MAIN" ] || continue
  step "sweep relation $CKPT n$N_ABLATE" dit-workbench ablate "$CKPT" \
    --sweep "mask-head *.* tokens=relation" --n "$N_ABLATE" --seed 0 --device "$DEVICE" \
    --cache "$CACHE"
  step "words $CKPT n$N_ABLATE" dit-workbench ablate "$CKPT" \
    -i "insert-filler the where=before-relation" -i "drop-words relation" \
    -i "drop-words shape2" --n "$N_ABLATE" --seed 0 --device "$DEVICE" --cache "$CACHE"
done
step "sweep shape $MAIN n$N_ABLATE_SHAPE" dit-workbench ablate "$MAIN" \
  --sweep "mask-head *.* tokens=shape1,shape2" --n "$N_ABLATE_SHAPE" --seed 0 --device "$DEVICE" \
  --cache "$CACHE"
step "variance $MAIN" dit-workbench variance "$MAIN" --prompts eval --cache "$CACHE"
dit-workbench report "$MAIN" "${COMPARE[@]}" --cache "$CACHE" --out docs/reproduction.md
