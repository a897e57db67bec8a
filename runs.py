"""The life of one training run, as a task script lives it.

    run = Run.start(args, title)              # folder (claimed and locked), seed, device, precision
    loaders = run.load_cifar10()              # the data, identified by its fingerprint
    trainer = run.trainer(model, *loaders)    # the Trainer with the task's recipe and the run's own callbacks
    run.fit(trainer)                          # --resume's continuation, then train; or --evaluate-only
    run.finish(trainer)                       # the final table, the figure (or evaluation.json), the lock released

The run's own callbacks write config.json, metrics.csv, the live figure and TensorBoard; run_folder.py keeps
the folder's rules. Memory that runs out and a dead torchrun peer are said in one line (memory_watched,
peers_watched); a figure that cannot be written never stops a finished run (FigureNotWritten).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import cuda_graphs
import dataloaders
import figures
import hardware
import watching
from checkpoint import describe_data
from run_folder import (EMPTY, FILES, OUTPUTS, TENSORBOARD_DIR, RunFiles, caveats, claim, figure_path, marked,
                        missing_folders, run_dir_of)
from settings import EXPERIMENT, TrainConfig, role
from trainer import Trainer, TrainingInterrupted, build_optimizer, evaluate_checkpoint
from utils import (UserError, WriteError, check_writable, json_value, load_checkpoint, remove_stale_temporaries,
                   set_seed, write_json)


def run_settings(args) -> dict:
    """The settings a checkpoint is compared with on --resume: the experiment's (settings.role), besides
    TrainConfig's own fields, which the Trainer adds."""
    config_fields = {field.name for field in dataclasses.fields(TrainConfig)}
    return {key: json_value(value) for key, value in vars(args).items()
            if role(key) == EXPERIMENT and key not in config_fields}


@contextlib.contextmanager
def peers_watched(trainer: Trainer):
    """Under torchrun, a collective that fails because another process died (killed, crashed) is no bug
    of this one: say so, which checkpoint is kept, and how to go on."""
    try:
        yield
    except RuntimeError as error:
        if not (trainer.distributed and hardware.is_peer_failure(error)):
            raise
        # torchrun now stops the survivors with SIGTERM: this one is ending anyway, with this message.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        last, kept = trainer.run_dir / FILES.LAST, None
        if trainer.folder.claimed:  # else last.pt, if any, is a previous run's (--overwrite)
            with contextlib.suppress(UserError, KeyError, TypeError):
                step = load_checkpoint(last)["step"]  # what rank 0 saved last, whichever process died
                kept = f"{last} keeps step {step}; continue with the same torchrun command plus --resume"
        if kept is None:
            kept = (f"nothing of this run was saved{trainer.folder.previous_kept()}; start it again with the same "
                    "command")
        raise UserError(f"another process of this torchrun run died (killed or crashed: see its output and "
                        f"torchrun's summary) while this one was at step {trainer.step}; {kept}") from None


# The settings that size a step's tensors (image_size: a task's own flag, Task 4a's), named when memory runs out.
MEMORY_SETTINGS = ("batch_size", "image_size")


@contextlib.contextmanager
def memory_watched(args, trainer: Trainer):
    """Memory running out (the CPU's RAM, a GPU's) while the run trains or evaluates is no bug of the project:
    one line naming the memory, the settings that size it and what the run keeps."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        memory = hardware.out_of_memory(error)
        if memory is None:
            raise
        if args.evaluate_only:
            raise UserError(f"out of memory: {memory} is full while evaluating {run_dir_of(args) / FILES.BEST}; "
                            "the run is as it was; free some memory, or evaluate it on another --device") from None
        sizes = [f"--{key.replace('_', '-')} {getattr(args, key)}" for key in MEMORY_SETTINGS
                 if getattr(args, key, None) is not None]
        lower = f"lower {' or '.join(size.split()[0] for size in sizes)} (or use fewer images: --subset N)"
        if trainer.folder.claimed and trainer.saved_step is not None:
            kept = (f"{trainer.run_dir / FILES.LAST} keeps step {trainer.saved_step}: continue it with the same "
                    f"command plus --resume once more memory is free, or start over with --overwrite and {lower}")
        else:
            kept = f"nothing of this run was saved{trainer.folder.previous_kept()}; start it again and {lower}"
        raise UserError(f"out of memory after {trainer.step} steps: {memory} cannot hold what {' and '.join(sizes)} "
                        f"need{'s' if len(sizes) == 1 else ''}; {kept}") from None


_held: list["Run"] = []  # runs started in this process whose folder is still locked

# How to draw a finished run's figure again: --resume of a finished run evaluates it and draws its figure.
REDRAW = "the same command plus --resume draws its figure without training again"


class FigureNotWritten(UserError):
    """Finished runs whose final figure could not be written (a full or read-only --plot-dir): all else is
    saved and their tables printed. `failures`: (run folder, WriteError, what the figure file holds);
    `metrics`: the run's final metrics (cli.for_each_seed goes on with the next seed)."""

    def __init__(self, failures: list, metrics: dict | None = None):
        self.failures, self.metrics = failures, metrics
        error, several = failures[0][1], len(failures) > 1
        super().__init__(
            f"could not write the figure{'s' if several else ''} {', '.join(str(e.path) for _, e, _ in failures)}: "
            f"{error.reason}; the run{'s are' if several else ' is'} finished, {'their' if several else 'its'} "
            f"results saved in {', '.join(str(folder) for folder, _, _ in failures)} (the table"
            f"{'s' if several else ''} above); {'; '.join(shown for _, _, shown in failures)}; "
            f"{watching.figure_fix(error)}, then {REDRAW}")


