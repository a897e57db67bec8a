"""One training loop for every task: validation, early stopping, best checkpoint, exact resume.

A run directory holds everything a run produces (FILES names them). Checkpoints are written atomically, so a
crash or Ctrl-C never leaves a half-written file.

A task changes the loop through its arguments, never by editing it: `optimizer`, `lr_schedule`
(a factor per step), `loss_fn`, `predict` (the evaluation function, e.g. test-time augmentation)
and `callbacks` (see Callback: on_train_start, after_step, after_validation, and state that
last.pt keeps).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

import cuda_graphs
from hardware import DTYPES, is_main_process
from utils import UsageError, UserError, batch_accuracy, load_checkpoint, read_json, save_checkpoint, write_json

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

# The files of a run folder, named here once (runs.py's folder rules, report.py and the tests use these names).
FILES = SimpleNamespace(
    CONFIG="config.json",           # every setting, once
    HISTORY="history.json",         # losses, accuracies, learning rates
    METRICS="metrics.json",         # final train/validation/test numbers
    METRICS_CSV="metrics.csv",      # one row per validation (a live log)
    LAST="last.pt",                 # resumable state (model, optimizer, RNG, position)
    BEST="best.pt",                 # weights with the lowest validation loss so far
    EVALUATION="evaluation.json",   # --evaluate-only's numbers of best.pt
)


# Each setting's role, declared once with the setting (`role=` of TrainConfig's fields here and of cli's flags);
# what --resume compares, what the checkpoints record and what the report calls the experiment follow from it.
EXPERIMENT = "experiment"  # what the run computes: recorded in the checkpoints, --resume must keep it
LENGTH = "length"          # how long it trains: part of the experiment, but --resume may change it
HOW = "how"                # how and where the run is carried out: not the experiment, --resume may change it
COMMAND = "command"        # what this command does (--resume, --run-dir ...): never taken from the run
ROLES: dict[str, str] = {}  # every setting whose role is not EXPERIMENT


def role(setting: str) -> str:
    return ROLES.get(setting, EXPERIMENT)


def option(default, help: str = "", check: str | None = None, choices=None, group: str = "hyperparameters",
           flag: bool = True, role: str = EXPERIMENT):
    """A TrainConfig field; `cli.training_parser` turns each one with flag=True into --a-flag."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "group": group,
                                            "flag": flag, "role": role})


@dataclass
class TrainConfig:
    """Every setting of the training loop, with its one default (tasks override in their parser)."""
    epochs: int = option(10, "at most this many passes over the training set", "positive", role=LENGTH)
    batch_size: int = option(64, "training images per step", "positive")
    lr: float = option(0.05, "learning rate", "positive")
    optimizer: str = option("sgd", "optimizer", choices=OPTIMIZERS)
    momentum: float = option(0.0, "momentum (sgd, rmsprop)", "non_negative")
    weight_decay: float = option(0.0, "L2 regularisation", "non_negative")
    early_stop_count: int = option(4, "stop after this many validations without a lower validation loss",
                                   "positive", role=LENGTH)
    validations_per_epoch: int = option(2, "validations per epoch, the last at the epoch's end", "positive")
    track_test: bool = option(False, "also evaluate the test loss at every validation (for figures)")
    max_steps: int | None = option(None, "stop after N optimisation steps (the final evaluation still runs)",
                                   "positive", group="smoke runs", role=LENGTH)
    # Chosen by the run for the device (hardware.py), not flags of their own:
    precision: str = option("fp32", flag=False)          # fp32, bf16 or fp16 (autocast)
    # (channels_last is a memory layout: a run may move between a CPU and a GPU in the same precision.)
    channels_last: bool = option(False, flag=False, role=HOW)
    cuda_graphs: bool = option(False, flag=False, role=HOW)  # replay each training step as one CUDA graph
    log_every: int = option(20, flag=False, role=HOW)        # steps between progress-bar updates (a GPU sync each)


ROLES.update({f.name: f.metadata["role"] for f in fields(TrainConfig) if f.metadata["role"] != EXPERIMENT})


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


