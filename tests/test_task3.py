"""Task 3: the two architectures, tiny runs of the scripts, and the comparison from saved runs."""
import json

import pytest
import torch
from torch import nn

import task3_compare
from helpers import exit_code, run_script
from task3_model1 import Model1
from task3_model2 import Model2
from utils import write_json


def layer_kinds(model):
    return [type(layer).__name__ for layer in model.feature_extractor] + \
           [type(layer).__name__ for layer in model.classifier]


def test_model1_layer_order():
    conv_block = ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "ReLU", "MaxPool2d"]
    head = ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert layer_kinds(Model1()) == conv_block * 3 + head
    convs = [m for m in Model1().modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.stride == (1, 1) for c in convs)


def test_model1_before_deepening_has_one_conv_per_stage():
    assert layer_kinds(Model1(convs_per_stage=1))[:12] == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d"] * 3


def test_model2_layer_order_and_flatten_size():
    assert layer_kinds(Model2()) == ["Conv2d", "ReLU", "MaxPool2d"] * 3 + ["Flatten", "Linear", "ReLU", "Linear"]
    # 3x3 kernels with padding 2 grow each map by 2: 32->34->17, 17->19->9, 9->11->5.
    features = Model2().feature_extractor(torch.zeros(1, 3, 32, 32))
    assert features.shape == (1, 256, 5, 5)
    assert Model2().classifier[1].in_features == 6400


@pytest.mark.parametrize("model, expected", [
    # convs 2432 + 25632 + 51264 + 102464 + 204928 + 409728, BN 2*(32+64+128) = 448,
    # FC 2048*512+512 = 1049088, 512*64+64 = 32832, 64*10+10 = 650
    (Model1(), 1_879_466),
    # convs 2432 + 51264 + 204928, BN 448, same head
    (Model1(convs_per_stage=1), 1_341_642),
    # convs 3*64*9+64 = 1792, 64*128*9+128 = 73856, 128*256*9+256 = 295168,
    # FC 6400*512+512 = 3277312, 512*10+10 = 5130
    (Model2(), 3_653_258),
])
def test_parameter_counts(model, expected):
    assert sum(p.numel() for p in model.parameters()) == expected


def test_activation_is_selectable():
    assert any(isinstance(m, nn.ELU) for m in Model1(activation="elu").modules())
    assert not any(isinstance(m, nn.ReLU) for m in Model2(activation="gelu").modules())


@pytest.mark.slow
@pytest.mark.parametrize("script, extra, name", [
    ("task3_model1.py", ["--optimizer", "adam", "--lr", "0.001", "--weight-decay", "1e-4"], "task3_model1"),
    ("task3_model2.py", ["--activation", "leaky_relu"], "task3_model2"),
    ("task3_model1.py", ["--convs-per-stage", "1"], "task3c_before"),
])
def test_tiny_runs(folder_data, tmp_path, script, extra, name):
    result = run_script(script, "--data-dir", folder_data, "--max-steps", 4, "--batch-size", 16,
                        "--plot-dir", tmp_path, "--run-dir", tmp_path / name, *extra)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{name}.png").exists()
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["settings"]["optimizer"] == ("adam" if "adam" in extra else "sgd")
    history = json.loads((tmp_path / name / "history.json").read_text())
    if script == "task3_model1.py":  # the deepening figure needs the test loss per validation
        assert "test_loss" in history["validation"][0]


def fake_run(folder, test_accuracy, with_test_loss=True):
    history = {"train_loss": {"steps": list(range(40)), "values": [2 - i / 40 for i in range(40)]},
               "validation": [{"step": s, "epoch": s / 20, "loss": 1.5 - s / 100, "accuracy": 0.4 + s / 100,
                               **({"test_loss": 1.6 - s / 100} if with_test_loss else {})}
                              for s in (10, 20, 30, 40)]}
    metrics = {split: {"loss": 0.5, "accuracy": acc} for split, acc in
               (("train", 0.9), ("validation", 0.8), ("test", test_accuracy))}
    write_json(history, folder / "history.json")
    write_json(metrics, folder / "metrics.json")
    write_json({"data_source": "synthetic"}, folder / "config.json")


def test_comparison_and_table_from_saved_runs(tmp_path):
    fake_run(tmp_path / "runs" / "task3_model1", 0.8123)
    fake_run(tmp_path / "runs" / "task3_model2", 0.7654, with_test_loss=False)
    fake_run(tmp_path / "runs" / "task3c_before", 0.7711)
    messages = task3_compare.task3_outputs(tmp_path / "runs", tmp_path / "plots")
    assert not any("missing" in m for m in messages)
    table = (tmp_path / "plots" / "task3_table.md").read_text()
    assert "| test accuracy | 0.812 | 0.765 |" in table
    assert (tmp_path / "plots" / "task3_comparison.png").exists()
    assert (tmp_path / "plots" / "task3c_deepening.png").exists()


@pytest.mark.slow
def test_missing_run_names_the_script(tmp_path, capsys):
    fake_run(tmp_path / "runs" / "task3_model1", 0.81)
    assert exit_code(task3_compare.main, "--runs-dir", tmp_path / "runs", "--plot-dir", tmp_path / "plots") == 1
    out, err = capsys.readouterr()
    assert "make it with `python task3_model2.py`" in out
    assert "make it with `python task3_model1.py --convs-per-stage 1`" in out
    assert err.strip().startswith("error: some Task 3 runs are missing")
