"""The runs the report is made of: their folders, the commands that make them, how long those take, and what
each folder holds now, in one vocabulary that the report, --train-missing and task3_compare.py share: the run
folder's own words (run_folder.status: FINISHED, UNFINISHED, IN_PROGRESS), and two for a run the report cannot use
(MISSING, BROKEN)."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from run_folder import (FINISHED, IN_PROGRESS, MOVING, ROOT, RUNS_DIR, UNFINISHED, caveats, is_being_trained, read_run,
                        run_folders, status)
from utils import UserError

# What a run's folder holds, as the report says it: the run folder's words, and a run that is not there or that
# cannot be read.
MISSING, BROKEN = "missing", "broken"


@dataclass(frozen=True)
class RunEntry:
    name: str                 # the run directory, runs/<name>
    title: str                # as in figures and tables
    label: str                # short, for comparisons
    command: str              # what makes it (from this folder; --run-dir added where it is not the default)
    figure: bool = True       # drawn on its own (the 3c runs appear in the Task 3c figure and table only)
    experiment: str = ""      # a Task 3c experiment: its key in reference.EXPERIMENTS
    # How long the default command takes, in seconds, by machine kind (machine_kinds): from the measurements in
    # README.md and docs/; the kinds in `estimated` are derived from other runs, not timed.
    seconds: dict = field(default_factory=dict)
    estimated: tuple = ()

    @property
    def own_folder(self) -> bool:
        """Whether the command's default --run-dir is runs/<name> (a 3c experiment needs --run-dir)."""
        return not self.experiment


# On the 2-core AMD EPYC (bf16; fp32 from Task 2's ratio where not timed), the 2-core Intel Xeon with AMX (both
# threads) and an NVIDIA H100: README.md's task table and docs/results.md, docs/task3d.md, docs/task4.md.
MODEL1_SECONDS = {"gpu": 21, "cpu-amx": 350, "cpu-bf16": 1700, "cpu-fp32": 3400}
RUNS = (
    RunEntry("task2", "Task 2", "Task 2", "python task2.py",
             seconds={"gpu": 17, "cpu-amx": 106, "cpu-bf16": 350, "cpu-fp32": 750}),
    RunEntry("task3_model1", "Task 3 Model 1", "Model 1", "python task3_model1.py",
             seconds=MODEL1_SECONDS, estimated=("cpu-fp32",)),
    RunEntry("task3_model2", "Task 3 Model 2", "Model 2", "python task3_model2.py",
             seconds={"gpu": 20, "cpu-amx": 431, "cpu-bf16": 1400, "cpu-fp32": 2800}, estimated=("cpu-fp32",)),
    RunEntry("task3c_before", "Task 3c before deepening", "before deepening",
             "python task3_model1.py --convs-per-stage 1", figure=False,
             seconds={"cpu-amx": 91, "cpu-bf16": 400, "cpu-fp32": 800}, estimated=("cpu-fp32",)),
    RunEntry("task3d", "Task 3d", "Task 3d", "python task3d.py",
             seconds={"cpu-amx": 460, "cpu-bf16": 860, "cpu-fp32": 1060, "cpu-avx2": 1635}, estimated=("cpu-bf16",)),
    RunEntry("task4a", "Task 4a", "Task 4a", "python task4a.py",
             seconds={"gpu": 40, "cpu-bf16": 12 * 3600, "cpu-fp32": 20 * 3600},
             estimated=("gpu", "cpu-bf16", "cpu-fp32")),
)


def experiment(name: str, title: str, label: str, change: str, kind: str, amx: float, scale: float = 1) -> RunEntry:
    """A Task 3c experiment: Model 1 with `change`; it costs about `scale` times Model 1 (timed with AMX)."""
    return RunEntry(name, f"Task 3c: {title}", label, f"python task3_model1.py {change}", figure=False,
                    experiment=kind, seconds={**{k: scale * v for k, v in MODEL1_SECONDS.items()}, "cpu-amx": amx},
                    estimated=tuple(k for k in MODEL1_SECONDS if k != "cpu-amx"))


# Task 3c's other experiments, each Model 1 with one change (the reference tried each; --train-missing trains
# them only when asked).
EXPERIMENTS = (
    experiment("task3c_elu", "ELU activations", "ELU", "--activation elu", "activation", 363),
    experiment("task3c_adam", "Adam", "Adam", "--optimizer adam --lr 1e-3", "optimizer", 317),
    experiment("task3c_rmsprop", "RMSprop", "RMSprop", "--optimizer rmsprop --lr 1e-4", "optimizer", 336),
    experiment("task3c_l2", "L2 regularisation", "L2", "--weight-decay 5e-4", "l2", 288),
    experiment("task3c_wider", "more filters", "more filters", "--widths 64 128 256", "wider", 821, scale=2.3),
)
BY_NAME = {entry.name: entry for entry in (*RUNS, *EXPERIMENTS)}