class TrainingDiverged(UserError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with a message saying what was saved."""


class Callback:
    """The training loop's extension points; override what a task needs.

    on_resume runs once --resume has restored the state (training goes on or not): a file the callback keeps is
    made to match last.pt. on_train_start runs once per process before the first step (after --resume restored
    the state), after_step after every optimisation step, after_validation once last.pt holds that validation.
    state_dict / load_state_dict carry a callback's state through last.pt, so --resume continues it exactly.
    """

    def on_resume(self, trainer: "Trainer") -> None:
        pass

    def on_train_start(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer") -> None:
        pass

    def after_validation(self, trainer: "Trainer", point: dict) -> None:
        pass

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None:
        pass

    def close(self) -> None:
        """The run is over (files to close)."""


class RunFolder:
    """The run folder as training writes into it: from the first validation on, each write announced (`claim`).
    This one holds nothing but the run's own files; runs.RunFiles adds the rules of a folder that holds a
    previous run (replaced with --overwrite) or a finished one (--resume)."""

    may_write = True  # False: nothing may be written yet (not even on Ctrl-C or divergence)

    def __init__(self, path):
        self.path, self.claimed = Path(path), False  # claimed: this run has written into it

    def claim(self, trainer: "Trainer") -> None:
        """Before each write of the run's files: the first calls before_first_save (a resumed run's folder is
        claimed already)."""
        if not self.claimed:
            self.claimed = True
            self.before_first_save(trainer)

    def before_first_save(self, trainer: "Trainer") -> None:
        """Before a new run writes its first file."""

    def after_first_save(self, trainer: "Trainer") -> None:
        """Once its first last.pt is written."""

    def abandon(self, trainer: "Trainer", error: BaseException) -> None:
        """The run has written files but stopped (error, interrupt) before its first last.pt: undo what needs
        undoing; raise to say more than `error`."""

    def outdate(self, trainer: "Trainer", best: bool = False) -> None:
        """Before the checkpoints change (with best: best.pt too)."""

    def steps_eager(self, trainer: "Trainer", note: str) -> None:
        """The run's steps are eager from here on (a CUDA-graph capture failed; `note` says so and why)."""

    def previous_kept(self) -> str:
        """How a message that nothing of this run was saved goes on."""
        return ""


@contextlib.contextmanager
def interrupts_between_steps():
    """Turn Ctrl-C (and SIGTERM, where it already means interrupt) into a flag read between steps.

    Python raises KeyboardInterrupt wherever the signal lands: after the optimizer has
    updated the weights but before the step is counted, or in the middle of a validation;
    last.pt would then hold a step applied twice or a validation skipped on --resume.
    A second signal interrupts at once, for a user who does not want to wait.
    """
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        # Leave ignored signals ignored and a default SIGTERM deadly: only defer an interrupt.
        if current not in (signal.SIG_IGN, signal.SIG_DFL, None):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def validation_points(validations_per_epoch: int, steps_per_epoch: int) -> set[int]:
    """Batch indices within an epoch after which to validate (the last is always one)."""
    count = max(1, min(validations_per_epoch, steps_per_epoch))
    return {round(steps_per_epoch * (i + 1) / count) - 1 for i in range(count)}


def should_early_stop(validation_losses, patience: int) -> bool:
    """True when the lowest validation loss is `patience` or more validations old."""
    if len(validation_losses) <= patience:
        return False
    best_index = min(range(len(validation_losses)), key=validation_losses.__getitem__)
    return len(validation_losses) - 1 - best_index >= patience


def graph_ready(config: TrainConfig, lr: float, device):
    """A learning rate and the update's options as this run's step needs them: with CUDA graphs the rate is
    a tensor on the GPU (the schedule writes it between replays) and the update a fused kernel that a graph
    can capture; otherwise a number and the default update. Every optimizer a task builds goes through it."""
    if config.cuda_graphs:
        return torch.tensor(lr, device=device), {"fused": True}
    return lr, {}


