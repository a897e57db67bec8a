"""The command line every training script shares.

    parser = cli.training_parser(__doc__, "task2")          # the shared flags, with their defaults
    args = cli.parse(parser, argv)                           # refuses what cannot work, exit 2
    cli.for_each_seed(args, train)                           # one run, or one per --seeds value

The hyperparameter flags are generated from trainer.TrainConfig's fields, the rest from the table
below; a task overrides defaults with keyword arguments and adds its own flags to the parser.
`main` turns errors into one line and an exit code: 2 for bad command-line input, 1 otherwise,
130 after Ctrl-C; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import math
import os
import signal
import statistics
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

import dataloaders
import hardware
import runs
from trainer import TrainConfig, TrainingInterrupted
from utils import MAX_SEED, UserError

# float32 holds magnitudes up to about 3.4e38; a larger learning rate would overflow inside torch.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


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
        if too_low or too_high or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {what}")
        return value
    return parse


positive_int = _number(int, 1, True, what=">= 1")
non_negative_int = _number(int, 0, True, what=">= 0")
positive_float = _number(float, 0.0, False, what=f"> 0 (and at most {FLOAT32_MAX:.3g}, float32's largest)")
non_negative_float = _number(float, 0.0, True, what=f">= 0 (and at most {FLOAT32_MAX:.3g}, float32's largest)")
fraction = _number(float, 0.0, False, 1.0, what="strictly between 0 and 1")
seed = _number(int, 0, True, MAX_SEED + 1, what=f"between 0 and {MAX_SEED} (2**32 - 1)")
CHECKS = {("int", "positive"): positive_int, ("int", "non_negative"): non_negative_int,
          ("float", "positive"): positive_float, ("float", "non_negative"): non_negative_float}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported in one line (not the whole usage) and exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, and the script's docstring (layer tables) laid out as written."""


def _field_kind(annotation: str) -> str:
    return next(kind for kind in ("bool", "int", "float", "str") if kind in str(annotation))


# ---------------------------------------------------------------- the shared flags

