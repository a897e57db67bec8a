"""What a run folder says is what it holds (issue 32).

A --resume rewrites the record (history.json, metrics.csv, best.pt where it is the last step) from last.pt,
even when it trains no further; a lost or damaged config.json is read back from the checkpoints (which record
the run's settings, its length and its data folder) or refused by name, never replaced by the script's
defaults; the data folder is recorded resolved, and a resume never downloads into data/cifar10; a recorded
setting is checked as its flag is; a resume never gives a run a length shorter than it already went.
"""
import gc
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import dataloaders
import task2
import task3_model2
import utils
from helpers import ONE_THREAD, ROOT, TINY, exit_code, one_line_error, outcome, task2_args
from run_folder import read_run


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_download(monkeypatch, tmp_path):
    """No test here may fall back to data/cifar10 or a download: both fail loudly (as a bug would)."""
    def download(root):
        raise AssertionError(f"a download into {root} was attempted")
    monkeypatch.setattr(dataloaders, "_download", download)
    monkeypatch.setattr(dataloaders, "DEFAULT_DATA_DIR", tmp_path / "no-default-data")
    monkeypatch.delenv("CIFAR10_DIR", raising=False)


def make_run(base, *argv):
    """A tiny Task 2 run into base/run (plots in base/plots), made in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CIFAR10_DIR", raising=False)
        assert exit_code(task2.main, "--run-dir", base / "run", "--plot-dir", base / "plots", *argv) == 0
    return base


@pytest.fixture(scope="module")
def finished(folder_data, tmp_path_factory):
    """40 steps, 8 validations (tests work on copies)."""
    return make_run(tmp_path_factory.mktemp("finished"), "--data-dir", folder_data, *TINY)


@pytest.fixture(scope="module")
def unfinished(folder_data, tmp_path_factory):
    """Made with --epochs 6 --max-steps 30 --early-stop-count 9, interrupted at step 11 (last.pt holds it)."""
    import trainer
    base = tmp_path_factory.mktemp("unfinished")
    real, calls = trainer.Trainer.train_step, []

    def train_step(self, images, labels):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return real(self, images, labels)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.Trainer, "train_step", train_step)
        patch.delenv("CIFAR10_DIR", raising=False)
        code = exit_code(task2.main, *task2_args(folder_data, base / "run", base / "plots", "--epochs", "6",
                                                 "--max-steps", "30", "--early-stop-count", "9"))
    gc.collect()  # the interrupted run's lock, held by the traceback
    assert code == 130 and utils.load_checkpoint(base / "run" / "last.pt")["step"] == 11
    return base


def copy_of(made, tmp_path):
    shutil.copytree(made / "run", tmp_path / "run")
    return tmp_path / "run"


def history_of_last(run_dir):
    """last.pt's history as history.json would hold it."""
    return json.loads(json.dumps(utils.load_checkpoint(run_dir / "last.pt")["history"]))


def csv_steps(run_dir):
    return [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]


def as_an_earlier_version_wrote_it(run_dir):
    """Take away what this version adds to a run's record: the checkpoints' copy of it, the resolved data folder
    and the script's name in config.json."""
    for name in ("last.pt", "best.pt"):
        state = utils.load_checkpoint(run_dir / name)
        state.pop("record", None)
        utils.save_checkpoint(state, run_dir / name)
    config = utils.read_json(run_dir / "config.json")
    config["settings"].pop("script", None)
    for key in ("data_dir", "data_dir_from"):
        config["resolved"].pop(key, None)
    utils.write_json(config, run_dir / "config.json")


# ---------------------------------------------------------------- 1: a resume rewrites the record from last.pt

# task2.py SIGKILLed while it writes history.json after the last step's last.pt (the 8th validation).
KILLED_AT_THE_LAST_HISTORY = """
import os, signal, sys
sys.path.insert(0, {root!r})
import trainer, utils
writes = []
def write_json(data, path):
    if path.name == "history.json":
        writes.append(path)
        if len(writes) == 8:
            def half(handle):
                handle.write(b'{{"train_loss": ')
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            utils.atomic_write(path, half)
    return utils.write_json(data, path)
trainer.write_json = write_json
import cli, task2
cli.main(task2.main, sys.argv[1:])
"""


