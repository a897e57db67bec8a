"""Precision and memory layout: what `auto` picks, that reduced precision still learns, the benchmark."""
import json
import re
import subprocess
import sys

import pytest
import torch

import dataloaders
import hardware
import task2
from helpers import ROOT, exit_code, outcome, run_script, synthetic_images
from hardware import resolve_precision
from settings import TrainConfig
from trainer import Trainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, True, "bf16"),     # Intel Xeon 4th gen and later
    (False, True, "bf16"),    # AMD Zen 4, Intel Cooper Lake
    (True, False, "bf16"),
    (False, False, "fp32"),   # older or laptop CPUs: bf16 would be emulated, slower than fp32
])
def test_auto_on_cpu_follows_the_detected_instructions(monkeypatch, amx, avx512_bf16, expected):
    fake_cpu(monkeypatch, amx, avx512_bf16)
    assert resolve_precision("auto", CPU)[0] == expected


@pytest.mark.parametrize("capability, expected", [
    ((9, 0), "bf16"),   # H100
    ((8, 0), "bf16"),   # A100
    ((7, 5), "fp16"),   # T4 (Colab): is_bf16_supported() says True, but bf16 is only emulated there
    ((7, 0), "fp16"),   # V100
    ((6, 1), "fp32"),   # GTX 10x0: no tensor cores
])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    precision, why = resolve_precision("auto", CUDA)
    assert precision == expected and f"{capability[0]}.{capability[1]}" in why


@pytest.mark.parametrize("choice", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_whatever_the_hardware(monkeypatch, choice):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    device = CUDA if choice == "fp16" else CPU  # fp16 is refused on a CPU (see below)
    assert resolve_precision(choice, device) == (choice, "asked for with --precision")


def test_channels_last_where_it_helps():
    assert hardware.uses_channels_last("bf16", CPU) and hardware.uses_channels_last("fp32", CUDA)
    assert not hardware.uses_channels_last("fp32", CPU)


def test_fp16_on_a_cpu_is_one_clear_line(tmp_path, capsys):
    code, err = outcome(task2.main, ["--device", "cpu", "--precision", "fp16", "--run-dir", tmp_path / "run",
                                     "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 2 and "error: --precision fp16 is for GPUs" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_run_config_says_what_auto_chose(folder_data, tmp_path):
    assert exit_code(task2.main, "--data-dir", folder_data, "--device", "cpu", "--precision", "auto", "--max-steps",
                     "2", "--batch-size", "16", "--run-dir", tmp_path / "run", "--plot-dir", tmp_path / "plots") == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    chosen, why = resolve_precision("auto", CPU)
    assert config["settings"]["precision"] == "auto"
    assert config["resolved"]["precision"] == chosen and config["resolved"]["precision_reason"] == why
    assert config["resolved"]["channels_last"] == hardware.uses_channels_last(chosen, CPU)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_short_run_decreases_the_training_loss(folder_data, tmp_path, precision):
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.02, precision=precision, validations_per_epoch=1,
                         channels_last=hardware.uses_channels_last(precision, CPU))
    torch.manual_seed(0)
    trainer = Trainer(task2.Task2Model(), *loaders, config, tmp_path, "cpu")
    trainer.train()
    losses = trainer.state.history["train_loss"]["values"]
    assert len(losses) == trainer.step >= 30
    assert sum(losses[-8:]) / 8 < 0.85 * sum(losses[:8]) / 8, losses
    # Autocast computes in bf16 but keeps the weights (and so the optimizer) in fp32.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_project_batches_give_the_starter_pipelines_outputs(monkeypatch):
    """uint8 batch -> per-batch normalise -> channels-last bf16 forward, against PIL -> ToTensor ->
    Normalize per image and an fp32 forward: equal within bf16 rounding."""
    from PIL import Image
    from torchvision import transforms

    images, labels = synthetic_images(32, seed=5)
    reference = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize(dataloaders.CIFAR_MEAN, dataloaders.CIFAR_STD)])
    expected_input = torch.stack([reference(Image.fromarray(image)) for image in images])
    torch.manual_seed(0)
    model = task2.Task2Model().eval()
    with torch.no_grad():
        expected = model(expected_input)

    loader = dataloaders.BatchLoader(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                     torch.from_numpy(labels), batch_size=32)
    config = TrainConfig(precision="bf16", channels_last=True)
    trainer = Trainer(model, loader, None, None, config, "unused", "cpu")
    batch, _ = next(loader.evaluation_batches())
    prepared = trainer.prepare(batch)
    assert prepared.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(prepared, expected_input, atol=1e-6)
    with torch.no_grad(), trainer.autocast():
        logits = trainer.model(prepared).float()
    scale = expected.abs().max()
    assert (logits - expected).abs().max() < 0.03 * scale
    assert not torch.equal(logits, expected), "bf16 autocast did not take effect"


@pytest.mark.slow
def test_benchmark_prints_the_ratios_last(tmp_path):
    result = run_script("benchmark.py", "--seconds", "0.3", "--rounds", "1", "--warmup", "1", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"speedup task2=\d+\.\dx model1=\d+\.\dx", lines[-1]), lines[-1]
    assert any("(a) starter" in line for line in lines) and "GFLOP/s" in result.stdout


def test_auto_is_fp32_when_torch_cannot_tell(monkeypatch):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    assert resolve_precision("auto", CPU)[0] == "fp32"


def test_auto_is_fp32_without_onednn(monkeypatch):
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert resolve_precision("auto", CPU)[0] == "fp32"


KEEP_MEMORY_PROBE = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from hardware import keep_freed_memory
kept = keep_freed_memory() if {keep} else False
def faults_of_one_big_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 20, dtype=torch.uint8)   # 64 MiB, above glibc's largest mmap threshold
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for warm_up in range(8):   # glibc settles after a few rounds (how many depends on the heap's history)
    faults_of_one_big_tensor()
print(kept, min(faults_of_one_big_tensor() for _ in range(8)))   # the steady state a long run lives in
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and page-fault counts")
@pytest.mark.parametrize("keep", [False, True])
def test_freed_activation_memory_is_reused_without_page_faults(keep):
    # A training step frees and re-allocates the same large activations; without keep_freed_memory
    # glibc unmaps them and every step page-faults them in again (64 MiB = 16,384 pages).
    probe = KEEP_MEMORY_PROBE.format(root=str(ROOT), keep=keep)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kept, faults = result.stdout.split()
    if keep:
        assert kept == "True" and int(faults) < 1000
    else:
        assert int(faults) > 10000