def release_all() -> None:
    """Release every run still holding its folder: cli.main's last word after a run fails or is refused."""
    for run in list(_held):
        run.release()


class Run:
    """One run of a task script. `Run.start(args, title)` prepares the folder, lock, seed, device and
    precision; `load_cifar10`, `trainer`, `fit` and `finish` follow in the script."""

    def __init__(self, args, title: str, started: float):
        self.args, self.title, self.started = args, title, started
        self.dir = run_dir_of(args)
        self.args.run_dir = self.dir
        self.rank, self.world_size, self.device = hardware.init_distributed(args.device)
        self.is_main = self.rank == 0
        self.lock = None
        self.previous = EMPTY
        self.made = []                # folders this run created, and what its folder held before it
        self.held_before = None
        self.data = {}
        self.model_info = {}
        self.config = None
        self.resolved = {}
        self.graph_note = None

    @classmethod
    def start(cls, args, title: str, channels_last: bool = False) -> "Run":
        """`channels_last`: the model's images and weights in channels-last in every precision (a model
        measured faster in it in fp32 too); otherwise only where the hardware needs it for speed."""
        run = cls(copy.copy(args), title, time.perf_counter())
        args = run.args
        precision, why = hardware.resolve_precision(args.precision, run.device)  # may refuse: before any file
        if run.is_main:
            count = dataloaders.training_image_count(args.data_dir)  # refuse an empty split before claiming
            if count:
                dataloaders.split_sizes(count, args.validation_fraction)
            figures_in = None if args.evaluate_only else run.figure_path.parent  # the plot folder, or the run's
            made = missing_folders(run.dir) + (missing_folders(figures_in) if figures_in else [])
            run.made = list(dict.fromkeys(made))  # the figure may go into the run's own folder
            run.held_before = set(os.listdir(run.dir)) if run.dir.is_dir() else set()
            run.lock, run.previous = claim(run.dir, args.resume, args.overwrite, args.evaluate_only)
            _held.append(run)
            if figures_in:
                check_writable(figures_in)
        set_seed(args.seed)
        if args.deterministic:
            hardware.make_deterministic()
        elif run.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN time its kernels once
        if run.device.type == "cpu":
            hardware.keep_freed_memory()
        fields = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["flag"]}
        run.config = TrainConfig(**{name: getattr(args, name) for name in fields}, precision=precision,
                                 channels_last=channels_last or hardware.uses_channels_last(precision, run.device),
                                 cuda_graphs=args.cuda_graphs and cuda_graphs.applies_to(run.device),
                                 compile=args.compile)
        data_dir, origin = dataloaders.data_dir_and_origin(args.data_dir)
        origin = getattr(args, "data_dir_from", None) or origin  # a resume that reads the recorded folder: as then
        run.resolved = {"device": str(run.device), "device_name": hardware.describe_device(run.device),
                        "precision": precision, "precision_reason": why,
                        "channels_last": run.config.channels_last, "world_size": run.world_size,
                        "deterministic": args.deterministic,
                        # the data folder read, whatever the current folder and environment, and where from
                        "data_dir": os.path.abspath(data_dir), "data_dir_from": origin}
        return run

    # ---------------------------------------------------------------- data and model

    def load_cifar10(self, transform=None, augmentation=None):
        """Train, validation and test loaders with this run's split, seed, subset and device.

        `augmentation` replaces the default dataloaders.Augmentation() that --augment turns on.
        """
        args = self.args
        # The folder the record names (absolute); a run resumed or evaluated needs the data it was trained on,
        # never a fresh download.
        loaders = dataloaders.load_cifar10(
            args.batch_size, args.validation_fraction, seed=args.seed, data_dir=self.resolved["data_dir"],
            device=self.device,
            transform=transform, augment=(augmentation or dataloaders.Augmentation()) if args.augment else None,
            subset=args.subset, rank=self.rank, world_size=self.world_size,
            download=not (args.resume or args.evaluate_only))
        train = loaders[0]
        self.data = {"source": train.source, "transform": repr(train.transform), "augmentation": repr(train.augment),
                     **{f"{name}_images": loader.num_images * self.world_size
                        for name, loader in zip(("train", "validation", "test"), loaders)},
                     "fingerprint": fingerprint(loaders)}
        return loaders

    @property
    def data_identity(self) -> dict:
        """What the checkpoints record of the data, and --resume compares (by fingerprint)."""
        return {key: self.data[key] for key in ("source", "train_images", "validation_images", "test_images",
                                                "fingerprint") if key in self.data}

    def optimizer(self, model, **kwargs):
        """The optimizer the flags name (trainer.build_optimizer), ready for this run's device."""
        return build_optimizer(self.config, model.to(self.device).parameters(), **kwargs)

    def trainer(self, model, train_loader, val_loader, test_loader, *, optimizer=None, callbacks=(),
                **recipe) -> Trainer:
        """The Trainer for this run: its folder, device and precision, the task's recipe (optimizer,
        lr_schedule, loss_fn, predict, callbacks), and the run's own callbacks. Reads and writes no file:
        `fit` resumes it with --resume."""
        args = self.args
        self.model_info = {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
                           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "repr": repr(model)}
        optimizer = optimizer or self.optimizer(model)
        why_not = cuda_graphs.can_capture(optimizer, self.config.precision, self.world_size > 1, self.config.compile)
        if self.config.cuda_graphs and why_not:
            self.config = dataclasses.replace(self.config, cuda_graphs=False)
            self.graph_note = f"eager steps: {why_not}"
        own = [watching.MetricsCSV(self.dir / FILES.METRICS_CSV),
               watching.LiveFigure(self.figure_path, marked(self.title, caveats(self.config_record())),
                                  show_test=self.config.track_test)]
        if args.tensorboard:
            own.append(watching.TensorBoard(self.dir / TENSORBOARD_DIR, self.title, self.config.track_test))
        return Trainer(model, train_loader, val_loader, test_loader, self.config, self.dir, self.device,
                       optimizer=optimizer, callbacks=[*callbacks, *own], settings=run_settings(args),
                       folder=RunFiles(self, protect_previous=self.previous != EMPTY and not args.resume),
                       started=self.started, data=self.data_identity, record=self.config_record(), **recipe)

    @property
    def figure_path(self) -> Path:
        return figure_path(self.dir, self.args.name, self.args.plot_dir)

    def config_record(self) -> dict:
        """What config.json holds."""
        resolved = {**self.resolved, "cuda_graphs": self.config.cuda_graphs,
                    **({"cuda_graphs_note": self.graph_note} if self.graph_note else {})}
        settings = {key: json_value(value) for key, value in sorted(vars(self.args).items())
                    if key not in ("script_defaults", "data_dir_from")}  # recorded as "defaults" and in "resolved"
        record = {"name": self.args.name, "title": self.title, "settings": settings,
                  "defaults": {key: json_value(value) for key, value in self.args.script_defaults.items()
                               if key in settings},
                  "resolved": resolved, "data": self.data, "model": self.model_info, "versions": hardware.versions()}
        # As config.json holds it, plain values only (the checkpoints keep a copy, and load nothing but those).
        return json.loads(json.dumps(record))

    def write_config(self) -> None:
        write_json(self.config_record(), self.dir / FILES.CONFIG)

    # ---------------------------------------------------------------- the run itself, and its end

    def fit(self, trainer: Trainer) -> dict:
        """What the command asks: train (trainer.fit()), first continuing the run in the folder with --resume
        (as Lightning's fit(ckpt_path=...)); or with --evaluate-only evaluate the run's best.pt on every split,
        training and changing nothing."""
        if self.args.resume:
            self._resume(trainer)
        self._announce(trainer)
        with memory_watched(self.args, trainer):
            if self.args.evaluate_only:
                trainer.metrics = evaluate_checkpoint(trainer, self.dir / FILES.BEST)
                return trainer.metrics
            with peers_watched(trainer):
                return trainer.fit()

    def _resume(self, trainer: Trainer) -> None:
        """trainer.resume(), then the folder made to match the run that goes on: no temporaries of a killed
        writer, config.json with this command's settings (e.g. more epochs)."""
        try:
            trainer.resume()
        except BaseException:  # refused: a caller that catches it (a notebook, a test) must not keep the lock
            self.release()
            raise
        if self.is_main:
            for name in OUTPUTS:  # what a writer killed mid-write left (the next write of each removes it too)
                remove_stale_temporaries(self.dir / name)
            self.write_config()

    def _announce(self, trainer: Trainer) -> None:
        """The lines that start the run: a --max-steps that the epochs end before, and what trains where."""
        args, config = self.args, self.config
        if config.max_steps and config.max_steps > trainer.total_steps and not args.evaluate_only:
            trainer.log(f"note: --max-steps {config.max_steps} will not be reached: --epochs {config.epochs} ends "
                        f"the run after {trainer.total_steps} steps ({trainer.steps_per_epoch} per epoch)")
        if self.is_main:
            print(f"{self.title}: {self.data['train_images']} train / {self.data['validation_images']} validation / "
                  f"{self.data['test_images']} test images from {self.data['source']}; {self.device} "
                  f"({self.resolved['device_name']}), {config.precision}"
                  f"{', CUDA graphs' if config.cuda_graphs else ''}, {self.world_size} process(es)"
                  f"{'' if args.evaluate_only else f'; figure: {self.figure_path}'}", file=sys.stderr)

    def finish(self, trainer: Trainer) -> dict:
        """Print the final table of run.fit(trainer); write the figure (or evaluation.json after
        --evaluate-only); release the folder. Returns the final metrics; a figure that could not be written
        is a FigureNotWritten, raised last (the run is finished)."""
        metrics, unwritten = trainer.metrics, None
        try:
            if self.is_main:
                unwritten = self._report(metrics, trainer)
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted after the run had finished: its results are in {self.dir}; "
                                      f"{REDRAW}") from None
        finally:
            trainer.close()
            if self.world_size > 1:
                # Every process leaves together: one tearing down its process group while rank 0 still
                # writes the outputs could abort ("terminate called without an active exception").
                dist.barrier()
            self.release()
        if unwritten:
            raise FigureNotWritten([unwritten], metrics)
        return metrics

    def release(self) -> None:
        """Release the folder's lock. A run that ends before writing anything (refused, interrupted while
        the data loads) takes back what it made: its .lock and the folders it created, if left empty."""
        if self in _held:
            _held.remove(self)
        if self.lock is None:
            return
        try:
            added = set(os.listdir(self.dir)) - self.held_before
        except OSError:
            added = None
        if added == {".lock"}:
            (self.dir / ".lock").unlink(missing_ok=True)  # while still locked: no other run is using it
        self.lock.close()
        self.lock = None
        for folder in self.made:  # deepest first
            with contextlib.suppress(OSError):  # not empty (a file was written), or already gone
                folder.rmdir()

    def _report(self, metrics: dict, trainer: Trainer) -> None:
        if self.args.evaluate_only:
            path = write_evaluation(metrics, self.dir)
            which = {True: "the data it was trained on", None: "data (best.pt does not record what it was trained on)",
                     False: f"OTHER data than it was trained on ({describe_data(metrics['trained_on'] or {})})"}
            print(f"\n{self.title}, {self.dir / FILES.BEST} (step {metrics['best_step']}) evaluated again on "
                  f"{describe_data(self.data)}: {which[metrics['on_training_data']]}\n"
                  f"{format_final_table(metrics)}\nwritten: {path}")
            return
        notes = caveats(self.config_record())
        print(f"\n{marked(self.title, notes + (['not the real result'] if notes else []))} "
              f"(best checkpoint, step {metrics['best_step']}):\n{format_final_table(metrics)}", flush=True)
        try:
            figure = figures.training_curves(
                {self.title: trainer.state.history}, self.figure_path, show_test=self.config.track_test,
                title=marked(f"{self.title}: test accuracy {metrics['test']['accuracy']:.3f}", notes),
                marks={self.title: figures.run_marks(metrics, trainer.state.history)})
        except WriteError as error:  # the run is finished all the same: said once the command ends (cli)
            print(f"figure: not written (see the error at the end)\nrun directory: {self.dir}")
            return self.dir, error, self._figure_on_disk()
        print(f"figure: {figure} (and .pdf)\nrun directory: {self.dir}")
        return None

    def _figure_on_disk(self) -> str:
        """What the figure file holds after its final drawing could not be written."""
        shown = figures.saved_title(self.figure_path)
        if shown is None:
            return f"no figure is at {self.figure_path}"
        live = " (the live figure, drawn while it trained)" if watching.LIVE in shown else ""
        return f"{self.figure_path} is still an earlier drawing{live}, titled '{shown}'"


def fingerprint(loaders) -> str:
    """Of every split's labels and images, in order: the same data gives the same fingerprint wherever it
    is read from; another copy, size, subset or split does not."""
    digest = hashlib.blake2b(digest_size=16)
    for loader in loaders:
        for tensor in (loader.labels, loader.images):
            digest.update(tensor.cpu().contiguous().numpy())
    return digest.hexdigest()


def write_evaluation(metrics: dict, run_dir: Path) -> Path:
    path = Path(run_dir) / FILES.EVALUATION
    write_json({**metrics, "evaluated": time.strftime("%Y-%m-%d %H:%M:%S"), "of": str(Path(run_dir) / FILES.BEST)},
               path)
    return path


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
