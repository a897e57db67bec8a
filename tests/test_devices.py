"""Devices: what --device auto picks (CUDA, Apple MPS, CPU; MPS mocked here), refusals before any work,
no float64 on the device, and on a real GPU (skipped without one): GPU-resident data, the precision
auto picks, CUDA graphs against eager steps, the resume of the CUDA random state; on the CPU, with stand-ins for
the CUDA calls: a capture that fails goes on with eager steps."""
import contextlib
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import cuda_graphs
import dataloaders
import hardware
import task2
import task3d
from helpers import needs_cuda, one_line_error, outcome, run_script
from settings import TrainConfig
from trainer import Trainer


# ---------------------------------------------------------------- auto, and what is refused

@pytest.mark.parametrize("cuda, mps, distributed, expected", [
    (True, True, False, "cuda"), (False, True, False, "mps"), (False, False, False, "cpu"),
    (False, True, True, "cpu"),   # torchrun has no process-group backend for MPS: auto does not pick it
])
def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, distributed, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(hardware, "mps_available", lambda: mps)
    assert hardware.select_device("auto", distributed=distributed).type == expected


def test_mps_is_refused_under_torchrun_even_where_it_exists(monkeypatch):
    monkeypatch.setattr(hardware, "mps_available", lambda: True)
    assert hardware.check_device("mps") == "mps"
    with pytest.raises(hardware.UsageError, match="cannot train under torchrun"):
        hardware.check_device("mps", distributed=True)


