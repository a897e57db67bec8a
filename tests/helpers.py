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

import cli
import dataloaders
from dataloaders import CLASSES
from settings import TrainConfig
from trainer import Trainer
from utils import write_json

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


RECIPES = {"task2": 10, "task3_model1": 10, "task3_model2": 10, "task3c_before": 10, "task3d": 10, "task4a": 5}


def model_of(name: str) -> nn.Module:
    """The network a task's run trains (what its config.json's layer list is read from)."""
    import task2
    import task3_model1
    import task3_model2
    import task3d
    if name == "task4a":
        import task4a
        from torchvision.models import resnet18
        return task4a.transfer_model(resnet18(weights=None))
    return {"task2": task2.Task2Model, "task3_model1": task3_model1.Model1, "task3_model2": task3_model2.Model2,
            "task3c_before": lambda: task3_model1.Model1(convs_per_stage=1), "task3d": task3d.Task3dModel}.get(
        name.split("-")[0], task3_model1.Model1)()


def script_settings(name: str) -> dict:
    """The settings a task script records in config.json when run with its defaults (its parser's)."""
    import importlib

    module = importlib.import_module({"task3c_before": "task3_model1"}.get(name, name))
    built, real_parse = [], cli.parse

    def keep(parser, argv=None):
        built.append(parser)
        raise SystemExit(0)
    cli.parse = keep
    try:
        module.main([])
    except SystemExit:
        pass
    finally:
        cli.parse = real_parse
    settings = {key: value for key, value in vars(built[0].parse_args([])).items()}
    if name == "task3c_before":
        settings.update(convs_per_stage=1, name=name)
    return {key: str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
            for key, value in settings.items()}


def fake_run(folder: Path, name: str, test_accuracy: float, title: str | None = None, *, track_test: bool = False,
             steps: int = 40, seed: int = 0, directory: str | None = None, real: bool = False,
             settings: dict | None = None) -> Path:
    """A run folder as the Trainer writes it (config.json, history.json, metrics.json), with numbers that differ
    by `test_accuracy`: the one way the tests write a run without training. `real`: a whole run of the task's
    recipe (CIFAR-10's split, its epochs, its network, a confusion matrix, steps of a real run) that nothing may
    call a smoke run; else a short run with a small config."""
    epochs = RECIPES.get(name, 10)
    if real:
        steps, per_epoch = epochs * 700, 700
    else:
        per_epoch = 20
    points = sorted({max(1, round(steps * i / 8)) for i in range(1, 9)})
    validations = [{"step": s, "epoch": s / per_epoch, "loss": 2.0 - s / steps, "accuracy": 0.2 + 0.6 * s / steps,
                    "train_accuracy": 0.25 + 0.65 * s / steps, **({"test_loss": 2.1 - s / steps} if track_test else {})}
                   for s in points]
    history = {"train_loss": {"steps": list(range(steps)), "values": [2.3 - 1.5 * i / steps for i in range(steps)]},
               "validation": validations}
    metrics = {split: {"loss": round(1.5 - test_accuracy, 4), "accuracy": accuracy}
               for split, accuracy in (("train", test_accuracy + 0.1), ("validation", test_accuracy - 0.01),
                                       ("test", test_accuracy))}
    metrics.update(best_step=steps, steps=steps, epochs=steps / per_epoch, wall_seconds=123.0, early_stopped=False)
    recipe = {"epochs": epochs, "subset": None, "max_steps": None, "validation_fraction": 0.1}
    config = {"name": name.split("-")[0], "title": title or name,
              "settings": {**recipe, "name": name, "seed": seed, "track_test": track_test, "lr": 0.05,
                           "batch_size": 64, "optimizer": "sgd", "run_dir": str(folder / (directory or name)),
                           **(settings or {})},
              "defaults": {**recipe, "lr": 0.05, "batch_size": 64, "optimizer": "sgd"},
              "resolved": {"device_name": "Test CPU, 2 threads", "precision": "bf16"},
              "data": {"source": "image folders at /data/cifar10-jpeg"}, "versions": {"torch": "9.9.9"}}
    if real:
        rng = np.random.default_rng(seed)
        confusion = (rng.integers(0, 30, (10, 10)) + np.eye(10, dtype=int) * int(1000 * test_accuracy)).tolist()
        for split in ("validation", "test"):
            metrics[split].update(confusion=confusion, per_class_accuracy={
                c: confusion[i][i] / sum(confusion[i]) for i, c in enumerate(CLASSES)})
        model = model_of(name)
        config["settings"] = {**script_settings(name), "seed": seed, "track_test": track_test,
                              "run_dir": str(folder / (directory or name)), **(settings or {})}
        config["defaults"] = script_settings(name)
        config["data"].update(train_images=45_000, validation_images=5_000, test_images=10_000)
        config["model"] = {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters()),
                           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                           "repr": repr(model)}
    run_dir = Path(folder) / (directory or name)
    for key, data in (("config", config), ("history", history), ("metrics", metrics)):
        write_json(data, run_dir / f"{key}.json")
    return run_dir


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