def build_optimizer(config: TrainConfig, parameters, nesterov: bool = False) -> torch.optim.Optimizer:
    """The optimizer `config` names, over the parameters that train (in the form graph_ready gives)."""
    parameters = [p for p in parameters if p.requires_grad]
    on_graph = config.cuda_graphs
    lr, fused = graph_ready(config, config.lr, parameters[0].device)
    capturable = {"fused": True, "capturable": True} if on_graph else {}  # Adam's step count on the GPU too
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=nesterov, **fused)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay, **capturable)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay, **capturable)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def divergence_advice(config: TrainConfig) -> str:
    """What most likely made a run diverge, from the settings that size its updates, and what to lower.

    Weight decay alone scales every weight by (1 - lr * weight_decay) per step (in SGD, RMSprop and AdamW;
    in Adam it swamps the gradient): past 2 the weights change sign and grow each step, without bound.
    Momentum of 1 or more adds up updates that never fade. Otherwise the learning rate is the usual cause."""
    lr, decay = config.lr, config.weight_decay
    momentum = config.momentum if config.optimizer in ("sgd", "rmsprop") else 0.0  # (Adam's are its betas)
    if lr * decay > 2:
        first, second = ("--weight-decay", "--lr") if decay > 1 else ("--lr", "--weight-decay")
        return (f"--lr {lr:g} times --weight-decay {decay:g} is {lr * decay:g}, over 2, so that weight decay alone "
                f"makes the weights grow without bound; lower {first} (or {second})")
    if momentum >= 1:
        return f"--momentum {momentum:g} is 1 or more, so updates add up without fading; use less than 1 (0.9 is usual)"
    return f"lower --lr (now {lr:g})" + (f" or --momentum (now {momentum:g})" if momentum > 0 else "")


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Each group's initial rate times `factor` (as torch's LambdaLR sets it); returns the first group's."""
    for group in optimizer.param_groups:
        value = group["initial_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)  # the captured graph reads it from the GPU
        else:
            group["lr"] = value
    return float(optimizer.param_groups[0]["initial_lr"] * factor)


def training_step(network: nn.Module, loss_fn, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  images: torch.Tensor, labels: torch.Tensor, autocast) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and update on one batch: the training step, eager or captured as a CUDA graph
    (cuda_graphs.py). Returns the loss and the batch's accuracy (from the logits the step computed anyway:
    no extra pass), left on the device."""
    with autocast:
        logits = network(images)
        loss = loss_fn(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), batch_accuracy(logits, labels)


def autocast(device: torch.device, precision: str, cache_enabled: bool = True):
    """The autocast of `precision` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision], cache_enabled=cache_enabled)


