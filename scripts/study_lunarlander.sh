#!/usr/bin/env bash
# LunarLander-v3: a KL student at 7.2% of the teacher's params vs the same net trained from scratch
# with DQN for the same env-step budget (its schedules fitted to that budget), 5 seeds, one teacher
# (seed 0: a LunarLander teacher costs minutes; the CI covers student seeds only). TEACHER=path/teacher.pt reuses a trained teacher
# (otherwise the on-demand teacher of conf/env/lunarlander.yaml is trained once and cached).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/sweeps/lunarlander_students}
TEACHER_ARG=()
[ -n "${TEACHER:-}" ] && TEACHER_ARG=("teacher.checkpoint=$TEACHER")
.venv/bin/kdrl-distill -m env=lunarlander loss=kl student.width=64 baseline=null,scratch seed=0,1,2,3,4 launcher=joblib \
  "${TEACHER_ARG[@]}" logger=csv trainer.enable_progress_bar=false hydra.sweep.dir="$OUT"
.venv/bin/kdrl-table "$OUT" --rows method --cols width --out docs/lunarlander_students
