#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for `hydra/launcher=slurm` and its tests:
# Debian's slurm-wlm and munge, slurmctld + slurmd listening on loopback only (127.0.0.1),
# accounting off, requeued jobs eligible again after 10 s (SLURM's default is 120). Needs root.
#   bash scripts/slurm_local.sh [start]   install if needed, configure, start, wait until idle
#   bash scripts/slurm_local.sh stop      stop the daemons
#   bash scripts/slurm_local.sh status    sinfo
set -euo pipefail
ACTION=${1:-start}
STATE=/var/lib/bnexp-slurm          # state, spool, logs and pid files of this cluster
CONF=/etc/slurm/slurm.conf
HOST=$(hostname)

need_root() { [ "$(id -u)" -eq 0 ] || { echo "slurm_local.sh: run as root" >&2; exit 1; }; }

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    # created unreadable to others from its first byte, not chmod'ed afterwards
    (umask 0277 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
  fi
  mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
  chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
  cat > "$CONF" <<CONFEOF
ClusterName=bnexp
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFEOF
}

case "$ACTION" in
  start)
    need_root
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
      source "$(dirname "$0")/apt_get.sh"
      apt_get update -qq && apt_get install -y -qq slurm-wlm munge
    fi
    start_munge
    write_conf
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 60); do
      if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "slurm_local.sh: node $HOST idle in partition debug"; exit 0
      fi
      sleep 0.5
    done
    echo "slurm_local.sh: the node did not become idle; logs in $STATE/log" >&2; exit 1 ;;
  stop)
    for daemon in slurmd slurmctld; do
      [ -f "$STATE/$daemon.pid" ] && kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
    done
    pkill -x munged 2>/dev/null || true
    echo "slurm_local.sh: stopped" ;;
  status)
    sinfo ;;
  *)
    echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
