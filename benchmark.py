"""Training throughput on this machine: the assignment's starter pipeline against this project's.

For the Task 2 model and Task 3 Model 1, in one run, batch size 64, SGD:
  (a) starter: a torchvision.datasets.CIFAR10-style Dataset over in-memory uint8 arrays,
      PIL.Image.fromarray -> ToTensor -> Normalize per image in a DataLoader with 2 workers, fp32
  (b) project: the whole set in memory as uint8, normalised per batch on the training device,
      the Trainer's own training step, --precision fp32, eager (no CUDA graph)
  (c) project, as the task scripts run by default: --precision auto (bf16 autocast and
      channels-last where the hardware runs it fast) and, on CUDA, each step replayed as a CUDA graph
  (d) on CUDA only, the bound: (c)'s step alone, replayed on one batch already on the GPU (no data
      pipeline, nothing else per step); (e) (c) in fp32, to show what --precision auto chose against
Each is timed in steady state (after warm-up steps) for --seconds, the pipelines taking turns so
that load from other programs falls on all of them alike. The achieved training FLOP/s
(forward + backward, counted with torch.utils.flop_counter) is set against the peak of a large
matmul in the same precision on the same device. The last line, for scripts, is the c/a ratios:
    speedup task2=X.Xx model1=Y.Yx
--task3d also trains Task 3d end to end (python task3d.py, default settings) and prints its final test
accuracy, wall time and where the time went.
Uses the CIFAR-10 found like the training scripts do (--data-dir, $CIFAR10_DIR, data/cifar10),
else synthetic uint8 images (throughput does not depend on the pixel values).
"""
from __future__ import annotations

import startup

if __name__ == "__main__":
    startup.quiet_ctrl_c()

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import cli
import dataloaders
import hardware
from task2 import Task2Model
from task3_model1 import Model1
from settings import TrainConfig
from trainer import Trainer
from utils import UserError, set_seed

MODELS = {"task2": Task2Model, "model1": Model1}
BATCH_SIZE, LR = 64, 0.05


# ---------------------------------------------------------------- data

def load_images(data_dir, synthetic_count: int):
    """uint8 (N, 3, 32, 32) training images and labels, real when found, else synthetic."""
    root = dataloaders.resolve_data_dir(data_dir)
    if dataloaders.find_layout(root) is not None:
        raw = dataloaders.load_raw(root, download=False)
        return raw.train_images, raw.train_labels, raw.source
    if data_dir:
        raise UserError(f"no CIFAR-10 in {root}; omit --data-dir to use synthetic images")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (synthetic_count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (synthetic_count,), generator=generator)
    return images, labels, f"{synthetic_count} synthetic images (no CIFAR-10 found in {root})"


