"""Nothing a user made is lost, and every odd input ends in one named line.

A new run into a folder holding a finished run is refused without --overwrite; with it, the old files
stay until the new run saves its first checkpoint, so a run that diverges, is interrupted or crashes
before that leaves the old one exactly as it was.
"""
import errno
import gc
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import dataloaders
import resnet
import run_folder
import task2
import utils
from helpers import ROOT, write_image_folders
from run_folder import read_run
from helpers import ONE_THREAD, fail_at_step, one_line_error, outcome, seeds_args, snapshot, task2_args


@pytest.fixture(scope="module")
def finished(folder_data, tmp_path_factory):
    """A finished tiny Task 2 run (and its figure), made once; tests work on copies."""
    base = tmp_path_factory.mktemp("finished")
    code = subprocess.run([sys.executable, str(ROOT / "task2.py"),
                           *map(str, task2_args(folder_data, base / "run", base / "plots"))],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **ONE_THREAD, "MPLBACKEND": "Agg"})
    assert code.returncode == 0, code.stderr
    return base


def copy_of(finished, tmp_path):
    shutil.copytree(finished / "run", tmp_path / "run")
    shutil.copytree(finished / "plots", tmp_path / "plots")
    return tmp_path / "run", tmp_path / "plots"


def everything(run_dir, plot_dir):
    return snapshot(run_dir), snapshot(plot_dir)


@pytest.mark.slow
def test_a_finished_run_is_refused_without_overwrite(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    before = everything(run_dir, plot_dir)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir), capsys)
    assert code == 2 and one_line_error(stderr)
    assert "holds a finished run" in stderr and "--overwrite" in stderr and "--run-dir" in stderr
    assert everything(run_dir, plot_dir) == before


def diverge_at_once(monkeypatch):
    return ["--lr", "1e12"]  # the loss is not finite after the first steps, long before the first validation


def interrupt_at_step_2(monkeypatch):
    fail_at_step(monkeypatch, 2, KeyboardInterrupt())
    return []


def crash_at_step_2(monkeypatch):
    fail_at_step(monkeypatch, 2, RuntimeError("a bug in the middle of training"))
    return []


@pytest.mark.slow
@pytest.mark.parametrize("failure, code, says", [
    (diverge_at_once, 1, "training diverged"),
    (interrupt_at_step_2, 130, "nothing was saved"),
    (crash_at_step_2, 1, "This is a bug"),
])
def test_overwrite_keeps_the_old_run_until_the_new_one_saves(failure, code, says, folder_data, finished, tmp_path,
                                                             capsys, monkeypatch):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    before = everything(run_dir, plot_dir)
    extra = failure(monkeypatch)
    ended, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--overwrite", *extra), capsys)
    assert ended == code and says in stderr
    if failure is not crash_at_step_2:
        assert one_line_error(stderr) or "error:" not in stderr
        assert "previous run" in stderr and "as it was" in stderr
    assert everything(run_dir, plot_dir) == before


@pytest.mark.slow
def test_overwrite_replaces_the_old_run_once_the_new_one_saves(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    old = read_run(run_dir)
    code, _ = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--overwrite", "--lr", "0.01"), capsys)
    assert code == 0
    new = read_run(run_dir)
    assert new["config"]["settings"]["lr"] == 0.01 and new["metrics"]["test"] != old["metrics"]["test"]
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(new["history"]["validation"])      # the old run's rows are gone


@pytest.mark.slow
def test_resume_with_the_best_checkpoint_missing_names_it(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    last = utils.load_checkpoint(run_dir / "last.pt")
    last["best"]["step"] = last["history"]["validation"][0]["step"]     # best weights from an earlier step
    utils.save_checkpoint(last, run_dir / "last.pt")
    (run_dir / "best.pt").unlink()
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--resume"), capsys)
    assert code == 1 and one_line_error(stderr) and f"{run_dir / 'best.pt'} is missing" in stderr


def test_ctrl_c_while_the_data_loads_says_nothing_was_trained(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dataloaders, "load_raw", interrupted)
    code, stderr = outcome(task2.main, ["--run-dir", tmp_path / "run", "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 130 and "nothing was trained" in stderr and "--resume" not in stderr and "Traceback" not in stderr


def test_divergence_before_any_validation_claims_no_checkpoint(folder_data, tmp_path, capsys):
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots",
                                                  "--lr", "1e12"), capsys)
    assert code == 1 and one_line_error(stderr) and "diverged at step" in stderr
    assert "no validation had run yet" in stderr and "is kept" not in stderr
    assert not (tmp_path / "run" / "best.pt").exists()


def test_image_that_is_a_folder_or_too_large(tmp_path, monkeypatch):
    with pytest.raises(utils.UserError, match="is a folder; pass one image file"):
        resnet.load_image(tmp_path)
    from PIL import Image
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)    # 60,000 pixels: past twice the limit
    with pytest.raises(utils.UserError, match="too large: Pillow refuses images above 20,000 pixels"):
        resnet.load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)    # between the limit and twice it: a warning only
    with pytest.raises(utils.UserError, match="too large"):
        resnet.load_image(path)


