"""The runs the report is made of: their folders, the commands that make them, and the one table of
the accuracies the assignment report published (trained on the original CIFAR-10)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunEntry:
    name: str                 # the run directory, runs/<name>
    title: str                # as in figures and tables
    label: str                # short, for comparisons
    command: str              # what makes it
    published: dict = field(default_factory=dict)  # split -> accuracy (or words), as the report gave it
    figure: bool = True       # drawn on its own (task3c_before only appears in the Task 3c comparison)
    # How long the default command takes, as measured in the README (seconds): on the 2-core AMD EPYC with
    # one thread, and on an NVIDIA H100; for --train-missing's estimate and the missing-run paragraphs.
    seconds: dict = field(default_factory=dict)


RUNS = (
    RunEntry("task2", "Task 2", "Task 2", "python task2.py", {"train": 0.915, "validation": 0.740, "test": 0.739},
             seconds={"cpu": 350, "gpu": 17}),
    RunEntry("task3_model1", "Task 3 Model 1", "Model 1", "python task3_model1.py",
             {"train": 0.913, "validation": 0.805, "test": 0.810}, seconds={"cpu": 1700, "gpu": 21}),
    RunEntry("task3_model2", "Task 3 Model 2", "Model 2", "python task3_model2.py",
             {"train": 0.960, "validation": 0.767, "test": 0.763}, seconds={"cpu": 1400, "gpu": 20}),
    RunEntry("task3c_before", "Task 3c before deepening", "before deepening",
             "python task3_model1.py --convs-per-stage 1", figure=False, seconds={"cpu": 400}),
    RunEntry("task3d", "Task 3d", "Task 3d", "python task3d.py", {"test": "a little over 0.80"},
             seconds={"cpu": 860, "gpu": 25, "estimated": True}),  # docs/task3d.md: Muon's share estimated
    # Estimated from the per-epoch and evaluation costs in docs/task4.md.
    RunEntry("task4a", "Task 4a", "Task 4a", "python task4a.py",
             seconds={"cpu": 12 * 3600, "gpu": 40, "estimated": True}),
)
REFERENCE = ("a published student report of this assignment (TDT4265-style), whose models were trained on the "
             "original CIFAR-10 (torchvision's cifar-10-batches-py)")
BY_NAME = {entry.name: entry for entry in RUNS}


def published_text(entry: RunEntry, split: str) -> str:
    value = entry.published.get(split)
    if value is None:
        return "n/a"
    return value if isinstance(value, str) else f"{value:.3f}"


def metrics_table(columns: dict, digits: int = 3) -> str:
    """Markdown table: rows train/validation/test loss and accuracy, one column per run's metrics."""
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in ("train", "validation", "test"):
        for measure in ("loss", "accuracy"):
            cells = [f"{columns[name][split][measure]:.{digits}f}" for name in names]
            lines.append(f"| {split} {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def how_long(entry: RunEntry) -> str:
    """The measured time of a run's default command, on a CPU and on a GPU."""
    cpu, gpu = entry.seconds.get("cpu"), entry.seconds.get("gpu")
    on_cpu = f"about {duration_text(cpu)} on a 2-core CPU" if cpu else "not measured on a CPU"
    on_gpu = f"about {duration_text(gpu)} on an NVIDIA H100" if gpu else "not measured on a GPU (expect under a minute)"
    return f"{on_cpu}, {on_gpu}" + (" (estimated from shorter runs)" if entry.seconds.get("estimated") else "")
