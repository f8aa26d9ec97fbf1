"""kdrl-train: train a DQN teacher, evaluate it on held-out seeds, write teacher.pt and results.json."""

from kdrl.cli.common import hydra_entry
from kdrl.runs.teacher import train_teacher

main = hydra_entry("kdrl-train", "train", train_teacher)

if __name__ == "__main__":
    main()
