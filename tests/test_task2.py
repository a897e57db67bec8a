"""Task 2 end to end: the model of the report and a tiny run of the real script."""
import json

import pytest
import torch

import task2
from helpers import REPEATABLE, exit_code, one_line_error, outcome, run_script
from task2 import Task2Model


def test_parameter_count_layer_by_layer():
    model = Task2Model()
    counts = [sum(p.numel() for p in layer.parameters())
              for layer in model.modules() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]
    # conv 5x5: 3*32*25+32, 32*64*25+64, 64*128*25+128; FC 2048*64+64, 64*10+10
    assert counts == [2432, 51264, 204928, 131136, 650]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 390_410


def test_output_shape():
    assert Task2Model()(torch.zeros(5, 3, 32, 32)).shape == (5, 10)


def run_task2(folder_data, tmp_path, *extra):
    """A tiny run on the default device (a GPU where there is one), repeatable."""
    return run_script("task2.py", "--data-dir", folder_data, "--max-steps", 8, "--batch-size", 16,
                      "--precision", "fp32", *REPEATABLE, "--run-dir", tmp_path / "run",
                      "--plot-dir", tmp_path / "plots", *extra)


@pytest.mark.slow
def test_tiny_run_writes_figure_metrics_and_config(folder_data, tmp_path):
    result = run_task2(folder_data, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plots" / "task2.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split in ("train", "validation", "test"):
        assert 0 <= metrics[split]["accuracy"] <= 1 and metrics[split]["loss"] > 0
    assert metrics["steps"] == 8
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    settings = config["settings"]
    assert settings["lr"] == 0.05 and settings["batch_size"] == 16 and settings["seed"] == 0
    assert config["model"]["parameters"] == 390_410 and "image folders" in config["data"]["source"]
    assert config["resolved"]["precision"] == "fp32" and "torch" in config["versions"]
    assert {"best.pt", "last.pt", "history.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert "test" in result.stdout and f"{metrics['test']['accuracy']:.3f}" in result.stdout


@pytest.mark.slow
def test_same_seed_gives_same_metrics(folder_data, tmp_path):
    first = run_task2(folder_data, tmp_path / "a")
    second = run_task2(folder_data, tmp_path / "b")
    assert first.returncode == second.returncode == 0
    a, b = (json.loads((tmp_path / d / "run" / "metrics.json").read_text()) for d in ("a", "b"))
    assert all(a[split] == b[split] for split in ("train", "validation", "test"))


@pytest.mark.slow
def test_help_lists_the_contract_flags(capsys):
    assert exit_code(task2.main, "--help") == 0
    out = capsys.readouterr().out
    for flag in ("--data-dir", "--seed", "--epochs", "--batch-size", "--lr", "--early-stop-count",
                 "--max-steps", "--run-dir", "--device", "--resume", "--precision"):
        assert flag in out


@pytest.mark.slow
def test_missing_data_is_one_clear_line(tmp_path, capsys):
    code, err = outcome(task2.main, ["--data-dir", tmp_path / "none", "--run-dir", tmp_path / "run",
                                     "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 1 and one_line_error(err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no CIFAR-10 found") and "--data-dir" in last