@pytest.mark.slow
def test_a_kill_between_the_last_checkpoint_and_its_history_is_repaired_by_resume(folder_data, tmp_path, capsys):
    run_dir, plot_dir = tmp_path / "run", tmp_path / "plots"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_LAST_HISTORY.format(root=str(ROOT)),
                             *map(str, task2_args(folder_data, run_dir, plot_dir))],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert utils.load_checkpoint(run_dir / "last.pt")["step"] == 40
    assert len(utils.read_json(run_dir / "history.json")["validation"]) == 7     # one validation behind
    assert list(run_dir.glob(".history.json.*.tmp"))
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume"], capsys)
    assert code == 0, stderr
    history = utils.read_json(run_dir / "history.json")
    assert history == history_of_last(run_dir) and len(history["validation"]) == 8
    assert csv_steps(run_dir) == [point["step"] for point in history["validation"]]
    assert not list(run_dir.glob(".*.tmp"))
    assert read_run(run_dir)["metrics"]["steps"] == 40


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_a_damaged_history_of_a_finished_run_is_rewritten_by_resume(damage, finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    old = read_run(run_dir)
    history = run_dir / "history.json"
    history.write_bytes(history.read_bytes()[:200] if damage == "truncated" else b"{}")
    (run_dir / "metrics.csv").write_text("step,epoch\n1,")
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume"], capsys)
    assert code == 0, stderr
    new = read_run(run_dir)
    assert new["history"] == old["history"] == history_of_last(run_dir)
    assert new["metrics"]["test"] == old["metrics"]["test"]
    assert csv_steps(run_dir) == [point["step"] for point in old["history"]["validation"]]


def files_as_they_are(folder):
    """Every file under `folder`: its bytes and which file it is (a rewrite, even of the same bytes, is another)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_building_the_trainer_of_a_resumed_run_changes_no_file(finished, tmp_path, capsys, monkeypatch):
    """run.trainer() only builds (as a Trainer's construction reads and writes nothing); run.fit(trainer) resumes:
    the run's files change from there on."""
    from runs import Run
    run_dir, seen = copy_of(finished, tmp_path), {}

    def train(args):
        run = Run.start(args, title="Task 2")
        loaders = run.load_cifar10()
        seen["started"] = files_as_they_are(run_dir)
        trainer = run.trainer(task2.Task2Model(), *loaders)
        seen["built"] = files_as_they_are(run_dir)
        run.fit(trainer)
        seen["resumed_at"] = trainer.state.history["validation"][7]["step"] if trainer.resumed else None
        return run.finish(trainer)
    monkeypatch.setattr(task2, "train", train)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                           capsys)
    assert code == 0, stderr
    assert seen["built"] == seen["started"] and seen["resumed_at"] == 40
    assert files_as_they_are(run_dir) != seen["built"] and read_run(run_dir)["metrics"]["steps"] == 50
    assert stderr.index("resumed ") < stderr.index("Task 2: ")  # the lines a resume prints, in their order


@pytest.mark.slow
def test_a_script_that_trains_without_run_fit_never_starts_a_resumed_run_over(finished, tmp_path, capsys,
                                                                              monkeypatch):
    from runs import Run
    run_dir = copy_of(finished, tmp_path)
    before = tree(run_dir)

    def train(args):
        run = Run.start(args, title="Task 2")
        trainer = run.trainer(task2.Task2Model(), *run.load_cifar10())
        trainer.fit()                                    # where run.fit(trainer) belongs
    monkeypatch.setattr(task2, "train", train)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                           capsys)
    assert code == 1 and one_line_error(stderr) and "the script must call it, not trainer.fit()" in stderr
    assert tree(run_dir) == before


# ---------------------------------------------------------------- 17: the advice for a damaged file works

@pytest.mark.slow
@pytest.mark.parametrize("name, damaged", [("metrics.json", b'{"train": {"loss": 1'), ("history.json", b"[]"),
                                           ("config.json", b"")])
