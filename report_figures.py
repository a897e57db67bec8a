"""The report's figures, redrawn from the runs: each run's training curves and test confusion matrix (marked when
the run is not the real thing), Task 3's comparisons (task3_compare.py), and Tasks 4b/4c from cached weights."""
from __future__ import annotations

import importlib
from pathlib import Path

import figures
import resnet
from report_runs import FINISHED
from run_folder import caveats, marked
from utils import UserError

VISUALISATIONS = ("task4b", "task4c")


def draw(entry, item: dict, plot_dir: Path, drawn: dict) -> None:
    """The run's training curves and its test confusion matrix, into drawn["curves"] / drawn["confusion"]."""
    run, state = item["run"], item["state"]
    config, metrics = run["config"], run.get("metrics")
    title = config.get("title") or entry.title
    notes = caveats(config, state)
    if entry.figure:
        validations = run["history"]["validation"]
        if metrics:
            heading = f"{title}: test accuracy {metrics['test']['accuracy']:.3f}"
        else:
            heading = f"{title} (step {validations[-1]['step']})"
        drawn["curves"][entry.name] = figures.training_curves(
            {title: run["history"]}, Path(plot_dir) / f"{entry.name}.png", title=marked(heading, notes),
            show_test=bool(config.get("settings", {}).get("track_test")),
            marks={title: figures.run_marks(metrics, run["history"])})
    confusion = (metrics or {}).get("test", {}).get("confusion")
    if confusion and state == FINISHED:
        classes = list(metrics["test"]["per_class_accuracy"])
        drawn["confusion"][entry.name] = figures.confusion_matrix(
            confusion, classes, Path(plot_dir) / f"{entry.name}_confusion.png",
            title=marked(f"{title}: test set", notes))


def draw_all(entries, found: dict, plot_dir: Path) -> dict:
    """Every drawable run's figures: {"curves": {name: path}, "confusion": {name: path}}."""
    drawn = {"curves": {}, "confusion": {}}
    for entry in entries:
        if found[entry.name]["run"] is not None:
            draw(entry, found[entry.name], plot_dir, drawn)
    return drawn


def visualisations(plot_dir: Path, image: Path | None = None) -> dict:
    """Redraw Tasks 4b and 4c (a second each) when the ImageNet weights are already cached; name -> (figure
    or None, what happened). The report never downloads: without the weights it says which command makes
    the figure, and an existing figure is kept."""
    cached = resnet.weights_cache_dir() / resnet.WEIGHTS_FILE
    result = {}
    for name in VISUALISATIONS:
        existing = Path(plot_dir) / f"{name}.png"
        figure = existing if existing.exists() else None
        kept = f"; the existing {name}.png (drawn earlier by `python {name}.py`) is shown" if figure else ""
        if not cached.is_file():
            result[name] = (figure, f"Not redrawn: the ImageNet weights are not in the torch hub cache and "
                                    f"report.py does not download them; make it with `python {name}.py`{kept}.")
            continue
        try:
            extra = ["--image", str(image)] if image else []
            path = importlib.import_module(name).main(["--plot-dir", str(plot_dir), *extra])
            result[name] = (path, "Redrawn from the cached ImageNet weights.")
        except UserError as error:
            result[name] = (figure, f"Not redrawn ({error}); make it with `python {name}.py`{kept}.")
    return result
