#!/usr/bin/env bash
# `apptainer` for machines that have none: a drop-in for the real command.
#
#   scripts/apptainer.sh setup              prepare the helper tree (root; once, ~2 min)
#   scripts/apptainer.sh ARGS...            run `apptainer ARGS...` (build, exec, test, inspect, ...)
#
# When a real `apptainer` (or `singularity`) is on PATH -- every cluster that runs containers --
# this only execs it. Otherwise (Debian 12 has no apptainer package and building it needs Go
# modules from the internet) it keeps a minimal Debian unstable tree, which does package apptainer,
# and runs apptainer inside it through fresh mount + PID namespaces and pivot_root: a plain chroot
# is refused by apptainer ("weak chrooted environment"). Host directories are bind-mounted into the
# tree at the same paths, so paths mean the same thing inside and out, including SLURM's PMIx sockets
# under the slurmd spool/tmp dirs: /work, /tmp, /var/tmp, /home, /root, /run/munge, the directories
# in FITSAE_APPTAINER_BINDS (colon-separated), and every host directory the command names -- the
# working directory, `--bind` sources, the image -- so data under /scratch, /lustre or a checkout
# anywhere is found (a top-level directory the tree lacks is bound whole; system directories never). Builds use --fakeroot (subordinate ids root:100000:65536
# inside the tree) because this kind of sandbox lacks CAP_SYS_RESOURCE for a plain root build.
# Root in a container keeps only the capabilities that capability.json grants it (`root default
# capabilities = file`: the default `full` asks for CAP_SYS_RESOURCE too). The tree grants root the
# file-ownership ones (ROOT_CAPS): apptainer unpacks a SIF for `Bootstrap: localimage` by running
# unsquashfs in a nested container as root, and without CAP_CHOWN it cannot give files their groups
# (`set_attributes: failed to change uid and gids on .../etc/shadow`), so a layered build failed.
#
# Environment:
#   FITSAE_APPTAINER_ROOT   where the helper tree lives (default /var/cache/fitsae/apptainer-sid)
#   FITSAE_APPTAINER_BINDS  extra host directories to make visible (colon-separated)
#   FITSAE_MIRROR           Debian mirror (default: the one in this machine's apt sources)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TREE="${FITSAE_APPTAINER_ROOT:-/var/cache/fitsae/apptainer-sid}"
say() { printf '[apptainer.sh] %s\n' "$*" >&2; }
die() { printf '[apptainer.sh] ERROR: %s\n' "$*" >&2; exit 2; }

native_apptainer() {
  local exe
  for exe in apptainer singularity; do
    if command -v "$exe" >/dev/null 2>&1; then command -v "$exe"; return 0; fi
  done
  return 1
}

ROOT_CAPS=CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER,CAP_FSETID,CAP_MKNOD,CAP_SETFCAP

# Grant root ROOT_CAPS in the tree's capability.json (idempotent; also upgrades older trees).
grant_root_caps() {
  local tree="$1"
  grep -q CAP_CHOWN "$tree/etc/apptainer/capability.json" 2>/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "the helper tree $tree lacks root's file capabilities; run 'scripts/apptainer.sh setup' as root"
  chroot "$tree" /usr/bin/apptainer capability add --user root "$ROOT_CAPS" >>"$TREE.setup.log" 2>&1 \
    || die "granting root $ROOT_CAPS in $tree failed, see $TREE.setup.log"
  grep -q CAP_CHOWN "$tree/etc/apptainer/capability.json" || die "no CAP_CHOWN in $tree/etc/apptainer/capability.json"
}

setup_tree() {
  if [ -f "$TREE/.fitsae-ready" ]; then grant_root_caps "$TREE"; return 0; fi
  [ "$(id -u)" = 0 ] || die "no apptainer on PATH and the helper tree $TREE is missing; run 'scripts/apptainer.sh setup' as root, or install Apptainer"
  mkdir -p "$(dirname "$TREE")"
  exec 9>"$TREE.lock"
  flock 9
  [ -f "$TREE/.fitsae-ready" ] && return 0
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  fi
  local mirror tmp
  mirror="$("$HERE/host-mirror.sh")"
  tmp="$TREE.partial"
  rm -rf "$tmp"
  say "debootstrap sid into $tmp from the host's mirror"
  debootstrap --variant=minbase sid "$tmp" "$mirror" >"$TREE.setup.log" 2>&1 \
    || die "debootstrap failed, see $TREE.setup.log"
  # The unstable Release file is often past its Valid-Until on snapshot mirrors.
  printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' >"$tmp/etc/apt/apt.conf.d/99fitsae"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf"
  cp /etc/hosts "$tmp/etc/hosts"
  say "installing apptainer, squashfs-tools, debootstrap in the tree"
  unshare --mount --propagation private -- bash -c '
    set -e
    mount -t proc proc "$1/proc"
    mount --rbind /dev "$1/dev"
    chroot "$1" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
      "apt-get update -qq && apt-get install -y -qq --no-install-recommends apptainer squashfs-tools debootstrap debian-archive-keyring ca-certificates uidmap"
  ' _ "$tmp" >>"$TREE.setup.log" 2>&1 || die "installing apptainer in the tree failed, see $TREE.setup.log"
  echo 'root:100000:65536' >"$tmp/etc/subuid"
  echo 'root:100000:65536' >"$tmp/etc/subgid"
  sed -i 's/^#\?\s*root default capabilities\s*=.*/root default capabilities = file/' "$tmp/etc/apptainer/apptainer.conf"
  grant_root_caps "$tmp"
  rm -rf "$TREE"
  mv "$tmp" "$TREE"
  chroot "$TREE" dpkg-query -W -f '${Version}' apptainer >"$TREE/.fitsae-ready"
  say "ready: $TREE ($(cat "$TREE/.fitsae-ready"))"
}

