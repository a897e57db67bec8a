"""Where training runs: the device, the numeric precision, the memory layout, torchrun, the machine.

`--device auto` takes CUDA, else Apple's MPS, else the CPU. `--precision auto` takes bf16 autocast
where the hardware has native bf16 matrix units (and it is not slower), fp16 with a gradient scaler on
CUDA GPUs that have tensor cores but no bf16, else fp32; `resolve_precision` says why, and config.json
records it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import re
from pathlib import Path

import torch
import torch.distributed as dist

from utils import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # of each precision


# ---------------------------------------------------------------- devices

def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def check_device(name: str, distributed: bool = False) -> str:
    """Refuse a --device this machine cannot run (before any data is loaded); returns the name.

    MPS cannot run under torchrun (no process-group backend for it), so there it is refused.
    """
    if name == "auto":
        return name
    match = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", name)
    if not match:
        raise UsageError(f"--device {name}: unknown device; use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device cpu "
                             "(or auto)")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps":
        if not mps_available():
            raise UsageError(f"--device {name}: Apple MPS is not available here (it needs an Apple-silicon Mac "
                             "and a PyTorch built with MPS); use --device cpu (or auto)")
        if distributed:
            raise UsageError(f"--device {name} cannot train under torchrun (no process-group backend for "
                             "MPS); run a single process or use --device cpu")
    if kind == "cpu" and index is not None:
        raise UsageError(f"--device {name}: the CPU takes no index; use --device cpu")
    return name


def select_device(name: str = "auto", local_rank: int = 0, distributed: bool = False) -> torch.device:
    """auto: CUDA, else MPS (not under torchrun), else the CPU. Under torchrun each process takes
    the GPU of its LOCAL_RANK."""
    check_device(name, distributed)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif mps_available() and not distributed:
            name = "mps"
        else:
            name = "cpu"
    device = torch.device(name)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
    return device


def is_main_process() -> bool:
    """True in a plain run, and in rank 0 of a torchrun run (the one that writes the outputs)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_distributed(device_name: str):
    """(rank, world size, device); a plain `python task.py` is a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, select_device(device_name)
    device = select_device(device_name, int(os.environ.get("LOCAL_RANK", 0)), distributed=True)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # (--seeds: the next run of the same processes)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


# What gloo and NCCL say when a collective fails because a process at the other end is gone.
PEER_GONE = ("closed by peer", "reset by peer", "remote worker", "Broken pipe", "communicator was aborted")


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another process of the torchrun run died."""
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                                 and any(text in str(error) for text in PEER_GONE))


# ---------------------------------------------------------------- precision

def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AMX or AVX512-BF16)."""
    # Private torch helpers: a torch without them gets fp32, the safe choice, instead of a crash.
    # oneDNN is what runs bf16 convolutions fast; without it autocast would only add casts.
    checks = [getattr(torch.cpu, name, lambda: False)
              for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in checks)


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, why): 'auto' becomes the fastest precision this device runs without losing accuracy."""
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 is for GPUs; on a CPU use bf16 or fp32")
        return requested, "asked for with --precision"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        # torch.cuda.is_bf16_supported() also says True where bf16 is only emulated (a T4, cc 7.5).
        if major >= 8:
            return "bf16", f"compute capability {major}.{minor} has bf16 tensor cores"
        if major == 7:
            return "fp16", (f"compute capability {major}.{minor} has fp16 tensor cores but no bf16; "
                            "fp16 autocast with a gradient scaler")
        return "fp32", f"compute capability {major}.{minor} has no tensor cores"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16", "the CPU has native bf16 instructions (AMX or AVX512-BF16)"
    if device.type == "cpu":
        return "fp32", "the CPU has no native bf16 instructions, so bf16 would be emulated (slower)"
    return "fp32", f"reduced precision is untested on {device.type}"


def uses_channels_last(precision: str, device: torch.device) -> bool:
    """Channels-last lets oneDNN / cuDNN pick their fast reduced-precision convolution kernels."""
    return precision != "fp32" or device.type == "cuda"


def make_deterministic() -> None:
    """Bit-identical runs on a GPU too (slower): deterministic kernels, no cuDNN autotuning."""
    # cuBLAS needs a fixed workspace to be deterministic; it reads this before its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


# ---------------------------------------------------------------- memory

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Let glibc reuse freed activation memory instead of handing it back to the OS.

    glibc serves every large allocation (a large batch's activations, their gradients) with a fresh
    mmap and unmaps it on free, so each training step page-faults them all in again (docs/speed.md
    has the measurement). Returns False (and changes nothing) where the C library has no mallopt
    (macOS, Windows).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


# What each allocator says when memory runs out, and which memory that is: only CUDA's caching allocator raises
# torch.OutOfMemoryError; the CPU's and MPS's raise a RuntimeError, Python a MemoryError.
OUT_OF_MEMORY = (("DefaultCPUAllocator: can't allocate memory", "the CPU's memory (RAM)"),
                 ("DefaultCPUAllocator: not enough memory", "the CPU's memory (RAM)"),
                 ("MPS backend out of memory", "the Apple GPU's memory (MPS)"),
                 ("CUDA out of memory", "the GPU's memory"), ("CUDA error: out of memory", "the GPU's memory"))


def out_of_memory(error: BaseException) -> str | None:
    """Which memory `error` says has run out ("the CPU's memory (RAM)", "the GPU's memory", ...), or None when
    it is not an out-of-memory error."""
    if isinstance(error, MemoryError):
        return OUT_OF_MEMORY[0][1]
    if not isinstance(error, RuntimeError):  # (torch.OutOfMemoryError is one)
        return None
    text = str(error)
    memory = next((memory for clue, memory in OUT_OF_MEMORY if clue in text), None)
    return memory or ("the GPU's memory" if isinstance(error, torch.OutOfMemoryError) else None)


# ---------------------------------------------------------------- what the machine is

def cpu_name() -> str:
    """The processor's marketing name where Linux tells it (platform.processor() says only x86_64)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def versions() -> dict:
    from importlib import metadata

    try:  # read from the installed package's metadata: importing torchvision costs a second
        torchvision = metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        torchvision = None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision,
            "platform": platform.platform()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
