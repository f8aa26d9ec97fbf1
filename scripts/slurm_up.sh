#!/usr/bin/env bash
# Bring up a real single-node SLURM cluster on this machine (needs root; Debian's slurm-wlm and
# munge). Idempotent: does nothing if `sinfo` already answers. Records what it started in
# /run/kdrl-slurm.started so scripts/slurm_down.sh stops exactly that.
set -euo pipefail
STATE=/run/kdrl-slurm.started
if timeout 5 sinfo >/dev/null 2>&1; then echo "slurm: already running"; exit 0; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm: installing slurm-wlm and munge (Debian packages)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null
fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
: > "$STATE"

# munge: key owned by munge, mode 400; daemon run as the munge user
mkdir -p /etc/munge /var/log/munge /var/lib/munge /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged --force
  echo munged >> "$STATE"
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=kdrl
SlurmctldHost=${HOST}
SlurmUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120): 10 here so the
# requeue test (tests/test_slurm_requeue.py) and scripts/slurm_requeue_demo.py do not idle
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
NodeName=${HOST} CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=kdrl Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld && echo slurmctld >> "$STATE"
slurmd && echo slurmd >> "$STATE"
for _ in $(seq 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mixed|allocated'; then
    echo "slurm: up ($HOST, $CPUS CPUs, partition kdrl)"; exit 0
  fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm: did not come up; see /var/log/slurm/*.log" >&2
exit 1