@pytest.mark.parametrize("device", ["mps", "cuda", "cuda:7"])
def test_an_unavailable_device_is_refused_before_the_data_is_loaded(device, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(hardware, "mps_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dataloaders, "load_raw", lambda *a, **k: pytest.fail("data loaded"))
    code, stderr = outcome(task2.main, ["--device", device, "--run-dir", tmp_path / "run",
                                        "--plot-dir", tmp_path / "plots"], capsys)
    assert code == 2 and f"--device {device}" in stderr and one_line_error(stderr)
    assert not (tmp_path / "run").exists()


class Float64Watch(TorchDispatchMode):
    """Records every op that makes a float64 tensor (Apple's MPS has no float64)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in outputs):
            self.ops.append(str(func))
        return out


@pytest.mark.slow
def test_training_and_evaluation_make_no_float64_tensor(folder_data, tmp_path):
    """Exact sums without float64 on the device: int64 counts, and the loss summed on the host."""
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, download=False)
    torch.manual_seed(0)
    trainer = Trainer(task2.Task2Model(), *loaders, TrainConfig(max_steps=3, batch_size=16), tmp_path, "cpu")
    watch = Float64Watch()
    with watch:
        trainer.train()
        result = trainer.evaluate(trainer.test_loader)
    assert watch.ops == []
    assert sum(map(sum, result["confusion"])) == 100 and isinstance(result["loss"], float)


# ---------------------------------------------------------------- on a real GPU

@needs_cuda
def test_the_data_lives_on_the_gpu(folder_data):
    train, val, test = dataloaders.load_cifar10(16, data_dir=folder_data, device="cuda", download=False)
    assert all(loader.images.is_cuda and loader.labels.is_cuda for loader in (train, val, test))
    images, labels = next(train.batches(0))
    assert images.is_cuda and images.dtype == torch.float32 and labels.is_cuda


@needs_cuda
def test_precision_auto_on_this_gpu_is_recorded_with_its_reason(folder_data, tmp_path):
    major, _ = torch.cuda.get_device_capability()
    expected = "bf16" if major >= 8 else "fp16" if major == 7 else "fp32"
    assert hardware.resolve_precision("auto", torch.device("cuda"))[0] == expected
    result = run_script("task2.py", "--data-dir", folder_data, "--max-steps", 4, "--batch-size", 16,
                        "--run-dir", tmp_path / "run", "--plot-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]
    assert resolved["device"].startswith("cuda") and resolved["precision"] == expected
    assert "compute capability" in resolved["precision_reason"]
    assert resolved["cuda_graphs"] == (expected != "fp16")


def _trained(folder_data, run_dir, cuda_graphs, model, steps=30, callbacks=()):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, device="cuda", download=False)
    config = TrainConfig(max_steps=steps, batch_size=16, momentum=0.9, precision="fp32", cuda_graphs=cuda_graphs)
    trainer = Trainer(model, *loaders, config, run_dir, "cuda", callbacks=callbacks)
    trainer.train()
    return trainer


@needs_cuda
def test_a_cuda_graph_step_trains_as_the_eager_step(folder_data, tmp_path):
    runs = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        runs[graphed] = _trained(folder_data, tmp_path / str(graphed), graphed, task2.Task2Model())
    assert runs[True].step_runner is not None and runs[True].step_runner.graph is not None
    assert runs[False].step_runner is None
    eager, graphed = (runs[g].state.history["train_loss"]["values"] for g in (False, True))
    assert eager == pytest.approx(graphed, rel=1e-3, abs=1e-4)
    for name, tensor in runs[False].model.state_dict().items():
        assert torch.allclose(tensor.float(), runs[True].model.state_dict()[name].float(), rtol=1e-3, atol=1e-4), name


@needs_cuda
def test_freezing_a_layer_mid_run_is_captured_anew(folder_data, tmp_path):
    torch.manual_seed(0)
    model = task3d.Task3dModel((8, 16, 16))
    trainer_epochs = 2
    freeze = task3d.FreezeWhiteningBias(model, epochs=1)
    loaders = dataloaders.load_cifar10(16, data_dir=folder_data, device="cuda", download=False)
    config = TrainConfig(epochs=trainer_epochs, batch_size=16, momentum=0.9, precision="fp32", cuda_graphs=True)
    trainer = Trainer(model, *loaders, config, tmp_path, "cuda", callbacks=[freeze],
                      optimizer=None)
    biases = []
    real_step = trainer.train_step

    def step_and_watch(images, labels):
        loss = real_step(images, labels)
        biases.append(model.whitening.bias.detach().clone())
        return loss
    trainer.train_step = step_and_watch
    trainer.train()
    frozen_from = freeze.steps                            # steps that trained the bias
    assert 3 < frozen_from < trainer.step - 3
    assert not torch.equal(biases[frozen_from - 2], biases[frozen_from - 1])
    assert all(torch.equal(biases[frozen_from - 1], later) for later in biases[frozen_from:])
    assert trainer.step_runner.graph is not None           # captured again after the freeze


@needs_cuda
def test_the_cuda_random_state_is_resumed(folder_data, tmp_path):
    trainer = _trained(folder_data, tmp_path, True, task2.Task2Model(), steps=5)
    torch.cuda.manual_seed(1234)
    saved = torch.cuda.get_rng_state()
    trainer.save_last()
    torch.cuda.manual_seed(99)
    resumed = _trained(folder_data, tmp_path / "other", True, task2.Task2Model(), steps=1)
    resumed.run_dir = tmp_path
    resumed.resume()
    assert torch.equal(torch.cuda.get_rng_state(), saved)


@needs_cuda
def test_a_setup_that_cannot_be_captured_says_why():
    model = nn.Linear(4, 2).cuda()
    plain = torch.optim.RMSprop(model.parameters(), lr=0.1)
    assert "RMSprop" in cuda_graphs.can_capture(plain, "bf16", distributed=False)
    fused = torch.optim.SGD(model.parameters(), lr=torch.tensor(0.1, device="cuda"), fused=True)
    assert cuda_graphs.can_capture(fused, "bf16", distributed=False) is None
    assert "scaler" in cuda_graphs.can_capture(fused, "fp16", distributed=False)
    assert "DDP" in cuda_graphs.can_capture(fused, "bf16", distributed=True)


# ---------------------------------------------------------------- a CUDA-graph capture that fails, on the CPU

def cpu_graphs(fail_in: str, captures: list):
    """cuda_graphs.CUDA's stand-ins on the CPU: streams that order nothing (a CPU runs in order) and a graph
    whose capture ("capture") or first replay ("replay") fails, as a real one may. Unlike a GPU's, this capture
    runs the step it records, so weights, optimizer state, BatchNorm statistics and gradients do move: the
    fallback must put those back too."""
    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            raise RuntimeError("CUDA error: invalid argument (stand-in)")  # one the context survives

    @contextlib.contextmanager
    def graph(_):
        captures.append(1)
        yield
        if fail_in == "capture":  # as torch.cuda.graph: the step's error, then capture_end's on leaving
            try:
                raise RuntimeError("operation not permitted when stream is capturing (stand-in)\nsecond line")
            except RuntimeError:
                raise RuntimeError("operation failed due to a previous error during capture")

    stream = Stream()
    return SimpleNamespace(device_type="cpu", Stream=Stream, current_stream=lambda: stream, set_stream=lambda s: None,
                           stream=lambda s: contextlib.nullcontext(), record_stream=lambda tensor, s: None,
                           synchronize=lambda: None, get_rng_state=torch.get_rng_state,
                           set_rng_state=torch.set_rng_state, Graph=Graph, graph=graph)


GRAPH_FAILURE_RUNS = {
    "task2": (task2.main, ["--epochs", "3", "--batch-size", "16", "--subset", "160", "--momentum", "0.9"]),
    "task3d": (task3d.main, ["--cuda-graphs", "--epochs", "2", "--batch-size", "32", "--widths", "8", "16", "16"]),
}


# Capture after 3 warm-up steps (before the first validation writes config.json), or after 7 (Task 2 validates
# after steps 5 and 9: config.json is written already and must be written again).
@pytest.mark.parametrize("script, fail_in, warmup", [("task2", "capture", 3), ("task2", "replay", 7),
                                                     ("task3d", "capture", 3)])
def test_a_failed_capture_continues_with_the_numbers_of_eager_steps(script, fail_in, warmup, folder_data, tmp_path,
                                                                     monkeypatch, capsys):
    main, argv = GRAPH_FAILURE_RUNS[script]
    results = {}
    for name in ("eager", "failed"):
        captures = []
        monkeypatch.setattr(cuda_graphs, "CUDA", cpu_graphs(fail_in, captures))
        # The eager run: the same steps and optimizer, with warm-up (eager) steps only.
        monkeypatch.setattr(cuda_graphs, "WARMUP_STEPS", 10 ** 6 if name == "eager" else warmup)
        run_dir = tmp_path / name
        code, err = outcome(main, ["--data-dir", folder_data, "--run-dir", run_dir, "--plot-dir", tmp_path,
                                   "--device", "cpu", "--precision", "fp32", "--seed", "4", *argv], capsys)
        assert code == 0, err
        config = json.loads((run_dir / "config.json").read_text())["resolved"]
        results[name] = (err, captures, config, *(json.loads((run_dir / f).read_text())
                                                  for f in ("history.json", "metrics.json")),
                         torch.load(run_dir / "last.pt", weights_only=False)["model"])
    err, captures, config, history, metrics, weights = results["failed"]
    assert err.count("CUDA graph capture failed") == 1 and len(captures) == 1   # never tried again
    line = next(line for line in err.splitlines() if "CUDA graph capture failed" in line)
    assert line.endswith("; continuing without CUDA graphs") and "stand-in" in line and "second line" not in line
    assert ("previous error" in line and "not permitted" in line) == (fail_in == "capture")
    assert config["cuda_graphs"] is False and "stand-in" in config["cuda_graphs_note"]
    assert f"after step {warmup}:" in config["cuda_graphs_note"]
    _, never, eager_config, eager_history, eager_metrics, eager_weights = results["eager"]
    assert not never and eager_config["cuda_graphs"] is True
    assert history == eager_history
    for split in ("train", "validation", "test"):
        assert metrics[split] == eager_metrics[split]
    assert weights.keys() == eager_weights.keys()
    assert all(torch.equal(weights[key], eager_weights[key]) for key in weights)
