"""CIFAR-10 held in memory as uint8 and turned into float batches on the training device.

The starter code decoded and normalised every image through PIL in worker processes; here
the whole dataset (184 MB as uint8) sits in memory, on the GPU when there is one, and each
batch is normalised, optionally resized and augmented there, in one tensor operation.

Data is looked for in `--data-dir`, then `$CIFAR10_DIR`, then `data/cifar10` beside this
file, in either layout users have: torchvision's `cifar-10-batches-py` pickles, or image
folders `train/<class>/*.png|jpg` and `test/<class>/*` (decoded once, then cached).
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils import UsageError, UserError, cache_home, not_a, path_kind, read_torch_file, save_checkpoint

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data" / "cifar10"
CIFAR_MEAN, CIFAR_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CACHE_NAME = ".cifar10-uint8-cache.pt"
CACHE_VERSION = 1
# Images per evaluation batch. The loss is summed per batch, then over batches: another size would
# change the last bits of every reported loss.
EVAL_BATCH_SIZE = 500
VALIDATION_FRACTION = 0.1
TRAIN_IMAGES = 50_000  # in CIFAR-10; a copy may hold fewer (--subset does not change the split)


@dataclass
class RawCIFAR10:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,)."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


# ---------------------------------------------------------------- finding the data

def data_dir_and_origin(data_dir=None) -> tuple[Path, str]:
    """The data folder and where it came from: --data-dir, then $CIFAR10_DIR, then data/cifar10 beside this
    file ("default")."""
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get("CIFAR10_DIR"):
        return Path(os.environ["CIFAR10_DIR"]).expanduser(), "$CIFAR10_DIR"
    return DEFAULT_DATA_DIR, "default"


def resolve_data_dir(data_dir=None) -> Path:
    return data_dir_and_origin(data_dir)[0]


def find_layout(root: Path):
    """('batches', folder) or ('folders', folder) for the first layout found, else None.

    Looks in `root` and one level below it, so that both `data/cifar10/train/...` and an
    archive extracted as `data/cifar10/cifar10-jpeg/train/...` are found.
    """
    root = Path(root)
    candidates = [root]
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in candidates:
        if (folder / "data_batch_1").is_file():
            return "batches", folder
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return "folders", folder
    return None


def load_raw(data_dir=None, download: bool = True) -> RawCIFAR10:
    root = resolve_data_dir(data_dir)
    kind = path_kind(root) if os.path.lexists(root) else None
    if kind not in (None, "a folder"):  # (a download would fail on it, saying less)
        raise UserError(f"the data folder {root} is {not_a(kind, 'folder')}; pass the folder that holds "
                        "CIFAR-10 with --data-dir")
    layout = find_layout(root)
    if layout is None and download:
        _download(root)
        layout = find_layout(root)
    if layout is None:
        raise UserError(
            f"no CIFAR-10 found in {root} (looked for cifar-10-batches-py/ or train/ and test/ image "
            "folders there and one level below) and it could not be downloaded; provide it with "
            "--data-dir DIR, the CIFAR10_DIR environment variable, or by placing it in "
            f"{DEFAULT_DATA_DIR}")
    kind, folder = layout
    if kind == "batches":
        return read_batches(folder)
    return read_image_folders(folder)


def _download(root: Path) -> None:
    """Fetch cifar-10-python.tar.gz with torchvision, exactly as the starter code did."""
    import torchvision

    print(f"CIFAR-10 not found in {root}; trying to download it with torchvision ...", file=sys.stderr)
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an unreachable mirror should fail, not hang
    # Folders this attempt creates are removed again if it fails, so a mistyped --data-dir
    # leaves nothing behind.
    created = [folder for folder in [root, *root.parents] if not folder.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as error:  # no network, DNS failure, read-only folder, bad archive
        print(f"download failed: {type(error).__name__}: {error}", file=sys.stderr)
        partial = root / "cifar-10-python.tar.gz"
        if partial.exists() and find_layout(root) is None:
            partial.unlink()
        for folder in created:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    finally:
        socket.setdefaulttimeout(previous_timeout)


# ---------------------------------------------------------------- cifar-10-batches-py

def read_batches(folder: Path) -> RawCIFAR10:
    def read(name):
        path = Path(folder) / name
        if not path.is_file():
            raise UserError(f"{path} is missing: cifar-10-batches-py needs {', '.join(BATCH_FILES)}")
        try:
            with open(path, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
            data = entry["data"]
            labels = np.asarray(entry["labels"], dtype=np.int64)
        except Exception as error:
            raise UserError(f"{path} is truncated or not a CIFAR-10 batch ({type(error).__name__}); "
                            "download it again") from None
        # A cast would wrap floats in 0..1 or 16-bit values into garbage that still trains.
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
            raise UserError(f"{path} holds {kind} pixels; CIFAR-10 batches hold uint8 values 0..255 "
                            "(download it again, or convert the data to uint8)")
        if data.size != len(labels) * 3 * 32 * 32:
            raise UserError(f"{path} is not a CIFAR-10 batch ({data.size} pixel values for {len(labels)} labels)")
        images = data.reshape(-1, 3, 32, 32)
        if len(images) != len(labels) or len(labels) == 0 or labels.min() < 0 or labels.max() > 9:
            raise UserError(f"{path} is not a CIFAR-10 batch (labels outside 0..9 or count mismatch)")
        return torch.from_numpy(images), torch.from_numpy(labels)

    parts = [read(name) for name in BATCH_FILES[:5]]
    test_images, test_labels = read(BATCH_FILES[5])
    return RawCIFAR10(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                      test_images, test_labels, source=f"cifar-10-batches-py at {folder}")


# ---------------------------------------------------------------- image folders

def image_suffixes() -> set[str]:
    """Every file suffix Pillow reads (.png, .jpg, .bmp, .webp, ...)."""
    from PIL import Image

    return {suffix for suffix, name in Image.registered_extensions().items() if name in Image.OPEN}


def _entries(folder: Path) -> dict[str, str]:
    """Each visible entry of `folder` and what it is, following links: 'folder', 'file', 'other' (a FIFO, a
    device...) or 'broken' (a symbolic link to nowhere or in a loop, which os.scandir cannot follow).
    Hidden files (macOS's ._* AppleDouble files, .DS_Store) are ignored. os.scandir knows which entries are
    files without a stat call each (60,000 of them)."""
    entries = {}
    with os.scandir(folder) as scan:
        for entry in scan:
            if entry.name.startswith("."):
                continue
            try:
                entries[entry.name] = "folder" if entry.is_dir() else "file" if entry.is_file() else \
                    "broken" if entry.is_symlink() else "other"
            except OSError:  # ELOOP: a link loop
                entries[entry.name] = "broken"
    return entries


def _class_listing(folder: Path, split: str):
    """Per class, in label order: (class folder, image file names, other names, links that lead nowhere).
    A missing or extra class folder (or a class name that is a file or a broken link), or one without
    images, is refused."""
    split_dir = Path(folder) / split
    found = _entries(split_dir)
    present = {name for name, kind in found.items() if kind == "folder"}
    missing, extra = sorted(set(CLASSES) - present), sorted(present - set(CLASSES))
    if missing or extra:
        absent = [name for name in missing if name not in found]
        problem = "; ".join(filter(None, [absent and f"missing {', '.join(absent)}",
                                          *(f"{name} is {not_a(path_kind(split_dir / name), 'folder')}"
                                            for name in missing if name in found),
                                          extra and f"unexpected {', '.join(extra)}"]))
        raise UserError(f"{split_dir} must hold exactly the ten CIFAR-10 class folders "
                        f"({', '.join(CLASSES)}): {problem}")
    suffixes = image_suffixes()
    listing = []
    for name in CLASSES:
        folder = split_dir / name
        entries = sorted(_entries(folder).items())
        images = [n for n, kind in entries if kind == "file" and os.path.splitext(n)[1].lower() in suffixes]
        if not images:
            raise UserError(f"{folder} holds no images")
        readable = set(images)
        listing.append((folder, images, [n for n, kind in entries if n not in readable and kind != "broken"],
                        [n for n, kind in entries if kind == "broken"]))
    return listing


def _list_image_files(folder: Path, split: str):
    """(files, labels, skipped, broken links) of one split."""
    files, labels, skipped, broken = [], [], [], []
    for label, (class_dir, images, others, links) in enumerate(_class_listing(folder, split)):
        files += [class_dir / name for name in images]
        labels += [label] * len(images)
        skipped += [class_dir / name for name in others]
        broken += [class_dir / name for name in links]
    return files, labels, skipped, broken


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            wide = np.asarray(image) if image.mode.startswith("I") else None  # Pillow's 16/32-bit integer modes
            if wide is not None and (wide.min() < 0 or wide.max() > 65535):
                raise UserError(f"{path} has pixel values outside 0..65535; save it as an 8- or 16-bit image")
            if wide is not None:
                # 16-bit greyscale: Pillow's convert("RGB") would clip every value above 255 to white.
                # (Mode "I" can also hold 8-bit values, which are kept as they are.)
                eight_bit = image.mode == "I" and wide.max() <= 255
                grey = wide.astype(np.uint8) if eight_bit else (wide.astype(np.uint16) >> 8).astype(np.uint8)
                array = np.repeat(grey[..., None], 3, axis=2)
            elif image.mode == "F":
                raise UserError(f"{path} has floating-point pixels; save it as an 8- or 16-bit image")
            else:
                array = np.asarray(image.convert("RGB"))
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"cannot decode {path} ({type(error).__name__}: {error}); "
                        "replace or delete the file") from None
    if array.shape != (32, 32, 3):
        raise UserError(f"{path} is {array.shape[1]}x{array.shape[0]}, CIFAR-10 images are 32x32")
    return array


def _fingerprint(files) -> str:
    """Names, sizes and modification times of every image: any change makes the cache stale."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for path in files:
        stat = os.stat(path)
        # fsencode: a name that is not valid UTF-8 (e.g. from a Latin-1 zip) is hashed as its bytes.
        digest.update(os.fsencode(f"{path.parent.name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n"))
    return digest.hexdigest()


def _cache_paths(folder: Path) -> list[Path]:
    """Where the cache may be: beside the images, then in the user's cache folder."""
    folder = Path(folder).resolve()
    base = cache_home() / "cifar10-cnn"
    return [folder / CACHE_NAME, base / f"{hashlib.sha1(os.fsencode(folder)).hexdigest()[:16]}.pt"]


def _cache_problem(cache, fingerprint: str, labels: dict) -> str | None:
    """Why `cache` cannot be used ("out of date", "corrupt"), or None when it is valid.

    `labels` maps each split to the labels its class folders give: a cache must hold exactly those
    (a label outside 0..9 would fail only at the first training step).
    """
    if not isinstance(cache, dict) or not all(isinstance(cache.get(f"{split}_{what}"), torch.Tensor)
                                              for split in ("train", "test") for what in ("images", "labels")):
        return "is corrupt"
    if cache.get("fingerprint") != fingerprint:
        return "is out of date"
    for split in ("train", "test"):
        images, found = cache[f"{split}_images"], cache[f"{split}_labels"]
        if (images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1:] != (3, 32, 32)
                or found.dtype != torch.int64 or found.shape != (len(images),)
                or not torch.equal(found, labels[split])):
            return "is corrupt"
    return None


