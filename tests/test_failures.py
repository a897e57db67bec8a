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
import figures
import watching
import run_folder
import runs
import task2
import task4b
import task4c
import utils
from helpers import ROOT
from helpers import exit_code, one_line_error, outcome, seeds_args, task2_args, tiny_trainer
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


def tmpfs(disk, options: str):
    """A real tmpfs mounted at `disk` (made here) for one test, with mount's `options`; the test is skipped
    where it cannot be mounted (needs root). Yields it, then unmounts it."""
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
                                 capture_output=True).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs with room for 8 files and folders, mounted for one test (needs root)."""
    yield from tmpfs(tmp_path / "disk", "size=1m,nr_inodes=8")


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
    trainer.folder = run_folder.RunFiles(SimpleNamespace(dir=tmp_path), protect_previous=not saved)
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


# ---------------------------------------------------------------- a figure that cannot be written

def test_files_written_together_are_replaced_together_or_not_at_all(tmp_path):
    (tmp_path / "a.png").write_bytes(b"old png")
    (tmp_path / "a.pdf").write_bytes(b"old pdf")

    def full(handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(utils.WriteError, match="a.pdf: the disk is full; the previous a.png and a.pdf are intact"):
        utils.atomic_writes({tmp_path / "a.png": lambda handle: handle.write(b"new png"), tmp_path / "a.pdf": full})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.png": b"old png", "a.pdf": b"old pdf"}


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB tmpfs, filled up, mounted for one test (needs root)."""
    for disk in tmpfs(tmp_path / "full", "size=64k"):
        try:
            with open(disk / "filler", "wb") as handle:
                handle.write(b"\0" * 256 * 1024)
        except OSError:  # full: what it is for
            pass
        yield disk


def test_a_full_plot_dir_warns_finishes_the_run_and_says_how_to_draw_the_figure(full_disk, folder_data, tmp_path,
                                                                                 capsys):
    run_dir = tmp_path / "run"
    code = exit_code(task2.main, *task2_args(folder_data, run_dir, full_disk / "plots", "--max-steps", "12"))
    out, stderr = capsys.readouterr()
    assert code == 1 and one_line_error(stderr)
    assert "(best checkpoint, step" in out and "test " in out and "figure: not written" in out  # the final table
    # the live figure: a warning, and training went on to the end
    assert stderr.count("warning: could not write the live figure") == 1
    assert f"{run_dir / 'last.pt'} holds step 5" in stderr and "training goes on" in stderr
    assert run_folder.status(run_dir) == "finished" and utils.load_checkpoint(run_dir / "last.pt")["step"] == 12
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: could not write the figure {full_disk / 'plots' / 'task2.png'}: the disk is full")
    assert f"the run is finished, its results saved in {run_dir}" in error and "no figure is at" in error
    assert "the same command plus --resume draws its figure" in error and "--plot-dir" in error
    # ... and so it does, into another folder
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, tmp_path / "plots", "--max-steps", "12",
                                                  "--resume"), capsys)
    assert code == 0, stderr
    assert "test accuracy" in figures.saved_title(tmp_path / "plots" / "task2.png")
    assert (tmp_path / "plots" / "task2.pdf").is_file()


def fail_figures(monkeypatch, which):
    """Figures whose title `which` picks fail to be written, as on a full disk."""
    real = figures._savefig

    def savefig(figure, kind, metadata, handle):
        if which(metadata.get("Title", "")):
            handle.write(b"the first bytes")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(figure, kind, metadata, handle)
    monkeypatch.setattr(figures, "_savefig", savefig)


def test_a_final_figure_that_cannot_be_written_keeps_the_live_one_and_says_so(folder_data, tmp_path, capsys,
                                                                              monkeypatch):
    fail_figures(monkeypatch, lambda title: watching.LIVE not in title)
    run_dir, plots = tmp_path / "run", tmp_path / "plots"
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plots, "--max-steps", "12"), capsys)
    assert code == 1 and one_line_error(stderr) and "warning" not in stderr
    title = figures.saved_title(plots / "task2.png")
    assert "in progress: step 5 of 12" in title                             # the live figure, PNG and PDF alike
    assert b"in progress: step 5 of 12" in (plots / "task2.pdf").read_bytes()
    assert f"{plots / 'task2.png'} is still an earlier drawing (the live figure, drawn while it trained), titled " \
           f"'{title}'" in stderr
    assert run_folder.status(run_dir) == "finished" and not list(plots.glob(".*.tmp"))


def test_a_live_figure_that_fails_once_is_one_warning_and_the_run_ends_well(folder_data, tmp_path, capsys,
                                                                          monkeypatch):
    failed = []
    fail_figures(monkeypatch, lambda title: watching.LIVE in title and not failed and not failed.append(title))
    run_dir, plots = tmp_path / "run", tmp_path / "plots"
    code, stderr = outcome(task2.main, task2_args(folder_data, run_dir, plots, "--max-steps", "12",
                                                  "--validations-per-epoch", "4"), capsys)
    assert code == 0, stderr
    assert stderr.count("warning: could not write the live figure") == 1 and "holds step" in stderr
    assert "test accuracy" in figures.saved_title(plots / "task2.png")


