# Shared by slurm/train.sbatch and slurm/evaluate.sbatch (sourced, not run).
#
# Decides how a job step starts fitsae -- from the project's virtualenv, or inside the Apptainer
# image when FITSAE_IMAGE is set -- and sets the thread counts SLURM allotted, so ranks sharing a
# node do not each spawn a thread per core.

log() { printf '[%s %s] %s\n' "$(date -u +%H:%M:%S)" "${SLURM_JOB_NAME:-fitsae}" "$*"; }
die() { log "ERROR: $*" >&2; exit 2; }

# The checkout this job was submitted from: FITSAE_ROOT, else the parent of the directory holding
# this file.
fitsae_root() {
  if [ -n "${FITSAE_ROOT:-}" ]; then printf '%s\n' "$FITSAE_ROOT"; return; fi
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
}

apptainer_command() {
  local exe
  for exe in ${FITSAE_APPTAINER:-} apptainer singularity; do
    if command -v "$exe" >/dev/null 2>&1; then printf '%s\n' "$exe"; return 0; fi
  done
  die "FITSAE_IMAGE is set but neither apptainer nor singularity is on PATH (module load apptainer?); set FITSAE_APPTAINER"
}

# setup_launcher PATH...  -> array LAUNCH (the command that runs `fitsae` in a task)
# PATH... are files/directories the step reads or writes; their directories are bound into the image.
setup_launcher() {
  local cpus="${SLURM_CPUS_PER_TASK:-1}"
  # fitsae.distributed sizes TensorFlow's thread pools from FITSAE_THREADS.
  export FITSAE_THREADS="${FITSAE_THREADS:-$cpus}"
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$cpus}"
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
  if [ -n "${FITSAE_IMAGE:-}" ]; then
    [ -f "$FITSAE_IMAGE" ] || die "FITSAE_IMAGE=$FITSAE_IMAGE does not exist"
    local p binds=() joined
    for p in "$@" "${SLURM_SUBMIT_DIR:-$PWD}"; do
      [ -n "$p" ] || continue
      [ -d "$p" ] || p="$(dirname "$p")"
      binds+=("$(readlink -m "$p")")
    done
    joined="$(printf '%s\n' "${binds[@]}" | sort -u | paste -sd, -)"
    [ -n "${FITSAE_BINDS:-}" ] && joined="$joined,$FITSAE_BINDS"
    # Paths stay identical inside the image, so params.yaml and manifests are valid on both sides.
    LAUNCH=("$(apptainer_command)" exec --nv --bind "$joined" "$FITSAE_IMAGE" fitsae)
    log "launcher: image $FITSAE_IMAGE (binds $joined)"
  else
    local venv="${FITSAE_VENV:-$(fitsae_root)/.venv}"
    [ -x "$venv/bin/fitsae" ] || die "no fitsae in $venv; run scripts/setup.sh, set FITSAE_VENV, or set FITSAE_IMAGE"
    export PATH="$venv/bin:$PATH"
    LAUNCH=("$venv/bin/fitsae")
    log "launcher: venv $venv"
  fi
}

# read_sweep_line FILE INDEX -> SWEEP_CONFIG SWEEP_RUN_DIR SWEEP_SEED from line INDEX (0-based,
# comments skipped) of a tab-separated file written by slurm/submit.sh.
read_sweep_line() {
  local line
  line="$(grep -v '^#' "$1" | sed -n "$(($2 + 1))p")"
  [ -n "$line" ] || { log "ERROR: sweep $1 has no line $2" >&2; return 2; }
  IFS=$'\t' read -r SWEEP_CONFIG SWEEP_RUN_DIR SWEEP_SEED <<<"$line"
}

# wait_step PID -> the exit code of the background job step, even when trapped signals interrupt
# `wait` (it then returns >128 while the step still runs).
wait_step() {
  local pid="$1" rc again
  while :; do
    wait "$pid"; rc=$?
    [ "$rc" -gt 128 ] || break
    kill -0 "$pid" 2>/dev/null && continue
    wait "$pid"; again=$?
    [ "$again" != 127 ] && rc=$again
    break
  done
  return "$rc"
}
