#!/usr/bin/env bash
# Build the fitsae Apptainer image for this source tree, in two layers, and run its %test.
#
#   scripts/build-container.sh [OUT.sif]        build the image (default: the cache path below, kept
#                                              when already built), the stack first when the cache
#                                              lacks it; run its %test; print the image's path
#   scripts/build-container.sh --print-path     print where the image for this source tree goes
#   scripts/build-container.sh --print-stack-path   print where the stack image for this tree goes
#   scripts/build-container.sh --stack          build only the stack image (when missing); print its path
#
# Two layers, so that the image always holds the code next to this script:
#   stack  containers/fitsae-stack.def: Debian, Open MPI, Python and every pinned dependency
#          (Horovod compiled). Keyed on a hash of what decides it (that recipe, constraints.txt,
#          setup.cfg, pyproject.toml, FITSAE_TF_EXTRA); once per machine: 82 min measured on 2
#          cores shared with a training job (pip downloads and Horovod's compile).
#   code   containers/fitsae.def: `Bootstrap: localimage` from the stack, installs the source with
#          --no-deps and no network. Keyed on the stack's key and a hash of the files it installs
#          (the working tree's tracked and untracked, not ignored, files under fitsae/ and train/,
#          the package metadata, README.md and the recipe). Measured on those 2 cores, stack cached:
#          42 s to build (unpack the stack 16 s, install 1 s, squash 25 s at gzip level 1, where
#          mksquashfs's default level 9 took 145 s), then 27 s of %test. With a training job on one
#          core and the stack not in the page cache, the unpack alone took ~3 min.
# A changed file under fitsae/ gives a new code-layer path, so tests never run an image of older code.
# Only the newest few code layers are kept in the cache, and only the newest image whose %test
# failed (OUT.partial, kept for inspection until the next build). Concurrent builds of one image wait for
# each other (a lock beside it) and build it once.
#
# Environment:
#   FITSAE_APPTAINER       apptainer command (default: scripts/apptainer.sh, which uses a real
#                          apptainer when installed and a helper tree otherwise)
#   FITSAE_IMAGE_CACHE     directory of the default outputs (default /var/tmp/fitsae-images)
#   FITSAE_IMAGE_KEEP      code layers kept in the cache (default 3)
#   FITSAE_MIRROR          Debian mirror for the stack (default: this machine's apt sources)
#   FITSAE_BUILD_JOBS      parallel compile jobs for Horovod (default 2)
#   FITSAE_BUILD_NICE      niceness of the builds (default 10)
#   FITSAE_TF_EXTRA        cpu (default) or gpu
#   FITSAE_MKSQUASHFS_ARGS mksquashfs arguments for the code layer (default "-Xcompression-level 1":
#                          ~7x faster than mksquashfs's gzip level 9, image ~13% larger; set it
#                          empty for the smallest image, e.g. one to copy to a cluster)
#   PIP_INDEX_URL          a PyPI mirror, passed to the stack build when set
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APPTAINER="${FITSAE_APPTAINER:-$ROOT/scripts/apptainer.sh}"
CACHE="${FITSAE_IMAGE_CACHE:-/var/tmp/fitsae-images}"
TF_EXTRA="${FITSAE_TF_EXTRA:-cpu}"
NICE="${FITSAE_BUILD_NICE:-10}"
say() { printf '[build-container] %s\n' "$*" >&2; }

# The working tree's files (tracked and untracked, not ignored) whose paths match the regex $1.
tree_files() {
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$ROOT/$f" ] && printf '%s\0' "$f"; done \
    | grep -zE "$1" | LC_ALL=C sort -z
}
STACK_FILES='^(containers/fitsae-stack\.def|constraints\.txt|setup\.cfg|pyproject\.toml)$'
CODE_FILES='^(fitsae/|train/|containers/fitsae\.def$|constraints\.txt$|setup\.cfg$|pyproject\.toml$|README\.md$)'

files_hash() { (cd "$ROOT" && tree_files "$1" | xargs -0 -r sha256sum) | sha256sum | cut -c1-16; }
stack_key() { { echo "tf_extra=$TF_EXTRA"; files_hash "$STACK_FILES"; } | sha256sum | cut -c1-16; }
code_key() { { echo "stack=$(stack_key)"; files_hash "$CODE_FILES"; } | sha256sum | cut -c1-16; }
stack_image() { printf '%s/fitsae-stack-%s.sif\n' "$CACHE" "$(stack_key)"; }
code_image() { printf '%s/fitsae-%s.sif\n' "$CACHE" "$(code_key)"; }

absolute() { mkdir -p "$(dirname "$1")" && printf '%s/%s\n' "$(cd "$(dirname "$1")" && pwd)" "$(basename "$1")"; }

# Copy the files matching regex $1 from the working tree into directory $2.
stage_files() { (cd "$ROOT" && tree_files "$1" | tar --null -T - -cf -) | tar -xf - -C "$2"; }

build_stack() {
  local out="$1" stage mirror ca args start
  mkdir -p "$(dirname "$out")"
  exec 8>"$out.lock"
  flock 8
  if [ -f "$out" ]; then return 0; fi
  stage="$(mktemp -d /var/tmp/fitsae-build.XXXXXX)"
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/meta/fitsae"
  stage_files "$STACK_FILES" "$stage/meta"
  : >"$stage/meta/fitsae/__init__.py"
  : >"$stage/meta/README.md"
  mirror="$("$ROOT/scripts/host-mirror.sh")"
  # pip inside the build trusts what pip on this host trusts (a site proxy's CA, say).
  ca="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
  [ -n "$ca" ] && [ -f "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || { ca="$stage/empty-ca.pem"; : >"$ca"; }
  cp "$ca" "$stage/build-ca.pem"
  args=(--build-arg "mirror=$mirror" --build-arg "meta=$stage/meta" --build-arg "ca=$stage/build-ca.pem"
        --build-arg "stack_key=$(stack_key)" --build-arg "jobs=${FITSAE_BUILD_JOBS:-2}"
        --build-arg "tf_extra=$TF_EXTRA")
  [ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "pip_index_url=$PIP_INDEX_URL")
  say "building the stack $out (once per machine; 82 min measured on 2 busy cores)"
  start=$SECONDS
  # --fakeroot: unprivileged-style build (also needed as root where CAP_SYS_RESOURCE is missing).
  nice -n "$NICE" "$APPTAINER" build --fakeroot --force "${args[@]}" "$out.partial" "$ROOT/containers/fitsae-stack.def"
  mv -f "$out.partial" "$out"
  say "stack OK: $out ($(du -h "$out" | cut -f1)); built in $((SECONDS - start)) s"
  rm -rf "$stage"
  trap - EXIT
  exec 8>&-
}

# Remove all but the newest $FITSAE_IMAGE_KEEP code layers of the cache (never stacks, never $1).
prune_code_layers() {
  local keep="${FITSAE_IMAGE_KEEP:-3}" old
  ls -t "$CACHE"/fitsae-*.sif 2>/dev/null | grep -v '/fitsae-stack-' | tail -n +"$((keep + 1))" \
    | while IFS= read -r old; do [ "$old" = "$1" ] || rm -f "$old" "$old.lock"; done
}

# Remove the images a failed %test left (OUT.partial) in the cache, except $1's and those whose build
# runs now (its lock is held): with tests building by default, each would keep ~0.9 GB.
prune_partials() {
  local p
  for p in "$CACHE"/fitsae-*.sif.partial; do
    case "$p" in "$1" | "$CACHE"/fitsae-stack-*) continue ;; esac
    [ -f "$p" ] && flock -n "${p%.partial}.lock" rm -f "$p" || true
  done
}

case "${1:-}" in
  --print-path) code_image; exit 0 ;;
  --print-stack-path) stack_image; exit 0 ;;
  --stack) out="$(stack_image)"; build_stack "$out"; printf '%s\n' "$out"; exit 0 ;;
esac

[ -f "$ROOT/constraints.txt" ] || { say "constraints.txt missing in $ROOT"; exit 2; }
OUT="$(absolute "${1:-$(code_image)}")"
STACK="$(stack_image)"
build_stack "$STACK"

# One build per output path at a time. Without OUT.sif (the cache path), an image already there,
# built by a build this one waited for, is used as it is.
exec 7>"$OUT.lock"
flock 7
if [ -z "${1:-}" ] && [ -f "$OUT" ]; then
  say "image OK: $OUT (already built from this source)"
  printf '%s\n' "$OUT"
  exit 0
fi

prune_partials "$OUT.partial"

stage="$(mktemp -d /var/tmp/fitsae-build.XXXXXX)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src"
stage_files "$CODE_FILES" "$stage/src"
source_id="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
args=(--build-arg "stack=$STACK" --build-arg "src=$stage/src" --build-arg "source_id=$source_id"
      --build-arg "source_key=$(code_key)")
squash_args="${FITSAE_MKSQUASHFS_ARGS--Xcompression-level 1}"
[ -n "$squash_args" ] && args+=(--mksquashfs-args "$squash_args")

say "building $OUT from $ROOT ($source_id) over $STACK"
start=$SECONDS
# --notest, then `apptainer test` on the result: a failing %test keeps the built image (.partial)
# for inspection.
nice -n "$NICE" "$APPTAINER" build --fakeroot --force --notest "${args[@]}" "$OUT.partial" "$ROOT/containers/fitsae.def"
built=$SECONDS
say "built in $((built - start)) s; running the image's %test"
if ! nice -n "$NICE" "$APPTAINER" test "$OUT.partial"; then
  say "%test FAILED; the image is kept at $OUT.partial"
  exit 1
fi
mv -f "$OUT.partial" "$OUT"
case "$OUT" in "$CACHE"/*) prune_code_layers "$OUT" ;; esac
say "image OK: $OUT ($(du -h "$OUT" | cut -f1)); build $((built - start)) s, %test $((SECONDS - built)) s"
printf '%s\n' "$OUT"
