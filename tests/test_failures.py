"""Failed writes, odd paths and names, refusals after the run folder is claimed, a torchrun process that
dies, signals while PyTorch loads: each ends in one line, and leaves nothing the user did not have.

Full disks, inodes run out and read-only folders are real where the tests may mount a small tmpfs (as
root), and simulated (an OSError where the system would raise it) everywhere.
"""
import errno
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import dataloaders
import watching
import runs
import task2
import task4b
import task4c
import utils
from helpers import ROOT
from helpers import one_line_error, outcome, task2_args, tiny_trainer
from utils import UserError


# ---------------------------------------------------------------- run folder names

@pytest.mark.parametrize("run_dir", [".", "/", ".."])
def test_seeds_need_a_run_dir_with_a_name(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stderr = outcome(task2.main, ["--run-dir", run_dir, "--seeds", 0, "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 2 and one_line_error(stderr)
    assert "no folder name to add -seed0 to" in stderr and "--run-dir runs/task2" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, seeds", [("a" * 256, []), ("a" * 250, ["--seeds", 0, 1])])
def test_a_name_too_long_is_refused_before_anything(name, seeds, tmp_path, capsys):
    code, stderr = outcome(task2.main, ["--run-dir", tmp_path / "runs" / name, "--plot-dir", tmp_path / "plots",
                                        *seeds], capsys)
    assert code == 2 and one_line_error(stderr) and "longer than the 255" in stderr
    assert ("-seedK" in stderr) == bool(seeds)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a split left empty; refusals after the claim

def data_must_not_load(monkeypatch):
    def load_raw(*args, **kwargs):
        raise AssertionError("the data was loaded")
    monkeypatch.setattr(dataloaders, "load_raw", load_raw)


@pytest.mark.parametrize("fraction", ["0.00001", "0.99999"])
def test_a_fraction_that_empties_a_split_of_cifar10_is_refused_before_the_data_loads(fraction, tmp_path, capsys,
                                                                                    monkeypatch):
    data_must_not_load(monkeypatch)
    code, stderr = outcome(task2.main, ["--run-dir", tmp_path / "run", "--plot-dir", tmp_path / "plots",
                                        "--validation-fraction", fraction], capsys)
    assert code == 2 and one_line_error(stderr) and "of 50,000 training images leaves" in stderr and "0 for" in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_fraction_that_empties_a_split_of_a_small_copy_is_refused_before_the_folder_is_claimed(
        folder_data, tmp_path, capsys, monkeypatch):
    data_must_not_load(monkeypatch)
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots",
                                                  "--validation-fraction", "0.9999"), capsys)
    assert code == 2 and one_line_error(stderr)
    assert "of 300 training images leaves 300 for validation and 0 for training" in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("user_made", [False, True])
def test_a_refusal_after_the_folder_is_claimed_takes_back_what_the_run_made(user_made, batches_data, tmp_path,
                                                                           capsys):
    # cifar-10-batches-py is counted only once it is read, after the run has claimed its folder.
    run_dir = tmp_path / "runs" / "run"
    if user_made:
        run_dir.mkdir(parents=True)
    code, stderr = outcome(task2.main, task2_args(batches_data, run_dir, tmp_path / "plots",
                                                  "--validation-fraction", "0.9999"), capsys)
    assert code == 2 and one_line_error(stderr) and "0 for training" in stderr
    if user_made:  # left as it was: empty, without a .lock
        assert list(run_dir.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    else:          # runs/, runs/run and plots/ were made by the run: gone again
        assert list(tmp_path.iterdir()) == []


def test_an_unwritable_plot_dir_leaves_no_run_folder_behind(folder_data, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "a_file" / "plots"),
                           capsys)
    assert code == 1 and one_line_error(stderr) and f"cannot write to {tmp_path / 'a_file' / 'plots'}" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_ctrl_c_while_the_data_loads_leaves_no_folder_behind(folder_data, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dataloaders, "load_raw", interrupted)
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), capsys)
    assert code == 130 and "nothing was trained or saved" in stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- files that cannot be written

def torch_save_on_a_full_disk(handle):
    """What torch.save does when the disk fills: a RuntimeError raised while handling the ENOSPC."""
    handle.write(b"the first records of a checkpoint")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


