"""Task 3d: model shapes and size, whitening, Muon, test-time flips, augmentation, schedule, a tiny run."""
import copy
import json

import pytest
import torch

import dataloaders
import task3d
from helpers import REPEATABLE, outcome, run_script
from settings import TrainConfig
from task3d import RECIPE, FitWhitening, FreezeWhiteningBias, Task3dModel, WhiteningConv, lr_factor, predict_with_tta
from trainer import Trainer


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
    def count(model):
        return sum(p.numel() for p in model.parameters())
    assert count(with_bias) - count(without) == 24
    whitened = without.feature_extractor[:2](torch.randn(4, 3, 32, 32))
    # Nothing before the first 3x3 conv needs a gradient, so its backward skips the input gradient.
    assert not whitened.requires_grad
    assert with_bias.feature_extractor[:2](torch.randn(4, 3, 32, 32)).requires_grad


class FakeTrainer:
    """What the whitening callbacks read of a Trainer."""

    def __init__(self, total_steps=8, epochs=4):
        self.step, self.total_steps = 0, total_steps
        self.config = TrainConfig(epochs=epochs)
        self.changes = 0

    def parameters_changed(self):
        self.changes += 1


def test_whitening_bias_trains_for_its_steps_only_and_resumes_frozen():
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    trainer = FakeTrainer(total_steps=8, epochs=4)          # 1 epoch of bias training = 2 steps
    freeze = FreezeWhiteningBias(model, epochs=1)
    freeze.on_train_start(trainer)
    assert freeze.steps == 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    has_gradient, biases = [], []
    for _ in range(4):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        has_gradient.append(model.whitening.bias.grad is not None)
        optimizer.step()
        trainer.step += 1
        freeze.after_step(trainer)
        biases.append(model.whitening.bias.detach().clone())
    assert has_gradient == [True, True, False, False]
    assert trainer.changes == 1                              # told the Trainer once (DDP, CUDA graphs)
    assert not torch.equal(biases[0], biases[1])
    assert torch.equal(biases[1], biases[2]) and torch.equal(biases[1], biases[3])  # no momentum, no decay
    # Frozen, the first 3x3 conv's backward skips its input gradient, as with no bias at all.
    assert not model.feature_extractor[:2](x).requires_grad
    model.eval()
    model(x)                                             # evaluation passes change nothing
    assert not model.whitening.bias.requires_grad
    resumed = Task3dModel((8, 16, 16))
    resumed.load_state_dict(model.state_dict())
    at_step_3 = FakeTrainer(total_steps=8, epochs=4)
    at_step_3.step = 3                                   # a run resumed after the freeze stays frozen
    FreezeWhiteningBias(resumed, epochs=1).on_train_start(at_step_3)
    assert not resumed.whitening.bias.requires_grad
    early = Task3dModel((8, 16, 16))
    FreezeWhiteningBias(early, epochs=1).on_train_start(FakeTrainer(total_steps=8, epochs=4))
    assert early.whitening.bias.requires_grad             # ... and one resumed before it still trains


