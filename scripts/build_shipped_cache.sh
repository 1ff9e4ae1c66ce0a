#!/usr/bin/env bash
# Rebuild everything shipped beside a checkpoint: its HDF5 cache (synopsis on the evaluation
# prompts, screening, the relation and object head sweeps, variance) and docs/reproduction.md.
# Usage: bash scripts/build_shipped_cache.sh [CHECKPOINT] [RUN_DIR_WITH_METRICS]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-checkpoints/micro-rte}
RUN=${2:-training/micro-rte-lr3e-4-b32}
N_PER_PROMPT=${N_PER_PROMPT:-2}
N_ABLATE=${N_ABLATE:-96}
dit-workbench info "$CKPT"
dit-workbench synopsis "$CKPT" --prompts eval --n-per-prompt "$N_PER_PROMPT" --seed 0 --steps 14
dit-workbench screen "$CKPT" --best --top 5
dit-workbench ablate "$CKPT" --sweep "mask-head *.* tokens=relation" --n "$N_ABLATE" --seed 0
dit-workbench ablate "$CKPT" --sweep "mask-head *.* tokens=shape1,shape2" --n "$N_ABLATE" --seed 0
dit-workbench variance "$CKPT" --prompts eval
dit-workbench report "$CKPT" --curves "$RUN" --out docs/reproduction.md
