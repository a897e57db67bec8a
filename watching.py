"""Watching a run while it trains: metrics.csv, the live figure, and TensorBoard (optional).

Each is a trainer.Callback that the run adds to every task's Trainer; all of them act after a
validation, once last.pt holds it, and only in the main process.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import figures
from run_folder import FILES
from trainer import Callback
from utils import WriteError, append_text, write_text

CSV_COLUMNS = ("step", "epoch", "learning_rate", "train_loss", "validation_loss", "validation_accuracy",
               "test_loss", "images_per_s", "elapsed_seconds")


def csv_row(trainer, point: dict, timed: bool = True) -> dict:
    """One metrics.csv row for a validation point of `trainer.state.history`."""
    history = trainer.state.history
    validations = [p["step"] for p in history["validation"]]
    index = validations.index(point["step"])
    since = validations[index - 1] if index else 0
    losses = [v for s, v in zip(history["train_loss"]["steps"], history["train_loss"]["values"])
              if since <= s < point["step"]]
    rates = [v for s, v in zip(history["learning_rate"]["steps"], history["learning_rate"]["values"])
             if s < point["step"]]
    return {"step": point["step"], "epoch": point["epoch"], "learning_rate": rates[-1] if rates else "",
            "train_loss": sum(losses) / len(losses) if losses else "", "validation_loss": point["loss"],
            "validation_accuracy": point["accuracy"], "test_loss": point.get("test_loss", ""),
            "images_per_s": round(trainer.throughput, 1) if timed and trainer.throughput else "",
            "elapsed_seconds": round(sum(trainer.clock.wall_seconds()), 1) if timed else ""}


class MetricsCSV(Callback):
    """metrics.csv: a row appended at every validation (`tail -f` it, or open it in a spreadsheet).

    On --resume the file is made to match last.pt, whether the run trains on or not: rows past it are dropped
    (no duplicates), rows it lacks are rebuilt from the history (without their timings).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_resume(self, trainer) -> None:
        if not trainer.is_main:
            return
        kept = {}
        if self.path.exists():
            try:
                with open(self.path, newline="") as handle:
                    for row in csv.DictReader(handle):
                        if all(row.get(column) is not None for column in CSV_COLUMNS):
                            kept.setdefault(int(row["step"]), row)
            except (OSError, ValueError, KeyError, csv.Error):
                kept = {}  # damaged: rebuilt from the history below
        rows = [kept.get(point["step"]) or csv_row(trainer, point, timed=False)
                for point in trainer.state.history["validation"]]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(buffer.getvalue(), self.path)

    def after_validation(self, trainer, point: dict) -> None:
        if not trainer.is_main:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        if not self.path.exists():
            writer.writeheader()
        writer.writerow(csv_row(trainer, point))
        append_text(buffer.getvalue(), self.path)


LIVE = "in progress: step"  # in the live figure's title, which the file keeps (figures.saved_title)


class LiveFigure(Callback):
    """The run's figure (run_folder.figure_path) redrawn after validations, to be opened while the run trains.

    Drawing takes about half a second, which would dominate a GPU run that validates several times a
    second, so after the first it is redrawn at most every `min_seconds`. The run redraws it at its end.
    A figure that cannot be written (a full or read-only --plot-dir) is a warning, once until a drawing
    succeeds again: the run it watches goes on.
    """

    def __init__(self, path: Path, title: str, show_test: bool = False, min_seconds: float = 10.0):
        self.path, self.title, self.show_test, self.min_seconds = Path(path), title, show_test, min_seconds
        self.drawn_at = None
        self.failing = False

    def after_validation(self, trainer, point: dict) -> None:
        recently = self.drawn_at is not None and time.perf_counter() - self.drawn_at < self.min_seconds
        if not trainer.is_main or recently:
            return
        try:
            figures.training_curves({self.title: trainer.state.history}, self.path, show_test=self.show_test,
                                    title=f"{self.title} ({LIVE} {trainer.step} of {trainer.total_steps})",
                                    marks={self.title: {"best": trainer.state.best["step"]}})
        except WriteError as error:
            if not self.failing:
                trainer.log(f"warning: could not write the live figure {error.path}: {error.reason}; "
                            f"{error.kept}; training goes on ({trainer.run_dir / FILES.LAST} holds step "
                            f"{trainer.step}) and draws it again at later validations and at the end; "
                            f"{figure_fix(error)}")
            self.failing = True
        else:
            self.failing = False
        self.drawn_at = time.perf_counter()


def figure_fix(error: WriteError) -> str:
    """What to do about a figure that could not be written: the write's own fix, and the flag that moves it."""
    return f"{error.fix} (--plot-dir DIR)"


class TensorBoard(Callback):
    """The metrics.csv scalars, the training loss of every step, and at the end the run's figure, in
    <run-dir>/tensorboard (`tensorboard --logdir runs`)."""

    def __init__(self, folder: Path, title: str, show_test: bool = False):
        self.folder, self.title, self.show_test = Path(folder), title, show_test
        self.writer = None
        self.logged_steps = 0
        self.trainer = None

    def _open(self, trainer):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            # On --resume, events past the checkpoint (written before an interruption) are dropped.
            self.writer = SummaryWriter(str(self.folder), purge_step=trainer.step if trainer.resumed else None)
            self.logged_steps = len(trainer.state.history["train_loss"]["steps"])
        return self.writer

    def after_validation(self, trainer, point: dict) -> None:
        if not trainer.is_main:
            return
        writer = self._open(trainer)
        self.trainer = trainer
        train = trainer.state.history["train_loss"]
        for step, value in zip(train["steps"][self.logged_steps:], train["values"][self.logged_steps:]):
            writer.add_scalar("train/loss_per_step", value, step)
        self.logged_steps = len(train["steps"])
        row = csv_row(trainer, point)
        for column in CSV_COLUMNS[2:]:
            if row[column] != "":
                writer.add_scalar(f"run/{column}", row[column], point["step"])
        writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            history = self.trainer.state.history
            figure = figures.training_curves_figure({self.title: history}, self.title, self.show_test)
            self.writer.add_figure("training curves", figure, self.trainer.step)
            self.writer.close()
            self.writer = None
