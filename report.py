"""Rebuild every figure and plots/report.md from saved run directories, without training.

    python report.py                       # seconds: reads runs/<script>/, writes plots/
    python report.py --runs-dir other_runs --plot-dir other_plots

Each run directory (written by a task script) holds config.json, history.json and
metrics.json. A run that is missing or unfinished is listed in the report with the
command that makes it; everything else is still drawn. A run whose files are damaged is
named with the problem, and the exit code is then 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import cli
from trainer import read_run
from utils import UserError, check_writable, format_metrics_table, plot_runs

DEFAULT_RUNS_DIR = cli.ROOT / "runs"


class Run:
    """A run the report shows: where it lives, how it is made, what the report published."""

    def __init__(self, name, title, command, published, figure=True):
        self.name, self.title, self.command = name, title, command
        self.published, self.figure = published, figure


# Published accuracies (train / validation / test), as in the assignment report.
RUNS = [
    Run("task2", "Task 2", "python task2.py", {"train": 0.915, "validation": 0.740, "test": 0.739}),
    Run("task3_model1", "Task 3 Model 1", "python task3_model1.py",
        {"train": 0.913, "validation": 0.805, "test": 0.810}),
    Run("task3_model2", "Task 3 Model 2", "python task3_model2.py",
        {"train": 0.960, "validation": 0.767, "test": 0.763}),
    Run("task3c_before", "Task 3c before deepening", "python task3_model1.py --convs-per-stage 1",
        {}, figure=False),  # drawn only in the 3c comparison figure
    Run("task3d", "Task 3d", "python task3d.py", {"test": "a little over 0.80"}),
    Run("task4a", "Task 4a", "python task4a.py", {}),
]
VISUALISATIONS = [("task4b", "Task 4b (Figure 7): first-layer filters and activations"),
                  ("task4c", "Task 4c: last conv stage activations")]


def command_for(run: Run, runs_dir: Path) -> str:
    command = run.command
    if Path(runs_dir).resolve() != DEFAULT_RUNS_DIR.resolve():
        command += f" --run-dir {Path(runs_dir) / run.name}"
    return command + " [--data-dir DIR]"


def check_history(history: dict, path: Path) -> None:
    """A history that parses but holds nothing would draw an empty figure: refuse it."""
    try:
        steps, values = history["train_loss"]["steps"], history["train_loss"]["values"]
        validations = history["validation"]
        assert len(steps) == len(values)
        assert all({"step", "loss", "accuracy"} <= set(point) for point in validations)
    except (KeyError, TypeError, AssertionError):
        raise UserError(f"{path} does not hold a training history (train_loss steps/values and "
                        "validation points); rerun the script that writes it") from None
    if not steps or not validations:
        raise UserError(f"{path} holds no training steps or no validation; rerun the script that writes it")


def is_training(folder: Path) -> bool:
    """True while a training process holds the run directory's lock."""
    try:
        lock = cli._lock(folder)
    except UserError:
        return True
    if lock:
        lock.close()
    return False


def load(run: Run, runs_dir: Path):
    """('ok', data) | ('missing', message) | ('unfinished', message) | ('broken', message)."""
    folder = Path(runs_dir) / run.name
    command = command_for(run, runs_dir)
    if not (folder / "metrics.json").exists():
        if (folder / "last.pt").exists() and is_training(folder):
            return "unfinished", f"{folder} is being trained right now; run report.py again when it ends"
        if (folder / "last.pt").exists():
            command = command.replace(" [--data-dir DIR]", " --resume [--data-dir DIR]")
            return "unfinished", f"{folder} is unfinished: continue it with `{command}`"
        return "missing", f"{folder} is missing: make it with `{command}`"
    try:
        data = read_run(folder)
        check_history(data["history"], folder / "history.json")
        for split in ("train", "validation", "test"):
            data["metrics"][split]["accuracy"], data["metrics"][split]["loss"]  # noqa: B018
    except UserError as error:
        return "broken", f"{error}"
    except (KeyError, TypeError):
        return "broken", (f"{folder / 'metrics.json'} lacks train/validation/test loss and accuracy; "
                          f"rerun `{command}`")
    return "ok", data


def published_text(value) -> str:
    if value is None:
        return "n/a"
    return value if isinstance(value, str) else f"{value:.3f}"


def is_smoke_run(config: dict) -> bool:
    return bool(config.get("subset") or config.get("max_steps"))


