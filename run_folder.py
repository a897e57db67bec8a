"""The run folder: its files, its lock, the rules for starting over in it, and reading a run back from it.

A run directory (runs/<script>/ by default) holds the files FILES names (config.json, history.json, metrics.json,
metrics.csv, best.pt, last.pt; evaluation.json after --evaluate-only), tensorboard/ with --tensorboard, and the
figure of a run outside runs/<script>. Rules that keep every result a user made:
- a folder another process is training into is locked (released by the OS, even after SIGKILL);
- a folder holding a run, finished or not, or any other file, is continued only with --resume and
  replaced only with --overwrite; even then only the files this project writes are replaced, and they are
  moved aside (.previous-run/) until the new run's first last.pt is on disk. A process killed before that
  (SIGKILL, power loss) leaves them aside: the next script started on the folder puts them back.
What a folder holds is said in one vocabulary (status: FINISHED, UNFINISHED, OTHER, EMPTY; IN_PROGRESS while
another process trains into it), which the report shares. The Trainer tells its folder of each write (RunFolder);
RunFiles keeps the rules above while it does. A run is read back by read_run (its record, history and metrics,
each checked) and read_record (how it was made, for --resume and --evaluate-only).
"""
from __future__ import annotations

import math
import numbers
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import dataloaders
from settings import LENGTH_SETTINGS
from utils import UsageError, UserError, WriteError, check_writable, load_checkpoint, read_json

if TYPE_CHECKING:  # (they import this module)
    from runs import Run
    from trainer import Trainer

ROOT = Path(__file__).resolve().parent
RUNS_DIR = ROOT / "runs"
PLOT_DIR = ROOT / "plots"
# The files of a run folder, named here once (the Trainer, the folder's rules, the report and the tests use them).
FILES = SimpleNamespace(
    CONFIG="config.json",           # every setting, once
    HISTORY="history.json",         # losses, accuracies, learning rates
    METRICS="metrics.json",         # final train/validation/test numbers
    METRICS_CSV="metrics.csv",      # one row per validation (a live log)
    LAST="last.pt",                 # resumable state (model, optimizer, RNG, position)
    BEST="best.pt",                 # weights with the lowest validation loss so far
    EVALUATION="evaluation.json",   # --evaluate-only's numbers of best.pt
)
# last.pt first: it is what tells a replacement that had begun moving the old files (see settle).
# A run outside runs/<script> draws its figure beside itself (figure_path): a run's file like the others.
CURVES = ("curves.png", "curves.pdf")
OUTPUTS = (FILES.LAST, FILES.CONFIG, FILES.HISTORY, FILES.METRICS, FILES.METRICS_CSV, FILES.BEST, FILES.EVALUATION,
           *CURVES)
TENSORBOARD_DIR = "tensorboard"
PREVIOUS = ".previous-run"          # a replaced run's files, until the new run's first checkpoint is on disk
MOVING = ".previous-run.partial"    # the same while they are being moved there
# What a folder may hold and still count as empty: the lock, temporaries of a killed writer, a Finder file.
NOT_A_RUN = {".lock", ".DS_Store", PREVIOUS, MOVING}

# What a run folder holds (status), in the one vocabulary the report shares (report_runs adds its own words for
# a run it cannot use). IN_PROGRESS: another process is training into it (it holds the folder's lock).
FINISHED, UNFINISHED, OTHER, EMPTY = "finished", "unfinished", "other", "empty"
IN_PROGRESS = "in progress"


# ---------------------------------------------------------------- folders

def run_dir_of(args) -> Path:
    return Path(args.run_dir) if args.run_dir is not None else RUNS_DIR / args.name


def seed_run_dir(run_dir: Path, seed: int) -> Path:
    return Path(run_dir).with_name(f"{Path(run_dir).name}-seed{seed}")


