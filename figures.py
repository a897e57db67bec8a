"""Every figure the project draws: training curves, confusion matrices, and the one matplotlib
preamble (headless backend, atomic PNG writes) that the task scripts' own figures use too."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils import atomic_write


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported only when a figure is drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(figure, path: Path) -> Path:
    """Write `figure` as a PNG atomically (a crash never leaves half an image) and close it."""
    path = Path(path)
    try:
        atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    finally:
        pyplot().close(figure)
    return path


def _smoothed(steps, values, window):
    """Mean and spread of the training loss over windows of `window` steps."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    count = len(values) // window
    if count < 2:
        return steps, values, None
    values = values[: count * window].reshape(count, window)
    centres = steps[: count * window].reshape(count, window).mean(axis=1)
    return centres, values.mean(axis=1), values.std(axis=1)


def training_curves(runs: dict, path: Path, title: str | None = None, show_test: bool = False) -> Path:
    """Training and validation loss (left) and validation accuracy (right), one colour per run.

    `runs` maps a label to a history as written by the Trainer (history.json).
    """
    return save(training_curves_figure(runs, title, show_test), path)


def training_curves_figure(runs: dict, title: str | None = None, show_test: bool = False):
    plt = pyplot()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    for index, (label, history) in enumerate(runs.items()):
        colour = f"C{index}"
        prefix = f"{label} " if len(runs) > 1 else ""
        train = history["train_loss"]
        window = max(1, len(train["values"]) // 100)
        steps, mean, spread = _smoothed(train["steps"], train["values"], window)
        loss_axis.plot(steps, mean, color=colour, alpha=0.8, label=f"{prefix}training loss")
        if spread is not None:
            loss_axis.fill_between(steps, mean - spread, mean + spread, color=colour, alpha=0.15)
        validations = history["validation"]
        val_steps = [point["step"] for point in validations]
        loss_axis.plot(val_steps, [point["loss"] for point in validations], color=colour,
                       linestyle="--", marker="o", markersize=3, label=f"{prefix}validation loss")
        if show_test and validations and "test_loss" in validations[0]:
            loss_axis.plot(val_steps, [point["test_loss"] for point in validations], color=colour,
                           linestyle=":", marker="s", markersize=3, label=f"{prefix}test loss")
        accuracy_axis.plot(val_steps, [point["accuracy"] for point in validations], color=colour,
                           marker="o", markersize=3, label=f"{prefix}validation accuracy")
    loss_axis.set(xlabel="training step", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="training step", ylabel="accuracy", title="Validation accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix, classes, path: Path, title: str = "") -> Path:
    """Counts in every cell, colours normalised per row (true class), class names on both axes."""
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, axis = plt.subplots(figsize=(8.4, 7.2))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(classes)):
        for column in range(len(classes)):
            axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=8,
                      color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set(xlabel="predicted class", ylabel="true class")
    accuracy = np.trace(counts) / max(1, counts.sum())
    axis.set_title(f"{title} (accuracy {accuracy:.3f})" if title else f"accuracy {accuracy:.3f}")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    return save(figure, path)


def most_confused(matrix, classes, count: int = 3) -> list[tuple[str, str, int]]:
    """The off-diagonal cells with the most images: (true class, predicted class, images)."""
    counts = np.asarray(matrix, dtype=np.int64)
    pairs = [(classes[i], classes[j], int(counts[i, j])) for i in range(len(classes))
             for j in range(len(classes)) if i != j and counts[i, j] > 0]
    return sorted(pairs, key=lambda pair: -pair[2])[:count]
