"""Data-parallel training under torchrun: equal shards, one set of outputs, metrics of the full set."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT

import dataloaders
from task2 import Task2Model
from task3_model1 import Model1
from settings import TrainConfig
from trainer import Trainer
from utils import load_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_every_process_takes_the_same_number_of_steps(world_size, batch_size):
    """An epoch with one step more on one rank would leave DDP waiting for it forever."""
    for count in range(world_size, 70):
        images, labels = torch.zeros(count, 3, 32, 32, dtype=torch.uint8), torch.arange(count)
        shards = [dataloaders.BatchLoader(images, labels, batch_size, shuffle=True, rank=rank,
                                          world_size=world_size) for rank in range(world_size)]
        assert len({len(shard) for shard in shards}) == 1, (count, [len(s) for s in shards])
        if count in (world_size, 35, 69):
            seen = torch.cat([y for shard in shards for _, y in shard.batches(epoch=3)])
            assert len(seen.unique()) == len(seen), "shards overlap"
            assert len(seen) >= count - world_size * (batch_size + 1), "too many images left out"


def test_evaluation_shards_cover_every_image_once():
    images, labels = torch.zeros(53, 3, 32, 32, dtype=torch.uint8), torch.arange(53)
    covered = torch.cat([y for rank in range(3) for _, y in
                         dataloaders.BatchLoader(images, labels, 8, rank=rank, world_size=3,
                                                 eval_batch_size=8).evaluation_batches()])
    assert sorted(covered.tolist()) == list(range(53))


def test_the_torchrun_launcher_and_gloo_are_available():
    assert importlib.util.find_spec("torch.distributed.run") is not None
    assert torch.distributed.is_available() and torch.distributed.is_gloo_available()


def full_set_metrics(model, checkpoint, data_dir, batch_size):
    """best.pt evaluated in this one process on every image of each split."""
    loaders = dataloaders.load_cifar10(batch_size, 0.1, seed=0, data_dir=data_dir, download=False)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    trainer = Trainer(model, *loaders, TrainConfig(batch_size=batch_size), checkpoint.parent, "cpu")
    return {split: trainer.evaluate(loader) for split, loader in zip(("train", "validation", "test"), loaders)}


# Model 1 has BatchNorm, whose running statistics each process updates on its own shard.
@pytest.mark.slow
@pytest.mark.parametrize("script, model, title", [("task2.py", Task2Model, "Task 2"),
                                                  ("task3_model1.py", Model1, "Task 3 Model 1")])
def test_two_processes_under_torchrun_write_one_set_of_outputs(script, model, title, folder_data, tmp_path):
    run_dir, plot_dir = tmp_path / "run", tmp_path / "plots"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / script), "--data-dir", folder_data, "--device", "cpu", "--precision", "fp32",
               "--batch-size", "16", "--max-steps", "6", "--run-dir", run_dir, "--plot-dir", plot_dir]
    env = {key: value for key, value in os.environ.items() if key != "CIFAR10_DIR"}
    result = subprocess.run(list(map(str, command)), cwd=ROOT, capture_output=True, text=True, timeout=180,
                            env={**env, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]

    # Only rank 0 writes and prints.
    assert result.stdout.count("(best checkpoint, step") == 1 and f"\n{title} (smoke run" in result.stdout
    assert result.stderr.count("2 process(es)") == 1
    assert sorted(p.name for p in plot_dir.iterdir()) == [script.replace(".py", ".pdf"), script.replace(".py", ".png")]
    assert {"config.json", "history.json", "metrics.json", "best.pt", "last.pt"} <= {p.name for p in run_dir.iterdir()}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6

    # Reduced across ranks, each metric equals the saved model's on the whole split, per class too.
    full = full_set_metrics(model(), run_dir / "best.pt", folder_data, batch_size=16)
    for split in ("train", "validation", "test"):
        assert metrics[split]["accuracy"] == pytest.approx(full[split]["accuracy"], abs=1e-9), split
        assert metrics[split]["loss"] == pytest.approx(full[split]["loss"], rel=1e-5), split
    for split in ("validation", "test"):
        assert metrics[split]["confusion"] == full[split]["confusion"], split
        assert metrics[split]["per_class_accuracy"] == full[split]["per_class_accuracy"], split
    best = load_checkpoint(run_dir / "best.pt")
    assert best["validation"]["loss"] == pytest.approx(full["validation"]["loss"], rel=1e-5)


def torchrun(*args, timeout=240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    env = {key: value for key, value in os.environ.items() if key != "CIFAR10_DIR"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**env, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})


WHITENING_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
import torch, torch.distributed as dist
import dataloaders, hardware, task3d
from settings import TrainConfig
from trainer import Trainer
rank, world, device = hardware.init_distributed("cpu")
augmentation = dataloaders.Augmentation(flip="alternate", crop_padding=2, padding_mode="reflect")
loaders = dataloaders.load_cifar10(16, data_dir={data!r}, augment=augmentation, rank=rank, world_size=world,
                                   download=False)
torch.manual_seed(rank)                      # a different network on each process before the fit
model = task3d.Task3dModel((8, 16, 16))
trainer = Trainer(model, *loaders, TrainConfig(batch_size=16, max_steps=1), {out!r}, device)
task3d.FitWhitening(model, loaders[0], count=16).on_train_start(trainer)
weights = [torch.zeros_like(model.whitening.weight) for _ in range(world)]
dist.all_gather(weights, model.whitening.weight.detach().contiguous())
if rank == 0:
    torch.save(weights, {out!r} + "/weights.pt")
dist.barrier()                               # leave together (see cli.main)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_whitening_is_the_same_on_every_torchrun_process(folder_data, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(WHITENING_PROBE.format(root=str(ROOT), data=str(folder_data), out=str(tmp_path)))
    result = torchrun(probe)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "weights.pt")
    assert torch.equal(rank0, rank1)
    # ... and they are what one process fits on the first batch of the unsharded training set (up to the
    # rounding of a matrix product summed by another number of threads).
    augmentation = dataloaders.Augmentation(flip="alternate", crop_padding=2, padding_mode="reflect")
    train, _, _ = dataloaders.load_cifar10(16, data_dir=folder_data, augment=augmentation, download=False)
    import task3d
    single = task3d.WhiteningConv()
    single.fit(next(train.batches(0))[0])
    assert torch.allclose(rank0, single.weight, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(rank0, task3d.WhiteningConv().weight, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_task3d_under_torchrun_freezes_its_whitening_bias_mid_run(folder_data, tmp_path):
    """Freezing changes which parameters train; DistributedDataParallel must be rebuilt for it."""
    run_dir = tmp_path / "run"
    result = torchrun(ROOT / "task3d.py", "--data-dir", folder_data, "--device", "cpu", "--precision", "fp32",
                      "--epochs", 2, "--whitening-bias-epochs", 1, "--batch-size", 16, "--widths", 8, 16, 16,
                      "--run-dir", run_dir, "--plot-dir", tmp_path / "plots")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 * (270 // 2 // 16) and metrics["epochs"] == 2
