"""Rebuild every figure and plots/report.md from saved run directories, without training.

    python report.py                       # seconds: reads runs/<script>/, writes plots/
    python report.py --runs-dir other_runs --plot-dir other_plots

Each run directory (written by a task script) holds config.json, history.json and
metrics.json. A missing run is listed with the command that makes it; a run still training, or
stopped before its end, is drawn as far as it got and marked so; runs that differ only by seed
(`--seeds`) are summarised as mean ± std. A run whose files are damaged is listed with the file
named, everything else is still produced, and the exit code is then 1.
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse  # noqa: E402
import importlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import cli  # noqa: E402
import figures  # noqa: E402
import resnet  # noqa: E402
import runs  # noqa: E402
from registry import BY_NAME, RUNS, metrics_table, published_text  # noqa: E402
from task3_compare import task3_outputs  # noqa: E402
from utils import UserError, check_writable, write_text  # noqa: E402

VISUALISATIONS = [("task4b", "Task 4b (Figure 7): first-layer filters and activations"),
                  ("task4c", "Task 4c: last conv stage activations")]
# Settings that do not make two runs different experiments (besides the seed, which --seeds varies).
NOT_THE_EXPERIMENT = runs.RUN_ONLY | {"seed", "name"}


def command_for(entry, runs_dir: Path, resume: bool = False) -> str:
    command = entry.command
    if Path(runs_dir).resolve() != runs.RUNS_DIR.resolve():
        command += f" --run-dir {Path(runs_dir) / entry.name}"
    return command + (" --resume" if resume else "") + " [--data-dir DIR]"


def load(entry, runs_dir: Path):
    """('ok' | 'in progress' | 'unfinished' | 'missing' | 'broken', run data or None, message)."""
    folder = Path(runs_dir) / entry.name
    try:
        if (folder / "metrics.json").exists():
            return "ok", runs.read_run(folder), ""
        if runs.is_being_trained(folder):
            state, message = "in progress", f"{folder} is being trained right now (drawn as far as it got)"
        elif (folder / "last.pt").exists():
            state = "unfinished"
            message = f"{folder} is unfinished: continue it with `{command_for(entry, runs_dir, resume=True)}`"
        else:
            return "missing", None, f"{folder} is missing: make it with `{command_for(entry, runs_dir)}`"
        try:
            return state, runs.read_run(folder, finished=False), message
        except UserError:  # nothing to draw yet (no validation, or written by an older version)
            return state, None, message
    except UserError as error:
        return "broken", None, f"unusable: {error}"


def summary_table(loaded: dict) -> list[str]:
    lines = ["| run | train acc (ours / report) | validation acc (ours / report) | test acc (ours / report) "
             "| test loss | epochs | wall time | data | machine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in RUNS:
        if entry.name not in loaded:
            continue
        config, metrics = loaded[entry.name]["config"], loaded[entry.name]["metrics"]
        cells = [f"{metrics[s]['accuracy']:.3f} / {published_text(entry, s)}" for s in ("train", "validation", "test")]
        wall = metrics.get("wall_seconds")
        source = config.get("data", {}).get("source", "?") + (" (smoke run: --subset/--max-steps)"
                                                                if runs.is_smoke_run(config) else "")
        resolved = config.get("resolved", {})
        machine = f"{resolved.get('device_name', '?')}, {resolved.get('precision', '?')}"
        lines.append(f"| {entry.title} | " + " | ".join(cells) + f" | {metrics['test']['loss']:.3f} | "
                     f"{metrics.get('epochs', '?')} | {'?' if wall is None else f'{wall / 60:.1f} min'} | "
                     f"{source} | {machine} |")
    return lines


def draw(entry, run: dict, plot_dir: Path, state: str) -> list[Path]:
    """The run's training curves (marked when in progress) and its test confusion matrix."""
    config = run["config"]
    title = config.get("title") or entry.title
    drawn = []
    if entry.figure:
        marked = title if state == "ok" else f"{title} ({state}: step {run['history']['validation'][-1]['step']})"
        show_test = bool(config.get("settings", {}).get("track_test"))
        drawn.append(figures.training_curves({title: run["history"]}, Path(plot_dir) / f"{entry.name}.png",
                                             title=marked, show_test=show_test))
    confusion = run.get("metrics", {}).get("test", {}).get("confusion")
    if confusion:
        classes = list(run["metrics"]["test"].get("per_class_accuracy") or range(len(confusion)))
        drawn.append(figures.confusion_matrix(confusion, [str(c) for c in classes],
                                              Path(plot_dir) / f"{entry.name}_confusion.png",
                                              title=f"{title}: test set"))
    return drawn


