#!/usr/bin/env bash
# Rebuild everything shipped beside the checkpoints: the main checkpoint's HDF5 cache (synopsis
# on the evaluation prompts, screening, the relation and object head sweeps, variance), the
# comparison checkpoints' synopsis and screening, and docs/reproduction.md from all of them.
# Usage: bash scripts/build_shipped_cache.sh [MAIN_CHECKPOINT [COMPARISON_CHECKPOINT...]]
# Environment: N_PER_PROMPT (seeds per evaluation prompt, default 2), N_ABLATE (paired seeds
# per sweep condition, default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=${1:-checkpoints/micro-rte}
shift || true
if [ "$#" -gt 0 ]; then COMPARE=("$@"); else
  COMPARE=(checkpoints/micro-rte-s8000 checkpoints/micro-rte-nopos-s8000)
fi
N_PER_PROMPT=${N_PER_PROMPT:-2}
N_ABLATE=${N_ABLATE:-64}
for CKPT in "$MAIN" "${COMPARE[@]}"; do
  dit-workbench info "$CKPT"
  dit-workbench synopsis "$CKPT" --prompts eval --n-per-prompt "$N_PER_PROMPT" --seed 0 --steps 14
  dit-workbench screen "$CKPT" --best --top 5
done
dit-workbench ablate "$MAIN" --sweep "mask-head *.* tokens=relation" --n "$N_ABLATE" --seed 0
dit-workbench ablate "$MAIN" --sweep "mask-head *.* tokens=shape1,shape2" --n "$N_ABLATE" --seed 0
dit-workbench variance "$MAIN" --prompts eval
dit-workbench report "$MAIN" "${COMPARE[@]}" --out docs/reproduction.md