def lock(run_dir: Path):
    """An exclusive lock released by the OS when the process dies, even by SIGKILL."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, but nothing else changes
        return None
    handle = open(Path(run_dir) / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise busy(run_dir) from None
    return handle


def busy(run_dir: Path) -> UserError:
    return UserError(f"another run is writing to {run_dir}; wait for it to finish or choose another --run-dir")


def is_being_trained(run_dir: Path) -> bool:
    """True while another process holds the run directory's lock. Probed read-only (a shared lock on the
    file opened for reading), so that runs on a read-only mount or of another user can be read; a lock
    that cannot be probed counts as not held."""
    try:
        import fcntl
        with open(Path(run_dir) / ".lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except (ImportError, OSError):  # no lock file, no fcntl (Windows), no permission: cannot tell
        return False
    return False


def figure_path(run_dir: Path, name: str, plot_dir: Path = PLOT_DIR) -> Path:
    """plots/<name>.png for the task's own run folder (runs/<name>), or wherever --plot-dir points;
    any other run (a smoke run, one of --seeds) draws <run-dir>/curves.png, never replacing the real figure."""
    # (realpath, unlike Path.resolve, takes a symbolic link loop: check_writable names it once it is met.)
    if os.path.realpath(run_dir) == os.path.realpath(RUNS_DIR / name) or \
            os.path.realpath(plot_dir) != os.path.realpath(PLOT_DIR):
        return Path(plot_dir) / f"{name}.png"
    return Path(run_dir) / CURVES[0]


def _is_ignorable(name: str) -> bool:
    return name in NOT_A_RUN or any(name.startswith(f".{output}.") and name.endswith(".tmp") for output in OUTPUTS)


def run_folders(run_dir: Path) -> list[Path]:
    """Where the files of the run in `run_dir` are, the first that holds one wins: a replacement killed
    before its first checkpoint counts as the run it replaced, whose files settle() puts back."""
    run_dir = Path(run_dir)
    if (run_dir / MOVING).is_dir():  # killed while moving the old files aside: some are still here
        return [run_dir / MOVING, run_dir]
    if (run_dir / PREVIOUS).is_dir() and not (run_dir / FILES.LAST).exists():
        return [run_dir / PREVIOUS]
    return [run_dir]


def run_file(run_dir: Path, name: str) -> Path:
    """The run's file `name` where it is (run_folders), else where it belongs."""
    return next((folder / name for folder in run_folders(run_dir) if (folder / name).exists()), Path(run_dir) / name)


def status(run_dir: Path) -> str:
    """FINISHED (metrics.json), UNFINISHED (last.pt without metrics.json), OTHER (files, but no run to continue:
    a run's files without its checkpoint, or anything else) or EMPTY (no folder, or nothing but a lock),
    counting the files where run_folders finds them."""
    run_dir = Path(run_dir)
    folders = run_folders(run_dir)
    if any((folder / FILES.METRICS).exists() for folder in folders):
        return FINISHED
    if any((folder / FILES.LAST).exists() for folder in folders):
        return UNFINISHED
    if any(folder.is_dir() and any(not _is_ignorable(entry.name) for entry in folder.iterdir())
           for folder in {run_dir, *folders}):
        return OTHER
    return EMPTY


def refusal(run_dir: Path, resume: bool, overwrite: bool, evaluate_only: bool = False,
            locked: bool = False, in_set: bool = False) -> UserError | None:
    """Why this run may not start in `run_dir` (None: it may), from what the folder holds; creates nothing.
    locked: this process holds the folder's lock; in_set: the run is one of a --seeds set."""
    run_dir = Path(run_dir)
    if not locked and is_being_trained(run_dir):
        return busy(run_dir)
    state = status(run_dir) if run_dir.is_dir() else EMPTY
    if evaluate_only:
        if not (run_dir / FILES.BEST).is_file():
            return UserError(f"nothing to evaluate: {run_dir / FILES.BEST} does not exist; {_without_best(run_dir)}")
    elif resume:
        if state not in (FINISHED, UNFINISHED):
            return UserError(f"nothing to resume: {run_dir / FILES.LAST} does not exist; run without --resume "
                             "to start")
    elif overwrite:
        pass
    elif state == FINISHED:
        also = (", or complete the --seeds set with the same command plus --resume (its finished runs are kept)"
                if in_set else "")
        return UsageError(f"{run_dir} holds a finished run; start over with --overwrite (its results stay until "
                          f"the new run saves its first checkpoint) or choose another --run-dir{also}")
    elif state == UNFINISHED:
        return UsageError(f"{run_dir} holds an unfinished run; continue it with --resume, or start over with "
                          "--overwrite")
    elif state == OTHER:
        names = sorted(entry.name for entry in run_dir.iterdir() if not _is_ignorable(entry.name))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return UsageError(f"{run_dir} is not empty ({shown}) and holds no run to continue; choose another "
                          "--run-dir, or use it with --overwrite (which replaces only the files a run writes, "
                          f"{', '.join(OUTPUTS)}, {TENSORBOARD_DIR}/, and keeps every other file)")
    return None


