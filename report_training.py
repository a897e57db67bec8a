"""`report.py --train-missing`: the whole assignment in one command. Every run the report needs that is missing,
unfinished or not the real thing (a smoke run, random weights, another size or split) is trained, continued or
replaced, in the assignment's order, each by its own script as from the shell; what cannot run here (no ImageNet
weights for Task 4a, no photo for 4b/4c) is said up front and skipped; a run that fails does not stop the others,
and the report is written at the end whatever happened."""
from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from report_runs import (BROKEN, BY_NAME, EXPERIMENTS, FINISHED, IN_PROGRESS, KINDS, MISSING, RUNS, UNFINISHED,
                         command_for, duration_text, load, script_argv, seconds_on)
from run_folder import ROOT, caveats
from trainer import TrainingInterrupted


def add_arguments(parser) -> None:
    group = parser.add_argument_group("training what is missing")
    group.add_argument("--train-missing", action="store_true",
                       help="first train, in order, every run the report needs that is missing, continue the "
                            "unfinished ones and replace those that are not the real thing (as --overwrite: the old "
                            "run is kept until the new one's first checkpoint); prints the plan and an estimate first")
    group.add_argument("--with-experiments", action="store_true",
                       help="with --train-missing: also Task 3c's experiments (each about as long as Model 1)")
    group.add_argument("--skip", nargs="+", default=[], metavar="RUN", choices=sorted(BY_NAME),
                       help="with --train-missing: runs not to train (e.g. --skip task4a)")
    group.add_argument("--data-dir", default=None, help="with --train-missing: the CIFAR-10 folder to train on")


@dataclass
class Step:
    entry: object
    action: str          # "train", "continue" or "replace"
    argv: list
    why: str = ""


def machine_kinds() -> tuple[list[str], str]:
    """The kinds of report_runs.KINDS that describe this machine (most specific first), and in words."""
    import torch

    import hardware
    if torch.cuda.is_available():
        return ["gpu"], f"this machine's GPU ({torch.cuda.get_device_name()})"
    precision, _ = hardware.resolve_precision("auto", torch.device("cpu"))
    if precision == "bf16":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return (["cpu-amx", "cpu-bf16"] if amx else ["cpu-bf16"]), \
            f"this CPU in bf16 ({'AMX' if amx else 'AVX512-BF16'})"
    avx512 = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AVX512_BF16")
    return (["cpu-fp32"] if avx512 else ["cpu-avx2", "cpu-fp32"]), "this CPU in fp32"


def preconditions(steps: list[Step], image: Path | None) -> tuple[list[Step], list[str]]:
    """The steps that can run here, and one line for each thing that cannot (checked before any training)."""
    import resnet

    kept, lines = [], []
    weights = resnet.weights_cache_dir() / resnet.WEIGHTS_FILE
    for step in steps:
        if step.entry.name == "task4a" and "--weights" not in step.argv and not weights.is_file():
            try:
                resnet.imagenet_state_dict()  # downloads them once, as task4a.py would
            except Exception as error:  # whatever the failure (offline, a damaged cache): not here, skip it
                lines.append(f"skipped {step.entry.title}: {error}")
                continue
        kept.append(step)
    photo = resnet.resolve_image(image or resnet.DEFAULT_IMAGE)
    if not Path(photo).is_file():
        lines.append(f"skipped Tasks 4b and 4c (figures): {photo} is missing; copy the assignment's zebra.jpg there "
                     "or pass --image PATH")
    elif not weights.is_file():
        lines.append("Tasks 4b and 4c (figures) are drawn only once the ImageNet weights are in the torch hub cache "
                     f"({weights.parent})")
    return kept, lines


def plan(runs_dir: Path, data_dir: str | None, with_experiments: bool, skip=()) -> tuple[list[Step], list[str]]:
    """(what to train, in order; one line for each run left as it is and why)."""
    steps, lines = [], []
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    for entry in (*RUNS, *(EXPERIMENTS if with_experiments else ())):
        state, run, message = load(entry, runs_dir)
        # What the default command changes (smoke flags, random weights...), not the data it is given: a run on
        # a copy of another size would be replaced by another such run, again and again.
        notes = caveats({**run["config"], "data": {}}) if run else []
        if entry.name in skip:
            lines.append(f"skipped {entry.title} (--skip)")
        elif state == FINISHED and not notes:
            continue
        elif state == IN_PROGRESS:
            lines.append(f"skipped {entry.title}: another process is training it right now")
        elif state == BROKEN:
            lines.append(f"skipped {entry.title}: {message.removeprefix('unusable: ')}; or start it over with "
                         f"`{command_for(entry, runs_dir, '--overwrite')}`")
        elif notes:  # finished or not: a smoke run, random weights... is replaced, never continued
            steps.append(Step(entry, "replace", script_argv(entry, runs_dir, "--overwrite", *extra),
                              f"{state}, not the real thing: {'; '.join(notes)}"))
        elif state == UNFINISHED:
            steps.append(Step(entry, "continue", script_argv(entry, runs_dir, "--resume", *extra), "unfinished"))
        else:  # missing
            steps.append(Step(entry, "train", script_argv(entry, runs_dir, *extra), MISSING))
    return steps, lines


def train_one(argv: list[str]) -> int:
    """Run one task script as its own process (as from the shell); its exit code."""
    process = subprocess.Popen([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=ROOT)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the script too (one process group): it finishes its step and saves last.pt,
        # which can take long (a Task 4a step on a CPU). Killing it now would lose that; a second
        # Ctrl-C reaches it as well and stops it at once.
        with contextlib.suppress(KeyboardInterrupt):
            process.wait()
        raise


def train_missing(args, argv: list[str]) -> list[str]:
    """Print the plan and its estimate, then train it; the titles of the runs that failed."""
    steps, lines = plan(args.runs_dir, args.data_dir, args.with_experiments, args.skip)
    steps, unable = preconditions(steps, getattr(args, "image", None))
    for line in lines + unable:
        print(line, file=sys.stderr)
    if not steps:
        print("every run the report needs is finished and real; nothing to train", file=sys.stderr)
        return []
    kinds, where = machine_kinds()
    total, unknown = 0.0, False
    print(f"will train {len(steps)} run(s), in this order; the times are for machines like {where}, as README.md "
          "measured them (yours may differ):", file=sys.stderr)
    for step in steps:
        seconds, kind = seconds_on(step.entry, kinds)
        total += seconds or 0
        unknown |= seconds is None
        cost = "? (not measured)" if seconds is None else \
            f"~{duration_text(seconds)}{' estimated' if kind in step.entry.estimated else ''} on {KINDS[kind]}"
        print(f"  {step.action:8s} {step.entry.title} ({step.why}): python {shlex.join(step.argv)}   {cost}",
              file=sys.stderr)
    print(f"in all about {duration_text(total)}{' plus the unmeasured ones' if unknown else ''}", file=sys.stderr)
    failed = []
    for step in steps:
        try:
            code = train_one(step.argv)
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted while training {step.entry.title}: runs finished so far are kept, and this one as its "
                f"script said above; `python report.py {shlex.join(argv)}` continues where it stopped") from None
        if code != 0:
            print(f"training {step.entry.title} failed (exit {code}, see above); going on with the others",
                  file=sys.stderr)
            failed.append(step.entry.title)
    return failed
