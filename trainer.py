"""One training loop for every task: the step, validation, early stopping, the best checkpoint, exact resume,
and the final evaluation.

A task changes the loop through the Trainer's arguments, never by editing it: `optimizer`, `lr_schedule`
(a factor per step), `loss_fn`, `predict` (the evaluation function, e.g. test-time augmentation)
and `callbacks` (see Callback: on_train_start, after_step, after_validation, and state that
last.pt keeps). What a checkpoint keeps and what --resume checks are checkpoint.py's; where the files go and
the rules of a folder that held a run before, run_folder.py's (the Trainer tells its RunFolder of each write).
Checkpoints are written atomically, so a crash or Ctrl-C never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

import cuda_graphs
from checkpoint import (BEST_CHECKPOINT, LAST_CHECKPOINT, RunState, Stopwatch, check_resumable, check_signature,
                        device_rng_state, length_problem, load_own_checkpoint, model_signature, set_device_rng_state,
                        should_early_stop)
from hardware import DTYPES, is_main_process
from run_folder import FILES, RunFolder
from settings import EXPERIMENT, OPTIMIZERS, TrainConfig, role
from utils import UsageError, UserError, batch_accuracy, save_checkpoint, sum_in_order, write_json


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


class Trainer:
    """Trains a model on its loaders, validating as it goes, and keeps the best and the last checkpoint in `run_dir`.

    `fit()` trains until the epoch budget, --max-steps or early stopping ends the run, then evaluates the best
    weights on every split (final_evaluation). `resume()` before it continues the run that `run_dir`'s last.pt
    holds, exactly (runs.Run.fit calls it for --resume). Building a Trainer reads and writes no file.

    Args:
        model: the raw network: the one that is saved and evaluated.
        train_loader, val_loader, test_loader: dataloaders.Loader-likes (`batches`, `evaluation_batches`).
        config: the training loop's settings (settings.TrainConfig): length, optimizer, precision, --compile...
        run_dir: the run's folder, where the checkpoints, history.json and metrics.json go.
        device: where it trains.
        optimizer: the task's optimizer over model's parameters (default: the one `config` names, build_optimizer).
        lr_schedule: `lr_schedule(step, total_steps)`, the learning-rate factor of each step (default: constant).
        loss_fn: the training loss (default: cross-entropy).
        predict: `predict(images)`, the logits evaluation uses (default: the model's; e.g. test-time augmentation).
        callbacks: the task's and the run's Callbacks, in the order they run.
        settings: the script's resolved command line; its experiment's settings (settings.role) join the
            signature that --resume compares.
        folder: a RunFolder for run_dir, told of each write (default: one that holds nothing but this run's files).
        started: when the run's process started (time.perf_counter()), for its wall time.
        data: what identifies the data (source, split sizes, fingerprint): kept in the checkpoints, compared on
            --resume.
        record: the run folder's own record of the run (what config.json holds), kept in both checkpoints, so
            that a lost or damaged config.json can be read back from them.

    `network` is what the training step calls: the model wrapped in DistributedDataParallel under torchrun and
    compiled with --compile (config.compile), built again by `parameters_changed`. `state` is the run's position
    and record (checkpoint.RunState), `step` the optimisation steps taken.
    """

    def __init__(self, model: nn.Module, train_loader, val_loader, test_loader, config: TrainConfig,
                 run_dir, device, *, optimizer: torch.optim.Optimizer | None = None, lr_schedule=None,
                 loss_fn=None, predict=None, callbacks=(), settings: dict | None = None,
                 folder: RunFolder | None = None, started: float | None = None, data: dict | None = None,
                 record: dict | None = None):
        self.config, self.device, self.run_dir = config, torch.device(device), Path(run_dir)
        self.train_loader, self.val_loader, self.test_loader = train_loader, val_loader, test_loader
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = is_main_process()
        self.world_size = dist.get_world_size() if self.distributed else 1
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.network = self._network()
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
        self.setting_defaults = (record or {}).get("defaults") or {}  # the script's (check_signature)
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

    def _network(self) -> nn.Module:
        """The model as the training step calls it: under torchrun wrapped in DDP, which averages the gradients
        across processes; with --compile, that compiled (torch.compile compiles lazily, at the first step)."""
        network = nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        return torch.compile(network) if self.config.compile else network

    def parameters_changed(self) -> None:
        """Call after changing which parameters train (e.g. freezing a layer): DDP registered the old set, so the
        network is built again, and compiled again with --compile. (A CUDA-graph step notices by itself and
        captures anew; a compiled network without DDP recompiles by itself.)"""
        if self.distributed:
            self.network = self._network()

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()

    # ---------------------------------------------------------------- training

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

    def _set_learning_rate(self) -> float:
        """The schedule's rate for the coming step (as torch's LambdaLR computes it)."""
        if self.lr_schedule is None:
            lr = self.optimizer.param_groups[0]["lr"]
            return lr if isinstance(lr, float) else self.config.lr
        return set_learning_rate(self.optimizer, self.lr_schedule(self.step, self.total_steps))

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
        """Continue the run that run_dir's last.pt holds exactly where it stopped, or refuse (checkpoint.py's
        checks) before anything changes; then what the run keeps beside last.pt is made to match it."""
        path = self.run_dir / FILES.LAST
        if not path.exists():
            raise UserError(f"nothing to resume: {path} does not exist; run without --resume to start")
        state = load_own_checkpoint(path, LAST_CHECKPOINT, map_location=self.device)
        check_resumable(state, self.run_dir, self.signature, self.data, self.log, self.setting_defaults)
        problem = length_problem(state, self.config, self.steps_per_epoch, self.run_dir)
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


# ---------------------------------------------------------------- the loop's parts

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


# ---------------------------------------------------------------- evaluation

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
    check_signature(state, trainer.signature, path, "evaluate", may_differ={"subset"},
                    defaults=trainer.setting_defaults)
    try:
        trainer.model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise UserError(f"{path} does not fit this model ({type(error).__name__}); pass the same "
                        "settings the run was trained with") from None
    trained_on = state.get("data") or None
    same = trained_on.get("fingerprint") == trainer.data.get("fingerprint") if trained_on and trainer.data else None
    return {**evaluate_splits(trainer.evaluate, trainer.train_loader, trainer.val_loader, trainer.test_loader),
            "best_step": state["step"], "data": trainer.data, "trained_on": trained_on, "on_training_data": same}