def confused_pairs(loaded: dict) -> list[str]:
    lines = []
    for entry in RUNS:
        test = loaded.get(entry.name, {}).get("metrics", {}).get("test", {})
        if test.get("confusion"):
            pairs = figures.most_confused(test["confusion"], list(test["per_class_accuracy"]))
            lines.append(f"- {entry.title}: " + "; ".join(f"{true} taken for {predicted} ({count} images)"
                                                          for true, predicted, count in pairs))
    return lines


def seed_groups(runs_dir: Path, loaded: dict) -> tuple[list[str], list[str]]:
    """Runs that differ only by seed, as mean ± sample std with n; and damaged runs found on the way.
    `loaded`: runs already read, by folder name."""
    groups, problems = {}, []
    folders = [p for p in Path(runs_dir).iterdir() if (p / "metrics.json").exists()]
    # Where two runs have the same seed (runs/task2 and --seeds' runs/task2-seed0), --seeds' run counts.
    for folder in sorted(folders, key=lambda p: ("-seed" not in p.name, p.name)):
        try:
            run = loaded.get(folder.name) or runs.read_run(folder)
        except UserError as error:
            problems.append(f"unusable: {error}")
            continue
        settings = run["config"].get("settings", {})
        if "seed" not in settings:
            continue
        key = (run["config"].get("name"), repr(sorted((k, v) for k, v in settings.items()
                                                      if k not in NOT_THE_EXPERIMENT)))
        groups.setdefault(key, {}).setdefault(settings["seed"], run)  # one run per seed
    lines = []
    for (name, _), by_seed in sorted(groups.items(), key=lambda item: str(item[0][0])):
        if len(by_seed) < 2:
            continue
        entry = BY_NAME.get(name)
        cells = []
        for split in ("train", "validation", "test"):
            values = [run["metrics"][split]["accuracy"] for run in by_seed.values()]
            cells.append(f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}")
        losses = [run["metrics"]["test"]["loss"] for run in by_seed.values()]
        lines.append(f"| {entry.title if entry else name} | {len(by_seed)} | {', '.join(map(str, by_seed))} | "
                     + " | ".join(cells) + f" | {statistics.fmean(losses):.3f} ± {statistics.stdev(losses):.3f} |")
    if lines:
        lines = ["| run | n | seeds | train acc | validation acc | test acc | test loss |",
                 "|---|---|---|---|---|---|---|", *lines]
    return lines, problems