def _without_best(run_dir: Path) -> str:
    """What to do about a run folder without its best.pt."""
    try:
        state = load_checkpoint(run_dir / FILES.LAST)
        best, step = state["best"]["step"], state["step"]
    except (UserError, KeyError, TypeError):
        return "train first, or point --run-dir at a finished run"
    if best is None:
        return "the run in it has not validated yet: continue it with --resume"
    if best == step:  # last.pt holds the best weights
        return (f"--resume --run-dir {run_dir} writes it again from {run_dir / FILES.LAST} (its best step {best} is "
                "its last)")
    return (f"the run's best weights (step {best}) are lost and {run_dir / FILES.LAST} holds step {step}; train it "
            "again with --overwrite")


def check(run_dir: Path, resume: bool, overwrite: bool, evaluate_only: bool = False, in_set: bool = False) -> None:
    """Refuse a run that may not start in `run_dir`, before any work and creating nothing; a replacement
    that a killed process left half done is settled first (settle). in_set: one of a --seeds set."""
    run_dir = Path(run_dir)
    if (run_dir / PREVIOUS).is_dir() or (run_dir / MOVING).is_dir():
        handle = lock(run_dir)
        try:
            settle(run_dir, report=True)
        finally:
            if handle:
                handle.close()
    problem = refusal(run_dir, resume, overwrite, evaluate_only, in_set=in_set)
    if problem:
        raise problem


def claim(run_dir: Path, resume: bool, overwrite: bool, evaluate_only: bool = False):
    """Lock `run_dir` for this run, or refuse (before any work) to touch a run the user did not name.
    Returns the lock and what the folder held (status)."""
    run_dir = Path(run_dir)
    check(run_dir, resume, overwrite, evaluate_only)
    check_writable(run_dir)
    handle = lock(run_dir)
    try:
        settle(run_dir, report=True)  # (one more process may have been killed meanwhile)
        problem = refusal(run_dir, resume, overwrite, evaluate_only, locked=True)  # or have written
        if problem:
            raise problem
    except BaseException:
        if handle:  # a caller that catches this error (a notebook, a test) must not keep the lock
            handle.close()
        raise
    return handle, status(run_dir)


def missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first: what creating it makes."""
    path = Path(path).absolute()
    return [folder for folder in [path, *path.parents] if not os.path.exists(folder)]


def _replaceable(folder: Path) -> list[str]:
    return [name for name in (*OUTPUTS, TENSORBOARD_DIR) if (folder / name).exists()]


def _sync(folder: Path) -> None:
    """Make renames and new files in `folder` durable (POSIX; elsewhere the OS decides)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def set_aside(run_dir: Path) -> None:
    """Move a previous run's files (only those a run writes) into run_dir/.previous-run; settle() later
    removes them once the new run's first last.pt is on disk, or puts them back if it never gets there.
    With nothing to move the folder is made all the same: it tells settle() that the files a run writes
    before its first last.pt (config.json, history.json, best.pt) go again if that never comes."""
    run_dir = Path(run_dir)
    names = _replaceable(run_dir)
    moving = run_dir / MOVING
    moving.mkdir(exist_ok=True)
    for name in names:  # last.pt first: status() and settle() tell a half-done move by it
        os.replace(run_dir / name, moving / name)
    os.replace(moving, run_dir / PREVIOUS)
    _sync(run_dir)


