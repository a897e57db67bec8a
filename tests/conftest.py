"""Shared fixtures: tiny synthetic CIFAR-10 copies in both layouts (helpers.py writes them)."""
from pathlib import Path

import pytest

from helpers import write_batches, write_image_folders


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> Path:
    """300 train and 100 test PNG images in train/<class>/ and test/<class>/ folders."""
    return write_image_folders(tmp_path_factory.mktemp("folders"))


@pytest.fixture(scope="session")
def batches_data(tmp_path_factory) -> Path:
    """300 train and 100 test images as cifar-10-batches-py pickles."""
    return write_batches(tmp_path_factory.mktemp("batches"))


@pytest.fixture(autouse=True)
def answers_elsewhere(tmp_path, monkeypatch):
    """report.py writes answers.md beside the scripts when it is missing: in a test, into the test's folder."""
    import report
    monkeypatch.setattr(report, "ANSWERS", tmp_path / "answers.md")
