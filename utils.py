"""Small shared helpers: the project's errors, seeding, atomic files and JSON."""
from __future__ import annotations

import errno
import functools
import glob
import json
import os
import random
import stat
import tempfile
from pathlib import Path

import numpy as np
import torch

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


# ---------------------------------------------------------------- where caches go

def sum_in_order(values) -> float:
    """Float64 sum, left to right (the same result on every machine for the same values)."""
    total = 0.0
    for value in values:
        total += value
    return total


def cache_home() -> Path:
    """The user's cache folder: $XDG_CACHE_HOME, else ~/.cache. The XDG spec counts an empty or relative
    value as unset (else a cache of hundreds of MB would land in whatever folder the script runs from)."""
    value = os.environ.get("XDG_CACHE_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".cache"


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


def remove_stale_temporaries(path: Path) -> None:
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


def _errnos(error: BaseException) -> set:
    """The errno of `error` and of the errors it was raised from: torch.save reports a full disk as a
    RuntimeError ("unexpected pos ...") raised while handling the OSError that says ENOSPC."""
    found, seen = set(), set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found.add(getattr(error, "errno", None))
        error = error.__cause__ or error.__context__
    return found


def _write_failure(error: BaseException, folder: Path) -> tuple[str, str]:
    """(what went wrong, what to do) for a failed write into `folder`. Read while a failed write's
    temporary file still exists: deleting it frees the space whose lack made the write fail."""
    codes, space = _errnos(error), None
    for place in [folder, *Path(folder).absolute().parents]:  # the nearest that exists: a folder not yet made
        try:
            space = os.statvfs(place)
            break
        except (OSError, AttributeError):
            continue
    if errno.EROFS in codes:
        return "the file system is read-only", "choose another folder"
    if errno.EDQUOT in codes:
        return "your disk quota is exceeded", "free some space or choose another folder"
    if space is not None and space.f_files and space.f_favail == 0:
        return "the disk has no free inodes (too many files)", "delete some files or choose another folder"
    if errno.ENOSPC in codes or (space is not None and space.f_bavail == 0):
        return "the disk is full", "free some space or choose another folder"
    reason = getattr(error, "strerror", None) or str(error).splitlines()[0][:200]
    return reason, "choose another folder or fix its permissions"


class WriteError(UserError):
    """A file that could not be written: `path`, why (`reason`), what is on disk instead (`kept`) and what
    to do (`fix`), so that a caller for whom the file is not essential (a figure) can go on and say so."""

    def __init__(self, path: Path, reason: tuple[str, str], kept: str):
        self.path, (self.reason, self.fix), self.kept = Path(path), reason, kept
        super().__init__(f"could not write {path}: {self.reason}; {kept}; {self.fix}")


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path` (see atomic_writes)."""
    atomic_writes({path: write})


def atomic_writes(writes: dict) -> None:
    """Write each file (path: write(handle)) through a temporary file in its folder; once every one is
    written, rename them over their paths: files that belong together (a figure's PNG and PDF) are
    replaced together, or, when one cannot be written, none is.

    A crash mid-write leaves the previous files untouched: rename is atomic on POSIX. A file that
    cannot be written (full disk, no inodes left, read-only or missing folder) is one WriteError naming it.
    """
    temporaries, path = {}, None
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            fd, temporaries[path] = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                                     suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporaries[path], 0o666 & ~_umask())  # mkstemp creates 0600; give it normal permissions
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
    except BaseException as error:
        reason = _write_failure(error, path.parent) if _is_write_failure(error) else None
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        if reason is None:
            raise
        previous = [Path(target).name for target in writes if os.path.exists(target)]
        kept = (f"the previous {' and '.join(previous)} {'is' if len(previous) == 1 else 'are'} intact" if previous
                else "nothing was written")
        raise WriteError(path, reason, kept) from None


def append_text(text: str, path: Path) -> None:
    """Append `text` (a log line); a failed write is one UserError naming the file, which is left as it was
    (a half-written line would garble it)."""
    path, data = Path(path), text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as error:
        raise WriteError(path, _write_failure(error, path.parent), "nothing was written") from None
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as error:
            reason = _write_failure(error, path.parent)
            os.ftruncate(fd, size)
            raise WriteError(path, reason, f"{path.name} is as it was") from None
    finally:
        os.close(fd)


def save_checkpoint(state: dict, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def read_torch_file(path, what: str, fix: str, unreadable: str = "cannot be read as a PyTorch file",
                    fix_unreadable: str | None = None, map_location="cpu"):
    """The one torch.load of the project: a local file, weights only (tensors, numbers, strings and
    containers; no code runs). Every failure is one UserError naming `what` (the flag, or the kind of file)
    and the file: missing or not a file (with `fix`), or not loadable (`unreadable`, with `fix_unreadable`,
    else `fix`)."""
    path = require_file(path, what, fix)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise UserError(f"{what} {path} {unreadable} ({type(error).__name__}); {fix_unreadable or fix}") from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint this project wrote (a run's last.pt or best.pt)."""
    return read_torch_file(path, "checkpoint", "train first, or point --run-dir at a run that holds it",
                           "is corrupt or not a checkpoint", "delete it or start over with --overwrite", map_location)


def write_json(data, path: Path) -> None:
    write_text(json.dumps(data, indent=2) + "\n", path)


def json_value(value):
    """A setting as JSON holds it: a path as text, a tuple as a list."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path, fix: str | None = "rerun the script that writes it"):
    """The JSON in `path`; a file that is missing or not JSON is one UserError naming it (and `fix` for a damaged one,
    where given)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is truncated or not valid JSON ({error})" + (f"; {fix}" if fix else "")) from None


def check_writable(folder: Path) -> None:
    """Fail before training, not after an hour, when outputs could not be saved. What stands where a folder
    must be (or made), `folder` itself or one above it, is named: a file, a link to nowhere, a link loop."""
    folder = Path(folder)
    try:
        for place in [folder, *folder.parents]:  # the nearest thing that exists: a folder, or what blocks one
            try:
                kind = path_kind(place)
            except OSError as error:
                if error.errno == errno.ELOOP:  # a link loop further up
                    continue
                raise
            if kind is None:
                continue
            if kind != "a folder":
                it = "it" if place == folder else place
                fix = (f"create {place.parent / os.readlink(place)} or choose another folder"
                       if kind.startswith(BROKEN_LINK) else "choose another folder")
                raise UserError(f"cannot write to {folder}: {it} is {not_a(kind, 'folder')}; {fix}")
            break
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason, fix = _write_failure(error, folder)
        raise UserError(f"cannot write to {folder} ({reason}); {fix}") from None


BROKEN_LINK = "a symbolic link to"


def path_kind(path: Path) -> str | None:
    """What is at `path`, for messages: 'a file', 'a folder', 'a FIFO (named pipe)', a symbolic link that
    leads nowhere or in a loop, ...; None if nothing. Raises OSError when that cannot be told (e.g. a folder
    on the way that may not be read)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return f"{BROKEN_LINK} {os.readlink(path)}, which does not exist"
        return None
    except OSError as error:
        if error.errno == errno.ELOOP and os.path.islink(path):
            return "a symbolic link loop (links that lead back to each other)"
        raise
    kinds = [(stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def not_a(kind: str, expected: str) -> str:
    """'a FIFO (named pipe), not a file': what path_kind found where `expected` (a file, a folder) should be."""
    return kind if kind.startswith(BROKEN_LINK) else f"{kind}, not a {expected}"


def require_file(path: Path, what: str, expected: str) -> Path:
    """`path` if it is a regular file, else one UserError saying what `what` (e.g. "--image") names and
    what was `expected`. (A device or a FIFO would be read forever, or block.)"""
    path = Path(path)
    try:
        kind = path_kind(path)
    except OSError as error:
        raise UserError(f"{what} {path} cannot be read ({error.strerror}); {expected}") from None
    if kind is None:
        raise UserError(f"{what} {path} does not exist; {expected}")
    if kind != "a file":
        raise UserError(f"{what} {path} is {not_a(kind, 'file')}; {expected}")
    return path
