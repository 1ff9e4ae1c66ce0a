#!/usr/bin/env bash
# Install dit-workbench into the active Python environment.
#   bash scripts/install.sh        # the tool
#   bash scripts/install.sh --dev  # the tool plus test and lint tools
# An existing torch (for example a CUDA build on a GPU server) is kept as it is. Only when no
# torch is importable is the pinned release installed: on the project's CPU machines pip finds
# its local CPU wheel, elsewhere PyPI's default build for the platform.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TORCH_PIN="torch==2.13.0"
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "$TORCH_PIN"
fi
"$PY" -m pip install -q -e ".${extra}"