def test_a_seeds_set_goes_on_when_a_figure_cannot_be_written_and_ends_with_one_error(folder_data, tmp_path, capsys,
                                                                                  monkeypatch):
    fail_figures(monkeypatch, lambda title: watching.LIVE not in title)
    code = exit_code(task2.main, *seeds_args(folder_data, tmp_path / "run", tmp_path / "plots"), "--max-steps", "6",
                     "--seeds", "0", "1")
    out, err = capsys.readouterr()
    assert code == 1 and one_line_error(err) and "over 2 seeds (0, 1)" in out and out.count("figure: not written") == 2
    assert all(run_folder.status(tmp_path / f"run-seed{seed}") == "finished" for seed in (0, 1))
    assert "the runs are finished" in err and str(tmp_path / "run-seed1") in err


# ---------------------------------------------------------------- memory

OOM_CPU = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 172800000000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("error, memory", [
    (OOM_CPU, "the CPU's memory (RAM)"), (MemoryError(), "the CPU's memory (RAM)"),
    (RuntimeError("MPS backend out of memory (MPS allocated: 9.1 GiB, other allocations: 1.2 GiB, max allowed: "
                  "9.1 GiB). Tried to allocate 256 MiB on private pool."), "the Apple GPU's memory (MPS)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "the GPU's memory"),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), None), (ValueError("can't allocate memory"), None),
])
def test_out_of_memory_is_told_by_the_memory_that_ran_out(error, memory):
    import hardware
    assert hardware.out_of_memory(error) == memory


@pytest.mark.parametrize("step, kept", [(3, "nothing of this run was saved; start it again and lower --batch-size"),
                                        (7, "last.pt keeps step 5: continue it with the same command plus --resume")])
def test_cpu_out_of_memory_while_training_is_one_line_with_what_is_kept(step, kept, folder_data, tmp_path, capsys,
                                                                        monkeypatch):
    from helpers import fail_at_step
    fail_at_step(monkeypatch, step, OOM_CPU)
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), capsys)
    assert code == 1 and one_line_error(stderr) and "This is a bug" not in stderr
    assert f"error: out of memory after {step - 1} steps: the CPU's memory (RAM) cannot hold what --batch-size 16 " \
           "needs" in stderr
    assert kept in stderr


def test_a_real_cpu_out_of_memory_from_a_huge_image_size_is_one_line(folder_data, tmp_path, capsys):
    """Task 4a resizes each batch to --image-size: a million pixels a side asks for terabytes, which the
    allocator refuses (unless the kernel promises any amount of memory, vm.overcommit_memory=1)."""
    try:
        always = open("/proc/sys/vm/overcommit_memory").read().strip() == "1"
    except OSError:
        always = True
    if always:
        pytest.skip("needs a kernel that refuses impossible allocations (Linux, vm.overcommit_memory 0 or 2)")
    import task4a
    code, stderr = outcome(task4a.main, ["--data-dir", folder_data, "--weights", "none", "--image-size", 1_000_000,
                                         "--subset", 20, "--batch-size", 4, "--max-steps", 2, "--device", "cpu",
                                         "--run-dir", tmp_path / "run", "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 1 and one_line_error(stderr) and "This is a bug" not in stderr
    assert "out of memory after 0 steps: the CPU's memory (RAM) cannot hold what --batch-size 4 and --image-size " \
           "1000000 need" in stderr and "nothing of this run was saved" in stderr
    assert not (tmp_path / "run").exists()


def test_out_of_memory_while_the_data_loads_is_one_line(folder_data, tmp_path, capsys, monkeypatch):
    def load_raw(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(dataloaders, "load_raw", load_raw)
    code, stderr = outcome(task2.main, task2_args(folder_data, tmp_path / "run", tmp_path / "plots"), capsys)
    assert code == 1 and one_line_error(stderr) and "out of memory: the CPU's memory (RAM) is full" in stderr


# ---------------------------------------------------------------- links where a folder should be

@pytest.mark.parametrize("make, says", [
    (lambda link, tmp: os.symlink(tmp / "nowhere" / "run", link),
     "it is a symbolic link to {tmp}/nowhere/run, which does not exist; create {tmp}/nowhere/run or choose"),
    (lambda link, tmp: os.symlink(link.name, link), "it is a symbolic link loop"),
])
def test_a_run_dir_that_is_a_broken_link_says_what_it_is(make, says, folder_data, tmp_path, capsys):
    link = tmp_path / "run"
    make(link, tmp_path)
    code, stderr = outcome(task2.main, task2_args(folder_data, link, tmp_path / "plots"), capsys)
    assert code == 1 and one_line_error(stderr) and "File exists" not in stderr
    assert f"cannot write to {link}: " + says.format(tmp=tmp_path) in stderr
    assert os.path.islink(link) and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