def settle(run_dir: Path, report: bool = False) -> None:
    """End a replacement: once the new run's last.pt is on disk the previous run's files go; before that
    (the new run failed, or a process was killed) the new run's files go and the previous ones come back."""
    run_dir = Path(run_dir)
    moving, previous = run_dir / MOVING, run_dir / PREVIOUS
    if previous.is_dir() and (run_dir / FILES.LAST).exists():
        _sync(run_dir)
        shutil.rmtree(previous)
        return
    if moving.is_dir():  # killed while moving them: nothing new was written yet
        kept = moving
    elif previous.is_dir():
        kept = previous
        for name in _replaceable(run_dir):  # the new run's, written before its first last.pt
            _remove(run_dir / name)
    else:
        return
    restored = _replaceable(kept)
    for name in restored:
        _remove(run_dir / name)
        os.replace(kept / name, run_dir / name)
    kept.rmdir()
    _sync(run_dir)
    if report:
        done = "restored the previous run" if restored else "removed the files of a run that stopped before its " \
            "first checkpoint"
        print(f"{done} in {run_dir}" + (": the run that was replacing it stopped before its first checkpoint"
                                        if restored else ""), file=sys.stderr)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- training's writes

class RunFolder:
    """The run folder as training writes into it. The Trainer tells it of each write, and of how a run that
    wrote ends:
    - `claim` before every write of the run's files (from the first validation on); the first one calls
      `before_first_save` (a resumed run's folder is claimed already);
    - `outdate` before the checkpoints change (with best: best.pt too);
    - `after_first_save` once the run's first last.pt is on disk;
    - `abandon` when the run stops (error, interrupt) after writing files but before its first last.pt;
    - `steps_eager` when a CUDA-graph capture failed and the steps are eager from there on;
    - `may_write` whether anything may be written yet (not even on Ctrl-C or divergence), and `previous_kept`
      how a message that nothing of this run was saved goes on.
    This one holds nothing but the run's own files; RunFiles (below) adds the rules of a folder that holds a
    previous run (replaced with --overwrite) or a finished one (--resume)."""

    may_write = True  # False: nothing may be written yet (not even on Ctrl-C or divergence)

    def __init__(self, path):
        self.path, self.claimed = Path(path), False  # claimed: this run has written into it

    def claim(self, trainer: "Trainer") -> None:
        """Before each write of the run's files: the first calls before_first_save (a resumed run's folder is
        claimed already)."""
        if not self.claimed:
            self.claimed = True
            self.before_first_save(trainer)

    def before_first_save(self, trainer: "Trainer") -> None:
        """Before a new run writes its first file."""

    def after_first_save(self, trainer: "Trainer") -> None:
        """Once its first last.pt is written."""

    def abandon(self, trainer: "Trainer", error: BaseException) -> None:
        """The run has written files but stopped (error, interrupt) before its first last.pt: undo what needs
        undoing; raise to say more than `error`."""

    def outdate(self, trainer: "Trainer", best: bool = False) -> None:
        """Before the checkpoints change (with best: best.pt too)."""

    def steps_eager(self, trainer: "Trainer", note: str) -> None:
        """The run's steps are eager from here on (a CUDA-graph capture failed; `note` says so and why)."""

    def previous_kept(self) -> str:
        """How a message that nothing of this run was saved goes on."""
        return ""


