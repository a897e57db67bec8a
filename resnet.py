"""ResNet-18 pieces shared by Task 4: weights, the transfer-learning model, images, display.

Weights come from one of three places (`--weights`):
    imagenet  torchvision's ResNet18_Weights.IMAGENET1K_V1, read from the torch hub cache
              (<torch hub dir>/checkpoints/resnet18-f37072fd.pth) or downloaded there once
    PATH      a local copy of that state dict (1000-class head)
    none      random initialisation, for tests and smoke runs
and `--checkpoint` (Tasks 4b/4c) reads a model trained by task4a.py instead.
"""
from __future__ import annotations

import argparse
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

import dataloaders
from cli import HelpFormatter, Parser
from run_folder import PLOT_DIR, ROOT
from utils import UserError, cache_home, read_torch_file, require_file

DEFAULT_IMAGE = Path("images") / "zebra.jpg"
IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
WEIGHTS_FILE = IMAGENET_WEIGHTS.url.rsplit("/", 1)[-1]  # resnet18-f37072fd.pth
NUM_CLASSES = len(dataloaders.CLASSES)
DOWNLOAD_TIMEOUT_S = 30


# ---------------------------------------------------------------- weights

def weights_cache_dir() -> Path:
    """Where torchvision looks for (and downloads) pretrained weights, <torch hub dir>/checkpoints: torch's
    rule ($TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub), where an empty or
    relative variable counts as unset, as the XDG spec says (torch would put the weights under the current
    folder)."""
    torch_home = os.environ.get("TORCH_HOME", "")
    home = Path(torch_home).expanduser() if torch_home else cache_home() / "torch"
    return home / "hub" / "checkpoints"


def imagenet_state_dict() -> dict:
    """The ImageNet state dict from the torch hub cache, downloading it once when missing."""
    cached = weights_cache_dir() / WEIGHTS_FILE
    was_cached = cached.is_file()
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # an unreachable server should fail, not hang
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=True, model_dir=str(cached.parent))
    except Exception as error:
        if was_cached:
            raise UserError(f"the cached ImageNet weights {cached} cannot be read ({type(error).__name__}); "
                            "delete the file so it is downloaded again, or pass a good copy with "
                            "--weights PATH") from None
        raise UserError(
            f"ImageNet weights for ResNet-18 are not cached and could not be downloaded "
            f"({type(error).__name__}: {error}): torchvision expects {WEIGHTS_FILE} in {cached.parent} "
            f"(from {IMAGENET_WEIGHTS.url}); put it there, pass a local copy with --weights PATH, or use "
            "--weights none for random initialisation") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def is_training_checkpoint(state) -> bool:
    return isinstance(state, dict) and isinstance(state.get("model"), dict)


def read_state_dict_file(path) -> dict:
    """A local ResNet-18 ImageNet state dict, as torchvision's resnet18-f37072fd.pth."""
    state = read_torch_file(Path(path).expanduser(), "--weights",
                            f"pass a ResNet-18 state dict such as {WEIGHTS_FILE}, or --weights imagenet / "
                            "--weights none")
    if is_training_checkpoint(state):
        raise UserError(f"--weights {path} is a training checkpoint, not ImageNet weights; Tasks 4b and 4c "
                        "read task4a.py checkpoints with --checkpoint PATH")
    return state


def load_strict(model: nn.Module, state, source: str, expected: str) -> nn.Module:
    """load_state_dict with a one-line explanation of what does not fit."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{source} is not {expected}: it holds a {type(state).__name__}, not a state dict "
                        "of tensors")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} instead of {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        problems = [f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
                    f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
                    f"shape {mismatched[0]}" if mismatched else ""]
        raise UserError(f"{source} is not {expected}: {'; '.join(p for p in problems if p)}")
    model.load_state_dict(state)
    return model


def pretrained_resnet18(weights: str = "imagenet") -> nn.Module:
    """ResNet-18 with its 1000-class ImageNet head, weights as `--weights` says."""
    model = resnet18(weights=None)
    if weights == "none":
        return model
    if weights == "imagenet":
        return load_strict(model, imagenet_state_dict(), f"the cached {WEIGHTS_FILE}",
                           "a ResNet-18 ImageNet state dict")
    return load_strict(model, read_state_dict_file(weights), f"--weights {weights}",
                       f"a ResNet-18 ImageNet state dict like {WEIGHTS_FILE}")


# ---------------------------------------------------------------- transfer learning (4a)

def replace_head(model: nn.Module, num_classes: int = NUM_CLASSES) -> nn.Module:
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def set_trainable(model: nn.Module, finetune: str = "last") -> nn.Module:
    """'last': train only layer4 and fc, the rest keeps its ImageNet features; 'all': everything."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = finetune == "all" or name.startswith(("layer4.", "fc."))
    return model


