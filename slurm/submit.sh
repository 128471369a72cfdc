#!/usr/bin/env bash
# Submit fitsae training and its evaluation as two chained SLURM jobs, or a sweep as job arrays.
#
#   slurm/submit.sh --config train/smoke.yaml --run-dir runs/smoke --data DATA [--data DATA...] [-- SBATCH-OPTIONS]
#       train job, then an evaluate job that starts only if training succeeded (--dependency=afterok)
#   slurm/submit.sh --sweep --configs a.yaml,b.yaml --seeds 1,2,3 --run-root runs/sweep --data DATA [-- SBATCH-OPTIONS]
#       one training array task per (config, seed), run dirs RUN_ROOT/<config>-seed<seed>; the
#       evaluation array task i starts when training task i succeeded (--dependency=aftercorr),
#       so one failed seed does not hold back the others
#
# Options: --no-eval (training only), --set KEY=VALUE (repeatable, passed to fitsae train),
# --dry-run (print the sbatch commands). SBATCH-OPTIONS after `--` go to the training job(s),
# FITSAE_EVAL_SBATCH_ARGS to the evaluation job(s). Resource shortcuts for training:
#   FITSAE_NODES, FITSAE_TASKS_PER_NODE, FITSAE_CPUS_PER_TASK, FITSAE_GPUS_PER_TASK, FITSAE_TIME,
#   FITSAE_PARTITION, FITSAE_ACCOUNT
# Prints TRAIN_JOB=<id> and EVAL_JOB=<id> lines for scripts. Logs go to ./logs/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { printf 'submit.sh: %s\n' "$*" >&2; exit 2; }

sweep=0 eval=1 dry=0 config="" run_dir="" run_root="" configs="" seeds=""
data=() sets=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --run-dir) run_dir="$2"; shift 2 ;;
    --data) data+=("$2"); shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --sweep) sweep=1; shift ;;
    --configs) configs="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --run-root) run_root="$2"; shift 2 ;;
    --no-eval) eval=0; shift ;;
    --dry-run) dry=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ $eval = 0 ] || [ ${#data[@]} -gt 0 ] || die "--data is required for the evaluation job (or --no-eval)"

train_opts=()
[ -n "${FITSAE_NODES:-}" ] && train_opts+=(--nodes="$FITSAE_NODES")
[ -n "${FITSAE_TASKS_PER_NODE:-}" ] && train_opts+=(--ntasks-per-node="$FITSAE_TASKS_PER_NODE")
[ -n "${FITSAE_CPUS_PER_TASK:-}" ] && train_opts+=(--cpus-per-task="$FITSAE_CPUS_PER_TASK")
[ -n "${FITSAE_GPUS_PER_TASK:-}" ] && train_opts+=(--gpus-per-task="$FITSAE_GPUS_PER_TASK")
[ -n "${FITSAE_TIME:-}" ] && train_opts+=(--time="$FITSAE_TIME")
[ -n "${FITSAE_PARTITION:-}" ] && train_opts+=(--partition="$FITSAE_PARTITION")
[ -n "${FITSAE_ACCOUNT:-}" ] && train_opts+=(--account="$FITSAE_ACCOUNT")
read -r -a eval_opts <<<"${FITSAE_EVAL_SBATCH_ARGS:-}"
[ -n "${FITSAE_PARTITION:-}" ] && eval_opts+=(--partition="$FITSAE_PARTITION")
[ -n "${FITSAE_ACCOUNT:-}" ] && eval_opts+=(--account="$FITSAE_ACCOUNT")

# Nothing is queued that would fail when it starts: every config is read by `fitsae train --check`
# exactly as the job will read it (unknown keys, bad values, tile vs model stride, missing data
# paths; no TensorFlow, a second or two), and every --data path must exist. In a subshell, so the
# launcher's thread settings do not leak into the environment sbatch passes on to the jobs.
check_train() {  # CONFIG RUN_DIR [fitsae train options]
  [ -f "$1" ] || die "config $1 not found; nothing submitted"
  ( . "$ROOT/slurm/common.sh"
    setup_launcher "$1" "$2" >/dev/null
    "${LAUNCH[@]}" train --check --config "$1" --run-dir "$2" "${@:3}" ) >&2 \
    || die "config $1 does not pass \`fitsae train --check\` (see above); nothing submitted"
}
check_data() {
  local d
  for d in "${data[@]}"; do
    [ -e "$d" ] || compgen -G "$d" >/dev/null || die "--data $d: no such file, directory or glob match; nothing submitted"
  done
}

# The jobs find slurm/common.sh and the venv of this checkout through FITSAE_ROOT.
export FITSAE_ROOT="$ROOT"

submit() {
  if [ $dry = 1 ]; then { printf 'sbatch'; printf ' %q' "$@"; printf '\n'; } >&2; echo "<jobid>"; return; fi
  sbatch --parsable "$@" | cut -d';' -f1
}

if [ $sweep = 0 ]; then
  [ -n "$config" ] && [ -n "$run_dir" ] || die "--config and --run-dir are required (or --sweep)"
  check_train "$config" "$run_dir" "${sets[@]}"
  check_data
  mkdir -p logs
  train_job="$(submit "${train_opts[@]}" "${extra[@]}" "$ROOT/slurm/train.sbatch" "$config" "$run_dir" "${sets[@]}")"
  echo "TRAIN_JOB=$train_job"
  if [ $eval = 1 ]; then
    eval_job="$(submit --dependency=afterok:"$train_job" --kill-on-invalid-dep=yes "${eval_opts[@]}" \
      "$ROOT/slurm/evaluate.sbatch" "$run_dir" "${data[@]}")"
    echo "EVAL_JOB=$eval_job"
  fi
  exit 0
fi

[ -n "$configs" ] && [ -n "$seeds" ] && [ -n "$run_root" ] || die "--sweep needs --configs, --seeds and --run-root"
IFS=, read -r -a config_list <<<"$configs"
IFS=, read -r -a seed_list <<<"$seeds"
for c in "${config_list[@]}"; do
  check_train "$c" "$(readlink -m "$run_root")/$(basename "${c%.*}")-seed${seed_list[0]}" \
    --set "${FITSAE_SWEEP_SEED_KEY:-train.seed}=${seed_list[0]}" "${sets[@]}"
done
check_data
mkdir -p logs "$run_root"
table="$(readlink -f "$run_root")/sweep.tsv"
{
  printf '# config\trun_dir\tseed (written by slurm/submit.sh; line i is array task i)\n'
  for c in "${config_list[@]}"; do
    for s in "${seed_list[@]}"; do
      printf '%s\t%s\t%s\n' "$(readlink -f "$c")" "$(readlink -m "$run_root")/$(basename "${c%.*}")-seed$s" "$s"
    done
  done
} >"$table"
n=$(($(grep -vc '^#' "$table") - 1))
train_job="$(submit --array=0-$n --output='logs/%x-%A_%a.out' "${train_opts[@]}" "${extra[@]}" \
  "$ROOT/slurm/train.sbatch" --sweep "$table" "${sets[@]}")"
echo "SWEEP=$table"
echo "TRAIN_JOB=$train_job"
if [ $eval = 1 ]; then
  eval_job="$(submit --array=0-$n --output='logs/%x-%A_%a.out' --dependency=aftercorr:"$train_job" \
    --kill-on-invalid-dep=yes "${eval_opts[@]}" "$ROOT/slurm/evaluate.sbatch" --sweep "$table" "${data[@]}")"
  echo "EVAL_JOB=$eval_job"
fi
