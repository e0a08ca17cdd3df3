#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs through .ci/run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup_venv.sh
# All cores (pytest-xdist) unless the caller chose -n itself.
parallel=(-n auto --dist worksteal)
for arg in "$@"; do
    case "$arg" in -n|-n*|--numprocesses*) parallel=() ;; esac
done
exec .venv/bin/python -m pytest "${parallel[@]}" "$@"
