"""Every figure the project draws: training curves, confusion matrices, and the one matplotlib
preamble (headless backend, atomic PNG writes) that the task scripts' own figures use too."""
from __future__ import annotations

import functools
import textwrap
from pathlib import Path

import numpy as np

from utils import atomic_writes


# A report's text is about 6.5 in wide: figures are drawn at that width, so that their fonts (8 pt at
# least) keep their size when placed in it.
WIDTH = 6.5
STYLE = {"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "figure.titlesize": 10, "savefig.dpi": 200}
# Each split its own colour, line style and marker, so that curves stay apart in grey-scale print too.
SPLITS = {"train": ("C0", "-", None), "validation": ("C1", "--", "o"), "test": ("C2", ":", "s")}
RUN_COLOURS = ("Blues", "Oranges", "Greens", "Purples", "Reds")   # several runs: one hue each, a shade per split
SHADES = {"train": 0.9, "validation": 0.7, "test": 0.5}
RUN_MARKERS = ("o", "^", "D", "v", "P")


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported only when a figure is drawn), with the
    project's font sizes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update(STYLE)
    return plt


def save(figure, path: Path) -> Path:
    """Write `figure` as a PNG and, beside it, a PDF (vector, for a LaTeX report), both atomically and
    together (a crash never leaves half an image, a full disk never a PNG and a PDF of two drawings);
    close it. Returns the PNG's path."""
    path = Path(path)
    # The title travels in the file (PNG text chunk, PDF info), so that report.py can tell what it shows.
    metadata = {"Title": figure.get_suptitle().replace("\n", " ")} if figure.get_suptitle() else {}
    try:
        atomic_writes({target: functools.partial(_savefig, figure, kind, metadata)
                       for target, kind in ((path, "png"), (path.with_suffix(".pdf"), "pdf"))})
    finally:
        pyplot().close(figure)
    return path


def _savefig(figure, kind: str, metadata: dict, handle) -> None:
    figure.savefig(handle, format=kind, metadata=metadata)


def saved_title(path: Path) -> str | None:
    """The title save() wrote into the PNG at `path` ('' for a figure drawn by an older version), or None when
    there is no PNG there to read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("Title", ""))
    except OSError:
        return None


def wrapped(title: str, width: int = 90) -> str:
    """A title in lines that fit the figure's width."""
    return "\n".join(textwrap.wrap(title, width, break_on_hyphens=False)) if title else title