def visualisations(plot_dir: Path, image: Path | None = None) -> list[str]:
    """Redraw Tasks 4b and 4c (a second each) when the ImageNet weights are already cached.

    The report never downloads: without the weights it says which command makes the figure.
    """
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
    """Draw the figures; return the Markdown, the runs not shown complete, and problems worth exit 1."""
    loaded, absent, problems, drawn = {}, [], [], []
    for entry in RUNS:
        state, run, message = load(entry, runs_dir)
        if state == "ok":
            loaded[entry.name] = run
        else:
            absent.append(message)
        if state == "broken":
            problems.append(message)
        if run is not None:
            drawn += draw(entry, run, plot_dir, state)

    out = ["# Results reproduced from saved runs", "",
           f"Generated by `python report.py` from `{runs_dir}` (no training). Accuracies are ours next to "
           "the assignment report's published numbers (the report trained on the original CIFAR-10; "
           "the data source of each of our runs is in the table).", ""]
    out += ["## Final metrics (best checkpoint)", ""]
    out += summary_table(loaded) if loaded else ["No finished run found."]
    out.append("")
    seeds, seed_problems = seed_groups(runs_dir, loaded) if Path(runs_dir).is_dir() else ([], [])
    problems += [p for p in seed_problems if p not in problems]
    if seeds:
        out += ["## Several seeds", "", "Runs that differ only by their seed: mean ± sample standard deviation "
                "over n runs.", "", *seeds, ""]
    if "task2" in loaded:
        task2 = BY_NAME["task2"]
        out += ["## Task 2b", "", metrics_table({"Task 2 (ours)": loaded["task2"]["metrics"]}), "",
                "Report: " + ", ".join(f"{split} {published_text(task2, split)}"
                                       for split in ("train", "validation", "test")) + " accuracy.", ""]
    out += ["## Task 3b and 3c comparisons", ""]
    try:
        task3_lines = task3_outputs(Path(runs_dir), Path(plot_dir), loaded)
    except UserError as error:
        task3_lines = [f"Task 3 comparison not drawn: {error}"]
        if not any(str(error) in problem for problem in problems):
            problems.append(str(error))
    for line in task3_lines:
        first, _, rest = line.partition("\n")
        out += [f"- {first}"] + (["", rest, ""] if rest else [])
    out.append("")
    pairs = confused_pairs(loaded)
    if pairs:
        out += ["## Most confused classes (test set)", "", *pairs, ""]
    out += ["## Figures", ""] + [f"- `{figure}`" for figure in drawn]
    out += [f"- {line}" for line in visualisations(plot_dir, image)]
    out.append("")
    if absent:
        out += ["## Missing, unfinished or unusable runs", ""] + [f"- {line}" for line in absent] + [""]
    if seed_problems:
        out += [f"- {line}" for line in seed_problems if line not in absent] + [""]
    if loaded:
        out += ["## Runs", "", "| run | directory | data | machine | precision | torch | smoke run |",
                "|---|---|---|---|---|---|---|"]
        for entry in RUNS:
            if entry.name in loaded:
                config = loaded[entry.name]["config"]
                resolved = config.get("resolved", {})
                out.append(f"| {entry.title} | `{Path(runs_dir) / entry.name}` | "
                           f"{config.get('data', {}).get('source', '?')} | {resolved.get('device_name', '?')} | "
                           f"{resolved.get('precision', '?')} | {config.get('versions', {}).get('torch', '?')} | "
                           f"{'yes' if runs.is_smoke_run(config) else 'no'} |")
        out.append("")
    return "\n".join(out), absent, problems


def main(argv=None):
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=runs.RUNS_DIR,
                        help="folder holding one run directory per script (default: runs/)")
    parser.add_argument("--plot-dir", type=Path, default=runs.PLOT_DIR,
                        help="where figures and report.md are written (default: plots/)")
    parser.add_argument("--image", type=Path, default=None,
                        help="photo for the Task 4b/4c figures (default: task4b.py's, images/zebra.jpg)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    # A fresh checkout has no runs/ yet: the report then lists every command to run.
    if not args.runs_dir.is_dir() and args.runs_dir.resolve() != runs.RUNS_DIR.resolve():
        raise UserError(f"no run directories: {args.runs_dir} does not exist; train first "
                        "(e.g. python task2.py) or point --runs-dir at the folder holding them")
    check_writable(args.plot_dir)
    text, absent, problems = build_report(args.runs_dir, args.plot_dir, args.image)
    path = Path(args.plot_dir) / "report.md"
    write_text(text, path)
    print(text)
    print(f"wrote {path}", file=sys.stderr)
    for line in absent:
        print(line, file=sys.stderr)
    if problems:
        raise UserError(f"{len(problems)} run(s) could not be read (listed above and in {path}); "
                        "the rest of the report was written")


if __name__ == "__main__":
    cli.main(main)
