"""Training steps replayed as CUDA graphs, so that a GPU trains at its own pace instead of Python's.

A small network's training step is a few hundred kernel launches, and issuing each takes the CPU
longer than the GPU takes to run it: the GPU waits. Captured once as a CUDA graph, the whole step
(forward, backward, optimizer update) is a single launch. Batches are copied into fixed input
buffers, the learning rate lives in a GPU tensor that the schedule overwrites between replays
(trainer.build_optimizer), and the loss stays on the device.

A capture can fail where the same step ran eagerly (an operation that a graph cannot hold, a host sync): one
that raises, or whose first replay does, puts back everything the attempt touched and says why (CaptureFailed);
the Trainer then takes that step, and every later one, eagerly, with the numbers an eager run gives from there.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

# Every CUDA call a captured step makes, in one place: the device type they are for and the functions. A test
# on a machine without a GPU replaces it with stand-ins (one whose capture fails, say) and trains on the CPU.
CUDA = SimpleNamespace(
    device_type="cuda", Stream=torch.cuda.Stream, current_stream=torch.cuda.current_stream,
    set_stream=torch.cuda.set_stream, stream=torch.cuda.stream, record_stream=torch.Tensor.record_stream,
    synchronize=torch.cuda.synchronize, get_rng_state=torch.cuda.get_rng_state, set_rng_state=torch.cuda.set_rng_state,
    Graph=torch.cuda.CUDAGraph, graph=torch.cuda.graph)


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


class CaptureFailed(RuntimeError):
    """A capture, or its first replay, raised. Everything the attempt touched is as it was before: the step has
    not been taken. The message says why, in one line."""


class StepState:
    """What a training step can change, copied before a capture is tried, so that a failed attempt is undone
    whatever it touched. A capture records the GPU's kernels without running them, but a first replay that fails
    may have run some of them, and the step's Python code runs in full while it is captured:
    - the parameters and buffers (BatchNorm's running statistics and num_batches_tracked): copied;
    - the optimizer's state (momentum, step counts, state that a first step creates) and its groups' values:
      copied (state_dict);
    - the gradients: the attempt leaves tensors of the graph's memory pool in .grad; set to None (the eager
      step's own zero_grad(set_to_none=True) does the same before its backward pass);
    - the random number generators (dropout): copied, the CPU's and the GPU's.
    Nothing else moves: autocast's cache is off while capturing (and cleared when autocast exits), the
    GradScaler is disabled whenever a step is captured (can_capture refuses fp16), and callbacks run between
    steps, outside it. The batch buffers and the graph are dropped."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.tensors = [*model.parameters(), *model.buffers()]
        self.copies = [tensor.detach().clone() for tensor in self.tensors]
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())
        self.rng = torch.get_rng_state(), CUDA.get_rng_state()

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, copied in zip(self.tensors, self.copies):
            tensor.copy_(copied)  # in place: the optimizer and callbacks keep the model's tensors
        self.optimizer.load_state_dict(self.optimizer_state)
        self.optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(self.rng[0])
        CUDA.set_rng_state(self.rng[1])


def _reason(error: BaseException) -> str:
    """The first line of `error`, and of the error it was raised while handling: leaving torch.cuda.graph after an
    error in the captured step raises again ("... a previous error during capture"), the first error says what."""
    def first_line(error):
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    context = error.__context__ if not error.__suppress_context__ else None
    return first_line(error) + (f" (after {first_line(context)})" if context is not None else "")


class GraphedStep:
    """A training step `step(images, labels, cache_enabled)` (forward, backward and update of `optimizer`'s
    parameters, returning the loss and the batch accuracy on the device) as a CUDA graph, re-captured when the
    batch shape or the set of trained parameters of `model` changes (e.g. a layer frozen part-way through
    training). A capture that fails raises CaptureFailed with the step not taken (see StepState)."""

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
        self.steps_with_key += 1
        if self.graph is not None:
            return self._replay(images, labels)
        if self.steps_with_key <= WARMUP_STEPS:
            return self._eager(images, labels)
        return self._capture_and_replay(images, labels)

    def _replay(self, images, labels):
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

    def _capture_and_replay(self, images, labels):
        """Capture the step, then take it by replaying the graph once. Where either raises, undo the attempt and
        raise CaptureFailed. Only the first replay is watched (synchronised, so that an error the GPU reports late
        surfaces here, while the copy can still undo a replay that ran in part): later ones replay the same graph.
        An error that breaks the CUDA context itself (a "sticky" one, an illegal memory access) cannot be undone
        in this process: putting the state back raises as well, and the run ends with it as before."""
        before, stream = StepState(self.model, self.optimizer), CUDA.current_stream()
        try:
            self._capture(images, labels)
            result = self._replay(images, labels)
            CUDA.synchronize()
            return result
        except Exception as error:  # (the same step ran eagerly WARMUP_STEPS times: the capture is what failed)
            self.graph = self.images = self.labels = self.loss = self.accuracy = None
            CUDA.set_stream(stream)  # torch.cuda.graph leaves its capture stream current when capture_end raises
            before.restore()
            raise CaptureFailed(_reason(error)) from error

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