class RunFiles(RunFolder):
    """The rules of a runs.Run's folder. A previous run there (`protect_previous`: replaced with --overwrite)
    stays as it was until this run's first validation; then its files are moved aside (and config.json
    written), removed once this run's first last.pt is on disk, put back if the run stops before. A resumed run
    whose checkpoints change is unfinished again: its final numbers go first."""

    def __init__(self, run: "Run", protect_previous: bool):
        super().__init__(run.dir)
        self.run, self.protect_previous = run, protect_previous

    @property
    def may_write(self) -> bool:
        return self.claimed or not self.protect_previous

    def before_first_save(self, trainer) -> None:
        # A script that called trainer.fit() where run.fit(trainer) belongs (which resumes, or only evaluates):
        if self.run.args.evaluate_only:
            raise UserError("--evaluate-only changes no run: the script must call run.fit(trainer)")
        if self.run.args.resume:  # not resumed (a resumed run's folder is claimed already): it would start over
            raise UserError("--resume continues the run in run.fit(trainer): the script must call it, not "
                            "trainer.fit()")
        if trainer.is_main:
            set_aside(self.path)
            self.run.write_config()

    def after_first_save(self, trainer) -> None:
        if trainer.is_main:
            settle(self.path)

    def abandon(self, trainer, error: BaseException) -> None:
        self.after_first_save(trainer)  # without a last.pt of this run, settle() brings a replaced run back
        # (A divergence or an interruption says so itself: previous_kept.)
        if self.protect_previous and type(error) in (UserError, UsageError, WriteError):  # e.g. a full disk
            kind = UsageError if type(error) is UsageError else UserError
            raise kind(f"{error}; {self.path} is as it was before this run") from None

    def outdate(self, trainer, best: bool = False) -> None:
        """metrics.json goes before a resumed run's checkpoints change (with best.pt, also evaluation.json,
        --evaluate-only's numbers of the best.pt being replaced): no final numbers are left that they no
        longer back."""
        if trainer.resumed and trainer.is_main:
            for name in (FILES.METRICS, FILES.EVALUATION) if best else (FILES.METRICS,):
                (self.path / name).unlink(missing_ok=True)

    def steps_eager(self, trainer, note: str) -> None:
        """config.json says so: rewritten now where this run has written its folder, else at its first write."""
        self.run.config, self.run.graph_note = trainer.config, note
        if self.claimed and trainer.is_main:
            self.run.write_config()

    def previous_kept(self) -> str:
        return f", and the previous run in {self.path} is as it was" if self.protect_previous else ""


# ---------------------------------------------------------------- reading runs back

def _require(condition: bool, path: Path, what: str) -> None:
    """The check_* functions' one refusal: what is wrong with the file (the caller says how to repair it)."""
    if not condition:
        raise UserError(f"{path} is damaged: {what}")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _in_range(value, low: float = 0.0, high: float = math.inf) -> bool:
    return _is_number(value) and math.isfinite(value) and low <= value <= high


def _check_number(value, path: Path, what: str, high: float = math.inf) -> None:
    _require(_is_number(value), path, f"{what} is {value!r}, not a number")
    _require(_in_range(value, 0.0, high), path, f"{what} is {value!r}, out of its range (0 to {high:g})")


def _check_classes(result: dict, split: str, path: Path) -> None:
    """Per-class accuracies and the confusion matrix of one split: one per CIFAR-10 class, consistent."""
    classes = len(dataloaders.CLASSES)
    per_class, confusion = result.get("per_class_accuracy"), result.get("confusion")
    if per_class is None and confusion is None:
        return
    _require(isinstance(per_class, dict) and len(per_class) == classes and all(
        value is None or _in_range(value, 0.0, 1.0) for value in per_class.values()), path,
        f"{split} per_class_accuracy is not {classes} class names with accuracies between 0 and 1")
    _require(isinstance(confusion, list) and len(confusion) == classes and all(
        isinstance(row, list) and len(row) == classes and
        all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in row) for row in confusion), path,
        f"the {split} confusion matrix is not a {classes}x{classes} table of counts")


def check_metrics(metrics, path: Path) -> None:
    """Every field report.py reads, with its type and range (a NaN or a negative accuracy is damage)."""
    _require(isinstance(metrics, dict), path, "it holds no object")
    for split in ("train", "validation", "test"):
        result = metrics.get(split)
        _require(isinstance(result, dict), path, f"it lacks train/validation/test loss and accuracy ('{split}' "
                                                 "is missing or not an object)")
        _check_number(result.get("loss"), path, f"{split} loss")
        _check_number(result.get("accuracy"), path, f"{split} accuracy", high=1.0)
        if split != "train":
            _check_classes(result, split, path)
    for key in ("epochs", "wall_seconds", "best_step", "steps"):
        if metrics.get(key) is not None:
            _check_number(metrics[key], path, key)
    _require(metrics.get("early_stopped") in (None, True, False), path, "early_stopped is not true or false")


