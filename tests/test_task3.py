"""Task 3: the two architectures, tiny runs of the scripts, and the comparison from saved runs."""
import json

import pytest
import torch
from torch import nn

import task3_compare
from helpers import exit_code, fake_run, run_script
from task3_model1 import Model1
from task3_model2 import Model2


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


def test_comparison_and_table_from_saved_runs(tmp_path):
    fake_run(tmp_path / "runs", "task3_model1", 0.8123, track_test=True)
    fake_run(tmp_path / "runs", "task3_model2", 0.7654)
    fake_run(tmp_path / "runs", "task3c_before", 0.7711, track_test=True)
    messages = task3_compare.task3_outputs(tmp_path / "runs", tmp_path / "plots")
    assert all(m.startswith("wrote ") for m in messages)
    table = (tmp_path / "plots" / "task3_table.md").read_text()
    assert "| test accuracy | 0.812 | 0.765 |" in table
    assert "test 0.596 / 0.810" in table and "test 0.862 / 0.763" in table     # the reference's loss / accuracy
    assert "Not the real result" not in table and str(tmp_path) not in table and "/data/" not in table
    assert (tmp_path / "plots" / "task3_comparison.png").exists()
    assert (tmp_path / "plots" / "task3c_deepening.png").exists()


@pytest.mark.slow
def test_missing_run_names_the_script(tmp_path, capsys):
    runs = tmp_path / "runs"
    fake_run(runs, "task3_model1", 0.81)
    assert exit_code(task3_compare.main, "--runs-dir", runs, "--plot-dir", tmp_path / "plots") == 1
    out, err = capsys.readouterr()
    assert f"make it with `python task3_model2.py --run-dir {runs / 'task3_model2'}`" in out
    assert f"make it with `python task3_model1.py --convs-per-stage 1 --run-dir {runs / 'task3c_before'}`" in out
    assert err.strip() == "error: some Task 3 runs are not finished (see above); nothing was drawn"


def test_an_unfinished_run_is_named_with_the_command_that_continues_it(tmp_path, capsys):
    """Not "missing" with the bare default command: unfinished, continued by its own --run-dir plus --resume."""
    runs = tmp_path / "runs"
    fake_run(runs, "task3_model1", 0.81, track_test=True)
    fake_run(runs, "task3c_before", 0.71, track_test=True)
    (runs / "task3_model2").mkdir()
    (runs / "task3_model2" / "last.pt").write_bytes(b"stand-in")
    assert exit_code(task3_compare.main, "--runs-dir", runs, "--plot-dir", tmp_path / "plots") == 1
    out, err = capsys.readouterr()
    assert f"task3_model2 is unfinished: continue it with `python task3_model2.py --run-dir " \
           f"{runs / 'task3_model2'} --resume`" in out and "missing" not in out
    assert err.strip() == "error: some Task 3 runs are not finished (see above); the rest was drawn"


def test_the_table_of_smoke_runs_says_so(tmp_path):
    runs = tmp_path / "runs"
    for name in ("task3_model1", "task3_model2"):
        fake_run(runs, name, 0.5, settings={"subset": 500, "max_steps": 20})
    task3_compare.task3_outputs(runs, tmp_path / "plots")
    table = (tmp_path / "plots" / "task3_table.md").read_text()
    assert table.count("smoke run: --subset 500, --max-steps 20") >= 2 and "**Not the real result**" in table
    assert "| | Model 1 (smoke run: --subset 500, --max-steps 20) |" in table
