"""The command line every training script shares.

    parser = cli.training_parser(__doc__, "task2")          # the shared flags, with their defaults
    args = cli.parse(parser, argv)                           # refuses what cannot work, exit 2
    cli.for_each_seed(args, train)                           # one run, or one per --seeds value

The hyperparameter flags are generated from settings.TrainConfig's fields, the rest declared in training_parser
(each setting's role in settings.SHARED_FLAGS); a task overrides defaults with keyword arguments and adds its own
flags to the parser.
`main` turns errors into one line and an exit code: 2 for bad command-line input, 1 otherwise,
130 after Ctrl-C; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import json
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
import run_folder
import runs
import startup
from run_folder import (EMPTY, FILES, FINISHED, PLOT_DIR, ROOT, UNFINISHED, read_record, run_dir_of, seed_run_dir,
                        status)
from settings import COMMAND, EXPERIMENT, HOW, LENGTH_SETTINGS, ROLES, TrainConfig, role
from trainer import TrainingInterrupted
from utils import MAX_SEED, UsageError, UserError, json_value

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
    """argparse, with a bad flag reported in one line (not the whole usage) and exit code 2.

    --help lists a task's own flags (added after `training_parser`) before the shared groups."""

    shared_groups = ()

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def format_help(self):
        self._action_groups.sort(key=lambda group: group in self.shared_groups)  # stable: each keeps its order
        return super().format_help()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The script's docstring (layer tables) laid out as written, and each flag's default once.

    A default is shown unless the help text already states it, or it is None or a --switch's False
    (an unset option, a switch that is off); a --flag/--no-flag pair shows on or off."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction):
            default = "on" if default else "off"
        if "(default" in text or default is None or default is False or default is argparse.SUPPRESS:
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        elif isinstance(default, Path) and default.is_relative_to(ROOT):  # plots, not /home/.../plots
            default = default.relative_to(ROOT)
        return f"{text} (default: {str(default).replace('%', '%%')})"


def _flag(group, flag: str, **kwargs):
    """group.add_argument for a shared flag, whose setting's role settings.SHARED_FLAGS (or TrainConfig) declares:
    a shared flag without one would silently count as the experiment."""
    action = group.add_argument(flag, **kwargs)
    if action.dest not in ROLES:
        raise KeyError(f"{flag}: its setting {action.dest!r} has no role in settings.SHARED_FLAGS")
    return action


def flag_of(setting: str) -> str:
    """The command-line flag of a setting: batch_size -> --batch-size."""
    return f"--{setting.replace('_', '-')}"


def _field_kind(annotation: str) -> str:
    return next(kind for kind in ("bool", "int", "float", "str") if kind in str(annotation))


# ---------------------------------------------------------------- the shared flags

AUGMENT_HELP = "random horizontal flip and random crop after 4-pixel padding, per image"
# A smoke run's flags and what it costs (measured: docs/runs.md), for --help's first example; a task whose
# run costs more per image passes its own.
SMOKE = ("--max-steps 50 --subset 2000", "under a minute on a 2-core CPU")


