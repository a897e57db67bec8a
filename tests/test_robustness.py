"""Misuse probes: bad flags, divergence, interrupted and resumed runs, damaged files, locks.

Each probe must end in one clear line and a non-zero exit, and never lose a checkpoint.
The kill-and-resume probes run task2.py as a user would, in a subprocess, on a tiny
synthetic dataset; the rest call the scripts in-process to keep the suite fast.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import run_folder
import task2
import task3_model1
from helpers import (ONE_THREAD, ROOT, TINY, fail_at_step, one_line_error, outcome, run_script, snapshot,
                     task2_args, tiny_trainer)
from run_folder import read_run
from settings import TrainConfig
from trainer import Trainer, TrainingDiverged
from utils import UserError, load_checkpoint, read_json, write_json

# ---------------------------------------------------------------- invalid hyperparameters

@pytest.mark.parametrize("flags", [
    ["--lr", "0"], ["--lr", "-0.1"], ["--lr", "nan"], ["--lr", "inf"], ["--batch-size", "0"],
    ["--epochs", "0"], ["--validation-fraction", "0"], ["--validation-fraction", "1"],
    ["--validation-fraction", "1.5"], ["--early-stop-count", "0"], ["--optimizer", "sgdd"],
    ["--lr", "fast"], ["--resume", "--overwrite"], ["--lr", "1e300"], ["--momentum", "1e39"],
    ["--seed", "4294967296"], ["--seed", "-1"], ["--seeds", "1", "1"], ["--device", "tpu"],
    ["--evaluate-only", "--overwrite"], ["--seed", "3", "--seeds", "0", "1"],
])
def test_invalid_flags_exit_2_and_create_nothing(flags, tmp_path, capsys):
    run_dir, plot_dir = tmp_path / "run", tmp_path / "plots"
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--plot-dir", plot_dir, *flags], capsys)
    assert code == 2
    assert "error:" in stderr and "Traceback" not in stderr
    assert not run_dir.exists() and not plot_dir.exists()


def test_an_invalid_flag_is_named_with_its_range(tmp_path, capsys):
    code, stderr = outcome(task2.main, ["--lr", "-1", "--run-dir", tmp_path / "run"], capsys)
    assert code == 2 and one_line_error(stderr)
    assert "--lr: -1 is out of range: must be > 0" in stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- divergence

def test_divergence_stops_at_once_and_keeps_the_best_checkpoint(folder_data, tmp_path):
    import dataloaders
    from torch import nn

    torch.manual_seed(0)
    loaders = dataloaders.load_cifar10(16, 0.1, seed=0, data_dir=folder_data, subset=160)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, 10))
    # A sane learning rate until step 12 (after the first validation at step 5 and 10), then a
    # huge one: weights near 1e28 in two layers overflow float32, so the loss must turn non-finite within a few steps.
    explode = lambda step, total_steps: 1.0 if step < 12 else 1e30  # noqa: E731
    trainer = Trainer(model, *loaders, TrainConfig(epochs=3, lr=0.01, precision="fp32"), tmp_path, "cpu",
                      lr_schedule=explode)
    with pytest.raises(TrainingDiverged, match="diverged at step .*lower --lr"):
        trainer.train()
    assert 12 < trainer.step < 20, "training went on after the loss became non-finite"
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] in (5, 10) and all(torch.isfinite(t).all() for t in best["model"].values())
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 10  # the last good validation
    history = read_json(tmp_path / "history.json")
    assert len(history["train_loss"]["values"]) == trainer.step  # losses up to the divergence
    assert [p["step"] for p in history["validation"]] == [5, 10]
    assert not (tmp_path / "metrics.json").exists()


def test_divergence_from_the_command_line(folder_data, tmp_path, capsys):
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots",
                                                  "--lr", "1e12"), capsys)
    assert code == 1 and one_line_error(stderr)
    assert "training diverged" in stderr and "lower --lr" in stderr
    # Diverged before its first checkpoint: nothing of it is left, so the advised rerun is not refused.
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, says", [
    (["--weight-decay", "1e37"], "lower --weight-decay (or --lr)"),
    (["--lr", "1e30", "--weight-decay", "1e-4"], "lower --lr (or --weight-decay)"),
    (["--momentum", "3"], "--momentum 3 is 1 or more"),
])
def test_divergence_names_the_setting_that_caused_it(flags, says, folder_data, tmp_path, capsys):
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots", *flags), capsys)
    assert code == 1 and one_line_error(stderr) and "training diverged" in stderr
    assert says in stderr


def test_divergence_advice_without_an_obvious_cause_is_the_learning_rate():
    from trainer import divergence_advice
    assert divergence_advice(TrainConfig(lr=5.0)) == "lower --lr (now 5)"
    assert divergence_advice(TrainConfig(lr=5.0, momentum=0.9)) == "lower --lr (now 5) or --momentum (now 0.9)"
    # Adam's momentum is its own (betas): --momentum is not its setting
    assert "--momentum" not in divergence_advice(TrainConfig(lr=5.0, momentum=2.0, optimizer="adam"))


# ---------------------------------------------------------------- interrupted runs

@pytest.fixture(scope="module")
def uninterrupted(folder_data, tmp_path_factory):
    """A reference run, trained without interruption."""
    base = tmp_path_factory.mktemp("uninterrupted")
    result = run_script("task2.py", *task2_args(folder_data, base / "run", base / "plots"), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    return read_run(base / "run"), base / "run"


def start_and_signal(folder_data, run_dir, plot_dir, sig):
    """Start task2.py, wait for its first checkpoint, send `sig`; return the finished process."""
    # One thread: a tiny run needs no more, and a many-core machine running several test processes would
    # otherwise oversubscribe its cores many times over (seen: minutes to reach the first checkpoint).
    env = {**os.environ, "MPLBACKEND": "Agg", **ONE_THREAD}
    process = subprocess.Popen([sys.executable, str(ROOT / "task2.py"),
                                *map(str, task2_args(folder_data, run_dir, plot_dir))],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not (run_dir / "last.pt").exists():
        assert process.poll() is None, f"run ended before its first checkpoint: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint after 600 s"
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was interrupted"
    return process.returncode, stderr


def same_results(resumed, reference):
    for split in ("train", "validation", "test"):
        assert resumed["metrics"][split] == reference["metrics"][split], split
    assert resumed["metrics"]["best_step"] == reference["metrics"]["best_step"]
    assert resumed["history"]["validation"] == reference["history"]["validation"]
    assert resumed["history"]["train_loss"] == reference["history"]["train_loss"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(folder_data, tmp_path, uninterrupted, capsys):
    run_dir, plot_dir = tmp_path / "run", tmp_path / "plots"
    code, _ = start_and_signal(folder_data, run_dir, plot_dir, signal.SIGKILL)
    assert code == -signal.SIGKILL
    # An unfinished run is not silently restarted.
    before = snapshot(run_dir)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plot_dir), capsys)
    assert code == 2 and one_line_error(stderr) and "--resume" in stderr and "--overwrite" in stderr
    assert snapshot(run_dir) == before
    result = run_script("task2.py", *task2_args(folder_data, run_dir, plot_dir, "--resume"), env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stderr
    same_results(read_run(run_dir), uninterrupted[0])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_and_exits_130(sig, folder_data, tmp_path):
    # That a run resumed after such a stop is exact is checked in-process further down.
    run_dir = tmp_path / "run"
    code, stderr = start_and_signal(folder_data, run_dir, tmp_path / "plots", sig)
    assert code == 130
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert load_checkpoint(run_dir / "last.pt")["step"] >= 5


# ---------------------------------------------------------------- resuming the wrong thing

@pytest.mark.slow
@pytest.mark.parametrize("entry, extra, code, says", [
    (task2.main, ["--lr", "0.01"], 2, "was made with --lr=0.05, not --lr=0.01; drop --lr"),  # before the data loads
    (task2.main, ["--batch-size", "32"], 2, "was made with --batch-size=16, not --batch-size=32"),
    (task3_model1.main, [], 2, "holds a run of task2.py (its config.json says so), not of task3_model1.py"),
    # (another script: its record says, before the data loads)
])
def test_resume_with_other_settings_or_model_is_refused(entry, extra, code, says, folder_data, tmp_path,
                                                        uninterrupted, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for path in uninterrupted[1].iterdir():
        (run_dir / path.name).write_bytes(path.read_bytes())
    before = snapshot(run_dir)
    ended, stderr = outcome(entry, task2_args(folder_data, run_dir, tmp_path / "plots", "--resume", *extra),
                            capsys)
    assert ended == code and one_line_error(stderr) and says in stderr
    assert snapshot(run_dir) == before


def test_resume_without_a_checkpoint(folder_data, tmp_path, capsys):
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "p", "--resume"),
                           capsys)
    assert code == 1 and one_line_error(stderr) and "nothing to resume" in stderr


# ---------------------------------------------------------------- damaged files

def test_corrupt_checkpoint_is_named(folder_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "p", "--resume"), capsys)
    assert code == 1 and one_line_error(stderr)
    assert str(run_dir / "last.pt") in stderr and "corrupt" in stderr
    assert (run_dir / "last.pt").read_bytes().startswith(b"PK")  # left for the user to inspect


@pytest.mark.slow
def test_truncated_checkpoint_is_a_user_error(tmp_path, uninterrupted):
    path = tmp_path / "best.pt"
    path.write_bytes((uninterrupted[1] / "best.pt").read_bytes()[:5000])
    with pytest.raises(UserError, match=f"{path}.*corrupt"):
        load_checkpoint(path)


def test_checkpoint_files_that_do_not_load_are_one_line_naming_the_fix(tmp_path):
    """utils.read_torch_file, the one torch.load: missing, a folder, a file that is not a torch file."""
    path = tmp_path / "last.pt"
    with pytest.raises(UserError, match=f"^checkpoint {path} does not exist; train first"):
        load_checkpoint(path)
    path.mkdir()
    with pytest.raises(UserError, match=f"^checkpoint {path} is a folder, not a file; train first"):
        load_checkpoint(path)
    path.rmdir()
    torch.save({"step": 1}, path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match=rf"^checkpoint {path} is corrupt or not a checkpoint \(\w+\); delete it"):
        load_checkpoint(path)


def test_truncated_json_is_a_user_error(tmp_path):
    path = tmp_path / "history.json"
    write_json({"train_loss": {"steps": [0, 1], "values": [2.3, 2.2]}, "validation": []}, path)
    path.write_text(path.read_text()[:30])
    with pytest.raises(UserError, match="history.json is truncated"):
        read_json(path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(UserError, match="history.json"):
        read_run(tmp_path)


# ---------------------------------------------------------------- outputs that cannot be written

@pytest.mark.parametrize("which", ["--run-dir", "--plot-dir"])
def test_unwritable_output_fails_before_training(which, folder_data, tmp_path, capsys):
    # Tests run as root, for whom chmod does not block writes; a folder below a regular
    # file cannot be created by anyone.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    paths = {"--run-dir": tmp_path / "run", "--plot-dir": tmp_path / "plots", which: blocker / "sub"}
    started = time.perf_counter()
    code, stderr = outcome(task2.main, ["--data-dir", folder_data, *TINY, "--run-dir", paths["--run-dir"],
                                        "--plot-dir", paths["--plot-dir"]], capsys)
    assert code == 1 and one_line_error(stderr)
    assert f"cannot write to {blocker / 'sub'}" in stderr
    assert "validation loss" not in stderr  # no training step was taken
    assert time.perf_counter() - started < 10
    assert not list(tmp_path.glob("**/*.pt"))


def test_output_path_that_is_a_file(folder_data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    code, stderr = outcome(task2.main, task2_args(folder_data, blocker, tmp_path / "plots"), capsys)
    assert code == 1 and one_line_error(stderr)
    assert f"cannot write to {blocker}: it is a file" in stderr
    assert blocker.read_text() == "keep me"


# ---------------------------------------------------------------- two writers

def test_second_run_into_a_busy_run_dir_refuses(folder_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"owned by the first run")
    (run_dir / "metrics.json").write_text("{}")
    # This test plays the first run, still writing. flock locks belong to an open file, so a
    # second open() conflicts even inside one process, exactly as a second process would.
    lock = run_folder.lock(run_dir)
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots", *extra),
                                   capsys)
            assert code == 1 and one_line_error(stderr)
            assert "another run is writing" in stderr
    finally:
        lock.close()
    assert (run_dir / "last.pt").read_bytes() == b"owned by the first run"


# ---------------------------------------------------------------- the report reads real runs

@pytest.mark.slow
def test_report_reads_a_real_run(uninterrupted, tmp_path):
    import report

    runs_dir = tmp_path / "runs"
    (runs_dir / "task2").mkdir(parents=True)
    for path in uninterrupted[1].glob("*.json"):
        (runs_dir / "task2" / path.name).write_bytes(path.read_bytes())
    report.main(["--runs-dir", str(runs_dir), "--plot-dir", str(tmp_path / "plots")])
    text = (tmp_path / "plots" / "report.md").read_text()
    test_accuracy = uninterrupted[0]["metrics"]["test"]["accuracy"]
    assert f"| Task 2 | smoke run | {test_accuracy:.3f} | 0.739 |" in text    # a tiny run: marked as one
    assert (tmp_path / "plots" / "task2.png").stat().st_size > 10_000


# ---------------------------------------------------------------- Ctrl-C at the worst moment

@pytest.mark.parametrize("where", ["optimizer step", "validation"])
def test_ctrl_c_mid_step_or_mid_validation_resumes_exactly(where, folder_data, tmp_path):
    """A real SIGINT delivered right after the optimizer has updated the weights (or while
    validating) must not leave last.pt with a half-done step or a skipped validation."""
    reference = tiny_trainer(folder_data, tmp_path / "reference")
    reference.train()

    trainer = tiny_trainer(folder_data, tmp_path / "run")
    if where == "optimizer step":
        real_step, calls = trainer.optimizer.step, []

        def step_then_signal(*args, **kwargs):
            result = real_step(*args, **kwargs)
            calls.append(1)
            if len(calls) == 7:
                os.kill(os.getpid(), signal.SIGINT)
            return result
        trainer.optimizer.step = step_then_signal
    else:
        real_evaluate = trainer.evaluate

        def evaluate_then_signal(loader):
            os.kill(os.getpid(), signal.SIGINT)
            return real_evaluate(loader)
        trainer.evaluate = evaluate_then_signal
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    resumed = tiny_trainer(folder_data, tmp_path / "run")
    resumed.resume()
    resumed.train()
    assert resumed.state.history == reference.state.history
    for name, tensor in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_non_finite_validation_loss_is_divergence_and_keeps_last_good_checkpoint(folder_data, tmp_path):
    # Stands in for the GPU path, where the training loss is checked only every log_every steps.
    trainer = tiny_trainer(folder_data, tmp_path)
    real_evaluate, calls = trainer.evaluate, []

    def second_validation_is_nan(loader):
        calls.append(1)
        result = real_evaluate(loader)
        return {**result, "loss": float("nan")} if len(calls) == 2 else result
    trainer.evaluate = second_validation_is_nan
    with pytest.raises(TrainingDiverged, match="diverged at step 10"):
        trainer.train()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 5
    assert [p["step"] for p in read_json(tmp_path / "history.json")["validation"]] == [5]


# ---------------------------------------------------------------- checkpoints that load but are not ours

def copy_run(source, run_dir):
    run_dir.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (run_dir / path.name).write_bytes(path.read_bytes())
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("which, content, action", [
    ("last.pt", [1, 2], "--resume"), ("last.pt", {"weights": torch.zeros(2)}, "--resume"),
    ("last.pt", "best.pt", "--resume"), ("last.pt", {"model": {}, "best": 3}, "--resume"),
    ("best.pt", [1, 2], "--evaluate-only"), ("best.pt", {"step": 5}, "--evaluate-only"),
    ("best.pt", [1, 2], "--resume"),
])
def test_a_checkpoint_that_is_not_ours_is_named(which, content, action, folder_data, tmp_path, uninterrupted,
                                                 capsys):
    run_dir = copy_run(uninterrupted[1], tmp_path / "run")
    if content == "best.pt":
        (run_dir / which).write_bytes((run_dir / "best.pt").read_bytes())
    else:
        torch.save(content, run_dir / which)
    before = snapshot(run_dir)
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots", action), capsys)
    assert code == 1 and one_line_error(stderr), stderr
    assert f"{run_dir / which} is not a checkpoint of this project" in stderr
    assert ("it is a best.pt" in stderr) == (content == "best.pt")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("script", ["task4b", "task4c"])
def test_task4_checkpoint_that_is_not_ours_is_named(script, tmp_path, capsys):
    import importlib
    from PIL import Image
    Image.new("RGB", (40, 30), "white").save(tmp_path / "photo.png")
    for content in ([1, 2], {"step": 5}, {"model": {"conv1.weight": torch.zeros(1)}}):
        torch.save(content, tmp_path / "best.pt")
        code, stderr = outcome(importlib.import_module(script).main, [
            "--checkpoint", tmp_path / "best.pt", "--image", tmp_path / "photo.png", "--plot-dir", tmp_path], capsys)
        assert code == 1 and one_line_error(stderr) and f"--checkpoint {tmp_path / 'best.pt'}" in stderr


# ---------------------------------------------------------------- a second Ctrl-C while saving

@pytest.mark.parametrize("file", ["last.pt", "best.pt"])
def test_second_ctrl_c_while_saving_says_which_step_is_kept(file, folder_data, tmp_path, capsys, monkeypatch):
    """First Ctrl-C in step 7 (last.pt then holds step 5); the second lands while last.pt is written (or,
    at the validation of step 10, while the new best.pt is)."""
    run_dir = tmp_path / "run"
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step", 0) > 5 and ("optimizer" in obj) == (file == "last.pt"):
            raise KeyboardInterrupt  # the second Ctrl-C
        return real_save(obj, handle, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    if file == "last.pt":
        fail_at_step(monkeypatch, 7, KeyboardInterrupt())
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots", "--lr", "0.02"),
                           capsys)
    assert code == 130 and "nothing was trained or saved" not in stderr
    assert f"{run_dir / 'last.pt'} keeps step 5" in stderr and "--resume" in stderr
    assert load_checkpoint(run_dir / "last.pt")["step"] == 5 and load_checkpoint(run_dir / "best.pt")["step"] == 5
    assert [p["step"] for p in read_json(run_dir / "history.json")["validation"]] == [5]
