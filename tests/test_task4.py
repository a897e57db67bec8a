"""Task 4: ResNet-18 transfer learning (4a) and the filter / activation figures (4b, 4c).

Everything runs with random or locally written weights; where ImageNet weights are asked
for, torch.hub's download function is replaced by one that fails as it does offline.
"""
import json
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet18

import cli
import dataloaders
import resnet
import task4a
import task4b
import task4c
from helpers import ZEBRA, exit_code, run_script
from utils import UserError



@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and downloads that fail as they do offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 300x200 RGB photo with structure (stripes), not square, to exercise the resize."""
    y, x = np.mgrid[0:200, 0:300]
    stripes = (np.sin(x / 6.0 + y / 15.0) > 0).astype(np.uint8) * 200 + 20
    pixels = np.stack([stripes, np.roll(stripes, 7, axis=1), 255 - stripes], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("photo") / "stripes.png"
    Image.fromarray(pixels).save(path)
    return path


def image_panels(figure):
    return [axis for axis in figure.axes if axis.images]


# ---------------------------------------------------------------- 4a: model and transform

def test_only_layer4_and_head_are_trainable():
    model = task4a.transfer_model(resnet.pretrained_resnet18("none"), "last")
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {name for name, _ in model.named_parameters() if name.startswith(("layer4.", "fc."))}
    assert trainable == expected
    assert {"layer4.1.conv2.weight", "fc.weight", "fc.bias"} <= trainable
    assert "conv1.weight" not in trainable and "layer3.1.conv2.weight" not in trainable
    counts = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts == sum(p.numel() for p in model.layer4.parameters()) + 512 * 10 + 10

    everything = task4a.transfer_model(resnet.pretrained_resnet18("none"), "all")
    assert all(p.requires_grad for p in everything.parameters())


def test_imagenet_batch_transform_resizes_and_normalises():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    images[1] = 255
    out = dataloaders.imagenet_transform(224)(images)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    mean = torch.tensor(dataloaders.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(dataloaders.IMAGENET_STD).view(3, 1, 1)
    # Constant images stay constant through bilinear resizing: black and white map to these.
    assert torch.allclose(out[0], (0 - mean) / std * torch.ones(3, 224, 224), atol=1e-5)
    assert torch.allclose(out[1], (1 - mean) / std * torch.ones(3, 224, 224), atol=1e-5)
    noisy = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = dataloaders.imagenet_transform(224)(noisy)
    assert out.min() >= ((0 - mean) / std).min() - 1e-5 and out.max() <= ((1 - mean) / std).max() + 1e-5


# ---------------------------------------------------------------- 4a: a tiny run

@pytest.fixture(scope="module")
def tiny_run(folder_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("task4a")
    result = run_script("task4a.py", "--data-dir", folder_data, "--weights", "none", "--image-size", 32,
                        "--subset", 64, "--batch-size", 16, "--max-steps", 3, "--run-dir", out / "run",
                        "--plot-dir", out / "plots")
    return result, out


@pytest.mark.slow
def test_task4a_tiny_run_writes_metrics_figure_and_config(tiny_run):
    result, out = tiny_run
    assert result.returncode == 0, result.stderr
    assert (out / "plots" / "task4a.png").is_file()
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 3
    assert 0 <= metrics["test"]["accuracy"] <= 1
    config = json.loads((out / "run" / "config.json").read_text())
    settings = config["settings"]
    assert (settings["weights"], settings["finetune"], settings["image_size"]) == ("none", "last", 32)
    assert (settings["lr"], settings["optimizer"], settings["early_stop_count"]) == (5e-4, "sgd", 4)
    model = task4a.transfer_model(resnet.pretrained_resnet18("none"))
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert config["model"]["trainable_parameters"] == expected < config["model"]["parameters"]


@pytest.mark.slow
def test_task4a_checkpoint_feeds_4b_and_4c(tiny_run, photo):
    result, out = tiny_run
    assert result.returncode == 0, result.stderr
    best = out / "run" / "best.pt"
    saved = torch.load(best, weights_only=True, map_location="cpu")["model"]  # trained on a GPU, maybe
    args = resnet.visualisation_parser("", out).parse_args(
        ["--checkpoint", str(best)])
    model = resnet.model_from_args(args)
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert model.fc.out_features == 10 and not model.training
    for module, name in ((task4b, "task4b.png"), (task4c, "task4c.png")):
        assert exit_code(module.main, "--image", photo, "--checkpoint", best, "--plot-dir", out / "ck") == 0
        assert (out / "ck" / name).is_file()


def test_task4a_rejects_tiny_image_size(folder_data, tmp_path, capsys):
    assert exit_code(task4a.main, "--data-dir", folder_data, "--weights", "none", "--image-size", 8,
                   "--run-dir", tmp_path) == 2
    assert "--image-size 8 is too small" in capsys.readouterr().err


def test_task4a_defaults_are_the_report_hyperparameters():
    args = cli.parse(cli.training_parser("", "task4a", **task4a.RECIPE), [])
    assert (args.batch_size, args.lr, args.optimizer, args.early_stop_count) == (32, 5e-4, "sgd", 4)


# ---------------------------------------------------------------- weights

def test_offline_imagenet_weights_error_names_file_folder_and_alternatives(torch_home):
    with pytest.raises(UserError) as error:
        resnet.pretrained_resnet18("imagenet")
    message = str(error.value)
    assert "\n" not in message
    for part in ("resnet18-f37072fd.pth", str(torch_home), "--weights PATH", "--weights none"):
        assert part in message


def test_offline_error_from_the_command_line_is_one_line(torch_home, tmp_path, photo, capsys):
    assert exit_code(task4b.main, "--image", photo, "--plot-dir", tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # torch.hub announces the download attempt on the line before
    assert last.startswith("error: ImageNet weights") and "resnet18-f37072fd.pth" in last
    assert not (tmp_path / "task4b.png").exists()


@pytest.mark.parametrize("xdg", ["", "relative"])
def test_an_empty_or_relative_xdg_cache_home_keeps_the_weights_in_the_home_cache(xdg, tmp_path, monkeypatch):
    """The XDG spec counts an empty or relative $XDG_CACHE_HOME as unset: the 45 MB of weights go to
    ~/.cache/torch/hub, never into the folder the script runs from (where torch itself would put them)."""
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    fetched = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, destination, *args, **kwargs: fetched.append(
        destination) or torch.save(resnet18(weights=None).state_dict(), destination))
    resnet.pretrained_resnet18("imagenet")
    expected = tmp_path / "home" / ".cache" / "torch" / "hub" / "checkpoints"
    assert resnet.weights_cache_dir() == expected and (expected / resnet.WEIGHTS_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_cached_or_local_weights_are_used_without_network(torch_home, tmp_path):
    reference = resnet18(weights=None)
    torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), torch_home / resnet.WEIGHTS_FILE)
    from_cache = resnet.pretrained_resnet18("imagenet")
    assert torch.equal(from_cache.conv1.weight, reference.conv1.weight)
    torch.save(reference.state_dict(), tmp_path / "copy.pth")
    from_file = resnet.pretrained_resnet18(str(tmp_path / "copy.pth"))
    assert torch.equal(from_file.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    transfer = task4a.transfer_model(resnet.pretrained_resnet18(str(tmp_path / "copy.pth")))
    assert torch.equal(transfer.conv1.weight, reference.conv1.weight) and transfer.fc.out_features == 10


def test_corrupt_cached_weights_get_their_own_error(torch_home):
    torch_home.mkdir(parents=True)
    (torch_home / resnet.WEIGHTS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cached ImageNet weights .* cannot be read.*delete"):
        resnet.pretrained_resnet18("imagenet")


def test_bad_state_dict_files(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a ResNet-18 ImageNet state dict.*missing keys"):
        resnet.pretrained_resnet18(str(tmp_path / "other.pth"))
    ten_classes = resnet.replace_head(resnet18(weights=None)).state_dict()
    torch.save(ten_classes, tmp_path / "ten.pth")
    with pytest.raises(UserError, match=r"shape fc.weight \(10, 512\) instead of \(1000, 512\)"):
        resnet.pretrained_resnet18(str(tmp_path / "ten.pth"))
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(UserError, match="cannot be read as a PyTorch file"):
        resnet.pretrained_resnet18(str(tmp_path / "text.pth"))
    with pytest.raises(UserError, match="missing.pth does not exist"):
        resnet.pretrained_resnet18(str(tmp_path / "missing.pth"))
    torch.save({"model": ten_classes, "step": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(UserError, match="training checkpoint.*--checkpoint"):
        resnet.pretrained_resnet18(str(tmp_path / "checkpoint.pt"))
    with pytest.raises(UserError, match="not a training checkpoint"):
        resnet.trained_resnet18(tmp_path / "ten.pth")


def test_bad_weights_file_exits_with_one_line(tmp_path, photo, capsys):
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    assert exit_code(task4c.main, "--image", photo, "--weights", tmp_path / "other.pth", "--plot-dir", tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --weights") and "\n" not in err and "Traceback" not in err


# ---------------------------------------------------------------- images and display

def test_load_image_and_to_displayable(photo):
    image = resnet.load_image(photo)
    assert image.shape == (1, 3, 224, 224) and image.dtype == torch.float32
    assert image.std() > 0.5  # stripes survive the resize as strong contrast
    shown = resnet.to_displayable(torch.randn(3, 7, 7) * 5)
    assert shown.shape == (7, 7, 3) and shown.min() == 0 and shown.max() == 1
    assert resnet.to_displayable(torch.randn(112, 112)).shape == (112, 112)
    assert np.all(resnet.to_displayable(torch.full((4, 4), 3.0)) == 0)


def not_an_image(folder):
    path = folder / "notes.jpg"
    path.write_text("not an image")
    return path


@pytest.mark.parametrize("make, message", [(lambda folder: folder / "missing.jpg", "does not exist"),
                                           (not_an_image, "not an image")])
def test_bad_images_exit_with_one_line(tmp_path, capsys, make, message):
    path = make(tmp_path)
    for module in (task4b, task4c):
        assert exit_code(module.main, "--image", path, "--weights", "none", "--plot-dir", tmp_path) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err


def test_default_image_missing_says_where_to_put_it(tmp_path):
    if (resnet.ROOT / resnet.DEFAULT_IMAGE).exists():
        pytest.skip("images/zebra.jpg is present")
    with pytest.raises(UserError, match="images/zebra.jpg.*--image PATH"):
        resnet.load_image(resnet.resolve_image(resnet.DEFAULT_IMAGE))


def test_out_of_range_index_and_count_are_argument_errors(tmp_path, photo, capsys):
    assert exit_code(task4b.main, "--image", photo, "--weights", "none", "--indices", 3, 64) == 2
    assert "--indices 64 out of range" in capsys.readouterr().err
    assert exit_code(task4b.main, "--image", photo, "--weights", "none", "--indices", -1) == 2
    assert exit_code(task4c.main, "--image", photo, "--weights", "none", "--count", 513) == 2
    assert "--count 513 out of range" in capsys.readouterr().err
    assert exit_code(task4c.main, "--image", photo, "--weights", "none", "--count", 0) == 2


# ---------------------------------------------------------------- 4b and 4c figures

def images_to_test():
    return [pytest.param(None, id="synthetic"),
            pytest.param(ZEBRA, id="zebra", marks=pytest.mark.skipif(not ZEBRA.exists(),
                                                                       reason="../shared/images/zebra.jpg absent"))]


@pytest.mark.parametrize("image_path", images_to_test())
def test_first_layer_filters_and_activations(image_path, photo, tmp_path):
    image_path = image_path or photo
    model = resnet.pretrained_resnet18("none").eval()
    weights, activations = task4b.first_layer(model, resnet.load_image(image_path))
    assert weights.shape == (64, 3, 7, 7) and activations.shape == (64, 112, 112)
    assert torch.equal(weights, model.conv1.weight)
    figure = task4b.make_figure(weights, activations, [14, 26, 32, 49, 52])
    panels = image_panels(figure)
    assert len(panels) == 10
    assert [p.get_title() for p in panels[:5]] == [f"filter {i}" for i in (14, 26, 32, 49, 52)]
    assert panels[0].images[0].get_array().shape == (7, 7, 3)
    assert panels[5].images[0].get_array().shape == (112, 112)
    assert exit_code(task4b.main, "--image", image_path, "--weights", "none", "--plot-dir", tmp_path,
                   "--indices", 0, 63, 5) == 0
    with Image.open(tmp_path / "task4b.png") as png:
        assert png.width > png.height  # three columns, two rows


@pytest.mark.slow
@pytest.mark.parametrize("image_path", images_to_test())
def test_last_stage_activations(image_path, photo, tmp_path):
    image_path = image_path or photo
    model = resnet.pretrained_resnet18("none").eval()
    activations = task4c.last_stage(model, resnet.load_image(image_path))
    assert activations.shape == (512, 7, 7)
    # The same maps the full network pools for its prediction.
    features = {}
    model.layer4.register_forward_hook(lambda module, inputs, output: features.update(out=output))
    model(resnet.load_image(image_path))
    assert torch.allclose(features["out"][0], activations, atol=1e-5)
    figure = task4c.make_figure(activations, 10)
    assert len(image_panels(figure)) == 10 and len(figure.axes) == 10
    assert len(image_panels(task4c.make_figure(activations, 7))) == 7
    assert exit_code(task4c.main, "--image", image_path, "--weights", "none", "--plot-dir", tmp_path) == 0
    assert (tmp_path / "task4c.png").is_file()