def training_parser(description: str, name: str, augment_help: str = AUGMENT_HELP, cuda_graphs_off: str | None = None,
                    smoke: tuple[str, str] = SMOKE, **defaults) -> argparse.ArgumentParser:
    """The flags every training script shares; `defaults` are where the task differs, `augment_help`
    says what --augment does in a task with its own augmentation, `cuda_graphs_off` why a task's steps are not
    captured unless --cuda-graphs asks (None: they are), `smoke` the flags of a smoke run and its time."""
    parser = Parser(
        description=description, formatter_class=HelpFormatter,
        usage="%(prog)s [flags]  (the task's own flags first, then the shared ones)",
        epilog=f"examples:\n  python {name}.py {smoke[0]} --run-dir runs/{name}-smoke\n"
               f"      # a smoke run: {smoke[1]}\n"
               f"  python {name}.py --seeds 0 1 2        # three runs, then mean ± std\n"
               f"  python {name}.py --resume             # continue an interrupted run")
    parser.set_defaults(name=name)
    groups = {title: parser.add_argument_group(title) for title in ("hyperparameters", "data", "device",
                                                                   "outputs", "smoke runs", "seeds and evaluation")}
    parser.shared_groups = tuple(groups.values())
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        if not meta["flag"]:
            continue
        flag, kind = flag_of(field.name), _field_kind(field.type)
        if kind == "bool":
            groups[meta["group"]].add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default,
                                               help=meta["help"])
        elif meta["choices"]:
            groups[meta["group"]].add_argument(flag, choices=meta["choices"], default=field.default, help=meta["help"])
        else:
            groups[meta["group"]].add_argument(flag, type=CHECKS[kind, meta["check"]], default=field.default,
                                               metavar="N" if kind == "int" else None, help=meta["help"])

    data = groups["data"]
    _flag(data, "--data-dir", help="CIFAR-10 folder: cifar-10-batches-py/, or train/ and test/ image "
          "folders (default: $CIFAR10_DIR, else data/cifar10); downloaded there when missing")
    _flag(data, "--seed", type=seed, default=0, help="seeds the model, the split and the augmentation")
    _flag(data, "--validation-fraction", type=fraction, default=dataloaders.VALIDATION_FRACTION,
          help="share of the training images held out for validation (a random draw fixed by --seed)")
    _flag(data, "--augment", action=argparse.BooleanOptionalAction, default=False, help=augment_help)

    device = groups["device"]
    _flag(device, "--device", default="auto",
          help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    _flag(device, "--precision", choices=hardware.PRECISIONS, default="auto",
          help="auto: bf16 (or fp16) autocast where the hardware runs it fast, else fp32")
    _flag(device, "--compile", action="store_true", help="compile the model with torch.compile")
    _flag(device, "--cuda-graphs", action=argparse.BooleanOptionalAction, default=cuda_graphs_off is None,
          help="on CUDA, replay each training step as one CUDA graph (--no-cuda-graphs: plain eager steps); "
               + (f"off unless asked: {cuda_graphs_off}" if cuda_graphs_off else
                  "on: this script's captured step has trained on a GPU (a capture that fails goes on with eager "
                  "steps)"))
    _flag(device, "--deterministic", action="store_true",
          help="bit-identical repeats on a GPU too: deterministic kernels, no cuDNN autotuning "
               "(slower; CPU runs are repeatable without it)")

    outputs = groups["outputs"]
    _flag(outputs, "--run-dir", type=Path, default=None, help=f"the run's folder (default: runs/{name})")
    _flag(outputs, "--plot-dir", type=Path, default=PLOT_DIR, help="folder for the figure")
    _flag(outputs, "--resume", action="store_true",
          help="continue the run in --run-dir, with the settings it was made with")
    _flag(outputs, "--overwrite", action="store_true",
          help="start over in a --run-dir that holds a run (finished or not); its files are "
               "replaced when the new run saves its first checkpoint")
    _flag(outputs, "--tensorboard", action="store_true",
          help="also log to <run-dir>/tensorboard (needs: pip install tensorboard)")

    smoke = groups["smoke runs"]
    _flag(smoke, "--subset", type=positive_int, default=None, metavar="N",
          help="use only the first N images of each split")
    _flag(smoke, "--debug", action="store_true", help="show tracebacks")

    seeds = groups["seeds and evaluation"]
    _flag(seeds, "--seeds", type=seed, nargs="+", default=None, metavar="K",
          help="one run per seed, into <run-dir>-seed<K>, then mean and spread of the results")
    _flag(seeds, "--evaluate-only", action="store_true",
          help="evaluate the best.pt of --run-dir on every split (writes only evaluation.json), "
               "on the data it was trained on, or on another --data-dir / --subset")
    parser.set_defaults(**defaults)
    return parser


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse, then refuse flags that parse but cannot work here (one line, exit 2)."""
    args = parser.parse_args(argv)
    # Which flags the command line gave (argparse fills in a default only where the namespace lacks it):
    # --resume and --evaluate-only take the others from the run.
    given = parser.parse_args(argv, namespace=argparse.Namespace(**{key: _NOT_GIVEN for key in vars(args)}))
    args.flags_given = sorted(key for key, value in vars(given).items() if value is not _NOT_GIVEN)
    # The script's own defaults travel with its settings: config.json keeps them beside them (runs.Run), so
    # that a run can say how it differs from the recipe (fewer epochs, another image size).
    args.script_defaults = {action.dest: parser.get_default(action.dest) for action in parser._actions
                            if action.dest != "help"}
    # The script, recorded with the run (its name may be a variant's: task3c_before), and its flags, by which
    # a setting read back from the run is checked (recorded_settings).
    args.script = parser.get_default("name")
    _FLAGS[args.script] = {action.dest: action for action in parser._actions}
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; pick one")
    if args.evaluate_only and (args.resume or args.overwrite):
        parser.error("--evaluate-only changes no run; drop --resume / --overwrite")
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed")
    if args.seeds and "seed" in args.flags_given:
        parser.error(f"--seed {args.seed} and --seeds {' '.join(map(str, args.seeds))} both set the seed (--seeds "
                     "gives each of its runs its own); drop --seed")
    try:  # empty in CIFAR-10's 50,000 images, empty in any copy (a smaller one is checked once it is found)
        dataloaders.split_sizes(dataloaders.TRAIN_IMAGES, args.validation_fraction)
    except UserError as error:
        parser.error(str(error))
    check_output_names(parser, args)
    try:
        hardware.check_device(args.device, distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    except UserError as error:
        parser.error(str(error))
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        parser.error("--tensorboard needs the tensorboard package: pip install tensorboard "
                     "(or pip install -r requirements-test.txt)")
    return args


def _name_max(path: Path) -> int:
    """The longest file or folder name, in bytes, that the file system holding `path` takes (255 mostly)."""
    for folder in [path, *path.absolute().parents]:
        try:
            return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):  # not there (yet), or no pathconf
            continue
    return 255


def check_output_names(parser: argparse.ArgumentParser, args) -> None:
    """Refuse run and plot folders that no file system could create, before anything is created."""
    base = run_dir_of(args)
    if args.seeds and base.name in ("", ".", ".."):
        parser.error(f"--run-dir {base} has no folder name to add -seed{args.seeds[0]} to (--seeds makes one folder "
                     f"per seed beside it); name one, e.g. --run-dir runs/{args.name}")
    run_dirs = [seed_run_dir(base, seed) for seed in args.seeds] if args.seeds else [base]
    for flag, folder in [*(("--run-dir", run_dir) for run_dir in run_dirs), ("--plot-dir", Path(args.plot_dir))]:
        limit = _name_max(folder)
        for name in folder.parts:
            if len(os.fsencode(name)) > limit:
                added = " (with the -seedK that --seeds adds)" if args.seeds and flag == "--run-dir" else ""
                parser.error(f"{flag}: the name {name[:20]}...{name[-12:]} is {len(os.fsencode(name))} bytes{added}, "
                             f"longer than the {limit} that a file or folder name may have; choose a shorter one")


_NOT_GIVEN = object()
_FLAGS: dict[str, dict[str, argparse.Action]] = {}  # script -> its flags by setting (set by parse)


# ---------------------------------------------------------------- settings recorded in a run


def recorded_settings(args) -> argparse.Namespace:
    """--resume / --evaluate-only: the settings the run in its --run-dir was made with where the command line gives
    none, from its record (run_folder.read_record: config.json, or where that is lost or damaged, the copy its
    checkpoints keep), each checked as its flag checks it. A flag given that differs is refused by name, unless it
    may change: what is not the experiment and its length (settings.role), and for --evaluate-only the data evaluated
    (--data-dir, --subset). How the run is carried out (role HOW) is this command's: only the data folder is taken
    from the record, as the run first resolved it, never the figure folder, device or switches of a checkout that
    may have moved. Another script's run folder is refused by name."""
    if getattr(args, "flags_given", None) is None:
        return args
    run_dir = run_dir_of(args)
    checkpoints = (FILES.BEST, FILES.LAST) if args.evaluate_only else (FILES.LAST, FILES.BEST)
    record, path, whole, problem = read_record(run_dir, checkpoints)
    recorded = record.get("settings", {})
    _refuse_another_script(args, record, path, run_dir)
    if problem:
        _note(f"{problem}; the run's settings are read from {path} instead"
              f"{' (this --resume writes config.json again)' if args.resume else ''}")
    flags = _FLAGS.get(getattr(args, "script", None), {})
    args = copy.copy(args)
    for key, value in recorded.items():
        if role(key) in (COMMAND, HOW) or not hasattr(args, key):  # (the data folder: below)
            continue
        if key not in args.flags_given:
            setattr(args, key, _recorded_value(key, value, path, flags.get(key)))
        elif role(key) == EXPERIMENT and not (key == "subset" and args.evaluate_only):
            try:
                value = _recorded_value(key, value, path, flags.get(key))
            except UserError:  # damaged there: the checkpoints' signature compares the value given
                continue
            if json_value(getattr(args, key)) != json_value(value):
                flag = flag_of(key)
                raise UsageError(f"{run_dir} was made with {flag}={json_value(value)}, not "
                                 f"{flag}={json_value(getattr(args, key))}; drop {flag} to "
                                 f"{'evaluate' if args.evaluate_only else 'continue'} it as it was made, or start a "
                                 "new run with another --run-dir (or --overwrite)")
    unknown = [key for key in LENGTH_SETTINGS if key not in args.flags_given and key != "max_steps"]
    if not whole and args.resume and unknown:
        raise UserError(f"{problem}, and {path} (written by an earlier version) records the experiment but not the "
                        f"run's length: give {' '.join(f'{flag_of(key)} N' for key in unknown)} "
                        "(and --max-steps N if it had one) as the run was made, or put its config.json back")
    if "data_dir" not in args.flags_given:
        args.data_dir, args.data_dir_from = _recorded_data_dir(record, path, run_dir)
    return args


def _note(message: str) -> None:
    """A line on stderr, once (under torchrun, from rank 0: the process group does not exist yet)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"note: {message}", file=sys.stderr)


def _refuse_another_script(args, record: dict, path: Path, run_dir: Path) -> None:
    """A run folder of another training script is refused by name, before anything loads."""
    settings = record.get("settings", {})
    script = settings.get("script")
    if script is None:
        # Recorded by an earlier version: by the run's name, its script's but for a variant of the same
        # script (task3_model1 --convs-per-stage 1 is task3c_before), which has the same settings.
        experiment = {key for key in settings if role(key) == EXPERIMENT}
        if record.get("name", settings.get("name")) == args.name or experiment == {
                key for key in vars(args) if role(key) == EXPERIMENT}:
            return
        script = record.get("name", settings.get("name"))
    if script != getattr(args, "script", script):
        action = "--evaluate-only" if args.evaluate_only else "--resume"
        raise UsageError(f"{run_dir} holds a run of {script}.py (its {path.name} says so), not of {args.script}.py; "
                         f"use python {script}.py {action} --run-dir {run_dir}, or choose another --run-dir")


def _recorded_value(key: str, value, path: Path, action: argparse.Action | None):
    """settings.`key` of the record in `path`, as its flag (`action`) would parse it: the command line's own type
    and range checks, so that a hand-edited value out of range is refused as the flag would refuse it."""
    def damaged(why: str) -> UserError:
        return UserError(f"{path} is damaged: settings.{key}{why}; give {flag_of(key)} on the command line as the "
                         "run was made, or correct it there")

    def parsed(item):
        if action.type in (None, str, Path):
            kind = bool if isinstance(action.default, bool) else str
            if not isinstance(item, kind):
                raise damaged(f" is {json.dumps(item)}, not {'true or false' if kind is bool else 'text'}")
        else:
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                raise damaged(f" is {json.dumps(item)}, not a number")
            try:
                item = action.type(str(item))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
                raise damaged(f": {error}") from None
        if action.choices is not None and item not in action.choices:
            raise damaged(f" is {json.dumps(item)}, not one of {', '.join(map(str, action.choices))}")
        return item

    if action is None:  # a setting of the script's own (its name), no flag
        if not isinstance(value, str):
            raise damaged(f" is {json.dumps(value)}, not text")
        return value
    if value is None:
        if action.default is None:  # an optional flag left unset
            return None
        raise damaged(" is null, not a value")
    if action.nargs in (None, "?", 0):  # (0: a switch, --augment / --no-augment)
        return parsed(value)
    count = action.nargs if isinstance(action.nargs, int) else None  # (else "+" or "*")
    if not isinstance(value, list) or (count is not None and len(value) != count) or (action.nargs == "+" and
                                                                                      not value):
        raise damaged(f" is {json.dumps(value)}, not a list of {count or 'several'} values")
    return [parsed(item) for item in value]


def _recorded_data_dir(record: dict, path: Path, run_dir: Path) -> tuple[str, str]:
    """The data folder the run was trained on, as its record has it, and where it came from then ($CIFAR10_DIR
    ...); a folder that is no longer there is one line naming it, never data/cifar10 or a download instead."""
    resolved, settings = record.get("resolved", {}), record.get("settings", {})
    source = record.get("data", {}).get("source")
    trained_on = f" (it was trained on {source})" if source else ""
    folder, origin = resolved.get("data_dir"), resolved.get("data_dir_from") or "--data-dir"
    if folder is None:  # an earlier version recorded the flag as given, relative or None
        folder = settings.get("data_dir")
    if folder is None:  # ... None: $CIFAR10_DIR or data/cifar10 then, and it does not say which; as now
        found, origin = dataloaders.data_dir_and_origin(None)
        if dataloaders.find_layout(found) is None:
            raise UserError(f"{path} does not say which data folder the run was trained on (an earlier version "
                            f"wrote it) and {found} ({origin}) holds no CIFAR-10; pass --data-dir DIR holding the "
                            f"images it was trained on{trained_on}")
        return os.path.abspath(found), origin
    if not isinstance(folder, str):
        raise UserError(f"{path} is damaged: its data folder is {json.dumps(folder)}, not a path; pass --data-dir "
                        f"DIR holding the images it was trained on{trained_on}")
    if not os.path.isdir(folder):
        where = "" if os.path.isabs(folder) else f" (relative: here {os.path.abspath(folder)})"
        came = f", from {origin}" if origin != "--data-dir" else ""
        raise UserError(f"the data folder {folder}{where}{came} that {run_dir} was trained on is not there; pass "
                        f"--data-dir DIR where the same images are now{trained_on}")
    if os.environ.get("CIFAR10_DIR") and os.path.abspath(os.path.expanduser(os.environ["CIFAR10_DIR"])) != \
            os.path.abspath(folder):
        _note(f"reading {folder}, the data folder {run_dir} was trained on, not $CIFAR10_DIR "
              f"({os.environ['CIFAR10_DIR']}); --data-dir chooses another")
    return os.path.abspath(folder), origin


# ---------------------------------------------------------------- several seeds

def for_each_seed(args, train):
    """`train(args)` once, or once per --seeds value into <run-dir>-seed<K>; then mean ± std.
    Every run folder is checked before the first run starts. A --seeds set continued with --resume resumes
    the seeds' runs (a finished one is evaluated again, not trained) and starts the seeds it never reached,
    with the settings its runs were made with. A finished run whose figure could not be written does not
    stop the set: the command ends with that error once the set is done."""
    planned = []
    for value in args.seeds or [None]:
        one = copy.copy(args)
        if value is not None:
            one.seed, one.seeds, one.run_dir = value, None, seed_run_dir(run_dir_of(args), value)
        planned.append(one)
    held = {id(one): status(run_dir_of(one)) for one in planned}
    if args.seeds and args.resume and any(state in (FINISHED, UNFINISHED) for state in held.values()):
        for one in planned:
            one.resume = held[id(one)] != EMPTY  # a seed the interrupted set never reached starts
    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 looks (the others would see its lock)
        for one in planned:  # also puts back a run an interrupted --overwrite had set aside: read it after
            run_folder.check(run_dir_of(one), one.resume, one.overwrite, one.evaluate_only, in_set=bool(args.seeds))
    if args.resume or args.evaluate_only:
        recorded = {id(one): recorded_settings(one) for one in planned if one.resume or one.evaluate_only}
        like = next(iter(recorded.values()))  # the set's settings, for the seeds it never reached
        planned = [recorded.get(id(one)) or _with_seed(like, one) for one in planned]
    if not args.seeds:
        return train(planned[0])
    results, unwritten = {}, []
    for one in planned:
        try:
            results[one.seed] = train(one)
        except runs.FigureNotWritten as error:  # the run is finished: the set goes on
            results[one.seed], unwritten = error.metrics, unwritten + error.failures
    if hardware.is_main_process():
        print(seed_summary(results))
    if unwritten:
        raise runs.FigureNotWritten(unwritten)
    return results


def _with_seed(settings, one):
    """A new run of a --seeds set: the settings of the set (`settings`, of one of its runs), with its own
    seed and folder."""
    new = copy.copy(settings)
    new.seed, new.run_dir, new.resume = one.seed, one.run_dir, False
    return new


def seed_summary(results: dict) -> str:
    """Mean ± sample standard deviation over seeds of the final loss and accuracy of every split (one seed:
    its values, and that a spread needs two)."""
    seeds = list(results)
    if len(seeds) == 1:
        lines = [f"\nover 1 seed ({seeds[0]}): a spread needs two or more seeds (--seeds 0 1 2)"]
    else:
        lines = [f"\nover {len(seeds)} seeds ({', '.join(map(str, seeds))}): mean ± sample std, then each seed"]
    for split in ("train", "validation", "test"):
        for measure in ("loss", "accuracy"):
            values, label = [results[s][split][measure] for s in seeds], f"{split} {measure}"
            if len(values) == 1:
                lines.append(f"  {label:19s} {values[0]:.4f}")
                continue
            lines.append(f"  {label:19s} {statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}   "
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
    except Exception as error:
        memory = hardware.out_of_memory(error)  # outside a run's training (runs.memory_watched): loading the data
        if memory:
            if debug:
                traceback.print_exc()
            print(f"error: out of memory: {memory} is full; lower --batch-size (or --subset)", file=sys.stderr)
            sys.exit(1)
        traceback.print_exc()
        print(f"error: {type(error).__name__}: {error}\nThis is a bug in the project, not in how you ran it: "
              "please report it with the command line and the traceback above.", file=sys.stderr)
        sys.exit(1)
    finally:
        runs.release_all()  # a run that failed before writing anything leaves no folder behind
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        if argv is None:  # the command line's process: a Ctrl-C while Python shuts down is no traceback
            startup.quiet_ctrl_c("as it exited: what it reported above is done")