def training_parser(description: str, name: str, **defaults) -> argparse.ArgumentParser:
    """The flags every training script shares; `defaults` are where the task differs."""
    parser = Parser(
        description=description, formatter_class=HelpFormatter,
        epilog=f"examples:\n  python {name}.py --max-steps 50 --subset 2000 --run-dir runs/{name}-smoke   "
               f"# a smoke run in seconds\n  python {name}.py --seeds 0 1 2        # three runs, then mean ± std\n"
               f"  python {name}.py --resume             # continue an interrupted run")
    parser.set_defaults(name=name)
    groups = {title: parser.add_argument_group(title) for title in ("hyperparameters", "data", "device",
                                                                   "outputs", "smoke runs", "seeds and evaluation")}
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        if not meta["flag"]:
            continue
        flag, kind = f"--{field.name.replace('_', '-')}", _field_kind(field.type)
        if kind == "bool":
            groups[meta["group"]].add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                               help=meta["help"])
        elif meta["choices"]:
            groups[meta["group"]].add_argument(flag, choices=meta["choices"], default=field.default, help=meta["help"])
        else:
            groups[meta["group"]].add_argument(flag, type=CHECKS[kind, meta["check"]], default=field.default,
                                               metavar="N" if kind == "int" else None, help=meta["help"])

    data = groups["data"]
    data.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, else data/cifar10)")
    data.add_argument("--seed", type=seed, default=0, help="seeds the model, the split and the augmentation")
    data.add_argument("--validation-fraction", type=fraction, default=dataloaders.VALIDATION_FRACTION)
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=False,
                      help="random horizontal flip and random 4-pixel-padded crop per batch")

    device = groups["device"]
    device.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, "
                                                         "cuda:N or mps")
    device.add_argument("--precision", choices=hardware.PRECISIONS, default="auto",
                        help="auto: bf16 (or fp16) autocast where the hardware runs it fast, else fp32")
    device.add_argument("--compile", action="store_true", help="compile the model with torch.compile")
    device.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="on CUDA, replay each training step as one CUDA graph (--no-cuda-graphs: "
                             "plain eager steps, for debugging)")
    device.add_argument("--deterministic", action="store_true",
                        help="bit-identical repeats on a GPU too: deterministic kernels, no cuDNN autotuning "
                             "(slower; CPU runs are repeatable without it)")

    outputs = groups["outputs"]
    outputs.add_argument("--run-dir", type=Path, default=None, help=f"default: runs/{name}")
    outputs.add_argument("--plot-dir", type=Path, default=runs.PLOT_DIR, help="where the figure is written")
    outputs.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    outputs.add_argument("--overwrite", action="store_true",
                         help="start over in a --run-dir that holds a run (finished or not); its files are "
                              "replaced when the new run saves its first checkpoint")
    outputs.add_argument("--tensorboard", action="store_true",
                         help="also log to <run-dir>/tensorboard (needs: pip install tensorboard)")

    smoke = groups["smoke runs"]
    smoke.add_argument("--subset", type=positive_int, default=None, help="use only the first N images of each split")
    smoke.add_argument("--debug", action="store_true", help="show tracebacks")

    seeds = groups["seeds and evaluation"]
    seeds.add_argument("--seeds", type=seed, nargs="+", default=None, metavar="K",
                       help="one run per seed, into <run-dir>-seed<K>, then mean and spread of the results")
    seeds.add_argument("--evaluate-only", action="store_true",
                       help="evaluate the best.pt of --run-dir on every split (writes only evaluation.json)")
    parser.set_defaults(**defaults)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then refuse flags that parse but cannot work here (one line, exit 2)."""
    args = parser.parse_args(argv)
    runs.SCRIPT_DEFAULTS.clear()
    runs.SCRIPT_DEFAULTS.update({action.dest: parser.get_default(action.dest) for action in parser._actions
                                 if action.dest != "help"})
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; pick one")
    if args.evaluate_only and (args.resume or args.overwrite):
        parser.error("--evaluate-only changes no run; drop --resume / --overwrite")
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed")
    try:
        hardware.check_device(args.device, distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    except UserError as error:
        parser.error(str(error))
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        parser.error("--tensorboard needs the tensorboard package: pip install tensorboard "
                     "(or pip install -r requirements-test.txt)")
    return args


# ---------------------------------------------------------------- several seeds

def for_each_seed(args, train):
    """`train(args)` once, or once per --seeds value into <run-dir>-seed<K>; then mean ± std."""
    if not args.seeds:
        return train(args)
    base = runs.run_dir_of(args)
    results = {}
    for value in args.seeds:
        one = copy.copy(args)
        one.seed, one.seeds, one.run_dir = value, None, runs.seed_run_dir(base, value)
        results[value] = train(one)
    if runs.is_main_process():
        print(seed_summary(results))
    return results


def seed_summary(results: dict) -> str:
    """Mean ± sample standard deviation over seeds of the final loss and accuracy of every split."""
    seeds = list(results)
    lines = [f"\nover {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample std, then each seed"]
    for split in ("train", "validation", "test"):
        for measure in ("loss", "accuracy"):
            values = [results[s][split][measure] for s in seeds]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            lines.append(f"  {split} {measure:8s} {statistics.fmean(values):.4f} ± {spread:.4f}   "
                         + "  ".join(f"{v:.4f}" for v in values))
    return "\n".join(lines)


# ---------------------------------------------------------------- error handling

def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(entry, argv=None) -> None:
    """Run `entry(argv)`; turn errors into one line and an exit code."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # startup.py made it quiet while torch loaded
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # e.g. a batch system's time limit
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        entry(argv)
    except KeyboardInterrupt as interrupt:
        message = str(interrupt) if isinstance(interrupt, TrainingInterrupted) else \
            "interrupted before any training: nothing was trained or saved by this command"
        print(f"\n{message}", file=sys.stderr)
        sys.exit(130)
    except UserError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except torch.OutOfMemoryError:
        if debug:
            traceback.print_exc()
        print("error: out of memory on the GPU; lower --batch-size (or --subset)", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        traceback.print_exc()
        print(f"error: {type(error).__name__}: {error}\nThis is a bug in the project, not in how you ran it: "
              "please report it with the command line and the traceback above.", file=sys.stderr)
        sys.exit(1)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
