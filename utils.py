"""Small shared helpers: the project's errors, seeding, atomic files and JSON."""
from __future__ import annotations

import errno
import functools
import glob
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

# numpy's seed is a 32-bit unsigned integer; torch's and Python's accept at least that.
MAX_SEED = 2 ** 32 - 1


class UserError(Exception):
    """A problem the user can fix (bad data, bad path, bad checkpoint).

    The command line prints it as one line, without a traceback, and exits with `exit_code`.
    """
    exit_code = 1


class UsageError(UserError):
    """A command-line value that parsed but cannot work here (e.g. a device this machine lacks)."""
    exit_code = 2


# ---------------------------------------------------------------- seeding

def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- training

def batch_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of a training batch whose highest logit is the label, from the step's own logits (no extra
    pass), left on the device (no sync)."""
    return (logits.detach().argmax(1) == labels).float().mean()


# ---------------------------------------------------------------- atomic files

@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it (else set and restored)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of `path` left by a writer that was killed (SIGKILL, power loss) mid-write.

    The writer's process id is in the name, so a temporary of a writer still at work is left alone.
    """
    if os.name != "posix":  # os.kill(pid, 0) is no harmless probe elsewhere
        return
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = stale.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _is_write_failure(error: BaseException) -> bool:
    """OSError, or torch.save's RuntimeError when the file could not be written (e.g. a full disk)."""
    if isinstance(error, OSError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("inline_container" in text or "unexpected pos" in text
                                                or "write" in text.lower())


def _write_failure_reason(error: BaseException, folder: Path) -> str:
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    try:
        full = full or os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):
        pass
    if full:
        return "the disk is full"
    return getattr(error, "strerror", None) or str(error).splitlines()[0][:200]


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    A crash mid-write leaves the previous file untouched: rename is atomic on POSIX. A failed
    write (full disk, folder gone) is one UserError naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not _is_write_failure(error):
            raise
        kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
        raise UserError(f"could not write {path}: {_write_failure_reason(error, path.parent)}; {kept}; "
                        "free some space or choose another folder") from None


def save_checkpoint(state: dict, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint this project wrote; tensors, numbers, strings and containers only (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UserError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}); "
                        "delete it or start over with --overwrite") from None


def write_json(data, path: Path) -> None:
    write_text(json.dumps(data, indent=2) + "\n", path)


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a JSON file") from None
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
