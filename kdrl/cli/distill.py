"""kdrl-distill: distil a teacher into a student; evaluate performance, speed, generalisation and
resources; write student.pt and results.json."""

from kdrl.cli.common import hydra_entry
from kdrl.runs.distill import distill_student

main = hydra_entry("kdrl-distill", "distill", distill_student)

if __name__ == "__main__":
    main()
