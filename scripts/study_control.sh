#!/usr/bin/env bash
# Who acts while distilling: control=teacher|student|mixed, KL (tau=0.01), width 64, 5 seeds,
# each student seed with its own teacher seed, full curves (no early stop); figure of return vs env
# steps with 95% CI bands -> docs/control.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/sweeps/cartpole_control}
.venv/bin/kdrl-distill -m env=cartpole loss=kl student.width=64 control=teacher,student,mixed seed=0,1,2,3,4 \
  teacher.seed_from_student=true launcher=joblib \
  eval.stop_at_return=null eval.freq=500 distill.total_timesteps=6000 distill.mixed.decay_steps=4000 \
  logger=csv trainer.enable_progress_bar=false hydra.sweep.dir="$OUT"
.venv/bin/kdrl-table "$OUT" --rows control --cols width --curve-group control --out docs/control
