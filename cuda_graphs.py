"""Training steps replayed as CUDA graphs, so that a GPU trains at its own pace instead of Python's.

A small network's training step is a few hundred kernel launches, and issuing each takes the CPU
longer than the GPU takes to run it: the GPU waits. Captured once as a CUDA graph, the whole step
(forward, backward, optimizer update) is a single launch. Batches are copied into fixed input
buffers, the learning rate lives in a GPU tensor that the schedule overwrites between replays
(trainer.build_optimizer), and the loss stays on the device.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

# Every CUDA call a captured step makes, in one place: the device type they are for and the functions. A test
# on a machine without a GPU replaces it with stand-ins (one whose capture fails, say) and trains on the CPU.
CUDA = SimpleNamespace(
    device_type="cuda", Stream=torch.cuda.Stream, current_stream=torch.cuda.current_stream,
    stream=torch.cuda.stream, record_stream=torch.Tensor.record_stream, Graph=torch.cuda.CUDAGraph,
    graph=torch.cuda.graph)


# Eager steps before each capture: cuDNN times its kernels (benchmark mode), the optimizer creates its
# state, and the caching allocator settles. Capturing any of that would fail or bake it in.
WARMUP_STEPS = 3


def can_capture(optimizer: torch.optim.Optimizer, precision: str, distributed: bool,
                compiled: bool = False) -> str | None:
    """None when a step with this setup can be captured, else why not (the run then stays eager)."""
    if compiled:
        return "--compile makes its own graphs (torch.compile(mode='reduce-overhead') captures them)"
    if distributed:
        return "data-parallel training (DDP) synchronises across processes inside the step"
    if precision == "fp16":
        return "fp16's gradient scaler checks for overflow on the host after every step"
    lr = optimizer.param_groups[0]["lr"]
    if not isinstance(lr, torch.Tensor) or not optimizer.defaults.get("fused"):
        return f"the optimizer ({type(optimizer).__name__}) has no fused, tensor-learning-rate update"
    return None


def applies_to(device) -> bool:
    """Whether steps on `device` can be captured at all (CUDA graphs are CUDA's)."""
    return torch.device(device).type == CUDA.device_type


class GraphedStep:
    """A training step `step(images, labels, cache_enabled)` (forward, backward and update of `optimizer`'s
    parameters, returning the loss and the batch accuracy on the device) as a CUDA graph, re-captured when the
    batch shape or the set of trained parameters of `model` changes (e.g. a layer frozen part-way through
    training)."""

    def __init__(self, step, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.step, self.model, self.optimizer = step, model, optimizer
        self.graph = None
        self.key = None
        self.steps_with_key = 0
        self.images = self.labels = self.loss = self.accuracy = None
        self.stream = None

    def _key(self, images, labels):
        return (images.shape, images.dtype, labels.shape, tuple(p.requires_grad for p in self.model.parameters()))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = self._key(images, labels)
        if key != self.key:
            self.graph, self.key, self.steps_with_key = None, key, 0
        if self.graph is None and self.steps_with_key >= WARMUP_STEPS:
            self._capture(images, labels)
        self.steps_with_key += 1
        if self.graph is None:
            return self._eager(images, labels)
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.loss.clone(), self.accuracy.clone()

    def _eager(self, images, labels):
        # On a side stream, as CUDA graphs want their warm-up (PyTorch's whole-network capture recipe).
        self.stream = self.stream or CUDA.Stream()
        main = CUDA.current_stream()
        self.stream.wait_stream(main)
        with CUDA.stream(self.stream):
            # Tell the caching allocator which stream still uses memory allocated on the other, so that
            # it reuses no block before that stream is done with it.
            CUDA.record_stream(images, self.stream)
            CUDA.record_stream(labels, self.stream)
            loss, accuracy = self.step(images, labels, cache_enabled=True)
        main.wait_stream(self.stream)
        CUDA.record_stream(loss, main)
        CUDA.record_stream(accuracy, main)
        return loss, accuracy

    def _capture(self, images, labels):
        self.images = images.clone()
        self.labels = labels.clone()
        # Gradients are allocated inside the graph's memory pool and overwritten by every replay (the step's
        # own zero_grad finds none to clear while it is captured).
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = CUDA.Graph()
        with CUDA.graph(self.graph):
            # Autocast's cache of cast weights must not outlive the capture.
            self.loss, self.accuracy = self.step(self.images, self.labels, cache_enabled=False)