class StarterCIFAR10(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: an HWC uint8 array -> PIL image -> transform."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor):
        import torchvision.transforms as T

        self.data = images_nchw.permute(0, 2, 3, 1).numpy()  # torchvision keeps (N, 32, 32, 3)
        self.targets = labels.tolist()
        self.transform = T.Compose([T.ToTensor(), T.Normalize(dataloaders.CIFAR_MEAN, dataloaders.CIFAR_STD)])

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def endless(make_iterator):
    while True:
        yield from make_iterator()


# ---------------------------------------------------------------- timing

class Throughput:
    """Images per second of `step(images, labels)` over `batches`, timed in slices.

    The slices of all pipelines take turns, so a change in the load from other programs
    during the run falls on every pipeline alike instead of on whichever ran at that moment.
    """

    def __init__(self, step, batches, warmup: int, sync=lambda: None):
        self.step, self.batches, self.sync = step, batches, sync
        self.images, self.seconds = 0, 0.0
        for _ in range(warmup):  # one-off costs: kernel selection, graph capture, the workers' start-up
            step(*next(batches))
        sync()

    def run(self, seconds: float) -> None:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            images, labels = next(self.batches)
            self.step(images, labels)
            self.images += len(labels)
        self.sync()
        self.seconds += time.perf_counter() - started

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def starter(model_class, images, labels, device, warmup, workers) -> Throughput:
    """The starter code's loop: DataLoader batches, fp32, forward, backward, step."""
    set_seed(0)
    model = model_class().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(StarterCIFAR10(images, labels), batch_size=BATCH_SIZE,
                                         shuffle=True, num_workers=workers, drop_last=True)

    def step(x, y):
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return Throughput(step, endless(lambda: iter(loader)), warmup, sync=lambda: hardware.synchronize(device))


def project(model_class, images, labels, device, precision, cuda_graphs, warmup, run_dir,
            fixed_batch: bool = False) -> Throughput:
    """The Trainer's training step over the project's BatchLoader (or one fixed batch: the bound)."""
    set_seed(0)
    loader = dataloaders.BatchLoader(images.to(device), labels.to(device), BATCH_SIZE, shuffle=True)
    config = TrainConfig(batch_size=BATCH_SIZE, lr=LR, precision=precision, cuda_graphs=cuda_graphs,
                         channels_last=hardware.uses_channels_last(precision, device))
    trainer = Trainer(model_class(), loader, None, None, config, run_dir, device)
    pending = []

    def step(x, y):
        # As Trainer.train: losses stay on the device and are read back every log_every steps.
        pending.append(trainer.train_step(x, y)[0])
        if len(pending) == config.log_every:
            torch.stack(pending).tolist()
            pending.clear()

    if fixed_batch:
        batch = next(loader.batches(0))
        batches = endless(lambda: [batch])
    else:
        batches = endless(loader.batches)
    return Throughput(step, batches, warmup, sync=lambda: hardware.synchronize(device))


def training_flops_per_image(model_class, device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = model_class().to(device)
    x = torch.randn(BATCH_SIZE, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH_SIZE,), device=device)
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / BATCH_SIZE


def peak_matmul_flops(device, precision: str, repeats: int = 8) -> float:
    """Best of `repeats` square matmuls, large enough to keep every core (or the GPU) busy."""
    size = 8192 if device.type == "cuda" else 2048
    dtype = hardware.DTYPES[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats):
        hardware.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        hardware.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def task3d_end_to_end(data_dir) -> str:
    """python task3d.py with its defaults, timed from the outside (imports and start-up included)."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(Path(__file__).with_name("task3d.py")), "--run-dir", f"{folder}/run",
                   "--plot-dir", folder] + (["--data-dir", str(data_dir)] if data_dir else [])
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode:
            raise UserError(f"task3d.py failed: {result.stderr.strip().splitlines()[-1]}")
        metrics = json.loads(Path(folder, "run", "metrics.json").read_text())
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in metrics["seconds"].items())
    return (f"task3d: test accuracy {metrics['test']['accuracy']:.4f} after {metrics['epochs']:g} epochs; "
            f"{wall:.1f} s wall from the command line ({parts}); {metrics['train_images_per_s']:,.0f} "
            "training images/s")


# ---------------------------------------------------------------- report

def main(argv=None):
    parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: as the training scripts; "
                        "synthetic images when none is found)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--seconds", type=cli.positive_float, default=8.0,
                        help="timed seconds per pipeline and model (after warm-up)")
    parser.add_argument("--rounds", type=cli.positive_int, default=4,
                        help="the pipelines take turns in this many slices of --seconds / --rounds")
    parser.add_argument("--warmup", type=cli.positive_int, default=5, help="untimed steps first")
    parser.add_argument("--workers", type=cli.non_negative_int, default=2,
                        help="DataLoader workers of the starter pipeline (the starter code used 2)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="the networks to time: the Task 2 model, Task 3 Model 1")
    parser.add_argument("--task3d", action="store_true", help="also train Task 3d end to end and time it")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    device = hardware.select_device(args.device)
    graphs_on = device.type == "cuda"
    if graphs_on:
        torch.backends.cudnn.benchmark = True
    auto, why = hardware.resolve_precision("auto", device)
    graphs_on = graphs_on and auto != "fp16"
    images, labels, source = load_images(args.data_dir, synthetic_count=10_000)
    print(f"device: {device} ({hardware.describe_device(device)}); torch {torch.__version__}")
    print(f"data: {source}; batch {BATCH_SIZE}; --precision auto -> {auto} ({why}), channels-last "
          f"{'on' if hardware.uses_channels_last(auto, device) else 'off'}, "
          f"CUDA graphs {'on' if graphs_on else 'off'}; {args.seconds:g} s per pipeline in {args.rounds} turns")
    peaks = {p: peak_matmul_flops(device, p) for p in sorted({"fp32", auto})}
    print("peak (large square matmul): " + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    print(f"\n{'model':8s} {'pipeline':42s} {'images/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}")

    ratios = {}
    for key in args.models:
        model_class = MODELS[key]
        flops = training_flops_per_image(model_class, device)
        with tempfile.TemporaryDirectory() as run_dir:
            rows = [(f"(a) starter, PIL + {args.workers} workers, fp32", "fp32",
                     starter(model_class, images, labels, device, args.warmup, args.workers)),
                    ("(b) project, fp32, eager", "fp32",
                     project(model_class, images, labels, device, "fp32", False, args.warmup, run_dir)),
                    (f"(c) project, default ({auto}{', CUDA graph' if graphs_on else ''})", auto,
                     project(model_class, images, labels, device, auto, graphs_on, args.warmup, run_dir))]
            if device.type == "cuda":
                rows.append(("(d) bound: (c)'s step on one batch", auto,
                             project(model_class, images, labels, device, auto, graphs_on, args.warmup, run_dir,
                                     fixed_batch=True)))
                if auto != "fp32":  # what --precision auto chose it over
                    rows.append(("(e) project, fp32, CUDA graph", "fp32",
                                 project(model_class, images, labels, device, "fp32", graphs_on, args.warmup,
                                         run_dir)))
            for _ in range(args.rounds):
                for _, _, throughput in rows:
                    throughput.run(args.seconds / args.rounds)
        for label, precision, throughput in rows:
            achieved = throughput.rate * flops
            print(f"{key:8s} {label:42s} {throughput.rate:9.0f} {achieved / 1e9:8.1f} "
                  f"{achieved / peaks[precision]:8.1%}", flush=True)
        a, b, c = (throughput.rate for _, _, throughput in rows[:3])
        ratios[key] = c / a
        print(f"{key:8s} {flops / 1e6:.1f} MFLOP per training image; b/a = {b / a:.2f}x, c/a = {c / a:.2f}x\n")
        del rows  # stops the starter's DataLoader workers
    if args.task3d:
        print(task3d_end_to_end(args.data_dir), flush=True)
    print("speedup " + " ".join(f"{key}={ratio:.1f}x" for key, ratio in ratios.items()))


if __name__ == "__main__":
    cli.main(main)
