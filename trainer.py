"""One training loop for every task: validation twice per epoch, early stopping, best checkpoint.

A run directory holds everything a run produces:
    config.json   every resolved setting        history.json  losses and accuracies
    metrics.json  final train/val/test numbers  last.pt       resumable state (model, optimizer, RNG, position)
    best.pt       weights with the lowest validation loss so far
Checkpoints are written atomically, so a crash or Ctrl-C never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from utils import AUTOCAST_DTYPES, UserError, load_checkpoint, read_json, save_checkpoint, write_json

# Settings that may change when a run is resumed; everything else must match.
RESUMABLE_CHANGES = {"epochs", "max_steps", "early_stop_count", "log_every"}
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    early_stop_count: int = 4
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0
    validations_per_epoch: int = 2
    max_steps: int | None = None
    precision: str = "fp32"          # resolved: fp32, bf16 or fp16
    channels_last: bool = False
    track_test: bool = False         # also evaluate the test loss at every validation (Task 3c)
    lookahead_every: int = 0         # > 0: weight averaging every this many steps (see Lookahead)
    lookahead_decay: float = 0.95    # per-step decay of that average at the end of training
    log_every: int = 20              # steps between progress-bar updates (each one syncs the GPU)


class TrainingDiverged(UserError):
    pass


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


class Lookahead:
    """Weight averaging for short schedules (as in airbench): every `every` steps the weights are
    pulled into a running average and training continues from the average.

    The average's decay grows as (step / total_steps)**3 up to decay**every: early on, while the
    learning rate is high and the weights move fast, nothing is averaged; towards the end the
    average smooths out the last steps' noise. The final step always updates, so the trained
    model is the average. BatchNorm running statistics are averaged with the weights.
    """

    def __init__(self, model: nn.Module, every: int, decay: float):
        self.model, self.every, self.decay = model, every, decay
        self.average = {name: t.detach().clone() for name, t in model.state_dict().items()
                        if t.is_floating_point()}

    def decay_at(self, step: int, total_steps: int) -> float:
        return self.decay ** self.every * (step / total_steps) ** 3

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        if step % self.every and step < total_steps:
            return
        decay = self.decay_at(step, total_steps)
        current = self.model.state_dict()
        for name, average in self.average.items():
            average.lerp_(current[name], 1 - decay)
            current[name].copy_(average)

    def state_dict(self) -> dict:
        return self.average

    def load_state_dict(self, state: dict) -> None:
        for name, average in self.average.items():
            average.copy_(state[name])


def should_early_stop(validation_losses, patience: int) -> bool:
    """True when the lowest validation loss is `patience` or more validations old."""
    if len(validation_losses) <= patience:
        return False
    best_index = min(range(len(validation_losses)), key=validation_losses.__getitem__)
    return len(validation_losses) - 1 - best_index >= patience


def build_optimizer(config: TrainConfig, parameters):
    parameters = [p for p in parameters if p.requires_grad]
    name = config.optimizer
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def model_signature(model: nn.Module) -> str:
    """Identifies an architecture by its parameter and buffer names and shapes."""
    shapes = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    return hashlib.sha1(repr((type(model).__name__, shapes)).encode()).hexdigest()[:16]


class Trainer:
    def __init__(self, model: nn.Module, train_loader, val_loader, test_loader, config: TrainConfig,
                 run_dir, device, scheduler_fn=None, settings: dict | None = None):
        """`scheduler_fn(optimizer, total_steps)` may return an LR scheduler stepped every step.

        `settings` (the script's resolved command line) is compared on --resume.
        """
        self.config, self.device, self.run_dir = config, torch.device(device), Path(run_dir)
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = not self.distributed or dist.get_rank() == 0
        self.world_size = dist.get_world_size() if self.distributed else 1

        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        # DDP averages gradients across processes; the unwrapped model is what gets saved.
        self.network = (nn.parallel.DistributedDataParallel(self.model) if self.distributed
                        else self.model)
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.steps_per_epoch = len(train_loader)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.scheduler = scheduler_fn(self.optimizer, self.total_steps) if scheduler_fn else None
        self.autocast_dtype = AUTOCAST_DTYPES[config.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.validate_at = self._validation_points()
        self.lookahead = (Lookahead(self.model, config.lookahead_every, config.lookahead_decay)
                          if config.lookahead_every else None)

        self.settings = settings or {}
        self.signature = {"model": model_signature(self.model),
                          **{k: v for k, v in {**asdict(config), **self.settings}.items()
                             if k not in RESUMABLE_CHANGES}}
        self.step = 0                 # optimisation steps taken
        self.epoch, self.batch_in_epoch = 0, 0
        self.history = {"train_loss": {"steps": [], "values": []}, "validation": []}
        self.best = {"loss": math.inf, "step": None}
        self.early_stopped = False
        self.train_seconds = 0.0
        self._interrupted = []      # signals received during train(), acted on between steps

    # ---------------------------------------------------------------- helpers

    def _validation_points(self):
        """Batch indices within an epoch after which to validate (the last is always one)."""
        count = max(1, min(self.config.validations_per_epoch, self.steps_per_epoch))
        return {round(self.steps_per_epoch * (i + 1) / count) - 1 for i in range(count)}

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _prepare(self, images):
        return images.contiguous(memory_format=self.memory_format)

    def _last_accuracy(self) -> str:
        validations = self.history["validation"]
        return f"{validations[-1]['accuracy']:.3f}" if validations else "-"

    def _log(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message, file=sys.stderr)

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, loader) -> dict:
        """Average loss and accuracy over every image of `loader` (all processes together)."""
        if self.distributed:
            # Each process's last forward pass updated its own BatchNorm statistics; evaluate with
            # rank 0's, the ones best.pt saves, so the metrics are those of the saved model.
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)
        self.model.eval()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count
        for images, labels in loader.evaluation_batches():
            with self._autocast():
                logits = self.model(self._prepare(images))
            loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            totals += torch.stack([loss.double(), (logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(len(labels), dtype=torch.float64, device=self.device)])
        if self.distributed:
            dist.all_reduce(totals)
        self.model.train()
        loss_sum, correct, count = totals.tolist()
        return {"loss": loss_sum / count, "accuracy": correct / count}

    # ---------------------------------------------------------------- checkpoints

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "history": self.history, "best": self.best,
                "lookahead": self.lookahead.state_dict() if self.lookahead else None,
                "train_seconds": self.train_seconds, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "signature": self.signature}

    def save_last(self) -> None:
        if self.is_main:
            save_checkpoint(self._state(), self.run_dir / "last.pt")
            write_json(self.history, self.run_dir / "history.json")

    def resume(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.exists():
            raise UserError(f"nothing to resume: {path} does not exist; run without --resume to start")
        state = load_checkpoint(path, map_location=self.device)
        saved = state.get("signature", {})
        changed = sorted(k for k in set(saved) | set(self.signature) if saved.get(k) != self.signature.get(k))
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {self.signature.get(k)!r}" for k in changed[:4])
            raise UserError(f"cannot resume {self.run_dir}: it was trained with other settings ({details}); "
                            "use the same settings, another --run-dir, or --overwrite to start over")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.lookahead:
            self.lookahead.load_state_dict(state["lookahead"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.history, self.best = state["history"], state["best"]
        # Derived, not stored: a run that stopped early stays stopped unless --early-stop-count grows.
        self.early_stopped = should_early_stop([p["loss"] for p in self.history["validation"]],
                                               self.config.early_stop_count)
        self.train_seconds = state["train_seconds"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self._log(f"resumed {self.run_dir} at step {self.step} (epoch {self.epoch}, "
                  f"best validation loss {self.best['loss']:.4f})")

    # ---------------------------------------------------------------- training

    def _record_losses(self, pending) -> None:
        """Move per-step losses kept on the device into the history (one sync for many steps)."""
        if pending:
            values = torch.stack(pending).float().tolist()
            self.history["train_loss"]["steps"] += list(range(self.step - len(values), self.step))
            self.history["train_loss"]["values"] += values
            pending.clear()

    def _validate(self, pending_losses) -> bool:
        """Record losses, validate, keep the best weights; True when training should stop."""
        self._record_losses(pending_losses)
        result = self.evaluate(self.val_loader)
        if not math.isfinite(result["loss"]):
            # On a GPU the training loss is checked only every log_every steps, so weights can
            # go bad just before a validation; they must not reach last.pt.
            self._diverged([], torch.tensor(result["loss"]))
        point = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3), **result}
        if self.config.track_test:
            point["test_loss"] = self.evaluate(self.test_loader)["loss"]
        self.history["validation"].append(point)
        improved = result["loss"] < self.best["loss"]
        if improved:
            self.best = {"loss": result["loss"], "step": self.step}
            if self.is_main:
                save_checkpoint({"model": self.model.state_dict(), "step": self.step,
                                 "validation": result, "signature": self.signature},
                                self.run_dir / "best.pt")
        self.save_last()
        self._log(f"step {self.step:6d}  epoch {point['epoch']:5.2f}  validation loss {result['loss']:.4f}  "
                  f"accuracy {result['accuracy']:.4f}{'  (best)' if improved else ''}")
        losses = [p["loss"] for p in self.history["validation"]]
        return should_early_stop(losses, self.config.early_stop_count)

    def _train_step(self, images, labels):
        with self._autocast():
            loss = self.loss_fn(self.network(self._prepare(images)), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler:
            self.scheduler.step()
        return loss.detach()

    def train(self) -> None:
        """Train until the epoch budget, --max-steps or early stopping ends the run."""
        with interrupts_between_steps() as self._interrupted:
            self._train()

    def _train(self) -> None:
        self.model.train()
        # Checking for NaN costs a GPU sync, so there it happens with the progress bar only.
        check_every = 1 if self.device.type == "cpu" else self.config.log_every
        pending, seen, last_time = [], 0, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=min(self.step, self.total_steps), unit="step",
                   dynamic_ncols=True, disable=not self.is_main or None, leave=False)
        stop = self.step >= self.total_steps or self.early_stopped
        try:
            while not stop and self.epoch < self.config.epochs:
                for images, labels in self.train_loader.batches(self.epoch, self.batch_in_epoch):
                    loss = self._train_step(images, labels)
                    pending.append(loss)
                    done_batch = self.batch_in_epoch
                    self.step += 1
                    if self.lookahead:
                        self.lookahead.after_step(self.step, self.total_steps)
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch == self.steps_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    seen += len(labels)
                    bar.update()
                    if self.step % check_every == 0 and not torch.isfinite(loss):
                        self._diverged(pending, loss)
                    if self.step % self.config.log_every == 0:
                        now = time.perf_counter()
                        self.train_seconds += now - last_time
                        bar.set_postfix(epoch=self.epoch, loss=f"{loss.item():.3f}",
                                        val_acc=self._last_accuracy(),
                                        img_s=f"{seen * self.world_size / (now - last_time):.0f}")
                        seen, last_time = 0, now
                    if done_batch in self.validate_at or self.step >= self.total_steps:
                        self.train_seconds += time.perf_counter() - last_time
                        if self._validate(pending):
                            self.early_stopped = True
                            self._log(f"early stopping: validation loss has not improved for "
                                      f"{self.config.early_stop_count} validations")
                            stop = True
                        seen, last_time = 0, time.perf_counter()
                    if self._interrupted:
                        raise KeyboardInterrupt
                    if stop or self.step >= self.total_steps:
                        stop = True
                        break
            if self._interrupted:  # arrived during the last validation
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            self.train_seconds += time.perf_counter() - last_time
            self._record_losses(pending)
            self.save_last()
            raise
        bar.close()

    def _diverged(self, pending, loss) -> None:
        # Keep last.pt and best.pt from the last good validation; only the history is updated.
        self._record_losses(pending)
        if self.is_main:
            write_json(self.history, self.run_dir / "history.json")
        raise TrainingDiverged(
            f"training diverged at step {self.step} (loss {loss.item()}); the best checkpoint "
            f"{self.run_dir / 'best.pt'} is kept; lower --lr (now {self.config.lr})")

    # ---------------------------------------------------------------- the end

    def final_evaluation(self, started: float | None = None) -> dict:
        """Reload the best weights and evaluate on the whole train, validation and test sets.

        `started` (a time.perf_counter() value) adds the run's wall time to metrics.json.
        """
        best = self.run_dir / "best.pt"
        if self.distributed:
            dist.barrier()  # rank 0 has finished writing best.pt
        # When the best weights are the last ones (validated at this very step), they are already
        # in memory and their validation numbers are known: no reload, no second validation pass.
        at_best = self.best["step"] == self.step
        if best.exists() and not at_best:
            self.model.load_state_dict(load_checkpoint(best, map_location=self.device)["model"])
        metrics = {"train": self.evaluate(self.train_loader)}
        if at_best:
            last = self.history["validation"][-1]
            metrics["validation"] = {"loss": last["loss"], "accuracy": last["accuracy"]}
        else:
            metrics["validation"] = self.evaluate(self.val_loader)
        metrics["test"] = self.evaluate(self.test_loader)
        images_seen = self.step * self.config.batch_size * self.world_size
        metrics.update(
            best_step=self.best["step"], steps=self.step,
            epochs=round(self.step / self.steps_per_epoch, 3), early_stopped=self.early_stopped,
            train_seconds=round(self.train_seconds, 2),
            train_images_per_s=round(images_seen / self.train_seconds, 1) if self.train_seconds else None)
        if started is not None:
            metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
        if self.is_main:
            write_json(metrics, self.run_dir / "metrics.json")
        return metrics


def read_run(run_dir) -> dict:
    """config, history and metrics of a finished run, with a clear error for a missing one."""
    run_dir = Path(run_dir)
    return {name: read_json(run_dir / f"{name}.json") for name in ("config", "history", "metrics")}


def format_final_table(metrics: dict) -> str:
    lines = [f"{'':12s}{'loss':>8s}{'accuracy':>10s}"]
    for split in ("train", "validation", "test"):
        lines.append(f"{split:12s}{metrics[split]['loss']:8.3f}{metrics[split]['accuracy']:10.3f}")
    return "\n".join(lines)