def test_the_bias_freeze_under_torchrun_keeps_the_compiled_network(tmp_path):
    """The freeze makes the Trainer build its DDP wrapper again (DDP registered the old set of parameters that
    train); with --compile, the network it builds is compiled again, not left eager for the rest of the run. A
    one-process gloo group stands in for torchrun (no step is taken: compiling one would take long)."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch.nn.parallel import DistributedDataParallel

    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        model = Task3dModel((8, 16, 16))
        trainer = Trainer(model, None, None, None, TrainConfig(epochs=1, compile=True), tmp_path, "cpu")
        freeze = FreezeWhiteningBias(model, epochs=1)
        freeze.on_train_start(trainer)
        before = trainer.network
        trainer.state.step = 1                       # the last step of the bias's epoch
        freeze.after_step(trainer)
        assert not model.whitening.bias.requires_grad and trainer.network is not before   # built again
        for network in (before, trainer.network):
            assert isinstance(network, OptimizedModule)
            assert isinstance(network._orig_mod, DistributedDataParallel) and network._orig_mod.module is model
    finally:
        torch.distributed.destroy_process_group()
    assert list(tmp_path.iterdir()) == []           # (building the Trainer wrote nothing)


def test_batch_norm_gets_a_weight_tensor(monkeypatch):
    """CUDA's batch-norm backward returns an empty weight gradient for weight=None, which autograd
    rejects (a crash at the first backward on a GPU); the CPU accepts it, so pin the argument here."""
    seen = []
    real = torch.nn.functional.batch_norm

    def spy(input, running_mean, running_var, weight=None, bias=None, *args, **kwargs):
        seen.append(weight)
        return real(input, running_mean, running_var, weight, bias, *args, **kwargs)
    monkeypatch.setattr(task3d.F, "batch_norm", spy)
    model = Task3dModel((8, 16, 16))
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    layers = [m for m in model.modules() if isinstance(m, task3d.ShiftOnlyBatchNorm)]
    assert len(seen) == len(layers) == 7                  # every batch norm of the network
    for weight, layer in zip(seen, layers):
        assert isinstance(weight, torch.Tensor) and torch.equal(weight, torch.ones(layer.num_features))
        assert not weight.requires_grad
    assert not any("scale" in key for key in model.state_dict())  # not saved: checkpoints keep their layout


def test_whitening_filters_decorrelate_training_patches():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 0.3]])
    images = torch.einsum("dc,bchw->bdhw", mixing, torch.randn(64, 3, 32, 32))
    layer = WhiteningConv()
    layer.train()
    layer.fit(images)
    with torch.no_grad():
        out = layer(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = out.T @ out / len(out)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    before = layer.weight.clone()
    layer(images * 3)                                    # training batches leave the filters alone
    assert torch.equal(layer.weight, before)


def test_whitening_is_fitted_on_the_first_training_batch_before_the_first_step(folder_data, tmp_path):
    augmentation = dataloaders.Augmentation(flip="alternate", crop_padding=2, padding_mode="reflect")
    train, val, test = dataloaders.load_cifar10(32, 0.1, seed=3, data_dir=folder_data, augment=augmentation)
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    fit = FitWhitening(model, train, count=32)
    trainer = Trainer(model, train, val, test, TrainConfig(max_steps=1, batch_size=32), tmp_path, "cpu",
                      callbacks=[fit])
    first_batch, _ = next(train.batches(0))
    expected = WhiteningConv()
    expected.fit(first_batch)
    fit.on_train_start(trainer)
    assert torch.equal(model.whitening.weight, expected.weight)
    assert not torch.equal(expected.weight, WhiteningConv().weight)
    trainer.state.step = 5
    model.whitening.weight.data.zero_()
    fit.on_train_start(trainer)                           # resumed: the filters came with the weights
    assert not model.whitening.weight.any()


def test_tta_levels_at_evaluation_only():
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model(x)
    assert not torch.allclose(model(x), model(x.flip(3)), atol=1e-4)   # training sees one view
    model.eval()
    with torch.no_grad():
        plain = model(x)
        flip = predict_with_tta(model, "flip")
        assert torch.allclose(flip(x), flip(x.flip(3)), atol=1e-5)  # flip: mirror-invariant
        assert torch.allclose(flip(x), (plain + model(x.flip(3))) / 2, atol=1e-6)
        assert torch.equal(predict_with_tta(model, "none")(x), plain)
        # half the weight on the image and its mirror, half on both shifted one pixel up-left and down-right
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [x, padded[..., :32, :32], padded[..., 2:, 2:]]
        mirrored = [(model(v) + model(v.flip(3))) / 2 for v in views]
        expected = mirrored[0] / 2 + (mirrored[1] + mirrored[2]) / 4
        assert torch.allclose(predict_with_tta(model, "flip-translate")(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        predict_with_tta(model, "rotate")


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
    first_val, _ = next(val.evaluation_batches())
    assert torch.equal(first_val, identity(val.images[:len(first_val)]))


def test_orthogonalize_brings_every_singular_value_near_one():
    torch.manual_seed(0)
    for shape in [(16, 72), (72, 16)]:                    # wide (a filter bank) and tall
        rank = min(shape)
        left, right = torch.linalg.qr(torch.randn(shape[0], rank))[0], torch.linalg.qr(torch.randn(shape[1], rank))[0]
        update = left @ torch.diag(torch.logspace(0, 2, rank)) @ right.T  # singular values over two decades
        result = task3d.orthogonalize(update)
        assert result.shape == shape
        singular = torch.linalg.svdvals(result)
        assert singular.min() > 0.5 and singular.max() < 1.5   # Muon's quintic: near 1, not exactly 1


def test_muon_turns_the_filters_by_their_orthogonalised_momentum_and_leaves_the_rest_to_sgd():
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.01)
    muon = task3d.muon_optimizer(model, config, lr=0.03, momentum=0.8)
    filters, rest = (group["params"] for group in muon.param_groups)
    assert len(filters) == sum(RECIPE.depths) and all(p.ndim == 4 for p in filters)  # not the frozen whitening
    trained = {id(p) for p in filters + rest}
    assert id(model.classifier.weight) in {id(p) for p in rest} and id(model.whitening.weight) not in trained
    reference = copy.deepcopy(model)
    sgd = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad and p.ndim != 4],
                          lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for net in (model, reference):
        torch.nn.functional.cross_entropy(net(x), y).backward()
    before = {id(p): (p.detach().clone(), p.grad.clone()) for p in filters}
    muon.step()
    sgd.step()
    for p in filters:
        weight, gradient = before[id(p)]
        update = gradient.lerp(gradient * 0.2, 0.8)  # Nesterov on a momentum buffer that starts at zero
        normalised = weight * len(weight) ** 0.5 / weight.norm()
        expected = normalised - 0.03 * task3d.orthogonalize(update.flatten(1)).view(p.shape)
        assert torch.allclose(p, expected, atol=1e-6)
    for mine, theirs in zip(rest, (p for p in reference.parameters() if p.requires_grad and p.ndim != 4)):
        assert torch.allclose(mine, theirs, atol=1e-7)
    # The momentum travels in the optimizer's state: a resumed optimizer takes the same next step.
    twin, forgetful = copy.deepcopy(model), copy.deepcopy(model)
    resumed = task3d.muon_optimizer(twin, config, lr=0.03, momentum=0.8)
    resumed.load_state_dict(copy.deepcopy(muon.state_dict()))
    fresh = task3d.muon_optimizer(forgetful, config, lr=0.03, momentum=0.8)
    for net, optimizer in ((model, muon), (twin, resumed), (forgetful, fresh)):
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    assert all(torch.equal(mine, theirs) for mine, theirs in zip(model.parameters(), twin.parameters()))
    assert not all(torch.equal(mine, theirs) for mine, theirs in zip(filters, fresh.param_groups[0]['params']))


def test_muon_takes_the_same_step_in_every_precision():
    # --precision sets the network's arithmetic, not the optimizer's: the orthogonalisation runs in fp32.
    torch.manual_seed(0)
    model = Task3dModel((8, 16, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
    loss.backward()
    stepped = []
    for precision in ("fp32", "bf16"):
        net = copy.deepcopy(model)  # (without the gradients)
        for mine, original in zip(net.parameters(), model.parameters()):
            if original.grad is not None:
                mine.grad = original.grad.clone()  # the step overwrites it
        task3d.muon_optimizer(net, TrainConfig(momentum=0.9, precision=precision), lr=0.03, momentum=0.8).step()
        stepped.append([p for p in net.parameters() if p.ndim == 4])
    assert all(torch.equal(a, b) for a, b in zip(*stepped))
    assert not all(torch.equal(a, b) for a, b in zip(stepped[0], (p for p in model.parameters() if p.ndim == 4)))


def test_schedule_start_peak_end(folder_data, tmp_path):
    total = 100
    peak = int(RECIPE.warmup_fraction * total)
    assert lr_factor(0, total) == pytest.approx(RECIPE.start_factor)
    assert lr_factor(peak, total) == pytest.approx(1.0)
    assert lr_factor(total, total) == pytest.approx(RECIPE.end_factor)
    # As the Trainer applies it: the rate of every step, recorded in the history.
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    trainer = Trainer(model, *loaders, TrainConfig(epochs=7, lr=0.5), tmp_path, "cpu", lr_schedule=lr_factor)
    trainer.train()
    seen = trainer.state.history["learning_rate"]["values"]
    total, peak = trainer.total_steps, int(RECIPE.warmup_fraction * trainer.total_steps)
    assert len(seen) == total == 7 * 16 and trainer.state.history["learning_rate"]["steps"] == list(range(total))
    assert seen[0] == pytest.approx(0.5 * RECIPE.start_factor)
    assert max(seen) == pytest.approx(0.5) and seen.index(max(seen)) == peak
    assert seen[-1] == pytest.approx(0.5 * lr_factor(total - 1, total))
    assert all(a <= b for a, b in zip(seen[:peak], seen[1:peak + 1]))
    assert all(a >= b for a, b in zip(seen[peak:], seen[peak + 1:]))
    assert trainer.optimizer.param_groups[0]["lr"] == seen[-1]


def _tiny_run(folder_data, tmp_path, name):
    run_dir = tmp_path / name
    result = run_script("task3d.py", "--data-dir", folder_data, "--epochs", 2, "--batch-size", 32,
                        "--widths", 8, 16, 16, "--run-dir", run_dir, "--plot-dir", tmp_path / f"{name}-plots",
                        "--seed", 5, *REPEATABLE)
    assert result.returncode == 0, result.stderr
    return result, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_tiny_run_end_to_end_is_seeded(folder_data, tmp_path):
    result, metrics = _tiny_run(folder_data, tmp_path, "a")
    assert "WhiteningConv" in result.stdout and "ShiftOnlyBatchNorm" in result.stdout
    assert (tmp_path / "a-plots" / "task3d.png").is_file()
    assert metrics["epochs"] <= 2 and metrics["steps"] == 2 * 8   # 270 // 32 full batches per epoch
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    settings = config["settings"]
    assert settings["widths"] == [8, 16, 16] and settings["tta"] == "flip" and settings["crop_padding"] == 2
    assert settings["whitening_bias_epochs"] == 3 and settings["depths"] == [2, 2, 3]
    assert "padding_mode='reflect'" in config["data"]["augmentation"] and settings["lookahead_every"] == 5
    _, again = _tiny_run(folder_data, tmp_path, "b")
    assert again["test"] == metrics["test"] and again["train"] == metrics["train"]


@pytest.mark.slow
def test_bad_label_smoothing_or_crop_padding_is_a_usage_error(folder_data, tmp_path, capsys):
    code, err = outcome(task3d.main, ["--data-dir", folder_data, "--label-smoothing", "1.5",
                                      "--run-dir", tmp_path / "r"], capsys)
    assert code == 2 and "label-smoothing" in err
    code, err = outcome(task3d.main, ["--data-dir", folder_data, "--crop-padding", "32", "--run-dir", tmp_path / "r"],
                        capsys)
    assert code == 2 and "--crop-padding 32 is out of range" in err
