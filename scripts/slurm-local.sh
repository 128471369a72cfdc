#!/usr/bin/env bash
# A real, single-machine SLURM cluster for tests and for trying the sbatch scripts.
#
#   scripts/slurm-local.sh up   [DIR]   install (root, apt) if needed, write DIR/slurm.conf, start
#                                       munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm-local.sh down [DIR]   stop those daemons by the PIDs recorded in DIR
#   scripts/slurm-local.sh env  [DIR]   print the variables a client needs (eval "$(... env)")
#
# Everything lives in DIR (default $FITSAE_SLURM_DIR or /tmp/fitsae-slurm): configuration, state,
# spool, logs, PID files and a private munge socket and key, so nothing under /etc is changed and
# the daemons never meet another munge or SLURM installation. Clients find the cluster through
# SLURM_CONF=DIR/slurm.conf. Facts this relies on are in shared/notes/slurm-local.md: Debian's
# Open MPI only speaks PMIx (MpiDefault=pmix), no systemd (the daemons are started here), no
# slurmdbd (use `scontrol show job`, jobs stay visible MinJobAge seconds).
#
# Environment:
#   FITSAE_SLURM_DIR    state directory (default /tmp/fitsae-slurm)
#   FITSAE_SLURM_CPUS   CPUs the node advertises (default: the real count; more oversubscribes)
#   FITSAE_SLURM_PORT   slurmctld port; slurmd uses PORT+1 (default 6817)
set -euo pipefail

cmd="${1:-}"
DIR="${2:-${FITSAE_SLURM_DIR:-/tmp/fitsae-slurm}}"
say() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { printf '[slurm-local] ERROR: %s\n' "$*" >&2; exit 2; }

CONF="$DIR/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
NODE="$(hostname -s)"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_if_missing() {
  local need=()
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v slurmd >/dev/null || need+=(slurmd)
  command -v sbatch >/dev/null || need+=(slurm-client)
  command -v munged >/dev/null || need+=(munge)
  [ ${#need[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "missing ${need[*]}; install them (Debian: apt-get install --no-install-recommends ${need[*]})"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing or stale on a fresh machine.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
}

write_conf() {
  local cpus real_mem port
  cpus="${FITSAE_SLURM_CPUS:-$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')}"
  real_mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
  port="${FITSAE_SLURM_PORT:-6817}"
  cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on this machine, all state under $DIR.
ClusterName=fitsae-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
TmpFS=$DIR/tmp
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MpiDefault=pmix
ReturnToService=2
# Keep finished jobs visible to scontrol for ten minutes: there is no slurmdbd/sacct here.
MinJobAge=600
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
# Lets FITSAE_SLURM_CPUS advertise more CPUs than the machine has (multi-task tests).
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((real_mem * 95 / 100)) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  alive "$DIR/munge/munged.pid" && return 0
  install -d -o munge -g munge -m 0700 "$DIR/munge"
  if [ ! -s "$DIR/munge/munge.key" ]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$DIR/munge/munge.key"
    chmod 0400 "$DIR/munge/munge.key"
  fi
  runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" --force
  wait_for 20 "munged" test -S "$MUNGE_SOCKET"
}

wait_for() {
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${secs}s; logs in $DIR/log and $DIR/munge"
    sleep 0.5
  done
}

node_idle() {
  [ "$(SLURM_CONF="$CONF" sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]
}

up() {
  [ "$(id -u)" = 0 ] || die "the local cluster runs its daemons as root (SlurmUser=root); run as root"
  install_if_missing
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && alive "$DIR/munge/munged.pid"; then
    say "already up in $DIR"
    env_lines
    return 0
  fi
  stop_all
  mkdir -p "$DIR"/{state,spool,log,tmp}
  rm -rf "$DIR/state"/* "$DIR/spool"/*
  write_conf
  start_munge
  # -c: start clean (no jobs left from an earlier cluster in this directory); -i: ignore errors
  # reading state. Both daemons fork and write their PID files.
  SLURM_CONF="$CONF" /usr/sbin/slurmctld -c -i -f "$CONF"
  wait_for 30 "slurmctld" alive "$DIR/slurmctld.pid"
  SLURM_CONF="$CONF" /usr/sbin/slurmd -f "$CONF"
  wait_for 30 "slurmd" alive "$DIR/slurmd.pid"
  wait_for 60 "an idle node" node_idle
  say "up: node $NODE idle (slurmctld $(cat "$DIR/slurmctld.pid"), slurmd $(cat "$DIR/slurmd.pid"), munged $(cat "$DIR/munge/munged.pid"))"
  env_lines
}

stop_pidfile() {
  local pidfile="$1" pid i
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop_all() {
  # slurmd first: it kills the job steps it still runs (its slurmstepd children) on the way down.
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  stop_pidfile "$DIR/munge/munged.pid"
}

env_lines() {
  printf 'SLURM_CONF=%s\n' "$CONF"
}

case "$cmd" in
  up) up ;;
  down) stop_all; say "down ($DIR)" ;;
  env) printf 'export '; env_lines ;;
  *) die "usage: scripts/slurm-local.sh up|down|env [DIR]" ;;
esac
