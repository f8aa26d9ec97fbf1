#!/usr/bin/env bash
# Reproduce Rusu et al. 2016 ("Policy Distillation") tables at CPU scale:
#   1. loss comparison (mse, nll, kl_rusu tau=0.01), student = teacher's size, 5 seeds per env
#   2. compression (kl_rusu tau=0.01) at 25% / 7% / 4% of the teacher's params, 5 seeds per env
# then one table per experiment (rows = env, normalised score with 95% CIs, geometric mean), under
# docs/protocol.md. One teacher per env (seed 0): the CIs cover student seeds only.
#
#   bash scripts/reproduce_rusu2016.sh                                  # CPU budget, default envs
#   ENVS="atari_pong atari_breakout" BUDGET=gpu EXTRA="trainer=gpu" bash scripts/reproduce_rusu2016.sh
#   LOSS_ENVS="cartpole acrobot" COMP_ENVS="minatar_breakout" bash scripts/reproduce_rusu2016.sh
#
# Teachers are trained once per env (and budget) and cached in $KDRL_CACHE; jobs run 2 at a time
# (launcher=joblib) on a 2-core machine. Metric: the normalised score (S - R) / (T - R) with R a
# uniform-random policy on the same held-out seeds (a raw ratio inverts for negative returns); the
# raw ratio is raw_return_ratio in each results.json and the CSV.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-cpu}
OUT=${OUT:-outputs/rusu2016_${BUDGET}}
LOSS_ENVS=${LOSS_ENVS:-${ENVS:-cartpole acrobot minatar_breakout}}
COMP_ENVS=${COMP_ENVS:-${ENVS:-cartpole acrobot minatar_breakout minatar_space_invaders}}
LAUNCHER=${LAUNCHER:-joblib}
EXTRA=${EXTRA:-}
export KDRL_CACHE=${KDRL_CACHE:-.cache/kdrl}
BIN=${BIN:-.venv/bin}

# train (or reuse) each teacher once, two at a time, before the sweeps' jobs ask for them
echo $LOSS_ENVS $COMP_ENVS | tr ' ' '\n' | sort -u | xargs -P "${KDRL_N_JOBS:-2}" -I{} $BIN/python -c "import sys; \
from kdrl.teachers import obtain_teacher; p, r = obtain_teacher(sys.argv[1], 0, ['budget=$BUDGET'], '$KDRL_CACHE'); \
print(f'teacher {sys.argv[1]}: {r[\"eval_return_mean\"]:.1f} held-out ({p})')" {}
for env in $LOSS_ENVS; do
  $BIN/kdrl-distill -m experiment=rusu2016_losses env="$env" budget="$BUDGET" launcher="$LAUNCHER" \
    hydra.sweep.dir="$OUT/losses/$env" $EXTRA
done
for env in $COMP_ENVS; do
  $BIN/kdrl-distill -m experiment=rusu2016_compression env="$env" budget="$BUDGET" launcher="$LAUNCHER" \
    hydra.sweep.dir="$OUT/compression/$env" $EXTRA
done
$BIN/kdrl-table "$OUT"/losses/* --rows env_id --cols method --metric normalized_score --out "$OUT/table_losses"
$BIN/kdrl-table "$OUT"/compression/* --rows env_id --cols student_size --metric normalized_score \
  --out "$OUT/table_compression"