def evaluate(model: nn.Module, loader, device, predict=None, precision: str = "fp32",
             memory_format=torch.contiguous_format) -> dict:
    """Loss, accuracy, per-class accuracy and the confusion matrix of `predict(images)` (the model's logits by
    default) over every image of `loader` (all processes together). Sums are exact: int64 counts, the loss
    summed in float64 on the host."""
    device, predict = torch.device(device), predict or model
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        # Each process's last forward pass updated its own BatchNorm statistics; evaluate with
        # rank 0's, the ones best.pt saves, so the metrics are those of the saved model.
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    classes = len(loader.classes)
    model.eval()
    losses, confusion = [], torch.zeros(classes * classes, dtype=torch.int64, device=device)
    with torch.inference_mode():
        for images, labels in loader.evaluation_batches():
            with autocast(device, precision):
                logits = predict(images.contiguous(memory_format=memory_format))
            losses.append(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
            confusion += torch.bincount(labels * classes + logits.argmax(1), minlength=classes * classes)
    model.train()
    # One copy to the host for the whole set, never float64 on the device (MPS has none).
    loss_sum = sum_in_order(torch.stack(losses).cpu().tolist())
    if distributed:
        reduce_on = device if device.type == "cuda" else torch.device("cpu")
        total = torch.tensor([loss_sum], dtype=torch.float64, device=reduce_on)
        confusion = confusion.to(reduce_on)
        dist.all_reduce(total)
        dist.all_reduce(confusion)
        loss_sum = total.item()
    matrix = confusion.view(classes, classes).cpu()
    count, correct = int(matrix.sum()), int(matrix.diagonal().sum())
    per_class = {name: (int(matrix[i, i]) / int(matrix[i].sum()) if int(matrix[i].sum()) else None)
                 for i, name in enumerate(loader.classes)}
    return {"loss": loss_sum / count, "accuracy": correct / count, "per_class_accuracy": per_class,
            "confusion": matrix.tolist()}


def model_signature(model: nn.Module) -> str:
    """Identifies an architecture by its parameter and buffer names and shapes."""
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return hashlib.sha1(repr((type(model).__name__, shapes)).encode()).hexdigest()[:16]


def sum_in_order(values) -> float:
    """Float64 sum, left to right (the same result on every machine for the same values)."""
    total = 0.0
    for value in values:
        total += value
    return total


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


def check_signature(state: dict, signature: dict, path: Path, action: str, may_differ=()) -> None:
    """Refuse to `action` the checkpoint `state` (at `path`) when it was trained with other settings than
    `signature`, besides those that `may_differ`."""
    saved = state.get("signature", {})
    changed = sorted(k for k in set(saved) | set(signature) if k not in may_differ and saved.get(k) != signature.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {signature.get(k)!r}" for k in changed[:4])
        raise UserError(f"cannot {action} {path}: it was trained with other settings ({details}); "
                        "use the same settings, another --run-dir, or --overwrite to start over")


def check_resumable(state: dict, run_dir: Path, signature: dict, data: dict, log) -> None:
    """Refuse to resume the last.pt `state` of run_dir with other settings (`signature`) or other data than
    it was trained with, or when the best weights it names are lost; `log` a new place of the same data."""
    path, best = run_dir / FILES.LAST, run_dir / FILES.BEST
    check_signature(state, signature, path, "resume")
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
        check_signature(load_own_checkpoint(best, BEST_CHECKPOINT), signature, best, "resume")


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


class Trainer:
    def __init__(self, model: nn.Module, train_loader, val_loader, test_loader, config: TrainConfig,
                 run_dir, device, *, optimizer: torch.optim.Optimizer | None = None, lr_schedule=None,
                 loss_fn=None, predict=None, callbacks=(), settings: dict | None = None,
                 folder: RunFolder | None = None, started: float | None = None, data: dict | None = None,
                 record: dict | None = None):
        """`lr_schedule(step, total_steps)` gives the learning-rate factor of each step; `loss_fn` the
        training loss (cross-entropy by default); `predict(images)` the logits evaluation uses (the
        model's by default). `settings` (the script's resolved command line) is compared on --resume.
        `folder` (a RunFolder for run_dir) is told of each write and keeps the rules of what it held before.
        `data` identifies the data (source, split sizes, fingerprint): kept in the checkpoints, compared on
        --resume. `record` (the run folder's own record of the run: what config.json holds) is kept in both
        checkpoints too, so that a lost or damaged config.json can be read back from them.
        """
        self.config, self.device, self.run_dir = config, torch.device(device), Path(run_dir)
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = is_main_process()
        self.world_size = dist.get_world_size() if self.distributed else 1
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        # DDP averages gradients across processes; the unwrapped model is what gets saved.
        self.network = nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        self.optimizer = optimizer or build_optimizer(config, self.model.parameters())
        for group in self.optimizer.param_groups:  # the schedule's base (a number, even where lr is a GPU tensor)
            group.setdefault("initial_lr", float(group["lr"]))
        self.lr_schedule = lr_schedule
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.predict = predict or self.model
        self.callbacks = list(callbacks)
        self.steps_per_epoch = len(train_loader) if train_loader is not None else 1
        self.total_steps = min(config.epochs * self.steps_per_epoch, config.max_steps or math.inf)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.validate_at = validation_points(config.validations_per_epoch, self.steps_per_epoch)
        self.step_runner = (cuda_graphs.GraphedStep(self._step, self.model, self.optimizer)
                            if config.cuda_graphs and cuda_graphs.applies_to(self.device) else None)
        self.signature = {"model": model_signature(self.model),
                          **{k: v for k, v in {**asdict(config), **(settings or {})}.items() if role(k) == EXPERIMENT}}
        self.state = RunState()
        self.throughput = None        # training images/s since the previous validation
        self.resumed = False
        self.folder = folder or RunFolder(self.run_dir)
        self.saved_step = None        # the step last.pt holds (None: no last.pt of this run yet)
        self._saving = False          # a validation's checkpoints are being written
        self.data = data or {}
        self.record = record
        self.metrics = None           # fit()'s result
        self.clock = Stopwatch(started)
        self._interrupted = []        # signals received during train(), acted on between steps

    @property
    def step(self) -> int:
        """Optimisation steps taken (what callbacks go by)."""
        return self.state.step

    def autocast(self, cache_enabled: bool = True):
        return autocast(self.device, self.config.precision, cache_enabled)

    def prepare(self, images):
        """A batch in the memory layout the model runs fastest in."""
        return images.contiguous(memory_format=self.memory_format)

    def log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message, file=sys.stderr)

    def evaluate(self, loader) -> dict:
        return evaluate(self.model, loader, self.device, self.predict, self.config.precision, self.memory_format)

    # ---------------------------------------------------------------- checkpoints

    def _checkpoint(self) -> dict:
        """What last.pt holds (LAST_CHECKPOINT): everything --resume needs to continue exactly."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), **self.state.state_dict(),
                "callbacks": [callback.state_dict() for callback in self.callbacks], **self.clock.state_dict(),
                "torch_rng": torch.get_rng_state(), "device_rng": device_rng_state(self.device),
                "signature": self.signature, "data": self.data, "record": self.record}

    def _save_best(self, point: dict) -> None:
        """best.pt: the weights as they are now, validated at `point` (the history's entry)."""
        if self.is_main:
            save_checkpoint({"model": self.model.state_dict(), "step": self.step, "validation": point,
                             "signature": self.signature, "data": self.data, "record": self.record},
                            self.run_dir / FILES.BEST)

    def save_last(self) -> None:
        self.folder.claim(self)
        first = self.saved_step is None
        if self.step != self.saved_step:
            self.folder.outdate(self)
        if self.is_main:
            save_checkpoint(self._checkpoint(), self.run_dir / FILES.LAST)
        self.saved_step = self.step
        if self.is_main:
            write_json(self.state.history, self.run_dir / FILES.HISTORY)
        if first:  # (a resumed run's last.pt was there before)
            self.folder.after_first_save(self)

    def resume(self) -> None:
        path = self.run_dir / FILES.LAST
        if not path.exists():
            raise UserError(f"nothing to resume: {path} does not exist; run without --resume to start")
        state = load_own_checkpoint(path, LAST_CHECKPOINT, map_location=self.device)
        check_resumable(state, self.run_dir, self.signature, self.data, self.log)
        problem = self.length_problem(state)
        if problem:
            raise UsageError(problem)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for callback, saved in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(saved)
        self.state.load_state_dict(state, self.config.early_stop_count)
        self.clock.load_state_dict(state, self.run_dir)
        torch.set_rng_state(state["torch_rng"].cpu())
        set_device_rng_state(state["device_rng"], self.device)
        self.resumed = self.folder.claimed = True
        self.saved_step = self.step
        self.log(f"resumed {self.run_dir} at step {self.step} (epoch {self.state.epoch}, "
                 f"best validation loss {self.state.best['loss']:.4f})")
        self._rewrite_record()

    def length_problem(self, state: dict) -> str | None:
        """Why this run's length (epochs, max_steps, early_stop_count) would have ended the run that last.pt's
        `state` holds before where it already is, if it would: a resume must never label a run with a length
        it did not have."""
        step, per_epoch, config = state["step"], self.steps_per_epoch, self.config
        where = f"{self.run_dir} is at step {step} (epoch {step / per_epoch:.2f}) already"
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

    def _rewrite_record(self) -> None:
        """What a resumed run keeps beside last.pt made to match it, whether it trains on or not: a process killed
        between last.pt and history.json, or a damaged history.json or metrics.csv, leaves them behind it, and a
        resume that does not validate again would never write them. A lost best.pt is written again where its
        weights are last.pt's own (the best step is the last)."""
        if self.is_main:
            write_json(self.state.history, self.run_dir / FILES.HISTORY)
            best = self.run_dir / FILES.BEST
            if self.state.best["step"] == self.step and not best.exists():
                point = next((p for p in self.state.history["validation"] if p["step"] == self.step),
                             {"step": self.step, "loss": self.state.best["loss"]})
                self._save_best(point)
                self.log(f"{best} was missing: written again from {self.run_dir / FILES.LAST}, whose weights are the "
                         f"best (step {self.step})")
        for callback in self.callbacks:
            callback.on_resume(self)

    # ---------------------------------------------------------------- training

    def _set_learning_rate(self) -> float:
        """The schedule's rate for the coming step (as torch's LambdaLR computes it)."""
        if self.lr_schedule is None:
            lr = self.optimizer.param_groups[0]["lr"]
            return lr if isinstance(lr, float) else self.config.lr
        return set_learning_rate(self.optimizer, self.lr_schedule(self.step, self.total_steps))

    def _validate(self, pending_losses, rates, interval_images: int, interval_seconds: float) -> bool:
        """Record losses, validate, keep the best weights; True when training should stop early."""
        self.state.record(pending_losses, rates)
        started = time.perf_counter()
        result = self.evaluate(self.val_loader)
        if not math.isfinite(result["loss"]):
            # On a GPU the training loss is checked only every log_every steps, so weights can
            # go bad just before a validation; they must not reach last.pt.
            self._diverged([], [], torch.tensor(result["loss"]))
        self.throughput = interval_images / interval_seconds if interval_seconds > 0 else None
        point = self.state.validation_point(result, self.steps_per_epoch)
        if self.config.track_test:
            point["test_loss"] = self.evaluate(self.test_loader)["loss"]
        # From here until last.pt holds this validation, a second Ctrl-C saves nothing more: the files on
        # disk stay those of the previous validation.
        self._saving = True
        improved = self.state.validated(point, result)
        saving = self.clock.spent("validation", started)
        if improved:
            self.folder.claim(self)
            self.folder.outdate(self, best=True)
            self._save_best(point)
        self.save_last()
        self._saving = False
        logging = self.clock.spent("checkpoints", saving)
        for callback in self.callbacks:
            callback.after_validation(self, point)
        self.clock.spent("logging", logging)
        self.log(f"step {self.step:6d}  epoch {point['epoch']:5.2f}  validation loss {result['loss']:.4f}  "
                 f"accuracy {result['accuracy']:.4f}{'  (best)' if improved else ''}")
        self.state.early_stopped = should_early_stop(self.state.validation_losses(), self.config.early_stop_count)
        if self.state.early_stopped:
            self.log(f"early stopping: validation loss has not improved for {self.config.early_stop_count} "
                     "validations")
        return self.state.early_stopped

    def train_step(self, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch (replayed as a CUDA graph where the run captures one; eager from a
        capture that fails on)."""
        if self.step_runner is not None:
            try:
                return self.step_runner(images, labels)
            except cuda_graphs.CaptureFailed as failure:  # undone: this step is still to be taken
                self._without_graphs(str(failure))
        return self._step(images, labels)

    def _without_graphs(self, reason: str) -> None:
        """A CUDA-graph capture failed: the run goes on with eager steps, and says so."""
        self.step_runner = None
        self.config = replace(self.config, cuda_graphs=False)
        self.log(f"CUDA graph capture failed: {reason}; continuing without CUDA graphs")
        self.folder.steps_eager(self, f"eager steps after step {self.step}: the CUDA graph capture failed ({reason})")

    def _step(self, images, labels, cache_enabled: bool = True):
        return training_step(self.network, self.loss_fn, self.optimizer, self.scaler, self.prepare(images), labels,
                             self.autocast(cache_enabled))

    def fit(self) -> dict:
        """Train, then evaluate the best weights on every split."""
        self.train()
        try:
            self.metrics = final_evaluation(self)
            return self.metrics
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted during the final evaluation: the training is saved in {self.run_dir / FILES.LAST}; "
                "the same command plus --resume evaluates it") from None

    def train(self) -> None:
        """Train until the epoch budget, --max-steps or early stopping ends the run."""
        with interrupts_between_steps() as self._interrupted:
            try:
                self._train()
            except BaseException as error:
                if self.folder.claimed and self.saved_step is None:  # files written, but no last.pt yet
                    self.folder.abandon(self, error)
                raise

    def _train(self) -> None:
        self.model.train()
        # Checking for NaN costs a GPU sync, so there it happens with the progress bar only.
        check_every = 1 if self.device.type == "cpu" else self.config.log_every
        pending, rates, clock = [], [], self.clock  # losses and rates not yet in the history; the time
        clock.restart()
        bar = tqdm(total=self.total_steps, initial=min(self.step, self.total_steps), unit="step",
                   dynamic_ncols=True, disable=not self.is_main or None, leave=False)
        stop = self.step >= self.total_steps or self.state.early_stopped
        try:
            if not stop:
                for callback in self.callbacks:
                    callback.on_train_start(self)
            while not stop and self.state.epoch < self.config.epochs:
                for images, labels in self.train_loader.batches(self.state.epoch, self.state.batch_in_epoch):
                    # step: the schedule's rate, forward, backward, update; the position moves on
                    rate = self._set_learning_rate()
                    loss, accuracy = self.train_step(images, labels)
                    pending.append((loss, accuracy))
                    rates.append(rate)
                    validation_due = self._advance(len(labels) * self.world_size)
                    bar.update()
                    # check: a loss that is no longer finite ends the run, the last good checkpoints kept
                    if self.step % check_every == 0 and not torch.isfinite(loss):
                        self._diverged(pending, rates, loss)
                    # progress
                    if self.step % self.config.log_every == 0:
                        bar.set_postfix(epoch=self.state.epoch, loss=f"{loss.item():.3f}",
                                        val_acc=self.state.last_accuracy(), img_s=f"{clock.lap()[1]:.0f}")
                    # validation: best weights and last.pt saved; True: early stopping
                    if validation_due:
                        clock.lap()
                        stop = self._validate(pending, rates, *clock.since_validation())
                        clock.restart()
                    # Ctrl-C, acted on between steps
                    if self._interrupted:
                        raise KeyboardInterrupt
                    if stop or self.step >= self.total_steps:
                        stop = True
                        break
            if self._interrupted:  # arrived during the last validation
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            clock.lap()
            raise self._interruption(pending, rates) from None
        bar.close()

    def _interruption(self, pending, rates) -> TrainingInterrupted:
        """Save what an interrupted run can keep; the message says what that is."""
        if not self.folder.may_write:
            return TrainingInterrupted(f"interrupted at step {self.step}, before the first validation: nothing "
                                       f"was saved{self.folder.previous_kept()}")
        if not self._saving:  # else a second Ctrl-C stopped a validation's checkpoints mid-write
            self.state.record(pending, rates)
            try:
                self.save_last()
            except KeyboardInterrupt:  # a second Ctrl-C while last.pt was written
                pass
            else:
                return TrainingInterrupted(f"interrupted: step {self.step} is saved in {self.run_dir / FILES.LAST}; "
                                           "continue with the same command plus --resume")
        kept = (f"{self.run_dir / FILES.LAST} keeps step {self.saved_step}; continue with the same command plus "
                "--resume" if self.saved_step is not None else f"nothing was saved{self.folder.previous_kept()}")
        return TrainingInterrupted(f"interrupted again while saving step {self.step}: {kept}")

    def _advance(self, images: int) -> bool:
        """Count a step taken (after_step callbacks see it counted); True when a validation is due."""
        done_batch = self.state.batch_in_epoch
        self.state.step += 1
        self.state.images_trained += images
        self.clock.count(images)
        for callback in self.callbacks:
            callback.after_step(self)
        self.state.next_batch(self.steps_per_epoch)
        return done_batch in self.validate_at or self.step >= self.total_steps

    def _diverged(self, pending, rates, loss) -> None:
        # Keep last.pt and best.pt from the last good validation; only the history is updated.
        self.state.record(pending, rates)
        if self.folder.may_write:
            self.folder.claim(self)
            if self.is_main:
                write_json(self.state.history, self.run_dir / FILES.HISTORY)
        if self.state.best["step"] is not None:
            kept = f"the best checkpoint {self.run_dir / FILES.BEST} (step {self.state.best['step']}) is kept"
        elif not self.folder.may_write:
            kept = f"nothing was saved{self.folder.previous_kept()}"
        else:
            kept = "no validation had run yet, so there is no checkpoint"
        raise TrainingDiverged(f"training diverged at step {self.step} (loss {loss.item()}); {kept}; "
                               f"{divergence_advice(self.config)}")

    def parameters_changed(self) -> None:
        """Call after changing which parameters train (e.g. freezing a layer): DDP registered the old set.
        (A CUDA-graph step notices by itself and captures anew.)"""
        if self.distributed:
            self.network = nn.parallel.DistributedDataParallel(self.model)

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()


def evaluate_splits(evaluate_on, train_loader, val_loader, test_loader, validation: dict | None = None) -> dict:
    """The model as `evaluate_on(loader)` finds it on train, validation (unless its result is given) and test, in
    that order: per-class numbers and confusion matrices for validation and test, loss and accuracy for train."""
    train = evaluate_on(train_loader)
    return {"train": {k: train[k] for k in ("loss", "accuracy")},
            "validation": validation or evaluate_on(val_loader), "test": evaluate_on(test_loader)}


def final_evaluation(trainer: "Trainer") -> dict:
    """The end of training: reload the best weights, evaluate them on the whole train, validation and test sets,
    and write metrics.json: those numbers, where the run stopped, and its timings."""
    best, started = trainer.run_dir / FILES.BEST, time.perf_counter()
    if trainer.distributed:
        dist.barrier()  # rank 0 has finished writing best.pt
    # When the best weights are the last ones (validated at this very step), they are already
    # in memory and their validation numbers are known: no reload, no second validation pass.
    state, at_best = trainer.state, trainer.state.best["step"] == trainer.step
    if not at_best:
        trainer.model.load_state_dict(load_own_checkpoint(best, BEST_CHECKPOINT, map_location=trainer.device)["model"])
    known = at_best and state.last_validation and state.last_validation[0] == trainer.step
    metrics = evaluate_splits(trainer.evaluate, trainer.train_loader, trainer.val_loader, trainer.test_loader,
                              validation=state.last_validation[1] if known else None)
    trainer.clock.spent("final_evaluation", started)
    metrics.update(best_step=state.best["step"], steps=trainer.step,
                   epochs=round(trainer.step / trainer.steps_per_epoch, 3), early_stopped=state.early_stopped,
                   **trainer.clock.summary(state.images_trained))
    if trainer.is_main:
        write_json(metrics, trainer.run_dir / FILES.METRICS)
    return metrics


def evaluate_checkpoint(trainer: "Trainer", path: Path) -> dict:
    """Evaluate saved weights (best.pt) with the trainer's model on every split without training or changing
    the run; on the data it was trained on or other data (another folder or --subset: `data` and `trained_on`
    say)."""
    state = load_own_checkpoint(path, BEST_CHECKPOINT, map_location=trainer.device)
    check_signature(state, trainer.signature, path, "evaluate", may_differ={"subset"})
    try:
        trainer.model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise UserError(f"{path} does not fit this model ({type(error).__name__}); pass the same "
                        "settings the run was trained with") from None
    trained_on = state.get("data") or None
    same = trained_on.get("fingerprint") == trainer.data.get("fingerprint") if trained_on and trainer.data else None
    return {**evaluate_splits(trainer.evaluate, trainer.train_loader, trainer.val_loader, trainer.test_loader),
            "best_step": state["step"], "data": trainer.data, "trained_on": trained_on, "on_training_data": same}


def describe_data(data: dict) -> str:
    """'45000 train / 5000 validation / 10000 test images from <source> (fingerprint ...)'."""
    return (f"{data.get('train_images')} train / {data.get('validation_images')} validation / "
            f"{data.get('test_images')} test images from {data.get('source')} (fingerprint "
            f"{str(data.get('fingerprint'))[:12]})")


def weakest_classes(result: dict, count: int = 3) -> list[tuple[str, float]]:
    per_class = [(name, value) for name, value in result.get("per_class_accuracy", {}).items() if value is not None]
    return sorted(per_class, key=lambda item: item[1])[:count]


def format_final_table(metrics: dict) -> str:
    lines = [f"{'':12s}{'loss':>8s}{'accuracy':>10s}"]
    for split in ("train", "validation", "test"):
        lines.append(f"{split:12s}{metrics[split]['loss']:8.3f}{metrics[split]['accuracy']:10.3f}")
    weakest = weakest_classes(metrics["test"])
    if weakest:
        lines.append("weakest test classes: " + ", ".join(f"{name} {value:.3f}" for name, value in weakest))
    return "\n".join(lines)
