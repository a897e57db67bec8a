"""Task 3b/3c from saved runs, without training: the comparison figure, the table, the deepening figure.

    python task3_model1.py; python task3_model2.py; python task3_model1.py --convs-per-stage 1
    python task3_compare.py          # seconds: redraws plots/task3_*.png and plots/task3_table.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cli
from trainer import read_run
from utils import UserError, format_metrics_table, plot_runs

# run directory name -> (label, the command that makes it)
RUNS = {
    "task3_model1": ("Model 1", "python task3_model1.py"),
    "task3_model2": ("Model 2", "python task3_model2.py"),
    "task3c_before": ("before deepening", "python task3_model1.py --convs-per-stage 1"),
}
REPORTED = {"Model 1": {"train": 0.913, "validation": 0.805, "test": 0.810},
            "Model 2": {"train": 0.960, "validation": 0.767, "test": 0.763}}


def load_runs(runs_dir: Path, names) -> tuple[dict, list[str]]:
    """The runs that exist, and a message naming the command for each one that does not."""
    found, missing = {}, []
    for name in names:
        label, command = RUNS[name]
        if not (Path(runs_dir) / name / "metrics.json").exists():
            missing.append(f"missing run {Path(runs_dir) / name}: make it with `{command}`")
            continue
        found[name] = read_run(Path(runs_dir) / name)
    return found, missing


def table_markdown(runs: dict) -> str:
    columns = {RUNS[name][0]: run["metrics"] for name, run in runs.items()}
    lines = [format_metrics_table(columns), "", "Reported accuracy (original CIFAR-10): "
             + "; ".join(f"{label}: train {r['train']:.3f}, validation {r['validation']:.3f}, test {r['test']:.3f}"
                         for label, r in REPORTED.items() if label in columns)]
    sources = sorted({run["config"].get("data_source", "?") for run in runs.values()})
    lines.append(f"Our data: {'; '.join(sources)}.")
    return "\n".join(lines)


def task3_outputs(runs_dir: Path, plot_dir: Path) -> list[str]:
    """Draw what the saved runs allow; return one line per output written or run missing."""
    messages = []
    models, missing = load_runs(runs_dir, ["task3_model1", "task3_model2"])
    messages += missing
    if len(models) == 2:
        figure = plot_runs({RUNS[n][0]: run["history"] for n, run in models.items()},
                           Path(plot_dir) / "task3_comparison.png", title="Task 3b: Model 1 vs Model 2")
        table = table_markdown(models)
        table_path = Path(plot_dir) / "task3_table.md"
        table_path.write_text("# Task 3b\n\n" + table + "\n")
        messages += [f"wrote {figure}", f"wrote {table_path}:\n{table}"]
    deepening, missing = load_runs(runs_dir, ["task3c_before", "task3_model1"])
    messages += [m for m in missing if m not in messages]
    if len(deepening) == 2:
        before, after = (deepening[n]["metrics"]["test"]["accuracy"] for n in ("task3c_before", "task3_model1"))
        figure = plot_runs({"before deepening": deepening["task3c_before"]["history"],
                            "after (Model 1)": deepening["task3_model1"]["history"]},
                           Path(plot_dir) / "task3c_deepening.png", show_test=True,
                           title=f"Task 3c: doubling the conv layers, test accuracy {before:.3f} -> {after:.3f} "
                                 f"({100 * (after - before):+.1f} points)")
        messages.append(f"wrote {figure}")
    return messages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=cli.ROOT / "runs")
    parser.add_argument("--plot-dir", type=Path, default=cli.PLOT_DIR)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    messages = task3_outputs(args.runs_dir, args.plot_dir)
    print("\n".join(messages))
    if any(m.startswith("missing run") for m in messages):
        raise UserError("some Task 3 runs are missing (see above); the rest was drawn")


if __name__ == "__main__":
    cli.main(main)
