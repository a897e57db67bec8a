"""What a checkpoint keeps and what --resume checks before it continues a run.

last.pt keeps everything --resume needs to continue exactly (LAST_CHECKPOINT): the weights, the optimizer, the
run's position and record (RunState), its time (Stopwatch), the random state, the experiment's settings (its
signature), the data it was trained on and a copy of the run's record (config.json). best.pt keeps the best
weights (BEST_CHECKPOINT). A file that is not one of these is refused by name (load_own_checkpoint); a resume
with other settings, other data, a lost best.pt or a length that would have ended the run before where it is
already is refused before anything changes (check_resumable, length_problem).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from run_folder import FILES
from utils import UserError, load_checkpoint, read_json, sum_in_order


def new_history() -> dict:
    return {"train_loss": {"steps": [], "values": []}, "train_accuracy": {"steps": [], "values": []},
            "learning_rate": {"steps": [], "values": []}, "validation": []}


@dataclass
class RunState:
    """Where a run is and what it has seen: its position (steps taken, epoch, batch within it), its history
    (each step's loss, batch accuracy and learning rate; each validation), the best validation so far and
    the images trained. last.pt keeps it (state_dict, of the kinds FORM names); --resume restores it."""
    step: int = 0                 # optimisation steps taken
    epoch: int = 0
    batch_in_epoch: int = 0
    history: dict = field(default_factory=new_history)
    best: dict = field(default_factory=lambda: {"loss": math.inf, "step": None})
    images_trained: int = 0       # all processes together
    early_stopped: bool = False   # derived from the history, never saved: --resume may raise --early-stop-count
    last_validation: tuple | None = None  # (step, full evaluation result) of this process's latest validation

    FORM = {"step": int, "epoch": int, "batch_in_epoch": int, "history": dict, "best": dict, "images_trained": int}

    def state_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.FORM}

    def load_state_dict(self, saved: dict, early_stop_count: int) -> None:
        for key in self.FORM:
            setattr(self, key, saved[key])
        # A run that stopped early stays stopped unless --early-stop-count grows.
        self.early_stopped = should_early_stop(self.validation_losses(), early_stop_count)

    @staticmethod
    def malformed(saved: dict) -> list[str]:
        """What FORM's kinds cannot tell of a saved state that has them: the keys that are still wrong."""
        return [] if {"step", "loss"} <= set(saved["best"]) else ["best"]

    def record(self, pending, rates) -> None:
        """Move per-step losses and batch accuracies kept on the device into the history (one sync for
        many steps), with the steps' learning rates."""
        if pending:
            both = torch.stack([value.float() for pair in zip(*pending) for value in pair]).tolist()
            values, accuracies = both[:len(pending)], both[len(pending):]
            steps = list(range(self.step - len(values), self.step))
            self.history["train_loss"]["steps"] += steps
            self.history["train_loss"]["values"] += values
            # A run resumed from a checkpoint of an older version has no training accuracy before it.
            accuracy = self.history.setdefault("train_accuracy", {"steps": [], "values": []})
            accuracy["steps"] += steps
            accuracy["values"] += accuracies
            self.history["learning_rate"]["steps"] += steps
            self.history["learning_rate"]["values"] += rates
            pending.clear()
            rates.clear()

    def next_batch(self, steps_per_epoch: int) -> None:
        self.batch_in_epoch += 1
        if self.batch_in_epoch == steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def validation_point(self, result: dict, steps_per_epoch: int) -> dict:
        """The history's entry for a validation at this step with `result`: where, its loss and accuracy, and
        the running accuracy of the batches trained since the previous validation (where recorded)."""
        point = {"step": self.step, "epoch": round(self.step / steps_per_epoch, 3), "loss": result["loss"],
                 "accuracy": result["accuracy"]}
        since = self.history["validation"][-1]["step"] if self.history["validation"] else 0
        trained = self.history.get("train_accuracy", {"steps": [], "values": []})
        interval = [v for s, v in zip(trained["steps"], trained["values"]) if since <= s < self.step]
        if interval:
            point["train_accuracy"] = sum_in_order(interval) / len(interval)
        return point

    def validated(self, point: dict, result: dict) -> bool:
        """Record a validation (its history entry and full result); True when it is the best so far."""
        self.history["validation"].append(point)
        self.last_validation = (self.step, result)
        improved = result["loss"] < self.best["loss"]
        if improved:
            self.best = {"loss": result["loss"], "step": self.step}
        return improved

    def validation_losses(self) -> list[float]:
        return [point["loss"] for point in self.history["validation"]]

    def last_accuracy(self) -> str:
        """The latest validation accuracy, for the progress bar."""
        validations = self.history["validation"]
        return f"{validations[-1]['accuracy']:.3f}" if validations else "-"


# What last.pt and best.pt hold, and of which type: a file that loads but lacks them is not one of ours
# (another program's, a best.pt copied over last.pt) and is refused by name, not met by a KeyError later.
LAST_CHECKPOINT = {"model": dict, "optimizer": dict, "scaler": dict, **RunState.FORM, "callbacks": list,
                   "train_seconds": (int, float), "wall_seconds": list, "torch_rng": torch.Tensor, "signature": dict}
BEST_CHECKPOINT = {"model": dict, "step": int, "signature": dict}


def load_own_checkpoint(path: Path, form: dict, map_location="cpu") -> dict:
    """A last.pt (form=LAST_CHECKPOINT) or best.pt (BEST_CHECKPOINT) this loop wrote, else one UserError."""
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict):
        problem = f"it holds a {type(state).__name__}"
    else:
        wrong = [key for key, kind in form.items() if not isinstance(state.get(key), kind)]
        if form is LAST_CHECKPOINT and not wrong:
            wrong = RunState.malformed(state)
        problem = wrong and f"no valid {', '.join(wrong[:4])}{' ...' if len(wrong) > 4 else ''}"
        if wrong and form is LAST_CHECKPOINT and all(isinstance(state.get(k), t) for k, t in BEST_CHECKPOINT.items()):
            problem += ": it is a best.pt (weights only), which cannot be resumed"
    if problem:
        raise UserError(f"{path} is not a checkpoint of this project's training ({problem}); put the run's own "
                        "file back, or start over with --overwrite")
    return state


def should_early_stop(validation_losses, patience: int) -> bool:
    """True when the lowest validation loss is `patience` or more validations old."""
    if len(validation_losses) <= patience:
        return False
    best_index = min(range(len(validation_losses)), key=validation_losses.__getitem__)
    return len(validation_losses) - 1 - best_index >= patience


def model_signature(model: nn.Module) -> str:
    """Identifies an architecture by its parameter and buffer names and shapes."""
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return hashlib.sha1(repr((type(model).__name__, shapes)).encode()).hexdigest()[:16]


def check_signature(state: dict, signature: dict, path: Path, action: str, may_differ=(), defaults=None) -> None:
    """Refuse to `action` the checkpoint `state` (at `path`) when it was trained with other settings than
    `signature`, besides those that `may_differ`. A setting its script has gained since the checkpoint was
    written (absent from it) counts as trained with its default (`defaults`: the script's)."""
    saved, defaults = state.get("signature", {}), defaults or {}

    def differs(key) -> bool:
        if key not in saved and key in defaults:
            return signature.get(key) != defaults[key]
        return saved.get(key) != signature.get(key)
    changed = sorted(k for k in set(saved) | set(signature) if k not in may_differ and differs(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {signature.get(k)!r}" for k in changed[:4])
        raise UserError(f"cannot {action} {path}: it was trained with other settings ({details}); "
                        "use the same settings, another --run-dir, or --overwrite to start over")


def check_resumable(state: dict, run_dir: Path, signature: dict, data: dict, log, defaults=None) -> None:
    """Refuse to resume the last.pt `state` of run_dir with other settings (`signature`; `defaults`: the script's,
    see check_signature) or other data than it was trained with, or when the best weights it names are lost;
    `log` a new place of the same data."""
    path, best = run_dir / FILES.LAST, run_dir / FILES.BEST
    check_signature(state, signature, path, "resume", defaults=defaults)
    saved_data = state.get("data") or {}
    if data and saved_data and saved_data.get("fingerprint") != data.get("fingerprint"):
        raise UserError(f"cannot resume {path}: it was trained on other data ({describe_data(saved_data)}; "
                        f"now {describe_data(data)}); pass the --data-dir it was trained on, or start "
                        "over with --overwrite or another --run-dir")
    if data and saved_data and saved_data.get("source") != data.get("source"):
        log(f"the same data as before, now from {data['source']}")
    if state["best"]["step"] is not None and state["best"]["step"] != state["step"] and not best.exists():
        raise UserError(f"{best} is missing: the best weights (step {state['best']['step']}) of this run "
                        "are lost; start over with --overwrite, or evaluate the last weights elsewhere")
    if best.exists():  # the final evaluation reads it, perhaps only after hours (or, at the best step, never)
        check_signature(load_own_checkpoint(best, BEST_CHECKPOINT), signature, best, "resume", defaults=defaults)


def length_problem(state: dict, config, steps_per_epoch: int, run_dir: Path) -> str | None:
    """Why this run's length (epochs, max_steps, early_stop_count of `config`, a TrainConfig) would have ended the
    run that last.pt's `state` holds before where it already is, if it would: a resume must never label a run with
    a length it did not have."""
    step, per_epoch = state["step"], steps_per_epoch
    where = f"{run_dir} is at step {step} (epoch {step / per_epoch:.2f}) already"
    if config.max_steps is not None and config.max_steps < step:
        return f"{where}: --max-steps {config.max_steps} would end it before that; give --max-steps {step} or more"
    if config.epochs * per_epoch < step:
        return (f"{where}: --epochs {config.epochs} ({config.epochs * per_epoch} steps) would end it before that; "
                f"give --epochs {math.ceil(step / per_epoch)} or more")
    before = [point for point in state["history"]["validation"] if point["step"] < step]
    losses = [point["loss"] for point in before]
    stops = [point["step"] for end, point in enumerate(before, 1)
             if should_early_stop(losses[:end], config.early_stop_count)]
    if stops:
        # The count must exceed every wait for a lower loss that the run sat through.
        needed = 1 + max(i - min(range(i + 1), key=losses.__getitem__) for i in range(len(losses)))
        return (f"{where}: --early-stop-count {config.early_stop_count} would have stopped it at step {stops[0]}; "
                f"give --early-stop-count {needed} or more")
    return None


def describe_data(data: dict) -> str:
    """'45000 train / 5000 validation / 10000 test images from <source> (fingerprint ...)'."""
    return (f"{data.get('train_images')} train / {data.get('validation_images')} validation / "
            f"{data.get('test_images')} test images from {data.get('source')} (fingerprint "
            f"{str(data.get('fingerprint'))[:12]})")


def earlier_wall_seconds(run_dir: Path, saved: list) -> list:
    """The wall times of a run's earlier processes as last.pt has them, or, for a finished run, as metrics.json
    has them (last.pt was saved before the final evaluation, which took time too)."""
    path = Path(run_dir) / FILES.METRICS
    try:
        finished = read_json(path).get("wall_seconds_per_process") if path.exists() else None
    except (UserError, AttributeError):
        finished = None
    if isinstance(finished, list) and len(finished) == len(saved):
        return finished
    return saved


class Stopwatch:
    """A process's time: the training time and images between the loop's other phases, since the last lap (the
    progress bar's images/s) and since the last validation (metrics.csv's); the training time in all
    (`train_seconds`, carried over --resume); where the rest goes (`seconds`, metrics.json's); the wall time of
    this process and of those before it (`earlier_wall_seconds`, --resume)."""

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.train_seconds = 0.0
        self.earlier_wall_seconds = []
        self.seconds = {"setup": time.perf_counter() - self.started, "validation": 0.0, "checkpoints": 0.0,
                        "logging": 0.0}
        self.restart()

    def restart(self) -> None:
        self.lap_start = self.validation_start = time.perf_counter()
        self.lap_images = self.images = 0

    def count(self, images: int) -> None:
        self.lap_images += images
        self.images += images

    def lap(self) -> tuple[float, float]:
        """Seconds since the last lap (counted as training time) and the images per second over them; a new lap
        starts."""
        now = time.perf_counter()
        seconds, images = now - self.lap_start, self.lap_images
        self.lap_start, self.lap_images = now, 0
        self.train_seconds += seconds
        return seconds, images / seconds if seconds > 0 else 0.0

    def since_validation(self) -> tuple[int, float]:
        """Images trained and seconds since the last validation (or the start)."""
        return self.images, time.perf_counter() - self.validation_start

    def spent(self, phase: str, since: float) -> float:
        """Count the time since `since` as `phase`'s; returns now."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now

    def wall_seconds(self) -> list:
        """Wall time of every process of this run so far: the first start and each --resume."""
        return self.earlier_wall_seconds + [round(time.perf_counter() - self.started, 1)]

    def summary(self, images_trained: int) -> dict:
        """metrics.json's timings."""
        wall, train_seconds = self.wall_seconds(), self.train_seconds
        return dict(train_seconds=round(train_seconds, 2), images_trained=images_trained,
                    train_images_per_s=round(images_trained / train_seconds, 1) if train_seconds else None,
                    wall_seconds=round(sum(wall), 1), wall_seconds_per_process=wall,
                    seconds={"training": round(train_seconds, 2),
                             **{name: round(value, 2) for name, value in self.seconds.items()}})

    def state_dict(self) -> dict:
        return {"train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds()}

    def load_state_dict(self, saved: dict, run_dir: Path) -> None:
        self.train_seconds = saved["train_seconds"]
        self.earlier_wall_seconds = earlier_wall_seconds(run_dir, list(saved["wall_seconds"]))


def device_rng_state(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_device_rng_state(state, device: torch.device) -> None:
    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state.cpu(), device)
    elif state is not None and device.type == "mps":
        torch.mps.set_rng_state(state.cpu())