# ---------------------------------------------------------------- models to look at (4b, 4c)

def trained_resnet18(checkpoint) -> nn.Module:
    """The 10-class model of a task4a.py run, from its best.pt or last.pt."""
    state = read_torch_file(Path(checkpoint).expanduser(), "--checkpoint",
                            "pass runs/task4a/best.pt or last.pt from task4a.py")
    if not is_training_checkpoint(state):
        raise UserError(f"--checkpoint {checkpoint} is not a training checkpoint (no 'model' entry); pass "
                        "runs/task4a/best.pt or last.pt, or plain ImageNet weights with --weights PATH")
    return load_strict(replace_head(resnet18(weights=None)), state["model"], f"--checkpoint {checkpoint}",
                       "a task4a.py (ResNet-18, 10 classes) checkpoint")


def model_from_args(args) -> nn.Module:
    model = trained_resnet18(args.checkpoint) if args.checkpoint else pretrained_resnet18(args.weights)
    return model.eval()


def describe_weights(args) -> str:
    """In a figure's title: which weights (a checkpoint by its run folder and name, no path of this machine)."""
    if args.checkpoint:
        path = Path(args.checkpoint)
        return f"checkpoint {path.parent.name}/{path.name}" if path.parent.name else f"checkpoint {path.name}"
    return {"imagenet": "ImageNet weights", "none": "random weights"}.get(args.weights, f"weights {args.weights}")


# ---------------------------------------------------------------- images

def load_image(path, size: int = 224) -> torch.Tensor:
    """A photo as a (1, 3, size, size) ImageNet-normalised batch."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"--image {path} is a folder; pass one image file, e.g. --image {path / 'zebra.jpg'}")
    default = path in (DEFAULT_IMAGE, ROOT / DEFAULT_IMAGE) and not path.exists()
    require_file(path, "--image", f"copy the assignment's zebra.jpg to {ROOT / DEFAULT_IMAGE} or pass --image PATH"
                 if default else "pass a .jpg or .png with --image")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its pixel limit and twice that; refuse the whole range alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                # PIL's resize filters the whole photo (antialiasing) before sampling 224x224.
                pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"--image {path} is too large: Pillow refuses images above {Image.MAX_IMAGE_PIXELS:,} "
                        "pixels (a guard against decompression bombs); pass a smaller photo") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{path} is not an image Pillow can read ({type(error).__name__}); "
                        "pass a .jpg or .png with --image") from None
    batch = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0)
    return dataloaders.imagenet_transform(size)(batch)


def resolve_image(path) -> Path:
    """The default images/zebra.jpg is found beside the scripts, whatever the working folder."""
    path = Path(path)
    if path == DEFAULT_IMAGE and not path.exists():
        return ROOT / DEFAULT_IMAGE
    return path


def to_displayable(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) or (H, W) -> (H, W), rescaled to [0, 1] for imshow."""
    array = tensor.detach().float().cpu().numpy()
    if array.ndim == 3:
        array = array.transpose(1, 2, 0)
    low, high = array.min(), array.max()
    if high - low < 1e-12:  # a constant map has nothing to show; avoid dividing by zero
        return np.zeros_like(array)
    return (array - low) / (high - low)


# ---------------------------------------------------------------- command line (4b, 4c)

def weights_argument(text: str) -> str:
    return text if text in ("imagenet", "none") else str(Path(text).expanduser())


def add_weights_arguments(parser: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    group = parser.add_mutually_exclusive_group() if checkpoint else parser
    group.add_argument("--weights", type=weights_argument, default="imagenet",
                       help=f"imagenet (torchvision's {WEIGHTS_FILE}, from the torch hub cache), "
                            "none (random initialisation), or PATH to a local copy of that state dict")
    if checkpoint:
        group.add_argument("--checkpoint", type=Path, default=None,
                           help="a task4a.py checkpoint (runs/task4a/best.pt) to look at instead")


def visualisation_parser(description: str, plot_dir: Path = PLOT_DIR) -> argparse.ArgumentParser:
    parser = Parser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                        help="photo to pass through the network (the assignment ships images/zebra.jpg)")
    add_weights_arguments(parser)
    parser.add_argument("--plot-dir", type=Path, default=plot_dir, help="where the figure is written")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser
