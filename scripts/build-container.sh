#!/usr/bin/env bash
# Build the fitsae Apptainer image from containers/fitsae.def and run its %test.
#
#   scripts/build-container.sh [OUT.sif]     build (default: the cache path below) and run its %test
#   scripts/build-container.sh --print-path  print where the image for this source tree goes
#
# The committed tree (HEAD) is staged to a temporary directory and copied into the image, so the
# label org.fitsae.source names exactly what is inside; FITSAE_BUILD_WORKTREE=1 stages the working
# tree instead (tracked and untracked, not ignored files), for trying uncommitted changes.
# The default output path carries a hash of the files that define the image's stack (recipe,
# pins, package metadata): tests use the image built for the stack they test. The fitsae code in
# the image is the tree's at build time (label org.fitsae.source); rebuild to ship newer code.
#
# Environment:
#   FITSAE_APPTAINER       apptainer command (default: scripts/apptainer.sh, which uses a real
#                          apptainer when installed and a helper tree otherwise)
#   FITSAE_IMAGE_CACHE     directory of the default output (default /var/tmp/fitsae-images)
#   FITSAE_MIRROR          Debian mirror for the image (default: this machine's apt sources)
#   FITSAE_BUILD_JOBS      parallel compile jobs for Horovod (default 2)
#   FITSAE_TF_EXTRA        cpu (default) or gpu
#   PIP_INDEX_URL          a PyPI mirror, passed to the build when set
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APPTAINER="${FITSAE_APPTAINER:-$ROOT/scripts/apptainer.sh}"
say() { printf '[build-container] %s\n' "$*" >&2; }

source_files() {
  git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -f "$ROOT/$f" ] && printf '%s\0' "$f"; done
}

source_key() {
  (cd "$ROOT" && source_files | tr '\0' '\n' \
    | grep -E '^(containers/fitsae\.def|constraints\.txt|setup\.cfg|pyproject\.toml)$' \
    | LC_ALL=C sort | while read -r f; do printf '%s\n' "$f"; cat "$f"; done) | sha256sum | cut -c1-16
}

default_image() {
  printf '%s/fitsae-%s.sif\n' "${FITSAE_IMAGE_CACHE:-/var/tmp/fitsae-images}" "$(source_key)"
}

if [ "${1:-}" = --print-path ]; then
  default_image
  exit 0
fi

OUT="${1:-$(default_image)}"
OUT="$(cd "$(dirname "$OUT")" 2>/dev/null && pwd || { mkdir -p "$(dirname "$OUT")" && cd "$(dirname "$OUT")" && pwd; })/$(basename "$OUT")"
[ -f "$ROOT/constraints.txt" ] || { say "constraints.txt missing in $ROOT"; exit 2; }

stage="$(mktemp -d /var/tmp/fitsae-build.XXXXXX)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/src"
if [ "${FITSAE_BUILD_WORKTREE:-0}" = 1 ]; then
  (cd "$ROOT" && source_files | tar --null -T - -cf -) | tar -xf - -C "$stage/src"
  source_id="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown) (working tree)"
else
  git -C "$ROOT" archive HEAD | tar -xf - -C "$stage/src"
  source_id="$(git -C "$ROOT" rev-parse --short HEAD)"
fi
mirror="$("$ROOT/scripts/host-mirror.sh")"
# pip inside the build trusts what pip on this host trusts (a site proxy's CA, say).
ca="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
[ -n "$ca" ] && [ -f "$ca" ] || ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || { ca="$stage/empty-ca.pem"; : >"$ca"; }
cp "$ca" "$stage/build-ca.pem"

args=(--build-arg "mirror=$mirror" --build-arg "src=$stage/src" --build-arg "ca=$stage/build-ca.pem"
      --build-arg "source_id=$source_id"
      --build-arg "jobs=${FITSAE_BUILD_JOBS:-2}" --build-arg "tf_extra=${FITSAE_TF_EXTRA:-cpu}")
[ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "pip_index_url=$PIP_INDEX_URL")

say "building $OUT from $ROOT ($source_id)"
start=$SECONDS
# --fakeroot: unprivileged-style build (also needed as root where CAP_SYS_RESOURCE is missing).
# --notest, then `apptainer test` on the result: a failing %test keeps the built image (.partial)
# for inspection instead of throwing the long build away.
nice -n "${FITSAE_BUILD_NICE:-10}" "$APPTAINER" build --fakeroot --force --notest "${args[@]}" "$OUT.partial" "$ROOT/containers/fitsae.def"
built=$SECONDS
say "built in $((built - start)) s; running the image's %test"
if ! nice -n "${FITSAE_BUILD_NICE:-10}" "$APPTAINER" test "$OUT.partial"; then
  say "%test FAILED; the image is kept at $OUT.partial"
  exit 1
fi
mv -f "$OUT.partial" "$OUT"
say "image OK: $OUT ($(du -h "$OUT" | cut -f1)); build $((built - start)) s, %test $((SECONDS - built)) s"
printf '%s\n' "$OUT"
