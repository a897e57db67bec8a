"""Task 3d: model shapes and size, whitening, test-time flips, augmentation, schedule, a tiny run."""
import json

import pytest
import torch

import dataloaders
from conftest import run_script
from task3d import (END_FACTOR, START_FACTOR, WARMUP_FRACTION, Task3dModel, WhiteningConv, lr_factor,
                    triangular_schedule)


def expected_parameters(widths, depths, whiten=24, classes=10):
    count = whiten * 3 * 2 * 2 + whiten                  # whitening filters (frozen) and bias
    previous = whiten
    for width, depth in zip(widths, depths):             # per group: 3x3 convs, each with a BN shift
        count += previous * width * 9 + (depth - 1) * width * width * 9 + depth * width
        previous = width
    return count + widths[-1] * classes                  # linear classifier, no bias


def test_model_shapes_and_parameter_count():
    model = Task3dModel()
    total = sum(p.numel() for p in model.parameters())
    assert total == expected_parameters((64, 192, 256), (2, 2, 3)) == 2_119_224
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2_119_224 - 24 * 3 * 2 * 2      # the whitening filters are not trained
    x = torch.randn(6, 3, 32, 32)
    assert model(x).shape == (6, 10)
    assert model.feature_extractor[:3](x).shape == (6, 64, 15, 15)
    model.eval()
    assert model(x).shape == (6, 10)
    small = Task3dModel((8, 16, 32), depths=(2, 2, 2))
    assert sum(p.numel() for p in small.parameters()) == expected_parameters((8, 16, 32), (2, 2, 2))
    deeper = Task3dModel((8, 16, 32), depths=(1, 2, 3))
    assert sum(p.numel() for p in deeper.parameters()) == expected_parameters((8, 16, 32), (1, 2, 3))
    assert deeper(x).shape == (6, 10)


def test_without_whitening_bias_no_gradient_reaches_the_first_layer():
    with_bias, without = Task3dModel((8, 16, 16)), Task3dModel((8, 16, 16), whitening_bias=False)
    count = lambda model: sum(p.numel() for p in model.parameters())
    assert count(with_bias) - count(without) == 24
    whitened = without.feature_extractor[:2](torch.randn(4, 3, 32, 32))
    # Nothing before the first 3x3 conv needs a gradient, so its backward skips the input gradient.
    assert not whitened.requires_grad
    assert with_bias.feature_extractor[:2](torch.randn(4, 3, 32, 32)).requires_grad


def test_whitening_bias_trains_for_its_steps_only_and_resumes_frozen():
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    model.whitening.bias_train_steps = 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    has_gradient, biases = [], []
    for _ in range(4):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        has_gradient.append(model.whitening.bias.grad is not None)
        optimizer.step()
        biases.append(model.whitening.bias.detach().clone())
    assert has_gradient == [True, True, False, False]
    assert not torch.equal(biases[0], biases[1])
    assert torch.equal(biases[1], biases[2]) and torch.equal(biases[1], biases[3])  # no momentum, no decay
    # Frozen, the first 3x3 conv's backward skips its input gradient, as with no bias at all.
    assert not model.feature_extractor[:2](x).requires_grad
    model.eval()
    model(x)                                             # evaluation passes do not count
    assert int(model.whitening.steps_trained) == 5       # the 4 steps and the training pass above
    resumed = Task3dModel((8, 16, 16))
    resumed.whitening.bias_train_steps = 2
    resumed.load_state_dict(model.state_dict())          # a resumed run stays frozen
    assert resumed.whitening.bias_trains() is False