def check_history(history, path: Path) -> None:
    """A history that parses but holds nothing would draw an empty figure: refuse it."""
    _require(isinstance(history, dict), path, "it holds no object")
    train = history.get("train_loss")
    _require(isinstance(train, dict) and isinstance(train.get("steps"), list) and isinstance(train.get("values"), list)
             and len(train["steps"]) == len(train["values"]), path, "no train_loss steps/values of equal length")
    validations = history.get("validation")
    _require(isinstance(validations, list) and all(
        isinstance(p, dict) and all(_is_number(p.get(k)) for k in ("step", "loss", "accuracy"))
        for p in validations), path, "validation points without numeric step, loss and accuracy")
    _require(all(_in_range(p["step"]) and _in_range(p["loss"]) and _in_range(p["accuracy"], 0.0, 1.0) and
                 (p.get("train_accuracy") is None or _in_range(p["train_accuracy"], 0.0, 1.0))
                 and (p.get("test_loss") is None or _in_range(p["test_loss"])) for p in validations), path,
             "a validation point's step, loss or accuracy is out of its range (negative, above 1, NaN or infinite)")
    _require(all(_is_number(v) for v in train["values"]), path, "training losses that are not numbers")
    if not train["steps"] or not validations:
        raise UserError(f"{path} holds no training steps or no validation")


def check_config(config, path: Path) -> None:
    _require(isinstance(config, dict), path, "it holds no object")
    for section in ("settings", "defaults", "resolved", "data", "model", "versions"):
        _require(isinstance(config.get(section, {}), dict), path, f"'{section}' is not an object")
    for key in ("title", "name"):
        _require(config.get(key) is None or isinstance(config[key], str), path, f"{key} is not text")


CHECKS = {"config": (FILES.CONFIG, check_config), "history": (FILES.HISTORY, check_history),
          "metrics": (FILES.METRICS, check_metrics)}


def read_run(run_dir: Path, finished: bool = True) -> dict:
    """config, history and metrics of a finished run (where run_folders finds them); a damaged file is a
    UserError naming it and how to repair it. finished=False: config and history only, of a run still training
    (or stopped before its end)."""
    run = {}
    for name in ("config", "history", "metrics") if finished else ("config", "history"):
        file, check = CHECKS[name]
        path = run_file(run_dir, file)
        try:
            run[name] = read_json(path, fix=None)
            check(run[name], path)
        except UserError as error:
            raise UserError(f"{error}; {repair(run_dir)}") from None
    return run


def repair(run_dir: Path) -> str:
    """How a run's damaged or lost config.json, history.json or metrics.json is written again: a --resume
    rewrites each from last.pt (and reruns the final evaluation of a finished run)."""
    last = Path(run_dir) / FILES.LAST
    if not last.is_file():
        return f"without its {last} it cannot be repaired: train it again with --overwrite"
    script = script_of(run_dir)
    return (f"{f'python {script}.py' if script else 'the script that made it, with'} --resume --run-dir {run_dir} "
            f"rewrites it from {last}")


def script_of(run_dir: Path) -> str | None:
    """The training script that made the run in `run_dir` (task2, ...), as its record says, where it does."""
    for name in (FILES.CONFIG, FILES.LAST):
        try:
            record, _ = _record_in(Path(run_dir) / name)
        except UserError:
            continue
        settings = record.get("settings")
        script = settings.get("script") if isinstance(settings, dict) else None
        # A record of an earlier version names the run, which is the script's name but for a variant
        # (task3c_before is task3_model1.py's).
        script = script or record.get("name")
        if isinstance(script, str) and (ROOT / f"{script}.py").is_file():
            return script
    return None