def summary_table(loaded: dict) -> list[str]:
    lines = ["| run | train acc (ours / report) | validation acc (ours / report) | test acc (ours / report) "
             "| test loss | epochs | wall time | data | machine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in RUNS:
        if run.name not in loaded:
            continue
        config, metrics = loaded[run.name]["config"], loaded[run.name]["metrics"]
        cells = [f"{metrics[s]['accuracy']:.3f} / {published_text(run.published.get(s))}"
                 for s in ("train", "validation", "test")]
        wall = metrics.get("wall_seconds")
        source = config.get("data_source", "?") + (" (smoke run: --subset/--max-steps)"
                                                   if is_smoke_run(config) else "")
        machine = f"{config.get('device_name', '?')}, {config.get('train_config', {}).get('precision', '?')}"
        lines.append(f"| {run.title} | " + " | ".join(cells) + f" | {metrics['test']['loss']:.3f} | "
                     f"{metrics.get('epochs', '?')} | {'?' if wall is None else f'{wall / 60:.1f} min'} | "
                     f"{source} | {machine} |")
    return lines


def redraw(run: Run, data: dict, plot_dir: Path) -> Path:
    config = data["config"]
    show_test = bool(config.get("train_config", {}).get("track_test"))
    title = config.get("title", run.title)
    return plot_runs({title: data["history"]}, Path(plot_dir) / f"{config.get('name', run.name)}.png",
                     title=title, show_test=show_test)


def task3_section(runs_dir: Path, plot_dir: Path) -> tuple[list[str], list[str]]:
    """Lines for the report and problems, from task3_compare's comparison outputs."""
    try:
        from task3_compare import task3_outputs
    except ModuleNotFoundError as error:
        if error.name != "task3_compare":
            raise
        return (["task3_compare.py is not in this checkout, so the Task 3b comparison figure, the 3b "
                 "table and the 3c deepening figure were not drawn; the per-model rows above still are."], [])
    try:
        messages = task3_outputs(Path(runs_dir), Path(plot_dir))
    except UserError as error:
        return [f"Task 3 comparison not drawn: {error}"], [str(error)]
    return messages, []


def visualisations(plot_dir: Path, image: Path | None = None) -> list[str]:
    """Redraw Tasks 4b and 4c (a second each) when the ImageNet weights are already cached.

    The report never downloads: without the weights it says which command makes the figure.
    """
    try:
        import resnet
    except ModuleNotFoundError as error:
        if error.name != "resnet":
            raise
        return [f"{what}: not redrawn, resnet.py is not in this checkout" for _, what in VISUALISATIONS]
    cached = resnet.weights_cache_dir() / resnet.WEIGHTS_FILE
    lines = []
    for name, what in VISUALISATIONS:
        existing = Path(plot_dir) / f"{name}.png"
        kept = f" (the existing `{existing}` is kept)" if existing.exists() else ""
        if not cached.is_file():
            lines.append(f"{what}: not redrawn, the ImageNet weights are not in {cached.parent} and "
                         f"report.py does not download{kept}; make it with `python {name}.py`")
            continue
        try:
            extra = ["--image", str(image)] if image else []
            path = importlib.import_module(name).main(["--plot-dir", str(plot_dir), *extra])
            lines.append(f"{what}: redrawn `{path}`")
        except UserError as error:
            lines.append(f"{what}: not redrawn ({error}){kept}; make it with `python {name}.py`")
    return lines


def build_report(runs_dir: Path, plot_dir: Path, image: Path | None = None) -> tuple[str, list[str], list[str]]:
    """Draw the figures; return the Markdown, the runs not shown, and problems worth exit 1."""
    loaded, absent, problems, figures = {}, [], [], []
    for run in RUNS:
        state, result = load(run, runs_dir)
        if state == "ok":
            loaded[run.name] = result
            if run.figure:
                figures.append(redraw(run, result, plot_dir))
        else:
            absent.append(result)
            if state == "broken":
                problems.append(result)

    out = ["# Results reproduced from saved runs", "",
           f"Generated by `python report.py` from `{runs_dir}` (no training). Accuracies are ours next to "
           "the assignment report's published numbers (the report trained on the original CIFAR-10; "
           "the data source of each of our runs is in the table).", ""]
    out += ["## Final metrics (best checkpoint)", ""]
    out += summary_table(loaded) if loaded else ["No finished run found."]
    out.append("")
    if "task2" in loaded:
        out += ["## Task 2b", "", format_metrics_table({"Task 2 (ours)": loaded["task2"]["metrics"]}), "",
                "Report: train 0.915, validation 0.740, test 0.739 accuracy.", ""]
    out += ["## Task 3b and 3c comparisons", ""]
    task3_lines, task3_problems = task3_section(runs_dir, plot_dir)
    problems += [p for p in task3_problems if p not in problems]
    for line in task3_lines:
        first, _, rest = line.partition("\n")
        out += [f"- {first}"] + (["", rest, ""] if rest else [])
    out.append("")
    out += ["## Figures", ""] + [f"- `{figure}`" for figure in figures]
    out += [f"- {line}" for line in visualisations(plot_dir, image)]
    out.append("")
    if absent:
        out += ["## Missing or unusable runs", ""] + [f"- {line}" for line in absent] + [""]
    if loaded:
        out += ["## Runs", "", "| run | directory | data | machine | precision | torch | smoke run |",
                "|---|---|---|---|---|---|---|"]
        for run in RUNS:
            if run.name in loaded:
                config = loaded[run.name]["config"]
                out.append(f"| {run.title} | `{Path(runs_dir) / run.name}` | {config.get('data_source', '?')} | "
                           f"{config.get('device_name', '?')} | "
                           f"{config.get('train_config', {}).get('precision', '?')} | "
                           f"{config.get('versions', {}).get('torch', '?')} | "
                           f"{'yes' if is_smoke_run(config) else 'no'} |")
        out.append("")
    return "\n".join(out), absent, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="folder holding one run directory per script (default: runs/)")
    parser.add_argument("--plot-dir", type=Path, default=cli.PLOT_DIR,
                        help="where figures and report.md are written (default: plots/)")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo for the Task 4b/4c figures (default: task4b.py's, images/zebra.jpg)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    # A fresh checkout has no runs/ yet: the report then lists every command to run.
    if not args.runs_dir.is_dir() and args.runs_dir.resolve() != DEFAULT_RUNS_DIR.resolve():
        raise UserError(f"no run directories: {args.runs_dir} does not exist; train first "
                        "(e.g. python task2.py) or point --runs-dir at the folder holding them")
    check_writable(args.plot_dir)
    text, absent, problems = build_report(args.runs_dir, args.plot_dir, args.image)
    path = Path(args.plot_dir) / "report.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}", file=sys.stderr)
    for line in absent:
        print(line, file=sys.stderr)
    if problems:
        raise UserError(f"{len(problems)} run(s) could not be read (listed above and in {path}); "
                        "the rest of the report was written")


if __name__ == "__main__":
    cli.main(main)