def test_whitening_filters_decorrelate_training_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 0.3]])
    images = torch.einsum("dc,bchw->bdhw", mixing, torch.randn(64, 3, 32, 32))
    layer = WhiteningConv()
    layer.train()
    layer(images)                                        # the first training batch fits the filters
    assert bool(layer.initialised)
    with torch.no_grad():
        out = layer(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = out.T @ out / len(out)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    before = layer.weight.clone()
    layer(images * 3)                                    # later batches leave the filters alone
    assert torch.equal(layer.weight, before)


def test_tta_levels_at_evaluation_only():
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16), tta="flip")
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model(x)
    assert not torch.allclose(model(x), model(x.flip(3)), atol=1e-4)   # training sees one view
    model.eval()
    with torch.no_grad():
        plain = model.logits(x)
        assert torch.allclose(model(x), model(x.flip(3)), atol=1e-5)  # flip: mirror-invariant
        assert torch.allclose(model(x), (plain + model.logits(x.flip(3))) / 2, atol=1e-6)
        model.tta = "none"
        assert torch.equal(model(x), plain)
        model.tta = "flip-translate"
        # half the weight on the image and its mirror, half on both shifted one pixel up-left and down-right
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [x, padded[..., :32, :32], padded[..., 2:, 2:]]
        mirrored = [(model.logits(v) + model.logits(v.flip(3))) / 2 for v in views]
        expected = mirrored[0] / 2 + (mirrored[1] + mirrored[2]) / 4
        assert torch.allclose(model(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        Task3dModel((8, 16, 16), tta="rotate")


def _is_translated_or_flipped(out, original, padding):
    padded = torch.nn.functional.pad(original[None], (padding,) * 4, mode="reflect")[0]
    for candidate in (padded, padded.flip(2)):
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                if torch.equal(candidate[:, dy:dy + 32, dx:dx + 32], out):
                    return True
    return False


def test_augmentation_keeps_shapes_labels_and_is_off_at_evaluation(folder_data):
    augmentation = dataloaders.Augmentation(flip=True, crop_padding=2, padding_mode="reflect")
    train, val, test = dataloaders.load_cifar10(32, 0.2, seed=3, data_dir=folder_data, augment=augmentation)
    assert train.augment is augmentation and val.augment is None and test.augment is None
    identity = dataloaders.BatchTransform()
    order = torch.randperm(len(train.labels), generator=dataloaders._generator(3, 0))
    images, labels = next(train.batches(0))
    assert images.shape == (32, 3, 32, 32) and labels.shape == (32,)
    assert torch.equal(labels, train.labels[order[:32]])
    originals = identity(train.images[order[:32]])
    for out, original in zip(images, originals):
        padded_ok = _is_translated_or_flipped(out, original, 2)
        assert padded_ok, "an augmented image is not a flip/translation of its own original"
    changed = sum(not torch.equal(a, b) for a, b in zip(images, originals))
    assert changed > 16
    first_val, _ = next(iter(val))
    assert torch.equal(first_val, identity(val.images[:len(first_val)]))


def test_schedule_start_peak_end():
    total = 100
    peak = int(WARMUP_FRACTION * total)
    assert lr_factor(0, total) == pytest.approx(START_FACTOR)
    assert lr_factor(peak, total) == pytest.approx(1.0)
    assert lr_factor(total, total) == pytest.approx(END_FACTOR)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = triangular_schedule(optimizer, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    seen.append(optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(0.5 * START_FACTOR)
    assert max(seen) == pytest.approx(0.5) and seen.index(max(seen)) == peak
    assert seen[-1] == pytest.approx(0.5 * END_FACTOR)
    assert all(a <= b for a, b in zip(seen[:peak], seen[1:peak + 1]))
    assert all(a >= b for a, b in zip(seen[peak:], seen[peak + 1:]))


def _tiny_run(folder_data, tmp_path, name):
    run_dir = tmp_path / name
    result = run_script("task3d.py", "--data-dir", folder_data, "--epochs", 2, "--batch-size", 32,
                        "--widths", 8, 16, 16, "--run-dir", run_dir, "--plot-dir", tmp_path / f"{name}-plots",
                        "--seed", 5)
    assert result.returncode == 0, result.stderr
    return result, json.loads((run_dir / "metrics.json").read_text())


def test_tiny_run_end_to_end_is_seeded(folder_data, tmp_path):
    result, metrics = _tiny_run(folder_data, tmp_path, "a")
    assert "WhiteningConv" in result.stdout and "ShiftOnlyBatchNorm" in result.stdout
    assert (tmp_path / "a-plots" / "task3d.png").is_file()
    assert metrics["epochs"] <= 2 and metrics["steps"] == 2 * 8   # 270 // 32 full batches per epoch
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["widths"] == [8, 16, 16] and config["tta"] == "flip" and config["crop_padding"] == 2
    assert config["whitening_bias_epochs"] == 3 and config["depths"] == [2, 2, 3]
    assert "padding_mode='reflect'" in config["augmentation"] and config["train_config"]["lookahead_every"] == 5
    _, again = _tiny_run(folder_data, tmp_path, "b")
    assert again["test"] == metrics["test"] and again["train"] == metrics["train"]


def test_bad_label_smoothing_or_crop_padding_is_a_usage_error(folder_data, tmp_path):
    result = run_script("task3d.py", "--data-dir", folder_data, "--label-smoothing", "1.5",
                        "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "label-smoothing" in result.stderr
    result = run_script("task3d.py", "--data-dir", folder_data, "--crop-padding", "32",
                        "--run-dir", tmp_path / "r")
    assert result.returncode == 2 and "--crop-padding 32 is out of range" in result.stderr