def _read_cache(path: Path, fingerprint: str, labels: dict):
    if not path.is_file():
        return None
    try:
        cache = read_torch_file(path, "cache", "it is rebuilt from the images")
    except UserError:  # told below, and rebuilt
        cache = None
    problem = _cache_problem(cache, fingerprint, labels)
    if problem:
        print(f"cache {path} {problem}; rebuilding it from the images", file=sys.stderr)
        return None
    return cache


def read_image_folders(folder: Path) -> RawCIFAR10:
    listing = {split: _list_image_files(folder, split) for split in ("train", "test")}
    skipped = listing["train"][2] + listing["test"][2]
    if skipped:
        print(f"skipped {len(skipped)} file(s) in {folder} that are not images Pillow reads "
              f"(e.g. {skipped[0]})", file=sys.stderr)
    broken = listing["train"][3] + listing["test"][3]
    if broken:
        print(f"skipped {len(broken)} symbolic link(s) in {folder} that lead nowhere or in a loop "
              f"(e.g. {broken[0]})", file=sys.stderr)
    fingerprint = _fingerprint(listing["train"][0] + listing["test"][0])
    labels = {split: torch.tensor(split_labels, dtype=torch.int64) for split, (_, split_labels, *_) in listing.items()}
    beside, elsewhere = _cache_paths(folder)
    # A valid cache beside read-only images is used as it is; a new one goes wherever it can be written.
    cache = _read_cache(beside, fingerprint, labels) or _read_cache(elsewhere, fingerprint, labels)
    cache_path = beside if os.access(beside.parent, os.W_OK) else elsewhere
    if cache is None:
        cache = {"fingerprint": fingerprint}
        total = sum(len(files) for files, *_ in listing.values())
        print(f"decoding {total} images in {folder} once; later runs read the cache {cache_path}",
              file=sys.stderr)
        # Pillow releases the GIL while decoding, so threads use every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for split, (files, *_) in listing.items():
                arrays = list(pool.map(_decode, files, chunksize=256))
                cache[f"{split}_images"] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
                cache[f"{split}_labels"] = labels[split]
        try:
            save_checkpoint(cache, cache_path)
        except UserError as error:
            print(f"{error}; continuing without the cache", file=sys.stderr)
    return RawCIFAR10(cache["train_images"], cache["train_labels"], cache["test_images"],
                      cache["test_labels"], source=f"image folders at {folder}")


