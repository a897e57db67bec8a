"""Command-line plumbing shared by every training script.

A task script defines its model and default hyperparameters and calls:

    parser = cli.make_parser(__doc__, "task2", epochs=10, batch_size=64, lr=0.05)
    args = parser.parse_args(argv)
    cli.train(args, build_model, title="Task 2")

`train` prepares the run directory, loads the data, trains, evaluates on the whole
train/validation/test sets, prints the table and draws `plots/<name>.png`.
Errors end as one line on stderr: exit 2 for bad command-line input, 1 otherwise,
130 after Ctrl-C (with a checkpoint to --resume from).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

import dataloaders
from trainer import OPTIMIZERS, TrainConfig, Trainer, format_final_table
from utils import (UserError, check_writable, keep_freed_memory, plot_runs, resolve_precision, select_device,
                   set_seed, write_json)

ROOT = Path(__file__).resolve().parent
PLOT_DIR = ROOT / "plots"


# ---------------------------------------------------------------- argument types

def _number(kind, low, low_inclusive, high=None, what=""):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        too_low = value < low if low_inclusive else value <= low
        too_high = high is not None and value >= high
        # nan compares false with everything and inf would only surface as a diverged run.
        if too_low or too_high or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {what}")
        return value
    return parse


positive_int = _number(int, 1, True, what=">= 1")
non_negative_int = _number(int, 0, True, what=">= 0")
positive_float = _number(float, 0.0, False, what="> 0")
non_negative_float = _number(float, 0.0, True, what=">= 0")
fraction = _number(float, 0.0, False, 1.0, what="strictly between 0 and 1")


def make_parser(description: str, name: str, **defaults) -> argparse.ArgumentParser:
    """The flags every training script shares; `defaults` are the task's hyperparameters."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(name=name)
    hp = parser.add_argument_group("hyperparameters")
    hp.add_argument("--epochs", type=positive_int, default=10)
    hp.add_argument("--batch-size", type=positive_int, default=64)
    hp.add_argument("--lr", type=positive_float, default=0.05, help="learning rate")
    hp.add_argument("--early-stop-count", type=positive_int, default=4,
                    help="stop after this many validations without a lower validation loss")
    hp.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    hp.add_argument("--momentum", type=non_negative_float, default=0.0)
    hp.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="L2 regularisation")
    hp.add_argument("--lookahead-every", type=non_negative_int, default=0, metavar="N",
                    help="every N steps, continue from a running average of the weights (0: off)")
    hp.add_argument("--lookahead-decay", type=fraction, default=0.95,
                    help="per-step decay of that average at the end of training (it ramps up from 0)")
    hp.add_argument("--validation-fraction", type=fraction, default=0.1)
    hp.add_argument("--augment", action="store_true",
                    help="random horizontal flip and random 4-pixel-padded crop per batch")
    hp.add_argument("--seed", type=non_negative_int, default=0)

    run = parser.add_argument_group("data, device and outputs")
    run.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, else data/cifar10)")
    run.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    run.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                     help="auto: bf16 autocast where the hardware runs it fast, else fp32")
    run.add_argument("--compile", action="store_true", help="compile the model with torch.compile")
    run.add_argument("--run-dir", type=Path, default=None, help=f"default: runs/{name}")
    run.add_argument("--plot-dir", type=Path, default=PLOT_DIR, help="where the figure is written")
    run.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in a --run-dir that holds an unfinished run")

    quick = parser.add_argument_group("smoke runs")
    quick.add_argument("--max-steps", type=positive_int, default=None,
                       help="stop after N optimisation steps (the final evaluation still runs)")
    quick.add_argument("--subset", type=positive_int, default=None,
                       help="use only the first N images of each split")
    quick.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.set_defaults(**defaults)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; pick one")
    return args


# ---------------------------------------------------------------- run directories

def _lock(run_dir: Path):
    """An exclusive lock released by the OS when the process dies, even by SIGKILL."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, but nothing else changes
        return None
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"another run is writing to {run_dir}; wait for it to finish or choose "
                        "another --run-dir") from None
    return handle


def prepare_outputs(args, is_main: bool = True):
    """Fail before any training when outputs cannot be written or would clobber a run."""
    if not is_main:
        return None
    run_dir = Path(args.run_dir)
    check_writable(run_dir)
    check_writable(args.plot_dir)
    lock = _lock(run_dir)
    unfinished = (run_dir / "last.pt").exists() and not (run_dir / "metrics.json").exists()
    if unfinished and not (args.resume or args.overwrite):
        if lock:  # a caller that catches this error (a notebook, a test) must not keep the lock
            lock.close()
        raise UserError(f"{run_dir} holds an unfinished run; continue it with --resume, or start over "
                        "with --overwrite")
    return lock


def clear_previous_run(run_dir: Path) -> None:
    """A fresh run replaces the old one; done only once data and model are ready."""
    for name in ("metrics.json", "last.pt", "best.pt", "history.json"):
        (Path(run_dir) / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- distributed (torchrun)

def init_distributed(device_name: str):
    """Rank, world size and device; a plain `python task.py` is a world of one."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, select_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