def test_the_advice_for_a_damaged_file_of_a_finished_run_repairs_it(name, damaged, finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    old = read_run(run_dir)
    (run_dir / name).write_bytes(damaged)
    with pytest.raises(utils.UserError) as error:
        read_run(run_dir)
    advice = f"python task2.py --resume --run-dir {run_dir}"
    assert str(run_dir / name) in str(error.value) and advice in str(error.value)
    code, stderr = outcome(task2.main, advice.split()[2:], capsys)     # exactly what it says
    assert code == 0, stderr
    new = read_run(run_dir)
    assert new["metrics"]["test"] == old["metrics"]["test"] and new["history"] == old["history"]
    assert new["config"]["settings"]["subset"] == 160


# ---------------------------------------------------------------- 2: config.json lost or damaged

@pytest.mark.slow
@pytest.mark.parametrize("damage, extra", [
    ("missing", []), ("empty", []), ("{}", []), ("{}", ["--data-dir"]), ("truncated", []),
    ('{"settings": {}}', []), ("[]", []), ('{"settings": {"lr": 0.05}}', ["--data-dir"]),
])
def test_a_lost_config_is_read_back_from_last_pt_with_its_length(damage, extra, unfinished, folder_data, tmp_path,
                                                                 capsys):
    run_dir = copy_of(unfinished, tmp_path)
    config = run_dir / "config.json"
    if damage == "missing":
        config.unlink()
    else:
        config.write_bytes({"empty": b"", "truncated": config.read_bytes()[:300]}.get(damage, damage.encode()))
    extra = ["--data-dir", folder_data] if extra else []
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", *extra], capsys)
    assert code == 0, stderr
    assert "config.json" in stderr and "last.pt" in stderr       # says where the settings came from
    run = read_run(run_dir)
    assert run["metrics"]["steps"] == 30                          # its own --max-steps, not the default length
    settings = run["config"]["settings"]
    assert (settings["epochs"], settings["max_steps"], settings["early_stop_count"]) == (6, 30, 9)
    assert settings["batch_size"] == 16 and settings["subset"] == 160
    assert run["config"]["resolved"]["data_dir"] == str(folder_data)


@pytest.mark.slow
def test_a_lost_config_with_a_checkpoint_of_an_earlier_version_is_refused_by_name(unfinished, folder_data, tmp_path,
                                                                                 capsys):
    run_dir = copy_of(unfinished, tmp_path)
    as_an_earlier_version_wrote_it(run_dir)
    (run_dir / "config.json").write_text("")
    before = tree(run_dir)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume"], capsys)
    assert code == 1 and one_line_error(stderr), stderr
    assert str(run_dir / "config.json") in stderr and "--epochs" in stderr and "--max-steps" in stderr
    assert tree(run_dir) == before
    # What it asks for is enough: the experiment's settings come from last.pt's signature.
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "6", "--max-steps", "30",
                                        "--early-stop-count", "9", "--data-dir", folder_data], capsys)
    assert code == 0, stderr
    settings = read_run(run_dir)["config"]["settings"]
    assert read_run(run_dir)["metrics"]["steps"] == 30 and settings["batch_size"] == 16 and settings["subset"] == 160


@pytest.mark.slow
def test_a_lost_config_is_read_back_from_best_pt_by_evaluate_only(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    (run_dir / "config.json").unlink()
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--evaluate-only"], capsys)
    assert code == 0, stderr
    evaluation = utils.read_json(run_dir / "evaluation.json")
    assert evaluation["on_training_data"] is True
    assert evaluation["test"] == read_run(finished / "run")["metrics"]["test"]


# ---------------------------------------------------------------- 3: the data folder

@pytest.mark.slow
def test_a_relative_data_dir_is_recorded_resolved(folder_data, tmp_path, capsys, monkeypatch):
    shutil.copytree(folder_data, tmp_path / "here" / "data")
    (tmp_path / "elsewhere").mkdir()
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "here")
    make_run(tmp_path, "--data-dir", "data", *TINY, "--max-steps", "15")
    config = utils.read_json(run_dir / "config.json")
    assert config["resolved"]["data_dir"] == str(tmp_path / "here" / "data")
    assert config["resolved"]["data_dir_from"] == "--data-dir"
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--max-steps", "25"], capsys)
    assert code == 0, stderr
    assert read_run(run_dir)["metrics"]["steps"] == 25
    # Moved since: one line naming the folder recorded, and the flag that gives the new place.
    (tmp_path / "here" / "data").rename(tmp_path / "here" / "moved")
    before = tree(run_dir)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--max-steps", "35"], capsys)
    assert code == 1 and one_line_error(stderr), stderr
    assert str(tmp_path / "here" / "data") in stderr and "--data-dir" in stderr
    assert tree(run_dir) == before
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--evaluate-only"], capsys)
    assert code == 1 and one_line_error(stderr) and str(tmp_path / "here" / "data") in stderr
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--max-steps", "35", "--data-dir",
                                        tmp_path / "here" / "moved"], capsys)
    assert code == 0, stderr
    assert utils.read_json(run_dir / "config.json")["resolved"]["data_dir"] == str(tmp_path / "here" / "moved")


