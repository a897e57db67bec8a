"""Task 3b/3c from saved runs, without training: the comparison figure, the table, the deepening figure.

    python task3_model1.py; python task3_model2.py; python task3_model1.py --convs-per-stage 1
    python task3_compare.py          # seconds: redraws plots/task3_*.png and plots/task3_table.md
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

from pathlib import Path

import cli
import figures
import reference
from report_document import without_paths
from report_runs import BY_NAME, FINISHED, load, metrics_table
from run_folder import PLOT_DIR, RUNS_DIR, caveats, marked
from utils import UserError, write_text


def load_runs(runs_dir: Path, names, read: dict) -> tuple[dict, list[str]]:
    """The finished runs, and a message for each one that is not (missing: the command that makes it;
    unfinished: the one that continues it...), as report.py says it. `read`: runs already read, by name; the
    ones read here are added to it."""
    found, absent = {}, []
    for name in names:
        if name not in read:
            state, run, message = load(BY_NAME[name], runs_dir)
            if state != FINISHED:
                absent.append(f"{Path(runs_dir) / name} is {message}" if message.startswith("unusable") else message)
                continue
            read[name] = run
        found[name] = read[name]
    return found, absent


def data_names(models: dict) -> str:
    """Where the runs' data came from, by folder name (no absolute path of this machine)."""
    return "; ".join(sorted({without_paths(str(run["config"].get("data", {}).get("source", "?")))
                             for run in models.values()}))


def table_markdown(models: dict) -> str:
    """Task 3b's table, ours beside the reference's losses and accuracies; runs that are not the real thing
    marked in their column."""
    columns = {marked(BY_NAME[name].label, caveats(run["config"])): run["metrics"]
               for name, run in models.items()}
    given = "; ".join(f"{BY_NAME[name].label}: " + ", ".join(
        f"{split} {reference.result_text(name, split, 'loss')} / {reference.result_text(name, split)}"
        for split in ("train", "validation", "test")) for name in models)
    lines = [metrics_table(columns), "", f"The reference (Task 3b, original CIFAR-10), loss / accuracy: {given}.",
             f"Our data: {data_names(models)}."]
    notes = caveats_of(models)
    if notes:
        lines.insert(0, f"**Not the real result**: {'; '.join(notes)}.\n")
    return "\n".join(lines)


def best_marks(models: dict, labels: dict | None = None) -> dict:
    """Each run's best checkpoint (and early stop), by its label in the figure."""
    return {(labels or {}).get(n, BY_NAME[n].label): figures.run_marks(run["metrics"], run["history"])
            for n, run in models.items()}


def caveats_of(models: dict) -> list[str]:
    """What is not the real thing about any of the runs compared."""
    return sorted({f"{BY_NAME[n].label}: {note}" for n, run in models.items() for note in caveats(run["config"])})


def task3_outputs(runs_dir: Path, plot_dir: Path, loaded: dict | None = None) -> list[str]:
    """Draw what the saved runs allow; return one line per output written or run not finished.
    `loaded`: finished runs the caller has read already (report.py), by name; not changed."""
    messages, read = [], dict(loaded or {})
    models, absent = load_runs(runs_dir, ["task3_model1", "task3_model2"], read)
    messages += absent
    if len(models) == 2:
        figure = figures.training_curves({BY_NAME[n].label: run["history"] for n, run in models.items()},
                                         Path(plot_dir) / "task3_comparison.png", marks=best_marks(models),
                                         title=marked("Task 3b: Model 1 vs Model 2", caveats_of(models)))
        table = table_markdown(models)
        table_path = Path(plot_dir) / "task3_table.md"
        write_text("# Task 3b\n\n" + table + "\n", table_path)
        messages += [f"wrote {figure}", f"wrote {table_path}:\n{table}"]
    deepening, absent = load_runs(runs_dir, ["task3c_before", "task3_model1"], read)
    messages += [m for m in absent if m not in messages]
    if len(deepening) == 2:
        before, after = (deepening[n]["metrics"]["test"]["accuracy"] for n in ("task3c_before", "task3_model1"))
        labels = {"task3c_before": "before deepening", "task3_model1": "after (Model 1)"}
        figure = figures.training_curves(
            {labels[n]: deepening[n]["history"] for n in labels}, Path(plot_dir) / "task3c_deepening.png",
            show_test=True, marks=best_marks(deepening, labels),
            title=marked(f"Task 3c: doubling the conv layers, test accuracy {before:.3f} -> {after:.3f} "
                              f"({100 * (after - before):+.1f} points)", caveats_of(deepening)))
        messages.append(f"wrote {figure}")
    return messages


def main(argv=None):
    parser = cli.Parser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="folder holding task3_model1/, task3_model2/ and task3c_before/")
    parser.add_argument("--plot-dir", type=Path, default=PLOT_DIR, help="folder for the table and figures")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    messages = task3_outputs(args.runs_dir, args.plot_dir)
    print("\n".join(messages))
    written = [m for m in messages if m.startswith("wrote ")]
    if len(written) < len(messages):
        raise UserError("some Task 3 runs are not finished (see above); "
                        + ("the rest was drawn" if written else "nothing was drawn"))


if __name__ == "__main__":
    cli.main(main)