def _smoothed(steps, values, window):
    """Mean and spread of the training loss over windows of `window` steps."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    count = len(values) // window
    if count < 2:
        return steps, values, None
    values = values[: count * window].reshape(count, window)
    centres = steps[: count * window].reshape(count, window).mean(axis=1)
    return centres, values.mean(axis=1), values.std(axis=1)


def training_curves(runs: dict, path: Path, title: str | None = None, show_test: bool = False,
                    marks: dict | None = None) -> Path:
    """Loss (left) and accuracy (right) of each run; see training_curves_figure."""
    return save(training_curves_figure(runs, title, show_test, marks), path)


def run_marks(metrics: dict | None, history: dict) -> dict:
    """What training_curves marks on one run (see training_curves_figure): from metrics.json, its best
    checkpoint and, where early stopping ended it, the last step; a run without metrics.json (still training,
    or stopped before its end) marks the validation with the lowest loss so far, the one its best.pt holds."""
    if metrics:
        return {"best": metrics.get("best_step"),
                **({"stopped": metrics.get("steps")} if metrics.get("early_stopped") is True else {})}
    validations = history["validation"]
    return {"best": min(validations, key=lambda point: point["loss"])["step"]} if validations else {}


def _style(split: str, index: int, several: bool) -> dict:
    colour, line, marker = SPLITS[split]
    if several:
        colour = pyplot().get_cmap(RUN_COLOURS[index % len(RUN_COLOURS)])(SHADES[split])
        marker = RUN_MARKERS[index % len(RUN_MARKERS)]
    return {"color": colour, "linestyle": line, "marker": marker, "markersize": 3.5}


def training_curves_figure(runs: dict, title: str | None = None, show_test: bool = False,
                           marks: dict | None = None):
    """Training, validation (and with show_test, test) loss on the left; training accuracy (running, over
    each validation interval's batches) and validation accuracy on the right.

    `runs` maps a label to a history as written by the Trainer (history.json); `marks` a label to
    {"best": step of the checkpoint the tables show, "stopped": step where early stopping ended the run},
    drawn as a star and a vertical line. The legend sits below the panels, never over a curve.
    """
    plt = pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(WIDTH, 3.3), layout="constrained")
    several = len(runs) > 1
    for index, (label, history) in enumerate(runs.items()):
        prefix = f"{label}: " if several else ""
        train = history["train_loss"]
        window = max(1, len(train["values"]) // 100)
        steps, mean, spread = _smoothed(train["steps"], train["values"], window)
        style = _style("train", index, several)
        loss_axis.plot(steps, mean, **{**style, "markevery": max(1, len(steps) // 8)}, alpha=0.9,
                       label=f"{prefix}training loss" + (f" (mean of {window} steps)" if window > 1 else ""))
        if spread is not None:
            loss_axis.fill_between(steps, mean - spread, mean + spread, color=style["color"], alpha=0.15, linewidth=0)
        validations = history["validation"]
        val_steps = [point["step"] for point in validations]
        loss_axis.plot(val_steps, [point["loss"] for point in validations], **_style("validation", index, several),
                       label=f"{prefix}validation loss")
        if show_test and validations and "test_loss" in validations[0]:
            loss_axis.plot(val_steps, [point.get("test_loss") for point in validations],
                           **_style("test", index, several), label=f"{prefix}test loss")
        trained = [(point["step"], point["train_accuracy"]) for point in validations if "train_accuracy" in point]
        if trained:
            accuracy_axis.plot(*zip(*trained), **{**style, "marker": style["marker"] or "."},
                               label=f"{prefix}training accuracy (running)")
        accuracy_axis.plot(val_steps, [point["accuracy"] for point in validations],
                           **_style("validation", index, several), label=f"{prefix}validation accuracy")
        mark = (marks or {}).get(label, {})
        by_step = {point["step"]: point for point in validations}
        best = by_step.get(mark.get("best"))
        if best:
            colour = _style("validation", index, several)["color"]
            for axis, key in ((loss_axis, "loss"), (accuracy_axis, "accuracy")):
                axis.plot([best["step"]], [best[key]], linestyle="none", marker="*", markersize=11, color=colour,
                          markeredgecolor="black", markeredgewidth=0.6, zorder=5,
                          label=f"{prefix}best checkpoint (step {best['step']:,})" if axis is loss_axis else None)
        if mark.get("stopped") is not None:
            for axis in (loss_axis, accuracy_axis):
                axis.axvline(mark["stopped"], color="0.4", linestyle=(0, (1, 2)), linewidth=1,
                             label=f"{prefix}early stop (step {mark['stopped']:,})" if axis is loss_axis else None)
    loss_axis.set(xlabel="training step", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="training step", ylabel="accuracy", title="Accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
    handles, labels = [], []
    for axis in (loss_axis, accuracy_axis):
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    columns = 2 if several or len(labels) > 4 else len(labels)
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, frameon=False)
    figure.set_figheight(3.0 + 0.17 * -(-len(labels) // columns) + 0.17 * (title or "").count("\n"))
    if title:
        figure.suptitle(wrapped(title))
    return figure


def confusion_matrix(matrix, classes, path: Path, title: str = "") -> Path:
    """Counts in every cell, colours normalised per row (true class), class names on both axes."""
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    # Half the text width: two print side by side, and each stays under half a page.
    figure, axis = plt.subplots(figsize=(WIDTH / 2 + 0.3, 3.4), layout="constrained")
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(classes)):
        for column in range(len(classes)):
            axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=6,
                      color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / max(1, counts.sum())
    axis.set_title(wrapped(f"{title} (accuracy {accuracy:.3f})" if title else f"accuracy {accuracy:.3f}", 50),
                   fontsize=8)
    axis.tick_params(labelsize=7)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04).set_label("share of the true class", fontsize=7)
    return save(figure, path)


def most_confused(matrix, classes, count: int = 3) -> list[tuple[str, str, int]]:
    """The off-diagonal cells with the most images: (true class, predicted class, images)."""
    counts = np.asarray(matrix, dtype=np.int64)
    pairs = [(classes[i], classes[j], int(counts[i, j])) for i in range(len(classes))
             for j in range(len(classes)) if i != j and counts[i, j] > 0]
    return sorted(pairs, key=lambda pair: -pair[2])[:count]
