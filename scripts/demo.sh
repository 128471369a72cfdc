#!/usr/bin/env bash
# README line 1: the main job on built-in defaults.
#   set-up (idempotent) → simulate GalSim fields → `mpirun -np 2 fitsae train` (fully-conv tunable AE,
#   256×256 tiles, trained on crops) → `fitsae evaluate` against PCA and fpack on held-out simulated
#   tiles and on a real sky image shipped with astropy → compress and decompress them with the codec →
#   print where the results are.
# Run again, it reuses the data and resumes the run (already finished: nothing to train), then
# re-evaluates. FITSAE_DEMO_DIR moves the outputs (default: <repo>/demo); FITSAE_DEMO_STEPS,
# FITSAE_DEMO_NP change the training length and rank count. FITSAE_DEMO_SCENE=sky trains on
# `fitsae simulate --kind sky` CCD frames with train/sky.yaml instead of GalSim fields
# (outputs then default to <repo>/demo-sky).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh" >/dev/null
VENV="${FITSAE_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
SCENE="${FITSAE_DEMO_SCENE:-galsim}"
case "$SCENE" in
  galsim) CONFIG="$ROOT/train/fullyconv-256.yaml"; SIM=(--kind galsim); DEFAULT_OUT="$ROOT/demo" ;;
  sky) CONFIG="$ROOT/train/sky.yaml"; SIM=(--kind sky --dtype int16); DEFAULT_OUT="$ROOT/demo-sky" ;;
  *) echo "FITSAE_DEMO_SCENE=$SCENE: choose galsim or sky" >&2; exit 2 ;;
esac
OUT="${FITSAE_DEMO_DIR:-$DEFAULT_OUT}"
RUN="$OUT/run"
STEPS="${FITSAE_DEMO_STEPS:-2000}"
NP="${FITSAE_DEMO_NP:-2}"
say() { printf '\n== %s\n' "$*"; }

# 32 held-out fields, not fewer: the report tests each rise of the AE error with η against the
# tile-to-tile scatter, and that test needs tiles to have any power.
DATASET="$SCENE 256 train=64 test=32"
if [ "$(cat "$OUT/data/.complete" 2>/dev/null)" != "$DATASET" ]; then
  say "simulating $SCENE fields (256×256): 64 for training, 32 held out"
  rm -rf "$OUT/data"
  fitsae simulate "${SIM[@]}" --n 64 --size 256 --out "$OUT/data/train" --seed 1
  fitsae simulate "${SIM[@]}" --n 32 --size 256 --out "$OUT/data/test" --seed 2
  echo "$DATASET" >"$OUT/data/.complete"
fi

say "indexing"
fitsae index "$OUT/data/train" --out "$OUT/data/train.jsonl"

say "training with mpirun -np $NP (resumes if $RUN has checkpoints)"
MPIRUN=(mpirun -np "$NP" --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
"${MPIRUN[@]}" fitsae train --config "$CONFIG" --run-dir "$RUN" \
  --set "data.paths=[$OUT/data/train.jsonl]" --set "train.steps=$STEPS"

say "evaluating on the held-out simulated fields"
fitsae evaluate --run-dir "$RUN" --data "$OUT/data/test" --out "$RUN/eval"

# Scored apart: its physical units and peak differ from the simulations', and the model never saw
# a crowded real star field, so this shows how far it transfers.
say "evaluating on astropy's real image of M13 (not like the training data)"
M13="$(python -c 'import astropy, pathlib; print(pathlib.Path(astropy.__file__).parent / "io/fits/hdu/compressed/tests/data/m13.fits")')"
fitsae evaluate --run-dir "$RUN" --data "$M13" --out "$RUN/eval-m13" --no-tensorboard

say "compressing the held-out fields and M13 with the codec (budget η = 16), and decoding them back"
fitsae compress --run-dir "$RUN" --eta 16 "$OUT/data/test" "$M13" --out "$OUT/compressed" | tail -n 3
fitsae decompress "$OUT/compressed" --out "$OUT/decoded" | tail -n 1

say "done"
cat <<EOF
run directory : $RUN
  params      : $RUN/params.yaml
  checkpoints : $RUN/checkpoints/
  TensorBoard : tensorboard --logdir $RUN/tb
  model       : $RUN/export/ (SavedModel), $RUN/models/ (frozen for the codec)
evaluation    : $RUN/eval/report.json, $RUN/eval/*.png, $RUN/eval/results.csv
  on M13      : $RUN/eval-m13/
codec         : $OUT/compressed/*.fae.fits -> $OUT/decoded/*.decoded.fits
EOF
