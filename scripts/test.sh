#!/usr/bin/env bash
# README line 2: set up (idempotent) and run the whole test suite, MPI/SLURM/container tests included.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slurm" -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${FITSAE_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