# ---------------------------------------------------------------- commands and their cost

def script_argv(entry: RunEntry, runs_dir: Path, *extra: str) -> list[str]:
    """The script and flags that make `entry`'s run in `runs_dir`, then `extra` (--resume, --data-dir ...)."""
    argv = shlex.split(entry.command)[1:]
    if not entry.own_folder or Path(runs_dir).resolve() != RUNS_DIR.resolve():
        folder = Path(runs_dir) / entry.name
        argv += ["--run-dir", str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder)]
    return argv + list(extra)


def command_for(entry: RunEntry, runs_dir: Path, *extra: str) -> str:
    return f"python {shlex.join(script_argv(entry, runs_dir, *extra))}"


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


# Where each kind was measured, in words.
KINDS = {"gpu": "an NVIDIA H100", "cpu-amx": "a 2-core CPU with AMX (bf16)",
         "cpu-bf16": "a 2-core CPU with AVX512-BF16 (bf16)", "cpu-fp32": "a 2-core CPU in fp32",
         "cpu-avx2": "a 2-core CPU with AVX2 only (fp32)"}


def seconds_on(entry: RunEntry, kinds) -> tuple[float | None, str | None]:
    """(seconds, kind) of the first of `kinds` (most specific first) that `entry` has a time for."""
    return next(((entry.seconds[kind], kind) for kind in kinds if kind in entry.seconds), (None, None))


def how_long(entry: RunEntry) -> str:
    """The default command's time on a CPU and on a GPU, as measured (or estimated)."""
    parts = []
    for kinds in (("cpu-amx",), ("cpu-bf16",), ("cpu-fp32", "cpu-avx2"), ("gpu",)):
        seconds, kind = seconds_on(entry, kinds)
        if seconds:
            estimate = " (estimated)" if kind in entry.estimated else ""
            parts.append(f"about {duration_text(seconds)} on {KINDS[kind]}{estimate}")
    return "; ".join(parts) or "not measured"


# ---------------------------------------------------------------- what each folder holds

def load(entry: RunEntry, runs_dir: Path):
    """(state, run data or None, message) of `entry`'s folder in `runs_dir`: one of the states above, counted as
    run_folder.status counts it (a finished run set aside by a killed --overwrite is finished)."""
    folder = Path(runs_dir) / entry.name
    try:
        held = status(folder)
        if held == FINISHED:
            aside = run_folders(folder)[0]
            # An --overwrite stopped before its first checkpoint: the finished run is whole, (partly) set aside.
            return FINISHED, read_run(folder), "" if aside == folder else (
                f"{folder}: read from {aside.name}/, where an --overwrite that stopped before its first checkpoint "
                f"left {'part of it' if aside.name == MOVING else 'it'}; the next start of its script puts "
                "it back")
        if is_being_trained(folder):
            state, message = IN_PROGRESS, f"{folder} is being trained right now (drawn as far as it got)"
        elif held == UNFINISHED:
            state = UNFINISHED
            message = f"{folder} is unfinished: continue it with `{command_for(entry, runs_dir, '--resume')}`"
        else:
            return MISSING, None, f"{folder} is missing: make it with `{command_for(entry, runs_dir)}`"
        try:
            return state, read_run(folder, finished=False), message
        except UserError:  # nothing to draw yet (no validation, or written by an older version)
            return state, None, message
    except UserError as error:
        return BROKEN, None, f"unusable: {error}"


def read_all(runs_dir: Path, entries=None) -> dict:
    """name -> {"state", "run", "message"} for each of `entries` (default: the assignment's RUNS)."""
    found = {}
    for entry in entries or RUNS:
        state, run, message = load(entry, runs_dir)
        found[entry.name] = {"state": state, "run": run, "message": message}
    return found


def not_real(item: dict) -> list[str]:
    """Why a run read by load() is not the real thing (run_folder.caveats of its settings and state); [] when it is."""
    return caveats(item["run"]["config"], item["state"]) if item.get("run") else []


def state_text(item: dict) -> str:
    """A run's state as the summary says it: 'smoke run' or 'random weights' rather than 'finished' for a
    finished run that is not the real thing."""
    if item["state"] != FINISHED:
        return item["state"]
    notes = not_real(item)
    if not notes:
        return FINISHED
    short = notes[0].split(":")[0].split(" (")[0]
    return short if short in ("smoke run", "random weights") else "not the real thing"


def metrics_table(columns: dict, digits: int = 3) -> str:
    """Markdown table: rows train/validation/test loss and accuracy, one column per run's metrics."""
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in ("train", "validation", "test"):
        for measure in ("loss", "accuracy"):
            cells = [f"{columns[name][split][measure]:.{digits}f}" for name in names]
            lines.append(f"| {split} {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