@pytest.mark.slow
def test_a_data_folder_from_the_environment_is_recorded(folder_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(folder_data))
    assert exit_code(task2.main, *task2_args(folder_data, tmp_path / "run", tmp_path / "plots")[2:],
                     "--max-steps", "15") == 0
    resolved = utils.read_json(tmp_path / "run" / "config.json")["resolved"]
    assert (resolved["data_dir"], resolved["data_dir_from"]) == (str(folder_data), "$CIFAR10_DIR")
    monkeypatch.delenv("CIFAR10_DIR")
    code, stderr = outcome(task2.main, ["--run-dir", tmp_path / "run", "--resume", "--max-steps", "25"], capsys)
    assert code == 0, stderr
    assert read_run(tmp_path / "run")["metrics"]["steps"] == 25
    # $CIFAR10_DIR naming another folder now: the run's own is read, and the note says so.
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "another"))
    code, stderr = outcome(task2.main, ["--run-dir", tmp_path / "run", "--resume", "--max-steps", "30"], capsys)
    assert code == 0, stderr
    assert f"reading {folder_data}" in stderr and "--data-dir" in stderr
    resolved = read_run(tmp_path / "run")["config"]["resolved"]
    assert (resolved["data_dir"], resolved["data_dir_from"]) == (str(folder_data), "$CIFAR10_DIR")


