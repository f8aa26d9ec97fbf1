#!/usr/bin/env bash
# Stop what scripts/slurm_up.sh started (and nothing else).
set -uo pipefail
STATE=/run/kdrl-slurm.started
[ -f "$STATE" ] || { echo "slurm: nothing started by slurm_up.sh"; exit 0; }
grep -q slurmd "$STATE" && pkill -x slurmd
grep -q slurmctld "$STATE" && pkill -x slurmctld
grep -q munged "$STATE" && pkill -x munged
rm -f "$STATE"
echo "slurm: stopped"
