"""The settings schema: every training setting with its one default (`TrainConfig`) and each setting's role.

A setting's role says what it is to a run: part of the experiment (recorded in the checkpoints, --resume must
keep it), its length (part of the experiment, but --resume may change it), how the run is carried out (not the
experiment), or what the command does (never taken from a run). What --resume compares, what the checkpoints
record and what the report calls the experiment follow from it. TrainConfig's fields declare their own roles;
`SHARED_FLAGS` is the one table of the other shared flags' roles, which cli.training_parser reads as it declares
them, so `role()` answers the same whatever has been imported. A task's own flags are part of the experiment.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

EXPERIMENT = "experiment"  # what the run computes: recorded in the checkpoints, --resume must keep it
LENGTH = "length"          # how long it trains: part of the experiment, but --resume may change it
HOW = "how"                # how and where the run is carried out: not the experiment, --resume may change it
COMMAND = "command"        # what this command does (--resume, --run-dir ...): never taken from the run

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


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
    # Set by the run (runs.Run.start) for the device (hardware.py), from shared flags that cli.training_parser
    # declares itself (--precision auto, --cuda-graphs, --compile) or from none:
    precision: str = option("fp32", flag=False)          # fp32, bf16 or fp16 (autocast)
    # (channels_last is a memory layout: a run may move between a CPU and a GPU in the same precision.)
    channels_last: bool = option(False, flag=False, role=HOW)
    cuda_graphs: bool = option(False, flag=False, role=HOW)  # replay each training step as one CUDA graph
    compile: bool = option(False, flag=False, role=HOW)      # the Trainer compiles its network (torch.compile)
    log_every: int = option(20, flag=False, role=HOW)        # steps between progress-bar updates (a GPU sync each)


# The role of every shared flag that is not one of TrainConfig's (by its setting's name), and of the keys that
# cli.parse and cli.recorded_settings add to a command's settings.
SHARED_FLAGS = {
    # data
    "data_dir": HOW, "seed": EXPERIMENT, "validation_fraction": EXPERIMENT, "augment": EXPERIMENT,
    # device (--precision and --cuda-graphs set TrainConfig's fields)
    "device": HOW, "deterministic": HOW,
    # outputs
    "run_dir": COMMAND, "plot_dir": HOW, "resume": COMMAND, "overwrite": COMMAND, "tensorboard": HOW,
    # smoke runs
    "subset": EXPERIMENT, "debug": COMMAND,
    # seeds and evaluation
    "seeds": COMMAND, "evaluate_only": COMMAND,
    # not flags: the script's name (a variant's: task3c_before), the flags the command line gave, the script's
    # own defaults, the script, and where a recorded data folder came from
    "name": EXPERIMENT, "flags_given": COMMAND, "script_defaults": COMMAND, "script": COMMAND,
    "data_dir_from": COMMAND,
}
ROLES = {**SHARED_FLAGS, **{f.name: f.metadata["role"] for f in fields(TrainConfig)}}

# The settings a run's record must hold to continue it: what it computes is checked against the checkpoints'
# signature, but nothing else records how long it trains.
LENGTH_SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.metadata["role"] == LENGTH)


def role(setting: str) -> str:
    """EXPERIMENT, LENGTH, HOW or COMMAND (a task's own flags, not in ROLES, are the experiment)."""
    return ROLES.get(setting, EXPERIMENT)