def _record_in(path: Path) -> tuple[dict, bool]:
    """The run's record in `path`: config.json, or the copy a checkpoint of this version keeps, else what every
    checkpoint records of the run, its signature: the experiment's settings only (then False: not whole)."""
    if path.name == FILES.CONFIG:
        record = read_json(path, fix=None)
        check_config(record, path)
        return record, True
    state = load_checkpoint(path)
    record = state.get("record") if isinstance(state, dict) else None
    if record is not None:
        check_config(record, path)
        return record, True
    signature = state.get("signature") if isinstance(state, dict) else None
    _require(isinstance(signature, dict), path, "it records no settings (no signature)")
    return {"settings": {key: value for key, value in signature.items() if key != "model"},
            "data": state.get("data") or {}}, False


def read_record(run_dir: Path, checkpoints: tuple[str, ...]) -> tuple[dict, Path, bool, str | None]:
    """How the run in `run_dir` was made, for --resume and --evaluate-only: config.json, or where it is lost or
    damaged, the copy that the first of `checkpoints` keeps (this version's last.pt and best.pt do), else what
    that checkpoint's signature records (the experiment's settings, not the run's length or data folder).
    Returns the record, the file it was read from, whether it is whole, and why config.json was not used."""
    path = Path(run_dir) / FILES.CONFIG
    try:
        record, _ = _record_in(path)
        settings = record.get("settings")
        _require(isinstance(settings, dict) and settings, path, "it records no settings")
        missing = [key for key in LENGTH_SETTINGS if key not in settings]
        _require(not missing, path, f"it lacks settings.{', settings.'.join(missing)}")
        return record, path, True, None
    except UserError as error:
        problem = str(error)
    for name in checkpoints:
        if (Path(run_dir) / name).is_file():
            record, whole = _record_in(Path(run_dir) / name)
            return record, Path(run_dir) / name, whole, problem
    raise UserError(f"{problem}; {repair(run_dir)}")


# ---------------------------------------------------------------- what is not the real thing about a run

CIFAR10_SPLIT = (50_000, 10_000)  # training (with validation) and test images
STATE_NOTES = {IN_PROGRESS: "still training", UNFINISHED: "stopped before its end (interrupted)"}


def caveats(config: dict, state: str = "ok") -> list[str]:
    """Why a run is not the real thing (smoke run, random weights, other data...), in words; [] when it is.
    Compares the settings with the script's defaults that config.json records ("defaults")."""
    settings, defaults, data = config.get("settings", {}), config.get("defaults", {}), config.get("data", {})
    smoke = [f"--{flag.replace('_', '-')} {settings[flag]}" for flag in ("subset", "max_steps") if settings.get(flag)]
    notes = [f"smoke run: {', '.join(smoke)}"] if smoke else []
    epochs, recipe = settings.get("epochs"), defaults.get("epochs")
    if _is_number(epochs) and _is_number(recipe) and epochs < recipe:
        notes.append(f"{epochs} of the recipe's {recipe} epochs")
    if settings.get("weights") == "none":
        notes.append("random weights (--weights none)")
    for flag, what in (("image_size", "image size"), ("validation_fraction", "validation fraction")):
        if flag in settings and flag in defaults and settings[flag] != defaults[flag]:
            notes.append(f"{what} {settings[flag]} (recipe: {defaults[flag]})")
    sizes = [data.get(f"{split}_images") for split in ("train", "validation", "test")]
    if not settings.get("subset") and all(isinstance(n, int) for n in sizes) and \
            (sizes[0] + sizes[1], sizes[2]) != CIFAR10_SPLIT:
        notes.append(f"not CIFAR-10's usual split ({sizes[0]:,} / {sizes[1]:,} / {sizes[2]:,} images)")
    if state in STATE_NOTES:
        notes.append(STATE_NOTES[state])
    return notes


def marked(title: str, notes: list[str]) -> str:
    """A title that says what is not the real thing about the run."""
    return f"{title} ({'; '.join(notes)})" if notes else title

