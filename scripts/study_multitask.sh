#!/usr/bin/env bash
# Multi-task distillation (Rusu et al. 2016, section 4) on CartPole + Acrobot: one student with a
# shared trunk and a head per task, distilled with KL (tau=0.01) and NLL from the two cached DQN
# teachers, against the same net trained jointly with DQN at the same env-step budget; 5 seeds
# each, then a table of % of each teacher (0 = random, 100 = teacher) with 95% bootstrap CIs.
# About 10 min on 2 cores (teachers ~2 min the first time, then 9 runs of ~1 min two at a time).
#
# Knobs (environment variables):
#   SEEDS=0,1,2  STEPS=20000 (env steps per task, every method)  OUT=outputs/sweeps/multitask
#   KDRL_CACHE (teacher cache)  KDRL_N_JOBS (parallel jobs, default one per core)
#   TEACHER_OVERRIDES="algo.total_timesteps=3000 ..."   kdrl-train overrides for both teachers
#   TEACHERS="{cartpole:a/teacher.pt,acrobot:b/teacher.pt}"   use these instead of the cache
#   EXTRA="eval.final_episodes=5 ..."                      extra kdrl-multitask overrides (all runs)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-0,1,2,3,4}
STEPS=${STEPS:-20000}
OUT=${OUT:-outputs/sweeps/multitask}
CACHE=${KDRL_CACHE:-.cache/kdrl}
read -r -a TOV <<< "${TEACHER_OVERRIDES:-}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

COMMON=("multitask.steps_per_task=$STEPS" "teacher.cache_dir=$CACHE" logger=csv trainer.enable_progress_bar=false
        launcher=joblib "${EXTRA_ARGS[@]}")
if [ -n "${TEACHERS:-}" ]; then
  COMMON+=("teacher.checkpoints=$TEACHERS")
else
  LIST=$(printf "'%s'," "${TOV[@]}"); LIST="[${LIST%,}]"; [ ${#TOV[@]} -eq 0 ] && LIST="[]"
  COMMON+=("teacher.overrides=$LIST")
  # Train (or reuse) both teachers side by side first: the sweep's jobs would otherwise queue on
  # the cache lock and train them one after the other.
  obtain() {
    .venv/bin/python - "$1" "$CACHE" "${TOV[@]}" <<'PY'
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from kdrl.runs.teacher import obtain_teacher
path, res = obtain_teacher(sys.argv[1], 0, ["budget=cpu", *sys.argv[3:]], sys.argv[2])  # as kdrl-multitask asks
print(f"teacher {sys.argv[1]}: {path} (held-out return {res['eval_return_mean']:.1f})")
PY
  }
  obtain cartpole & P1=$!
  obtain acrobot & P2=$!
  wait $P1; wait $P2
fi

.venv/bin/kdrl-multitask -m mode=distill loss=kl,nll seed="$SEEDS" "${COMMON[@]}" hydra.sweep.dir="$OUT/distill"
.venv/bin/kdrl-multitask -m mode=joint_dqn seed="$SEEDS" "${COMMON[@]}" hydra.sweep.dir="$OUT/joint_dqn"
.venv/bin/kdrl-multitask-table "$OUT/distill" "$OUT/joint_dqn" --out "$OUT/table"
