"""kdrl-multitask: several teachers -> one multi-task student (mode=distill), or the same multi-task
net trained jointly with DQN (mode=joint_dqn); every task evaluated on held-out seeds as % of its
teacher; writes student.pt and results.json."""

from kdrl.cli.common import hydra_entry
from kdrl.runs.multitask import multitask_job

main = hydra_entry("kdrl-multitask", "multitask", multitask_job)

if __name__ == "__main__":
    main()
