"""Small shared helpers: errors, seeding, devices, precision, atomic files and figures."""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Activation functions the Task 3 scripts can switch between (--activation).
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU,
               "tanh": nn.Tanh}


class UserError(Exception):
    """A problem the user can fix (bad data, bad path, bad checkpoint).

    The command-line wrapper prints it as one line and exits 1, without a traceback.
    """


# ---------------------------------------------------------------- seeding and devices

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"unknown device {name!r} ({error}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available here; use --device cpu")
    return device


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AMX or AVX512-BF16)."""
    # Private torch helpers: a torch without them gets fp32, the safe choice, instead of a crash.
    # oneDNN is what runs bf16 convolutions fast; without it autocast would only add casts.
    checks = [getattr(torch.cpu, name, lambda: False)
              for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn 'auto' into the fastest precision this device runs without losing accuracy."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Let glibc reuse freed activation memory instead of handing it back to the OS.

    glibc serves every allocation above 32 MiB (a large batch's activations, their gradients) with
    a fresh mmap and unmaps it on free, so each training step page-faults them all in again: about
    80,000 page faults per Task 3d step at batch 512 on the 2-core CPU, where keeping the blocks in
    the heap took a step from 868 to 765 ms. Returns False (and changes nothing) where the C
    library has no mallopt (macOS, Windows).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


# ---------------------------------------------------------------- atomic files

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    A crash mid-write leaves the previous file untouched: rename is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(state: dict, path: Path) -> None:
    _atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}); "
                        "delete it or start over with --overwrite") from None


def write_json(data, path: Path) -> None:
    text = json.dumps(data, indent=2) + "\n"
    _atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is truncated or not valid JSON ({error}); rerun the script that writes it") from None


def check_writable(folder: Path) -> None:
    """Fail before training, not after an hour, when outputs could not be saved."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: it is a file, not a folder; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(f"cannot write to {folder} ({error.strerror}); "
                        "choose another folder or fix its permissions") from None


# ---------------------------------------------------------------- figures

def _smoothed(steps, values, window):
    """Mean and spread of the training loss over windows of `window` steps."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    count = len(values) // window
    if count < 2:
        return steps, values, None
    values = values[: count * window].reshape(count, window)
    centres = steps[: count * window].reshape(count, window).mean(axis=1)
    return centres, values.mean(axis=1), values.std(axis=1)


def plot_runs(runs: dict, path: Path, title: str | None = None, show_test: bool = False) -> Path:
    """Training and validation loss (left) and validation accuracy (right), one colour per run.

    `runs` maps a label to a history as written by the Trainer (history.json).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    for index, (label, history) in enumerate(runs.items()):
        colour = f"C{index}"
        prefix = f"{label} " if len(runs) > 1 else ""
        train = history["train_loss"]
        window = max(1, len(train["values"]) // 100)
        steps, mean, spread = _smoothed(train["steps"], train["values"], window)
        loss_axis.plot(steps, mean, color=colour, alpha=0.8, label=f"{prefix}training loss")
        if spread is not None:
            loss_axis.fill_between(steps, mean - spread, mean + spread, color=colour, alpha=0.15)
        validations = history["validation"]
        val_steps = [point["step"] for point in validations]
        loss_axis.plot(val_steps, [point["loss"] for point in validations], color=colour,
                       linestyle="--", marker="o", markersize=3, label=f"{prefix}validation loss")
        if show_test and validations and "test_loss" in validations[0]:
            loss_axis.plot(val_steps, [point["test_loss"] for point in validations], color=colour,
                           linestyle=":", marker="s", markersize=3, label=f"{prefix}test loss")
        accuracy_axis.plot(val_steps, [point["accuracy"] for point in validations], color=colour,
                           marker="o", markersize=3, label=f"{prefix}validation accuracy")
    loss_axis.set(xlabel="training step", ylabel="cross-entropy loss", title="Loss")
    accuracy_axis.set(xlabel="training step", ylabel="accuracy", title="Validation accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def save_figure(figure, path: Path) -> Path:
    """Write `figure` as a PNG atomically (a crash never leaves half an image) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        _atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror}); choose another --plot-dir") from None
    finally:
        plt.close(figure)
    return path


def format_metrics_table(columns: dict, digits: int = 3) -> str:
    """Markdown table: rows train/validation/test loss and accuracy, one column per run."""
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in ("train", "validation", "test"):
        for measure in ("loss", "accuracy"):
            cells = [f"{columns[name][split][measure]:.{digits}f}" for name in names]
            lines.append(f"| {split} {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
