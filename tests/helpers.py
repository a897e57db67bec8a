"""What the tests share: tiny synthetic CIFAR-10 copies in both layouts, and the one way each of running a
script (in-process through cli.main, or as a user would, in a fresh process).

Each synthetic class gets its own mean colour plus noise, so a model can learn something in a few steps and
tests about learning are meaningful.
"""
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import dataloaders  # noqa: E402
from dataloaders import CLASSES  # noqa: E402
from trainer import TrainConfig, Trainer  # noqa: E402

# Runs of the same seed are bit-identical on a CPU as they are; a GPU needs deterministic kernels for it.
REPEATABLE = ["--deterministic"] if torch.cuda.is_available() else []
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHARED = ROOT.parent / "shared"
JPEG_ARCHIVE = SHARED / "data" / "cifar10-jpeg.tar.gz"
ZEBRA = SHARED / "images" / "zebra.jpg"

# Four epochs of 10 steps and 8 validations; CPU fp32, so runs are bit-for-bit repeatable. The
# signal tests interrupt after the first checkpoint (step 5): the rest of the run must outlast
# their 20 ms polling even on a fast, idle machine.
# The thread count changes how a CPU sums (so the last bits of the numbers): the runs compared share it.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["--epochs", "4", "--batch-size", "16", "--subset", "160", "--precision", "fp32",
        "--device", "cpu", "--seed", "0"]


def synthetic_images(count: int, seed: int):
    """uint8 images (count, 32, 32, 3) whose colour depends on the label, and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    palette = np.linspace(20, 235, 10)
    base = np.stack([palette[labels], palette[::-1][labels], palette[(labels * 3) % 10]], axis=1)
    noise = rng.normal(0, 25, size=(count, 32, 32, 3))
    images = np.clip(base[:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def write_image_folders(root: Path, per_class_train: int = 30, per_class_test: int = 10,
                        suffix: str = ".png") -> Path:
    for split, per_class, seed in (("train", per_class_train, 1), ("test", per_class_test, 2)):
        images, labels = synthetic_images(per_class * 10, seed)
        counters = [0] * 10
        for image, label in zip(images, labels):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{counters[label]:04d}{suffix}")
            counters[label] += 1
    return root


def write_batches(root: Path, per_batch: int = 60, test_count: int = 100) -> Path:
    """torchvision's cifar-10-batches-py layout, written small."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        images, labels = synthetic_images(test_count if name == "test_batch" else per_batch, 10 + index)
        entry = {"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
                 "labels": labels.tolist(), "batch_label": name}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    return root


def task2_args(data, run_dir, plot_dir, *extra):
    return ["--data-dir", data, "--run-dir", run_dir, "--plot-dir", plot_dir, *TINY, *extra]


def seeds_args(data, run_dir, plot_dir, *extra):
    """task2_args without --seed, which --seeds refuses beside it."""
    args = task2_args(data, run_dir, plot_dir, *extra)
    at = args.index("--seed")
    return args[:at] + args[at + 2:]


def exit_code(entry, *argv) -> int:
    """`entry(argv)` in this process through cli.main, as the command line would end: its exit code (0 when
    it returns). SIGTERM's handler is put back afterwards (cli.main sets its own)."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        cli.main(entry, [str(a) for a in argv])
    except SystemExit as ended:
        return 0 if ended.code is None else ended.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def outcome(entry, argv, capsys):
    """(exit code, stderr) of `entry` run in this process through cli.main."""
    code = exit_code(entry, *argv)
    return code, capsys.readouterr().err


def run_script(script: str, *args, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run a repository script as a user would, in a fresh process, from the repository root (for what only
    a process shows: its startup, signals, a kill)."""
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    full_env.pop("CIFAR10_DIR", None) if env is None or "CIFAR10_DIR" not in env else None
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file() and p.name != ".lock"}


def one_line_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
    return len(lines) == 1 and "Traceback" not in stderr


def tiny_trainer(folder_data, run_dir):
    torch.manual_seed(0)
    loaders = dataloaders.load_cifar10(16, 0.1, seed=0, data_dir=folder_data, subset=160)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, 10))
    config = TrainConfig(epochs=2, lr=0.01, momentum=0.9, optimizer="sgd", precision="fp32")
    return Trainer(model, *loaders, config, run_dir, "cpu")


def fail_at_step(monkeypatch, step: int, error: BaseException) -> None:
    """Make the Trainer's `step`-th training step of this process raise `error`."""
    real, calls = Trainer.train_step, []

    def train_step(self, images, labels):
        calls.append(1)
        if len(calls) == step:
            raise error
        return real(self, images, labels)
    monkeypatch.setattr(Trainer, "train_step", train_step)