def test_a_full_disk_is_named_when_torch_save_reports_it_as_unexpected_pos(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"the previous checkpoint")
    with pytest.raises(UserError, match=f"could not write {tmp_path / 'best.pt'}: the disk is full; the previous "
                                        "best.pt is intact; free some space"):
        utils.atomic_write(tmp_path / "best.pt", torch_save_on_a_full_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary left
    assert (tmp_path / "best.pt").read_bytes() == b"the previous checkpoint"


def test_a_file_that_cannot_even_be_created_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=f"could not write {tmp_path / 'a_file' / 'run' / 'x.json'}: .*nothing was "
                                        "written"):
        utils.write_json({}, tmp_path / "a_file" / "run" / "x.json")    # its folder cannot be made

    def no_inode_left(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(utils.tempfile, "mkstemp", no_inode_left)
    with pytest.raises(UserError, match="x.json: the disk is full; nothing was written"):
        utils.write_json({}, tmp_path / "x.json")


def csv_trainer():
    point = {"step": 5, "epoch": 0.5, "loss": 2.0, "accuracy": 0.3}
    history = {"validation": [point], "train_loss": {"steps": [0, 1], "values": [2.3, 2.2]},
               "learning_rate": {"steps": [0, 1], "values": [0.1, 0.1]}}
    return SimpleNamespace(is_main=True, state=SimpleNamespace(history=history), throughput=None,
                           clock=SimpleNamespace(wall_seconds=lambda: [1.0])), point


def test_metrics_csv_that_cannot_be_appended_is_one_error_and_stays_whole(tmp_path, monkeypatch):
    trainer, point = csv_trainer()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="could not write .*metrics.csv"):
        watching.MetricsCSV(tmp_path / "a_file" / "metrics.csv").after_validation(trainer, point)
    path = tmp_path / "metrics.csv"
    watching.MetricsCSV(path).after_validation(trainer, point)
    before = path.read_bytes()
    real_write, calls = os.write, []

    def disk_fills(fd, data):  # half a row fits, then the disk is full
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "write", disk_fills)
    with pytest.raises(UserError, match="metrics.csv: the disk is full; metrics.csv is as it was"):
        watching.MetricsCSV(path).after_validation(trainer, point)
    assert path.read_bytes() == before


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs with room for 8 files and folders, mounted for one test (needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=8", "tmpfs", str(disk)],
                                 capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_inodes_run_out_and_a_read_only_folder(small_disk):
    path = small_disk / "best.pt"
    utils.save_checkpoint({"weights": torch.zeros(10)}, path)
    before = path.read_bytes()
    with pytest.raises(UserError, match="best.pt: the disk is full; the previous best.pt is intact"):
        utils.save_checkpoint({"weights": torch.zeros(1_000_000)}, path)    # 4 MB
    assert path.read_bytes() == before and os.listdir(small_disk) == ["best.pt"]

    for index in range(10):  # use up the inodes
        try:
            (small_disk / f"file{index}").write_text("")
        except OSError:
            break
    with pytest.raises(UserError, match="history.json: the disk has no free inodes"):
        utils.write_json({}, small_disk / "history.json")
    with pytest.raises(UserError, match="cannot write to .*no free inodes"):
        utils.check_writable(small_disk / "plots")

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(UserError, match="history.json: the file system is read-only; nothing was written"):
        utils.write_json({}, small_disk / "history.json")


# ---------------------------------------------------------------- paths that are not what was expected

@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


def fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    return tmp_path / "pipe"


@pytest.mark.parametrize("flag, make, says", [
    ("--image", lambda tmp: "/dev/zero", "--image /dev/zero is a character device, not a file"),
    ("--image", fifo, "pipe is a FIFO (named pipe), not a file; pass a .jpg or .png"),
    ("--weights", lambda tmp: tmp, "is a folder, not a file; pass a ResNet-18 state dict"),
    ("--checkpoint", lambda tmp: tmp, "is a folder, not a file; pass runs/task4a/best.pt"),
    ("--checkpoint", lambda tmp: tmp / "missing.pt", "missing.pt does not exist; pass runs/task4a/best.pt"),
])
def test_a_path_that_is_not_a_file_says_what_it_is(flag, make, says, photo, tmp_path, capsys):
    if not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"):
        pytest.skip("needs POSIX")
    argv = ["--image", photo, "--weights", "none", "--plot-dir", tmp_path / "plots"]
    argv = [*argv, flag, make(tmp_path)] if flag == "--checkpoint" else \
        [value if previous != flag else make(tmp_path) for previous, value in zip([None, *argv], argv)]
    if flag == "--checkpoint":
        argv.remove("--weights"), argv.remove("none")
    code, stderr = outcome(task4b.main, argv, capsys)
    assert code == 1 and one_line_error(stderr) and says in stderr
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("module, work", [(task4b, "first_layer"), (task4c, "last_stage")])
def test_task4b_and_4c_check_the_plot_dir_before_the_model_runs(module, work, photo, tmp_path, capsys, monkeypatch):
    def model_ran(*args):
        raise AssertionError("the model ran before the plot folder was checked")
    monkeypatch.setattr(module, work, model_ran)
    (tmp_path / "a_file").write_text("")
    code, stderr = outcome(module.main, ["--image", photo, "--weights", "none", "--plot-dir",
                                         tmp_path / "a_file" / "plots"], capsys)
    assert code == 1 and one_line_error(stderr) and "cannot write to" in stderr


# ---------------------------------------------------------------- signals while PyTorch loads

@pytest.mark.parametrize("sig, code, says", [
    (signal.SIGINT, 130, "interrupted while starting up: nothing was done"),
    (signal.SIGTERM, 143, "terminated while starting up: nothing was done"),  # as a shell reports SIGTERM's death
])
def test_a_signal_while_torch_loads_is_one_line(sig, code, says, tmp_path):
    """A stand-in for PyTorch that takes long to import: Ctrl-C or SIGTERM meanwhile says so in one line, no
    traceback."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("import time\nprint('importing torch', flush=True)\n"
                                                    "time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, str(ROOT / "task2.py")], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert process.stdout.readline().strip() == "importing torch"
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert stderr.strip() == says


# ---------------------------------------------------------------- torchrun

@pytest.mark.slow
def test_a_torchrun_process_killed_mid_run_leaves_the_survivor_one_line(folder_data, tmp_path):
    if not os.path.isdir("/proc/self"):
        pytest.skip("finds the processes' ranks in /proc")
    run_dir = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if key != "CIFAR10_DIR"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               ROOT / "task2.py", "--data-dir", folder_data, "--device", "cpu", "--precision", "fp32",
               "--batch-size", 4, "--epochs", 50, "--run-dir", run_dir, "--plot-dir", tmp_path / "plots"]
    process = subprocess.Popen(list(map(str, command)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**env, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"},
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "last.pt").exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        # Rank 0 is the one that dies: it alone writes, so it may not notice at once; rank 1 does.
        workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        rank0 = [pid for pid in workers if b"RANK=0" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")]
        os.kill(int(rank0[0]), signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
    finally:
        try:  # torchrun and both workers, whatever happened
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    step = utils.load_checkpoint(run_dir / "last.pt")["step"]
    assert "another process of this torchrun run died" in stderr
    assert f"{run_dir / 'last.pt'} keeps step {step}; continue with the same torchrun command plus --resume" in stderr
    assert "This is a bug" not in stderr and "by peer" not in stderr


@pytest.mark.parametrize("saved", [True, False])
def test_a_dead_peer_names_the_checkpoint_kept_or_the_previous_run_intact(saved, folder_data, tmp_path, monkeypatch):
    """The same message without torchrun: which last.pt is this run's (a previous run's is not, under
    --overwrite, until this one saves)."""

    trainer = tiny_trainer(folder_data, tmp_path)
    trainer.folder = runs.RunFiles(SimpleNamespace(dir=tmp_path), protect_previous=not saved)
    utils.save_checkpoint({"step": 7}, tmp_path / "last.pt")           # this run's, or the previous run's
    trainer.folder.claimed = saved
    trainer.distributed = True

    def peer_gone():
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:32408")
    monkeypatch.setattr(trainer, "train", peer_gone)
    monkeypatch.setattr(signal, "signal", lambda *args: None)           # the test process keeps its SIGTERM
    with pytest.raises(UserError) as refused, runs.peers_watched(trainer):
        trainer.fit()
    message = str(refused.value)
    assert message.startswith("another process of this torchrun run died")
    if saved:
        assert f"{tmp_path / 'last.pt'} keeps step 7; continue with the same torchrun command plus --resume" in message
    else:
        assert "nothing of this run was saved, and the previous run" in message and "keeps step" not in message
