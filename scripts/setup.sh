#!/usr/bin/env bash
# One set-up path for the README's commands, CI and users: system MPI and compilers, .venv,
# fitsae with every extra, mpi4py and Horovod compiled against that MPI and TensorFlow,
# then `fitsae doctor`. Idempotent: when nothing changed it only re-runs doctor.
#
# Environment:
#   FITSAE_VENV    where the virtualenv goes (default: <repo>/.venv)
#   FITSAE_PYTHON  the Python 3.11 to build it from (default: python3.11, then python3)
#   FITSAE_GPU=1   install tensorflow (CUDA) instead of tensorflow-cpu
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FITSAE_VENV:-$ROOT/.venv}"
CONSTRAINTS="$ROOT/constraints.txt"
say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 2; }

# --- 1. System packages: an MPI compiler, a C++ toolchain, cmake, Python headers and venv ------------
PY="${FITSAE_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$(command -v "$cand")"; break
    fi
  done
fi

missing_apt=()
command -v mpicc >/dev/null || missing_apt+=(openmpi-bin libopenmpi-dev)
command -v g++ >/dev/null || missing_apt+=(g++)
command -v make >/dev/null || missing_apt+=(make)
command -v cmake >/dev/null || missing_apt+=(cmake)
if [ -z "$PY" ]; then
  missing_apt+=(python3 python3-dev python3-venv)
else
  "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing_apt+=(python3-dev)
  "$PY" -c 'import ensurepip' 2>/dev/null || missing_apt+=(python3-venv)
fi

if [ ${#missing_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
  else
    msg="fitsae needs: ${missing_apt[*]} (Debian package names)."
    if command -v module >/dev/null 2>&1 || [ -n "${MODULESHOME:-}" ] || [ -n "${LMOD_CMD:-}" ]; then
      msg="$msg On a cluster, load them as modules instead, e.g. \`module load openmpi cmake gcc python/3.11\` (names vary by site; see \`module avail\`), then run this script again."
    elif command -v apt-get >/dev/null; then
      msg="$msg As root: apt-get install ${missing_apt[*]}"
    else
      msg="$msg Install an MPI with its compiler wrappers (mpicc), a C++ compiler, cmake, make and Python 3.11 with headers and venv from your system's packages, then run this script again."
    fi
    die "$msg"
  fi
fi
if [ -z "$PY" ]; then
  PY="$(command -v python3.11 || command -v python3)"
  "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "fitsae needs Python 3.11; found $("$PY" --version). Set FITSAE_PYTHON=/path/to/python3.11"
fi

# --- 2. The virtualenv --------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# Everything that decides what gets installed: when none of it changed, skip pip entirely.
TF_EXTRA=cpu; [ "${FITSAE_GPU:-0}" = 1 ] && TF_EXTRA=gpu
stamp_of() {
  { cat "$ROOT/setup.cfg" "$CONSTRAINTS"; echo "$TF_EXTRA"; mpicc --showme:version 2>/dev/null || mpicc --version; "$VENV/bin/python" --version; } | sha256sum | cut -d' ' -f1
}
STAMP_FILE="$VENV/.fitsae-setup"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$(stamp_of)" ]; then
  say "environment up to date ($VENV)"
else
  say "installing fitsae and its pinned stack into $VENV (first time: several minutes)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --upgrade pip setuptools wheel
  # mpi4py must be compiled against this machine's MPI, not take a wheel bundling another one.
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-binary mpi4py -e "$ROOT[$TF_EXTRA,sim,codecs,dev]" mpi4py
  # Horovod compiles against the TensorFlow now installed, so it needs no build isolation;
  # pip keeps the built wheel in its cache, so later venvs on this machine reuse it.
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    MAKEFLAGS="${MAKEFLAGS:--j2}" \
    "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-build-isolation horovod
  stamp_of > "$STAMP_FILE"
fi

# --- 3. Check -----------------------------------------------------------------------------------------
"$VENV/bin/fitsae" doctor