@pytest.mark.slow
def test_images_per_second_counts_the_images_trained(folder_data, tmp_path, capsys):
    # A batch larger than the training set: every step trains on all 160 images, not 100,000.
    run_dir = tmp_path / "run"
    assert outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots", "--batch-size", "100000"),
               capsys)[0] == 0
    metrics = read_run(run_dir)["metrics"]
    assert metrics["steps"] == 4 and metrics["images_trained"] == 4 * 160
    seconds = metrics["train_seconds"]  # rounded to 0.01 s: a short run's rate is only known within that
    assert 4 * 160 / (seconds + 0.005) - 0.05 <= metrics["train_images_per_s"] <= 4 * 160 / (seconds - 0.005) + 0.05


@pytest.mark.slow
def test_wall_time_of_every_process_of_a_resumed_run(folder_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = task2_args(folder_data, run_dir, tmp_path / "plots")
    assert outcome(task2.main, [*args, "--max-steps", "5"], capsys)[0] == 0
    first = read_run(run_dir)["metrics"]["wall_seconds_per_process"]
    assert outcome(task2.main, [*args, "--max-steps", "10", "--resume"], capsys)[0] == 0
    metrics = read_run(run_dir)["metrics"]
    assert len(first) == 1 and len(metrics["wall_seconds_per_process"]) == 2
    assert metrics["wall_seconds_per_process"][0] == first[0]
    assert metrics["wall_seconds"] == pytest.approx(sum(metrics["wall_seconds_per_process"]), abs=0.11)


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".best.pt.{dead.pid}.x1y2.tmp"
    stale.write_bytes(b"half of a checkpoint from a writer killed mid-write")
    alive = tmp_path / f".best.pt.{os.getppid()}.a1b2.tmp"  # a writer still at work: left alone
    alive.write_bytes(b"being written")
    other = tmp_path / f".last.pt.{dead.pid}.c3d4.tmp"      # another file's: not this write's business
    other.write_bytes(b"")
    utils.save_checkpoint({"step": 1}, tmp_path / "best.pt")
    assert not stale.exists() and alive.exists() and other.exists()
    assert utils.load_checkpoint(tmp_path / "best.pt") == {"step": 1}


@pytest.mark.slow
def test_no_float_that_float32_cannot_hold(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "task2.py"), "--lr", "1e300", "--run-dir", tmp_path / "r"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--lr" in result.stderr
    assert "float32" in result.stderr and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- issue 20: folders, replacements, resumes

def tree(folder):
    """Every file below `folder` (the lock included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("held", ["config.json", "metrics.csv", "evaluation.json", "history.json",
                                  "tensorboard/events.out.tfevents.1", "notes.txt", "best.pt"])
def test_a_folder_holding_files_but_no_run_is_refused(held, folder_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / held).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / held).write_text("the user's")
    before = tree(run_dir)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots"), capsys)
    assert code == 2 and one_line_error(stderr) and held.split("/")[0] in stderr
    assert "--overwrite" in stderr and "--run-dir" in stderr
    assert tree(run_dir) == before           # not even a lock file
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_an_empty_folder_is_used(folder_data, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots", "--max-steps", "5"),
               capsys)[0] == 0
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_overwrite_replaces_only_the_files_a_run_writes(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "mine").mkdir()
    (run_dir / "mine" / "table.csv").write_text("1,2\n")
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events.out.tfevents.1").write_text("an old run's log")
    old = read_run(run_dir)
    code, _ = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--overwrite", "--lr", "0.01"), capsys)
    assert code == 0 and read_run(run_dir)["metrics"]["test"] != old["metrics"]["test"]
    assert (run_dir / "notes.txt").read_text() == "mine" and (run_dir / "mine" / "table.csv").read_text() == "1,2\n"
    assert not (run_dir / "tensorboard").exists() and not (run_dir / run_folder.PREVIOUS).exists()


def full_disk_at_first_best(monkeypatch):
    """The first write of best.pt fails as on a full disk (the temporary file cannot be written)."""
    real = torch.save

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and "validation" in obj:  # what best.pt holds
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, handle, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


@pytest.mark.slow
def test_overwrite_on_a_full_disk_keeps_the_old_run(folder_data, finished, tmp_path, capsys, monkeypatch):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    before = tree(run_dir)
    full_disk_at_first_best(monkeypatch)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--overwrite"), capsys)
    assert code == 1 and one_line_error(stderr)
    assert "the disk is full" in stderr and f"{run_dir} is as it was" in stderr
    assert tree(run_dir) == before


# Runs task2.py, SIGKILLed by itself in the middle of writing its first best.pt.
KILLED_WHILE_WRITING = """
import os, signal, sys
sys.path.insert(0, {root!r})
import torch
real = torch.save
def save(obj, handle, *args, **kwargs):
    if isinstance(obj, dict) and "validation" in obj:  # what best.pt holds
        handle.write(b"half a checkpoint")
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, handle, *args, **kwargs)
torch.save = save
import cli, task2
cli.main(task2.main, sys.argv[1:])
"""


@pytest.mark.slow
def test_overwrite_killed_during_its_first_write_keeps_the_old_run(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    before = tree(run_dir)
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING.format(root=str(ROOT)),
                             *map(str, task2_args(folder_data, run_dir, plot_dir, "--overwrite"))],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run_dir / "metrics.json").exists()             # moved aside, not lost:
    # the next start into the folder puts the old run back (here a plain rerun, which it then refuses)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir), capsys)
    assert code == 2 and "restored the previous run" in stderr and "holds a finished run" in stderr
    after = tree(run_dir)
    assert {name: data for name, data in after.items() if not name.startswith(".best.pt.")} == before
    assert read_run(run_dir) == read_run(finished / "run")


@pytest.mark.slow
def test_resumed_finished_run_is_unfinished_once_its_checkpoints_change(folder_data, finished, tmp_path, capsys,
                                                                        monkeypatch):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    old_steps = read_run(run_dir)["metrics"]["steps"]
    utils.write_json({"test": {"loss": 1.0}}, run_dir / "evaluation.json")  # --evaluate-only of the old best.pt
    fail_at_step(monkeypatch, 12, KeyboardInterrupt())                       # after a new validation
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "6", "--early-stop-count", "9"],
                           capsys)
    assert code == 130 and "is saved" in stderr
    assert utils.load_checkpoint(run_dir / "last.pt")["step"] > old_steps
    assert not (run_dir / "metrics.json").exists()          # no final numbers the checkpoints no longer back
    # evaluation.json described the old best.pt: it goes with it, and stays while best.pt does
    best_changed = utils.load_checkpoint(run_dir / "best.pt")["step"] > old_steps
    assert (run_dir / "evaluation.json").exists() != best_changed
    assert run_folder.status(run_dir) == "unfinished"
    monkeypatch.undo()  # the interrupted run's lock, kept by the raised exception's traceback in this process
    gc.collect()        # (a real process has exited)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir), capsys)
    assert code == 2 and "holds an unfinished run" in stderr


@pytest.mark.slow
def test_resume_of_a_finished_run_without_training_keeps_its_results(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    old = read_run(run_dir)["metrics"]
    assert outcome(task2.main, ["--run-dir", run_dir, "--resume", "--data-dir", folder_data], capsys)[0] == 0
    new = read_run(run_dir)["metrics"]
    assert new["test"] == old["test"] and new["steps"] == old["steps"]


@pytest.mark.slow
def test_resume_on_other_data_is_refused(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    utils.save_checkpoint({**utils.load_checkpoint(run_dir / "last.pt"), "step": 12},
                          run_dir / "last.pt")  # stands in for an interrupted run (the data check comes first)
    os.remove(run_dir / "metrics.json")
    other = write_image_folders(tmp_path / "other", per_class_train=25)
    before = tree(run_dir)
    for how in (["--data-dir", other], ["--data-dir", folder_data, "--subset", "120"]):
        code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", *how], capsys)
        assert code in (1, 2) and one_line_error(stderr), stderr
        assert "other data" in stderr or "--subset" in stderr
        assert tree(run_dir) == before
    # The same through $CIFAR10_DIR, the run having been made with the default data folder by an earlier version,
    # whose config.json does not say which folder that was. (This version's record names it, and it is read.)
    config = utils.read_json(run_dir / "config.json")
    config["settings"]["data_dir"] = None
    del config["resolved"]["data_dir"], config["resolved"]["data_dir_from"]
    utils.write_json(config, run_dir / "config.json")
    before = tree(run_dir)
    os.environ["CIFAR10_DIR"] = str(other)
    try:
        code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume"], capsys)
    finally:
        del os.environ["CIFAR10_DIR"]
    assert code == 1 and "cannot resume" in stderr and "other data" in stderr and str(other) in stderr
    assert tree(run_dir) == before


@pytest.mark.slow
def test_resume_and_evaluate_only_need_only_the_run_dir(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--evaluate-only"], capsys)
    assert code == 0, stderr
    evaluation = utils.read_json(run_dir / "evaluation.json")
    assert evaluation["test"] == read_run(run_dir)["metrics"]["test"] and evaluation["on_training_data"] is True
    # A flag that changes what the run computes is refused by name, before anything loads.
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--momentum", "0.9"], capsys)
    assert code == 2 and one_line_error(stderr) and "--momentum" in stderr
    # A longer run is allowed: it continues with the recorded settings (batch size 16, subset 160).
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                       capsys)
    assert code == 0, stderr
    config = read_run(run_dir)["config"]["settings"]
    assert config["batch_size"] == 16 and config["subset"] == 160 and config["epochs"] == 5
    assert read_run(run_dir)["metrics"]["steps"] == 50


@pytest.mark.slow
def test_evaluate_only_on_other_data_says_so(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    before = {name: data for name, data in tree(run_dir).items() if name != "evaluation.json"}
    code, _ = outcome(task2.main, ["--run-dir", run_dir, "--evaluate-only", "--subset", "50"], capsys)
    assert code == 0
    evaluation = utils.read_json(run_dir / "evaluation.json")
    assert evaluation["on_training_data"] is False and evaluation["data"]["test_images"] == 50
    assert evaluation["trained_on"]["test_images"] == 100
    assert {name: data for name, data in tree(run_dir).items() if name != "evaluation.json"} == before


@pytest.mark.slow
def test_every_seed_folder_is_checked_before_the_first_trains(folder_data, finished, tmp_path, capsys):
    shutil.copytree(finished / "run", tmp_path / "run-seed1")
    code, stderr = outcome(task2.main, seeds_args(folder_data, tmp_path / "run", tmp_path / "plots",
                                                  "--seeds", "0", "1"), capsys)
    assert code == 2 and one_line_error(stderr) and f"{tmp_path / 'run-seed1'} holds a finished run" in stderr
    assert not (tmp_path / "run-seed0").exists() and "validation loss" not in stderr


@pytest.mark.slow
def test_resume_with_a_truncated_best_checkpoint_is_refused(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    (run_dir / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:3000])
    before = tree(run_dir)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--resume"), capsys)
    assert code == 1 and one_line_error(stderr) and str(run_dir / "best.pt") in stderr and "corrupt" in stderr
    assert tree(run_dir) == before


def test_overwrite_sets_aside_the_figure_drawn_beside_the_run(tmp_path):
    """A smoke run's curves.png/.pdf are its own: replaced with the run, never left beside a new run's
    checkpoints as a stale figure, and put back with the rest when the new run never saves."""
    for name in ("last.pt", "metrics.json", "curves.png", "curves.pdf", "notes.txt"):
        (tmp_path / name).write_text(name)
    run_folder.set_aside(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [run_folder.PREVIOUS, "notes.txt"]
    run_folder.settle(tmp_path)  # no new last.pt: the previous run comes back whole
    assert {name: (tmp_path / name).read_text() for name in os.listdir(tmp_path)} == {
        name: name for name in ("last.pt", "metrics.json", "curves.png", "curves.pdf", "notes.txt")}


@pytest.mark.slow
def test_resume_draws_where_this_command_says_not_where_the_record_does(folder_data, finished, tmp_path, capsys):
    """A run made with --plot-dir A, resumed without it (say, in a copy of the project elsewhere), must not
    draw into A: where outputs go is the command's, not the record's (only the data folder is taken)."""
    run_dir, plot_dir = copy_of(finished, tmp_path)
    figure = (plot_dir / "task2.png").read_bytes()
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                       capsys)
    assert code == 0, stderr
    assert (plot_dir / "task2.png").read_bytes() == figure and (run_dir / "curves.png").is_file()


@pytest.mark.slow
def test_resume_reads_the_settings_of_the_run_an_interrupted_overwrite_set_aside(folder_data, finished, tmp_path,
                                                                                 capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    run_folder.set_aside(run_dir)  # an --overwrite --lr 0.01 killed after writing its config.json, before last.pt
    config = utils.read_json(run_dir / run_folder.PREVIOUS / "config.json")
    config["settings"]["lr"] = 0.01
    utils.write_json(config, run_dir / "config.json")
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                       capsys)
    assert code == 0, stderr
    assert "restored the previous run" in stderr and read_run(run_dir)["config"]["settings"]["lr"] == 0.05


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_folder_as_it_found_it(folder_data, tmp_path,
                                                                                       capsys):
    run_dir, plot_dir = tmp_path / "run", tmp_path / "plots"
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--lr", "1e30"), capsys)
    assert code == 1 and "diverged" in stderr and not run_dir.exists()
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir, "--lr", "1e30", "--overwrite"),
                           capsys)
    assert code == 1 and tree(run_dir) == {"notes.txt": b"mine"}
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", plot_dir), capsys)  # the advised rerun
    assert code == 2 and "not empty (notes.txt)" in stderr  # the user's file, not a leftover of ours


@pytest.mark.slow
def test_a_variant_of_a_script_is_evaluated_with_only_its_run_dir(folder_data, tmp_path, capsys):
    """task3_model1 --convs-per-stage 1 is the run task3c_before: its record says so."""
    import task3_model1
    run_dir = tmp_path / "c1"
    code, stderr = outcome(task3_model1.main, task2_args(folder_data, run_dir, tmp_path / "plots", "--epochs", "1",
                                                     "--convs-per-stage", "1"), capsys)
    assert code == 0, stderr
    code, stderr = outcome(task3_model1.main, ["--run-dir", run_dir, "--evaluate-only"], capsys)
    assert code == 0, stderr
    assert utils.read_json(run_dir / "evaluation.json")["on_training_data"] is True and "figure:" not in stderr


@pytest.mark.slow
def test_a_mistyped_recorded_setting_is_one_line(folder_data, finished, tmp_path, capsys):
    run_dir, plot_dir = copy_of(finished, tmp_path)
    config = utils.read_json(run_dir / "config.json")
    config["settings"]["batch_size"] = "16"
    utils.write_json(config, run_dir / "config.json")
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5"], capsys)
    assert code == 1 and one_line_error(stderr) and "settings.batch_size" in stderr
