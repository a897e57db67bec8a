"""Shared fixtures: tiny synthetic CIFAR-10 copies in both layouts, and a script runner.

Each class gets its own mean colour plus noise, so a model can learn something in a few
steps and tests about learning are meaningful.
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataloaders import CLASSES  # noqa: E402

# Runs of the same seed are bit-identical on a CPU as they are; a GPU needs deterministic kernels for it.
REPEATABLE = ["--deterministic"] if torch.cuda.is_available() else []
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHARED = ROOT.parent / "shared"
JPEG_ARCHIVE = SHARED / "data" / "cifar10-jpeg.tar.gz"
ZEBRA = SHARED / "images" / "zebra.jpg"


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


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> Path:
    """300 train and 100 test PNG images in train/<class>/ and test/<class>/ folders."""
    return write_image_folders(tmp_path_factory.mktemp("folders"))


@pytest.fixture(scope="session")
def batches_data(tmp_path_factory) -> Path:
    """300 train and 100 test images as cifar-10-batches-py pickles."""
    return write_batches(tmp_path_factory.mktemp("batches"))


def run_script(script: str, *args, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run a repository script as a user would, from the repository root."""
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    full_env.pop("CIFAR10_DIR", None) if env is None or "CIFAR10_DIR" not in env else None
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
