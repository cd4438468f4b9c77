#!/bin/bash
# A real one-node SLURM cluster for the tests (root only): `cluster.sh up` installs Debian's
# slurmctld, slurmd, slurm-client and munge when missing and starts the daemons; `cluster.sh
# down` stops them by PID and wipes their state. Partitions: debug (default), low
# (preemptible: REQUEUE after a 20 s grace time) and high. The node declares $SLURM_CPUS CPUs
# (default 8, more than this machine may have: config_overrides) and $SLURM_GPUS fake GPUs
# (default 4), so several multi-task jobs fit; the GPUs only set CUDA_VISIBLE_DEVICES.
set -euo pipefail
STATE=/var/spool/yogo-test-slurm

down() {
  local pids="" p
  for f in /run/slurmd.pid /run/slurmctld.pid; do
    if [ -s "$f" ]; then pids="$pids $(cat "$f")"; fi
  done
  if [ -n "$pids" ]; then
    kill $pids 2>/dev/null || true
    for _ in $(seq 40); do
      local alive=0
      for p in $pids; do
        if kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p")" != Z ]; then alive=1; fi
      done
      [ "$alive" = 0 ] && break
      sleep 0.25
    done
  fi
  if [ -s /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
  rm -rf "$STATE" /run/slurmctld.pid /run/slurmd.pid
}

up() {
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
  down  # a clean start, whatever a previous run left
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge && chown munge:munge /etc/munge && chmod 700 /etc/munge
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null

  local cpus=${SLURM_CPUS:-8} gpus=${SLURM_GPUS:-4}
  local mem=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 9 / 10 ))
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/gpu" /var/log/slurm
  for i in $(seq 0 $((gpus - 1))); do ln -sfn /dev/null "$STATE/gpu/nvidia$i"; done
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire is also the delay before a requeued job may start again (default 120 s)
AuthInfo=cred_expire=5
CryptoType=crypto/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN
PartitionName=debug Default=YES Nodes=localhost MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=low  Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=1  PreemptMode=REQUEUE GraceTime=20
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
CONF
  cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=localhost Name=gpu File=$STATE/gpu/nvidia[0-$((gpus - 1))]
CONF
  /usr/sbin/slurmctld
  /usr/sbin/slurmd -N localhost
  for _ in $(seq 60); do
    if sinfo -h -n localhost -o %T 2>/dev/null | grep -qx idle; then
      sinfo -o '%P %a %D %T %N %c %G'
      return 0
    fi
    sleep 0.5
  done
  echo "slurmd did not come up; see /var/log/slurm/" >&2
  return 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