# ---------------------------------------------------------------- per-batch transforms

class BatchTransform:
    """uint8 (B, 3, H, W) -> float, optionally resized, normalised per channel.

    Runs on whatever device the batch is on; replaces ToTensor + Resize + Normalize.
    """

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD, size: int | None = None):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.size = size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        x = images.float().div_(255)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self):
        return (f"BatchTransform(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}, "
                f"size={self.size})")


def imagenet_transform(size: int = 224) -> BatchTransform:
    return BatchTransform(IMAGENET_MEAN, IMAGENET_STD, size=size)


@dataclass
class Augmentation:
    """Random horizontal flip and random translation by up to `crop_padding` pixels, drawn per image.

    The border a translation uncovers is black (`padding_mode="constant"`, the usual padded random
    crop) or the image's edge mirrored (`"reflect"`), which adds no black borders the test images lack.
    `flip="alternate"` mirrors a random half of the images in the first epoch and then alternates
    every image between mirrored and not, epoch after epoch (as airbench does): over two epochs each
    image is seen both ways, where independent draws show a quarter of them one way only.
    """
    flip: bool | str = True
    crop_padding: int = 4
    padding_mode: str = "constant"

    def __post_init__(self):
        if self.padding_mode not in ("constant", "reflect"):
            raise ValueError(f"padding_mode must be 'constant' or 'reflect', not {self.padding_mode!r}")
        if self.flip not in (True, False, "alternate"):
            raise ValueError(f"flip must be True, False or 'alternate', not {self.flip!r}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor | None = None,
                 epoch: int = 0, seed: int = 0) -> torch.Tensor:
        """`indices` (the images' positions in the dataset), `epoch` and `seed` drive alternating flips."""
        batch, channels, height, width = images.shape
        if self.crop_padding:
            pad = self.crop_padding
            device = images.device
            shifts = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(device, non_blocking=True) - pad
            rows = shifts[0, :, None] + torch.arange(height, device=device)
            cols = shifts[1, :, None] + torch.arange(width, device=device)
            if self.padding_mode == "reflect":
                source, rows, cols = images, _reflect(rows, height), _reflect(cols, width)
            else:
                source, rows, cols = F.pad(images, (pad, pad, pad, pad)), rows + pad, cols + pad
            index_b = torch.arange(batch, device=device)[:, None, None, None]
            index_c = torch.arange(channels, device=device)[None, :, None, None]
            images = source[index_b, index_c, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip == "alternate":
            if indices is None:
                raise ValueError("alternating flips need the images' dataset indices")
            flips = _first_epoch_flips(seed, indices.device)[indices % (1 << 20)] ^ bool(epoch % 2)
            images = torch.where(flips[:, None, None, None], images.flip(3), images)
        elif self.flip:
            flips = (torch.rand(batch, generator=generator) < 0.5).to(images.device, non_blocking=True)
            images = torch.where(flips[:, None, None, None], images.flip(3), images)
        return images


@functools.lru_cache(maxsize=4)
def _first_epoch_flips(seed: int, device: torch.device) -> torch.Tensor:
    """A fixed random mirror state per dataset position (positions past 2**20 reuse them), kept on
    the device of the indices so that looking them up needs no copy back to the host."""
    return (torch.rand(1 << 20, generator=_generator(seed, "flips")) < 0.5).to(device)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices that fall off either end of 0..size-1 back inside (edge not repeated)."""
    return torch.where(index < 0, -index, torch.where(index >= size, 2 * (size - 1) - index, index))


def _generator(*parts) -> torch.Generator:
    """A CPU generator whose seed depends only on `parts`: reproducible and resumable."""
    seed = int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1
    return torch.Generator().manual_seed(seed)


class BatchLoader:
    """Batches of (images, labels) from tensors already in memory (on the training device).

    The order of epoch `e` depends only on (seed, e), and augmentation of batch `b` only on
    (seed, e, b), so a run resumed in the middle of an epoch sees exactly the same batches.
    Training takes `batches(epoch)`; evaluation `evaluation_batches()`.
    """

    def __init__(self, images, labels, batch_size, transform=None, shuffle=False, augment=None,
                 seed=0, source="", rank=0, world_size=1, eval_batch_size=EVAL_BATCH_SIZE):
        self.images, self.labels = images, labels
        self.eval_batch_size = eval_batch_size
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        self.transform = transform or BatchTransform()
        self.source, self.classes = source, CLASSES
        self.rank, self.world_size = rank, world_size

    @property
    def num_images(self) -> int:
        """Images this process sees per epoch (its shard when training data-parallel)."""
        return len(range(self.rank, len(self.labels), self.world_size))

    def __len__(self) -> int:
        # Training shards differ by up to one image; counting batches in the smallest keeps every
        # process at the same number of steps per epoch, which DistributedDataParallel needs.
        size = len(self.labels) // self.world_size if self.shuffle else self.num_images
        if self.shuffle:
            # Training drops the last incomplete batch, as the starter code did (drop_last=True):
            # a step on a handful of images is noisy enough to undo part of the epoch's progress
            # (seen as a validation loss that jumped at every epoch end), and one image crashes BatchNorm.
            return max(1, size // self.batch_size)
        return math.ceil(size / self.batch_size)

    def _order(self, epoch: int) -> torch.Tensor:
        """Dataset positions in the order epoch `epoch` visits them, all processes together."""
        if self.shuffle:
            return torch.randperm(len(self.labels), generator=_generator(self.seed, epoch))
        return torch.arange(len(self.labels))

    def _augmented(self, chosen: torch.Tensor, epoch: int, *key) -> torch.Tensor:
        """The transformed images at `chosen`, augmented with draws keyed by (seed, epoch, *key)."""
        images = self.images[chosen]
        if self.augment is not None:
            images = self.augment(images, _generator(self.seed, epoch, *key), indices=chosen, epoch=epoch,
                                  seed=self.seed)
        return self.transform(images)

    def batches(self, epoch: int = 0, start: int = 0):
        """Batches of `epoch`, skipping the first `start` (to resume mid-epoch)."""
        # non_blocking: a blocking copy to a GPU would wait for all the work queued before it.
        order = self._order(epoch)[self.rank::self.world_size].to(self.images.device, non_blocking=True)
        # Per-process draws under torchrun, else every shard would get the same crops and flips.
        rank = (self.rank,) if self.world_size > 1 else ()
        for index in range(start, len(self)):
            chosen = order[index * self.batch_size:(index + 1) * self.batch_size]
            yield self._augmented(chosen, epoch, index, *rank), self.labels[chosen]

    def training_sample(self, count: int) -> torch.Tensor:
        """The first `count` images of epoch 0, augmented as its first batch: the same on every process.

        With one process and `count` = the batch size, exactly the first training batch.
        """
        chosen = self._order(0)[:count].to(self.images.device, non_blocking=True)
        return self._augmented(chosen, 0, 0)

    def evaluation_batches(self):
        """Every image of this process's shard once, in order, without augmentation."""
        order = torch.arange(self.rank, len(self.labels), self.world_size, device=self.images.device)
        for chosen in order.split(self.eval_batch_size):
            yield self.transform(self.images[chosen]), self.labels[chosen]


def split_sizes(count: int, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) images of `count`; a fraction that leaves a split empty is a bad flag."""
    if not 0 < validation_fraction < 1:
        raise UsageError(f"--validation-fraction must be between 0 and 1, got {validation_fraction}")
    num_val = int(round(count * validation_fraction))
    if num_val < 1 or num_val >= count:
        raise UsageError(f"--validation-fraction {validation_fraction} of {count:,} training images leaves "
                         f"{num_val:,} for validation and {count - num_val:,} for training; each split needs at least "
                         "one image")
    return count - num_val, num_val


def training_image_count(data_dir=None) -> int | None:
    """How many training images the data holds where that is cheap to tell (image folders: by listing
    them), else None; a run checks its split with it before it claims its folder."""
    layout = find_layout(resolve_data_dir(data_dir))
    if layout is None or layout[0] != "folders":
        return None
    return sum(len(images) for _, images, *_ in _class_listing(layout[1], "train"))


def split_indices(count: int, validation_fraction: float, seed: int = 0):
    """A seeded random permutation: the first part validation, the rest training."""
    _, num_val = split_sizes(count, validation_fraction)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[num_val:], order[:num_val]


def load_cifar10(batch_size: int, validation_fraction: float = VALIDATION_FRACTION, seed: int = 0, data_dir=None,
                 device="cpu", transform=None, augment=None, eval_batch_size: int = EVAL_BATCH_SIZE,
                 subset: int | None = None, rank: int = 0, world_size: int = 1, download: bool = True):
    """Train, validation and test loaders over CIFAR-10 held in memory.

    The validation set is a seeded random `validation_fraction` of the 50,000 training
    images, the same for the same seed on every machine. `subset` keeps only the first N
    images of each split, for smoke runs. The training loader is sharded across
    `world_size` processes; validation and test are sharded too, for reduced metrics.
    """
    raw = load_raw(data_dir, download=download)
    train_index, val_index = split_indices(len(raw.train_labels), validation_fraction, seed)
    splits = {"train": (raw.train_images, raw.train_labels, train_index),
              "validation": (raw.train_images, raw.train_labels, val_index),
              "test": (raw.test_images, raw.test_labels, torch.arange(len(raw.test_labels)))}
    device = torch.device(device)
    loaders = []
    for name, (images, labels, index) in splits.items():
        if subset:
            if name == "test":  # test images are stored class by class: take a seeded random subset
                index = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]
            index = index[:subset]
        if len(index) < world_size:
            raise UserError(f"the {name} split has {len(index)} images, fewer than the "
                            f"{world_size} processes training on it")
        is_train = name == "train"
        loaders.append(BatchLoader(
            images[index].to(device), labels[index].to(device),
            batch_size if is_train else eval_batch_size, transform=transform, shuffle=is_train,
            augment=augment if is_train else None, seed=seed, source=raw.source,
            rank=rank, world_size=world_size, eval_batch_size=eval_batch_size))
    return tuple(loaders)
