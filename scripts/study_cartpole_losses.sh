#!/usr/bin/env bash
# CartPole: losses (mse, nll, kl tau=0.01, kl tau=1) x student widths (25.8%, 6.8%, 4.0% of the
# teacher's params) x 5 seeds, each student seed with its own teacher seed (teacher variance is in
# the CI; docs/protocol.md); both cores; then the table and plots into docs/cartpole_losses.
# Re-running skips the finished jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/sweeps/cartpole_losses}
.venv/bin/kdrl-distill -m env=cartpole loss=mse,nll,kl,kl_t1 student.width=128,64,48 seed=0,1,2,3,4 \
  teacher.seed_from_student=true launcher=joblib logger=csv trainer.enable_progress_bar=false hydra.sweep.dir="$OUT"
.venv/bin/kdrl-table "$OUT" --rows method --cols width --out docs/cartpole_losses