# ---------------------------------------------------------------- the run

def train(args, build_model, *, title: str, transform=None, scheduler_fn=None, extra_config=None,
          label_smoothing: float = 0.0, track_test: bool = False, validations_per_epoch: int = 2,
          augmentation=None):
    """Train `build_model()` with the settings in `args`; returns the final metrics.

    Outputs go to `args.run_dir` (default runs/<args.name>) and `args.plot_dir`/<args.name>.png.
    `augmentation` replaces the default dataloaders.Augmentation() used with --augment.
    """
    if args.run_dir is None:
        args.run_dir = ROOT / "runs" / args.name
    rank, world_size, device = init_distributed(args.device)
    lock = prepare_outputs(args, is_main=rank == 0)
    set_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_memory()
    precision = resolve_precision(args.precision, device)
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 is for CUDA; on a CPU use bf16 or fp32")
    started = time.perf_counter()
    train_loader, val_loader, test_loader = dataloaders.load_cifar10(
        args.batch_size, args.validation_fraction, seed=args.seed, data_dir=args.data_dir,
        device=device, transform=transform,
        augment=(augmentation or dataloaders.Augmentation()) if args.augment else None,
        subset=args.subset, rank=rank, world_size=world_size)
    model = build_model()
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, early_stop_count=args.early_stop_count,
        optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        nesterov=getattr(args, "nesterov", False), label_smoothing=label_smoothing,
        validations_per_epoch=validations_per_epoch, max_steps=args.max_steps, precision=precision,
        channels_last=uses_channels_last(precision, device), track_test=track_test,
        lookahead_every=args.lookahead_every, lookahead_decay=args.lookahead_decay)
    settings = {"script": args.name, "seed": args.seed, "validation_fraction": args.validation_fraction,
                "augment": args.augment, "subset": args.subset, **(extra_config or {})}
    trainer = Trainer(model, train_loader, val_loader, test_loader, config, args.run_dir, device,
                      scheduler_fn=scheduler_fn, settings=settings)
    if args.compile:
        trainer.network = torch.compile(trainer.network)
    if args.resume:
        trainer.resume()
    elif rank == 0:
        clear_previous_run(args.run_dir)
    if rank == 0:
        write_json({**vars(args), **settings, "train_config": vars(config), "title": title,
                    "run_dir": str(args.run_dir), "plot_dir": str(args.plot_dir),
                    "device": str(device), "device_name": describe_device(device),
                    "precision_requested": args.precision, "world_size": world_size,
                    "data_source": train_loader.source, "transform": repr(train_loader.transform),
                    "augmentation": repr(train_loader.augment),
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                    "model": repr(model), "versions": versions()},
                   Path(args.run_dir) / "config.json")
        print(f"{title}: {train_loader.num_images * world_size} train / {val_loader.num_images * world_size} "
              f"validation / {test_loader.num_images * world_size} test images from {train_loader.source}; "
              f"{device} ({describe_device(device)}), {precision}, {world_size} process(es)", file=sys.stderr)
    trainer.train()
    metrics = trainer.final_evaluation(started)
    if rank == 0:
        figure = plot_runs({title: trainer.history}, Path(args.plot_dir) / f"{args.name}.png", title=title,
                           show_test=track_test)
        print(f"\n{title} (best checkpoint, step {metrics['best_step']}):\n{format_final_table(metrics)}")
        print(f"figure: {figure}\nrun directory: {args.run_dir}")
    if world_size > 1:
        # Every process leaves together: one tearing down its process group while rank 0 still
        # writes the outputs could abort ("terminate called without an active exception").
        dist.barrier()
    if lock:
        lock.close()
    return metrics


def uses_channels_last(precision: str, device: torch.device) -> bool:
    """Channels-last lets oneDNN / cuDNN pick their fast reduced-precision convolution kernels."""
    return precision != "fp32" or device.type == "cuda"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The processor's marketing name where Linux tells it (platform.processor() says only x86_64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform()}


# ---------------------------------------------------------------- error handling

def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(entry, argv=None) -> None:
    """Run `entry(argv)`; turn errors into one line and an exit code."""
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # e.g. a batch system's time limit
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        entry(argv)
    except KeyboardInterrupt:
        print("\ninterrupted: progress is saved in the run directory; continue with the same command "
              "plus --resume", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(f"error: {type(error).__name__}: {error} (run again with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