# Absolute host directories among ARGS: plain arguments, `--bind`/`-B` lists (src[:dst[:opts]],
# comma-separated, also as --bind=...); a file stands for its directory. Paths that do not exist on
# the host (paths inside the image) are ignored.
named_dirs() {
  local arg item src IFS=,
  for arg in "$@"; do
    for item in $arg; do
      src="${item#--*=}"
      src="${src%%:*}"
      case "$src" in /?*) ;; *) continue ;; esac
      [ -e "$src" ] || continue
      [ -d "$src" ] || src="$(dirname "$src")"
      readlink -m "$src"
    done
  done
}

# The host directory to bind so that DIR is visible in the tree, or nothing (status 1) when it
# already is (under one of BOUND...) or lies under a system directory the tree must keep its own of.
host_dir_to_bind() {
  local dir="$1" rest top b; shift
  rest="${dir#/}"
  top="/${rest%%/*}"
  case "$top" in
    / | /usr | /bin | /sbin | /lib | /lib32 | /lib64 | /libx32 | /etc | /proc | /sys | /dev | /run | /boot | /var) return 1 ;;
  esac
  for b in "$@"; do
    case "$dir/" in "$b"/*) return 1 ;; esac
  done
  if [ -e "$TREE$top" ]; then echo "$dir"; else echo "$top"; fi
}

# Runs as PID 1 of the new namespaces: make the tree the root, keep host paths, exec apptainer.
inner() {
  local cwd="$1"; shift
  mount --bind "$TREE" "$TREE"
  mount -t proc proc "$TREE/proc"
  mount --rbind /dev "$TREE/dev"
  mount --rbind /sys "$TREE/sys"
  local d bound=() binds="/work:/tmp:/var/tmp:/home:/root:/run/munge:${FITSAE_APPTAINER_BINDS:-}"
  local IFS=:
  for d in $binds; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    mkdir -p "$TREE$d"
    mount --rbind "$d" "$TREE$d"
    bound+=("$d")
  done
  unset IFS
  while IFS= read -r d; do
    d="$(host_dir_to_bind "$d" "${bound[@]}")" || continue
    mkdir -p "$TREE$d"
    mount --rbind "$d" "$TREE$d"
    bound+=("$d")
  done < <(named_dirs "$cwd" "$@")
  cp /etc/hosts "$TREE/etc/hosts"
  cp /etc/resolv.conf "$TREE/etc/resolv.conf" 2>/dev/null || true
  mkdir -p "$TREE/.host"
  cd "$TREE"
  pivot_root . .host
  umount -l /.host
  cd "$cwd" 2>/dev/null || cd /
  exec /usr/bin/apptainer "$@"
}

case "${1:-}" in
  __inner) shift; inner "$@" ;;
  setup)
    if exe="$(native_apptainer)"; then say "using $exe ($("$exe" --version))"; exit 0; fi
    setup_tree ;;
  "") die "usage: scripts/apptainer.sh setup | scripts/apptainer.sh APPTAINER-ARGS..." ;;
  *)
    if exe="$(native_apptainer)"; then exec "$exe" "$@"; fi
    setup_tree
    # Each rank that srun starts through this wrapper lives in its own PID namespace, so Open MPI's
    # shared-memory transport (vader, which maps peers by PID) segfaults between ranks on one node;
    # TCP over loopback works. Real apptainer installs do not need this.
    export OMPI_MCA_btl="${OMPI_MCA_btl:-self,tcp}"
    # Signals (SLURM's SIGTERM/SIGUSR1 on preemption) must reach the container, but `unshare`
    # ignores them while it waits; forward them to its child, the namespace's PID 1.
    unshare --mount --pid --fork --kill-child --propagation private -- "$0" __inner "$PWD" "$@" &
    ns=$!
    forward() { pkill -"$1" -P "$ns" 2>/dev/null || true; }
    for sig in TERM INT HUP USR1 USR2; do trap "forward $sig" "$sig"; done
    while :; do
      rc=0; wait "$ns" || rc=$?
      kill -0 "$ns" 2>/dev/null || exit "$rc"
    done ;;
esac