@pytest.mark.slow
def test_a_run_of_an_earlier_version_without_its_data_folder_is_refused_by_name(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    as_an_earlier_version_wrote_it(run_dir)
    config = utils.read_json(run_dir / "config.json")
    config["settings"]["data_dir"] = None          # made with $CIFAR10_DIR, or data/cifar10: it does not say
    utils.write_json(config, run_dir / "config.json")
    before = tree(run_dir)
    for action in ("--resume", "--evaluate-only"):
        code, stderr = outcome(task2.main, ["--run-dir", run_dir, action], capsys)
        assert code == 1 and one_line_error(stderr), stderr
        assert "--data-dir" in stderr and config["data"]["source"] in stderr
        assert tree(run_dir) == before


@pytest.mark.slow
@pytest.mark.parametrize("action", ["--resume", "--evaluate-only"])
def test_another_scripts_run_folder_is_refused_by_name(action, finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    before = tree(run_dir)
    code, stderr = outcome(task3_model2.main, ["--run-dir", run_dir, action], capsys)
    assert code == 2 and one_line_error(stderr), stderr
    assert "task2.py" in stderr and "task3_model2.py" in stderr
    assert tree(run_dir) == before


@pytest.mark.slow
def test_a_run_of_an_earlier_version_still_resumes_with_only_its_run_dir(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    as_an_earlier_version_wrote_it(run_dir)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--epochs", "5", "--early-stop-count", "9"],
                           capsys)
    assert code == 0, stderr
    assert read_run(run_dir)["metrics"]["steps"] == 50


# ---------------------------------------------------------------- 9: a recorded setting is checked as its flag is

@pytest.mark.parametrize("key, value, says", [
    ("epochs", -3, ">= 1"), ("max_steps", 0, ">= 1"), ("early_stop_count", 0, ">= 1"), ("lr", 0, "> 0"),
    ("lr", "0.05", "not a number"), ("batch_size", 2.5, "2.5"), ("optimizer", "sgdd", "sgdd"),
    ("validation_fraction", 1.5, "between 0 and 1"), ("augment", "yes", "yes"), ("seed", -1, "between 0"),
    ("epochs", None, "null"),
])
def test_a_hand_edited_setting_out_of_range_is_one_line(key, value, says, unfinished, tmp_path, capsys):
    run_dir = copy_of(unfinished, tmp_path)
    config = utils.read_json(run_dir / "config.json")
    config["settings"][key] = value
    utils.write_json(config, run_dir / "config.json")
    before = tree(run_dir)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume"], capsys)
    assert code == 1 and one_line_error(stderr), stderr
    assert f"settings.{key}" in stderr and says in stderr and f"--{key.replace('_', '-')}" in stderr
    assert tree(run_dir) == before


# ---------------------------------------------------------------- 10: best.pt lost at the last step

@pytest.mark.slow
def test_a_lost_best_checkpoint_at_the_last_step_is_written_again_by_resume(folder_data, tmp_path, capsys):
    base = make_run(tmp_path, "--data-dir", folder_data, *TINY, "--epochs", "1",
                    "--validations-per-epoch", "1")
    run_dir = base / "run"
    metrics = read_run(run_dir)["metrics"]
    assert metrics["best_step"] == metrics["steps"] == 10                # one validation: the best is the last
    (run_dir / "best.pt").unlink()
    code, stderr = outcome(task2.main, ["--evaluate-only", "--run-dir", run_dir], capsys)
    assert code == 1 and one_line_error(stderr) and "--resume" in stderr   # the way out, named
    code, stderr = outcome(task2.main, ["--resume", "--run-dir", run_dir], capsys)
    assert code == 0, stderr
    best, last = utils.load_checkpoint(run_dir / "best.pt"), utils.load_checkpoint(run_dir / "last.pt")
    assert best["step"] == 10 and all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    code, stderr = outcome(task2.main, ["--evaluate-only", "--run-dir", run_dir], capsys)
    assert code == 0, stderr
    assert utils.read_json(run_dir / "evaluation.json")["test"] == metrics["test"]


# ---------------------------------------------------------------- 16: never a length shorter than the run went

@pytest.mark.slow
def test_a_length_below_where_the_run_is_is_refused(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    history = read_run(run_dir)["history"]["validation"]
    losses = [point["loss"] for point in history]
    # the smallest --early-stop-count that would have ended the run before its last validation, if any
    gaps = [i - min(range(i + 1), key=losses.__getitem__) for i in range(len(losses) - 1)]
    shorter = [(["--max-steps", "20"], "--max-steps 20"), (["--epochs", "2"], "--epochs 2"),
               (["--epochs", "3", "--max-steps", "100"], "--epochs 3")]
    if max(gaps, default=0) > 0:
        shorter.append((["--early-stop-count", str(max(gaps))], f"--early-stop-count {max(gaps)}"))
    before = tree(run_dir)
    for flags, named in shorter:
        code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", *flags], capsys)
        assert code == 2 and one_line_error(stderr), (flags, stderr)
        error = next(line for line in stderr.splitlines() if line.startswith("error:"))
        assert "at step 40" in error and named in error, error
        assert tree(run_dir) == before
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--resume", "--max-steps", "40"], capsys)
    assert code == 0, stderr
    run = read_run(run_dir)
    assert run["metrics"]["steps"] == 40 and run["config"]["settings"]["max_steps"] == 40


def test_a_recorded_list_is_checked_item_by_item(tmp_path):
    """A flag of several values (Task 3d's --widths N N N): as many values as it takes, each checked by its type."""
    import cli
    widths = cli.training_parser("", "probe").add_argument("--widths", type=cli.positive_int, nargs=3,
                                                          default=[64, 256, 256])
    assert cli._recorded_value("widths", [8, 16, 32], tmp_path, widths) == [8, 16, 32]
    for wrong, says in (([8, 16], "a list of 3"), ([8, 0, 32], ">= 1"), (8, "a list of 3"), ([8, "16", 32], "number")):
        with pytest.raises(utils.UserError, match=says):
            cli._recorded_value("widths", wrong, tmp_path, widths)


# ---------------------------------------------------------------- a setting a script gained since a run was made

def test_a_run_made_before_its_script_gained_a_setting_resumes_with_its_default(folder_data, tmp_path, capsys):
    """Model 1's --widths (Task 3c's "more filters") came after runs of it were made: a checkpoint without it was
    trained with its default, so it resumes; another value is refused as any other setting is."""
    import task3_model1
    run_dir = tmp_path / "run"
    argv = ["--run-dir", run_dir, "--plot-dir", tmp_path / "plots", "--data-dir", folder_data, *TINY]
    assert exit_code(task3_model1.main, *argv, "--max-steps", 10) == 0
    as_an_earlier_version_wrote_it(run_dir)
    for name in ("last.pt", "best.pt"):     # what the checkpoints recorded before the flag existed
        state = utils.load_checkpoint(run_dir / name)
        del state["signature"]["widths"]
        utils.save_checkpoint(state, run_dir / name)
    config = utils.read_json(run_dir / "config.json")
    for section in ("settings", "defaults"):
        config[section].pop("widths")
    utils.write_json(config, run_dir / "config.json")
    capsys.readouterr()
    code, stderr = outcome(task3_model1.main, ["--run-dir", run_dir, "--resume", "--widths", "16", "32", "64",
                                               "--max-steps", "20"], capsys)
    assert code == 1 and "widths: None -> [16, 32, 64]" in stderr and one_line_error(stderr)
    code, stderr = outcome(task3_model1.main, ["--run-dir", run_dir, "--resume", "--max-steps", "20"], capsys)
    assert code == 0, stderr
    assert read_run(run_dir)["metrics"]["steps"] == 20
