"""kdrl-data: record a teacher dataset (the teacher's epsilon-greedy play with its Q-values) for students
to distil from (Rusu et al. 2016's data protocol; kdrl.datasets)."""

from kdrl.cli.common import hydra_entry
from kdrl.runs.dataset import record_teacher_data

main = hydra_entry("kdrl-data", "data", record_teacher_data)

if __name__ == "__main__":
    main()
