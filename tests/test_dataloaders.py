"""The CIFAR-10 data module: layouts, split, cache, transforms, augmentation and errors."""
import os
import shutil
import tarfile

import numpy as np
import pytest
import torch

import dataloaders
from helpers import JPEG_ARCHIVE, synthetic_images, write_batches, write_image_folders
from utils import UserError


def load(path, **kwargs):
    kwargs.setdefault("download", False)
    return dataloaders.load_cifar10(16, data_dir=path, **kwargs)


@pytest.mark.parametrize("layout", ["folder_data", "batches_data"])
def test_both_layouts_give_split_sizes_and_labels(layout, request):
    train, val, test = load(request.getfixturevalue(layout))
    assert (train.num_images, val.num_images, test.num_images) == (270, 30, 100)
    for loader in (train, val, test):
        assert loader.images.dtype == torch.uint8 and loader.images.shape[1:] == (3, 32, 32)
    assert sorted(test.labels.tolist()) == sorted(list(range(10)) * 10)


def test_batches_layout_keeps_pixels_and_labels(batches_data):
    raw = dataloaders.load_raw(batches_data, download=False)
    images, labels = synthetic_images(100, 15)  # test_batch was written with seed 10 + 5
    assert torch.equal(raw.test_images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert raw.test_labels.tolist() == labels.tolist()


def test_folder_layout_maps_class_folders_to_cifar_order(folder_data):
    raw = dataloaders.load_raw(folder_data, download=False)
    # Files are read class by class in CIFAR-10 order, 10 test images per class.
    assert raw.test_labels.tolist() == [label for label in range(10) for _ in range(10)]


def test_split_is_seeded_disjoint_and_complete():
    train_a, val_a = dataloaders.split_indices(50000, 0.1, seed=0)
    train_b, val_b = dataloaders.split_indices(50000, 0.1, seed=0)
    _, val_c = dataloaders.split_indices(50000, 0.1, seed=1)
    assert (len(train_a), len(val_a)) == (45000, 5000)
    assert torch.equal(val_a, val_b) and torch.equal(train_a, train_b)
    assert not torch.equal(val_a, val_c)
    assert not set(train_a.tolist()) & set(val_a.tolist())
    assert sorted(train_a.tolist() + val_a.tolist()) == list(range(50000))


def test_split_is_the_same_on_every_machine():
    # torch's seeded CPU randperm is platform-independent. Pinning the first validation
    # indices makes any change of split (which would change every reported number) fail here.
    _, val = dataloaders.split_indices(50000, 0.1, seed=0)
    assert val[:5].tolist() == [36044, 49165, 37807, 11341, 6091]


def test_validation_images_never_trained_on(folder_data):
    train, val, _ = load(folder_data)
    train_set = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_set for image in val.images)


def test_normalisation_defaults_to_mean_half_std_quarter():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = dataloaders.BatchTransform()(images)
    expected = (torch.tensor([0, 51, 255]) / 255 - 0.5) / 0.25
    assert out.dtype == torch.float32 and out.shape == (2, 3, 4, 4)
    assert torch.allclose(out[0, :, 0, 0], expected)


def test_imagenet_transform_resizes_and_normalises():
    images = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    out = dataloaders.imagenet_transform(224)(images)
    assert out.shape == (2, 3, 224, 224)
    mean, std = torch.tensor(dataloaders.IMAGENET_MEAN), torch.tensor(dataloaders.IMAGENET_STD)
    assert torch.allclose(out[0, :, 100, 100], (128 / 255 - mean) / std, atol=1e-5)


def test_per_batch_transform_matches_torchvision_per_image_pipeline():
    from PIL import Image
    from torchvision import transforms

    images, _ = synthetic_images(8, 3)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(dataloaders.CIFAR_MEAN,
                                                                                 dataloaders.CIFAR_STD)])
    expected = torch.stack([reference(Image.fromarray(image)) for image in images])
    batch = dataloaders.BatchTransform()(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    assert torch.allclose(batch, expected, atol=1e-6)


def test_augmentation_keeps_shapes_labels_and_content():
    images = torch.arange(4 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(4, 3, 32, 32)
    out = dataloaders.Augmentation(flip=True, crop_padding=4)(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    # Every output image is a shifted (and maybe mirrored) copy of its own input: the 24x24
    # centre of the output must occur in the padded input of the same index.
    for index in range(4):
        padded = torch.nn.functional.pad(images[index], (4, 4, 4, 4))
        centre = out[index, :, 4:28, 4:28]
        matches = [torch.equal(candidate[:, dy + 4:dy + 28, dx + 4:dx + 28], centre)
                   for candidate in (padded, padded.flip(2)) for dy in range(9) for dx in range(9)]
        assert any(matches)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_augmentation_translates_with_black_or_mirrored_borders(mode):
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = dataloaders.Augmentation(flip=False, crop_padding=2, padding_mode=mode)(
        images, torch.Generator().manual_seed(1))
    # torch's own padding of each image, cropped at the drawn offset, is the expected result.
    padded = torch.nn.functional.pad(images.float(), (2, 2, 2, 2), mode=mode)
    offsets = torch.randint(0, 5, (2, 16), generator=torch.Generator().manual_seed(1))
    for index, (dy, dx) in enumerate(offsets.T.tolist()):
        assert torch.equal(out[index].float(), padded[index, :, dy:dy + 32, dx:dx + 32])
    assert sum(not torch.equal(a, b) for a, b in zip(out, images)) > 8


def test_augmentation_rejects_an_unknown_padding_mode():
    with pytest.raises(ValueError, match="padding_mode"):
        dataloaders.Augmentation(padding_mode="wrap")
    with pytest.raises(ValueError, match="flip"):
        dataloaders.Augmentation(flip="sometimes")


@pytest.mark.slow
def test_alternating_flips_mirror_every_image_every_other_epoch(folder_data):
    augmentation = dataloaders.Augmentation(flip="alternate", crop_padding=0)
    train, _, _ = load(folder_data, augment=augmentation)
    identity = dataloaders.BatchTransform()

    def mirrored_per_image(epoch):
        """dataset position -> whether the loader showed that image mirrored in `epoch`."""
        states, start = {}, 0
        order = torch.randperm(len(train.labels), generator=dataloaders._generator(train.seed, epoch))
        for images, _ in train.batches(epoch):
            chosen = order[start:start + len(images)]
            start += len(images)
            for position, image in zip(chosen.tolist(), images):
                original = identity(train.images[position:position + 1])[0]
                assert torch.equal(image, original) != torch.equal(image, original.flip(2))
                states[position] = torch.equal(image, original.flip(2))
        return states

    first, second, third = (mirrored_per_image(epoch) for epoch in range(3))
    common = first.keys() & second.keys() & third.keys()
    assert len(common) > 100
    assert 0.3 < sum(first[p] for p in common) / len(common) < 0.7      # a random half in epoch 0
    assert all(first[p] != second[p] and first[p] == third[p] for p in common)
    with pytest.raises(ValueError, match="indices"):
        augmentation(train.images[:4], torch.Generator())


@pytest.mark.slow
def test_augmentation_only_on_training_loader_and_reproducible(folder_data):
    train, val, test = load(folder_data, augment=dataloaders.Augmentation())
    assert val.augment is None and test.augment is None
    first = [torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
             for a, b in zip(train.batches(epoch=2), train.batches(epoch=2))]
    assert all(first)
    plain = next(load(folder_data)[0].batches(epoch=0))
    augmented = next(train.batches(epoch=0))
    assert torch.equal(plain[1], augmented[1])  # same images in the same order, labels aligned
    assert not torch.equal(plain[0], augmented[0])


def test_resuming_mid_epoch_yields_the_same_batches(folder_data):
    train, _, _ = load(folder_data)
    full = list(train.batches(epoch=3))
    tail = list(train.batches(epoch=3, start=5))
    assert len(tail) == len(full) - 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[5:], tail))


def test_cache_is_used_on_second_load(tmp_path, monkeypatch):
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    first = dataloaders.load_raw(tmp_path, download=False)
    assert (tmp_path / dataloaders.CACHE_NAME).exists()

    def no_decoding(path):
        raise AssertionError("images decoded again although the cache is valid")
    monkeypatch.setattr(dataloaders, "_decode", no_decoding)
    second = dataloaders.load_raw(tmp_path, download=False)
    assert torch.equal(first.train_images, second.train_images)


def test_corrupt_cache_is_rebuilt(tmp_path, capsys):
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    reference = dataloaders.load_raw(tmp_path, download=False)
    (tmp_path / dataloaders.CACHE_NAME).write_bytes(b"not a cache")
    rebuilt = dataloaders.load_raw(tmp_path, download=False)
    assert "corrupt" in capsys.readouterr().err
    assert torch.equal(reference.train_images, rebuilt.train_images)


def test_stale_cache_is_rebuilt_when_an_image_changes(tmp_path, capsys):
    from PIL import Image
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    dataloaders.load_raw(tmp_path, download=False)
    target = tmp_path / "train" / "cat" / "0000.png"
    Image.fromarray(np.full((32, 32, 3), 7, dtype=np.uint8)).save(target)
    raw = dataloaders.load_raw(tmp_path, download=False)
    assert "out of date" in capsys.readouterr().err
    cat_images = raw.train_images[raw.train_labels == 3]
    assert (cat_images[0] == 7).all()


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "env"))
    assert dataloaders.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert dataloaders.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("CIFAR10_DIR")
    assert dataloaders.resolve_data_dir(None) == dataloaders.DEFAULT_DATA_DIR


def test_layout_found_one_level_below(tmp_path):
    write_image_folders(tmp_path / "cifar10-jpeg", per_class_train=2, per_class_test=1)
    assert dataloaders.find_layout(tmp_path) == ("folders", tmp_path / "cifar10-jpeg")


# ---------------------------------------------------------------- errors

def test_no_data_names_where_it_looked_and_the_three_ways(tmp_path):
    with pytest.raises(UserError) as error:
        dataloaders.load_raw(tmp_path / "nothing", download=False)
    message = str(error.value)
    assert str(tmp_path / "nothing") in message
    assert "--data-dir" in message and "CIFAR10_DIR" in message and "data/cifar10" in message
    assert "\n" not in message


def test_undecodable_image_is_named(tmp_path):
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    bad = tmp_path / "train" / "dog" / "0001.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(UserError, match="0001.png"):
        dataloaders.load_raw(tmp_path, download=False)


def test_wrong_image_size_is_named(tmp_path):
    from PIL import Image
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    Image.new("RGB", (64, 64)).save(tmp_path / "test" / "ship" / "0000.png")
    with pytest.raises(UserError, match="0000.png is 64x64"):
        dataloaders.load_raw(tmp_path, download=False)


@pytest.mark.parametrize("change, expected", [
    (lambda root: shutil.rmtree(root / "train" / "frog"), "missing frog"),
    (lambda root: (root / "train" / "unicorn").mkdir(), "unexpected unicorn"),
    (lambda root: [p.unlink() for p in (root / "test" / "horse").iterdir()], "horse holds no"),
])
def test_bad_class_folders(tmp_path, change, expected):
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    change(tmp_path)
    with pytest.raises(UserError, match=expected):
        dataloaders.load_raw(tmp_path, download=False)


def test_truncated_batch_file_is_named(tmp_path):
    write_batches(tmp_path, per_batch=10, test_count=10)
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(UserError, match="data_batch_3 is truncated"):
        dataloaders.load_raw(tmp_path, download=False)


def test_missing_batch_file_is_named(tmp_path):
    write_batches(tmp_path, per_batch=10, test_count=10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        dataloaders.load_raw(tmp_path, download=False)


@pytest.mark.parametrize("fraction", [0.001, 0.9999])
def test_split_with_too_few_images(folder_data, fraction):
    with pytest.raises(UserError, match="at least one image"):
        load(folder_data, validation_fraction=fraction)


# ---------------------------------------------------------------- the real data, when present

@pytest.mark.slow
@pytest.mark.skipif(not JPEG_ARCHIVE.exists(), reason="../shared/data/cifar10-jpeg.tar.gz not present")
def test_shared_jpeg_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpeg")
    with tarfile.open(JPEG_ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    train, val, test = dataloaders.load_cifar10(64, data_dir=root, download=False)
    assert (train.num_images, val.num_images, test.num_images) == (45000, 5000, 10000)
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10


def test_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="could not be downloaded"):
        dataloaders.load_raw(tmp_path / "typo" / "cifar10", download=True)
    assert list(tmp_path.iterdir()) == []


def test_training_drops_the_incomplete_last_batch_but_evaluation_sees_every_image(folder_data):
    train, val, _ = load(folder_data, augment=dataloaders.Augmentation())
    batches = list(train.batches(epoch=0))
    assert len(batches) == len(train) == 270 // 16 and all(len(b[1]) == 16 for b in batches)
    evaluated = list(train.evaluation_batches())
    assert sum(len(labels) for _, labels in evaluated) == 270
    # Evaluation is never augmented: it equals the plain transform of the stored images.
    assert torch.equal(torch.cat([x for x, _ in evaluated]), train.transform(train.images))
    assert sum(len(labels) for _, labels in val.evaluation_batches()) == 30


# ---------------------------------------------------------------- odd files users have

def test_hidden_files_such_as_macos_appledouble_are_skipped(tmp_path):
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    for folder in (tmp_path / "train" / "cat", tmp_path / "test" / "dog"):
        (folder / "._0000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")  # what a Mac zip holds
        (folder / ".DS_Store").write_bytes(b"Bud1")
    raw = dataloaders.load_raw(tmp_path, download=False)
    assert len(raw.train_labels) == 20 and len(raw.test_labels) == 10


def test_sixteen_bit_greyscale_is_decoded_not_clipped_to_white(tmp_path):
    from PIL import Image
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    grey = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)   # 0 .. 65,472
    target = tmp_path / "train" / "cat" / "0000.png"
    Image.fromarray(grey).save(target)
    with Image.open(target) as check:
        assert check.mode.startswith("I;16")
    raw = dataloaders.load_raw(tmp_path, download=False)
    cat = raw.train_images[raw.train_labels == 3][0]
    assert torch.equal(cat[0], torch.from_numpy((grey >> 8).astype(np.uint8)))
    assert torch.equal(cat[0], cat[1]) and torch.equal(cat[1], cat[2])


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1 / 255), (np.int16, 1), (np.float64, 1)])
def test_batches_that_are_not_uint8_are_refused(tmp_path, dtype, scale):
    import pickle
    write_batches(tmp_path, per_batch=10, test_count=10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with open(path, "rb") as handle:
        entry = pickle.load(handle)
    entry["data"] = (entry["data"] * scale).astype(dtype)
    with open(path, "wb") as handle:
        pickle.dump(entry, handle)
    with pytest.raises(UserError, match=f"data_batch_2 holds {np.dtype(dtype).name} pixels; .* uint8"):
        dataloaders.load_raw(tmp_path, download=False)


def test_every_format_pillow_reads_is_loaded_and_other_files_are_counted(tmp_path, capsys):
    from PIL import Image
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    pixels = np.full((32, 32, 3), 77, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "train" / "frog" / "extra.bmp")
    Image.fromarray(pixels).save(tmp_path / "train" / "frog" / "extra.webp", lossless=True)
    (tmp_path / "train" / "frog" / "notes.txt").write_text("not an image")
    (tmp_path / "test" / "ship" / "Thumbs.db").write_bytes(b"\x00")
    raw = dataloaders.load_raw(tmp_path, download=False)
    frogs = raw.train_images[raw.train_labels == 6]
    assert len(frogs) == 4 and sum(bool((image == 77).all()) for image in frogs) == 2
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "not images Pillow reads" in err


def test_a_valid_cache_beside_read_only_images_is_used(tmp_path, monkeypatch):
    write_image_folders(tmp_path / "data", per_class_train=3, per_class_test=2)
    dataloaders.load_raw(tmp_path / "data", download=False)           # writes the cache beside the images
    assert (tmp_path / "data" / dataloaders.CACHE_NAME).exists()
    # Tests run as root, for whom permissions do not block writing: let os.access say read-only.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))

    def no_decoding(path):
        raise AssertionError("decoded again although the cache beside the images is valid")
    monkeypatch.setattr(dataloaders, "_decode", no_decoding)
    raw = dataloaders.load_raw(tmp_path / "data", download=False)
    assert len(raw.train_labels) == 30 and not (tmp_path / "user-cache").exists()


def test_an_image_whose_name_is_not_utf8_loads_like_any_other(tmp_path, capsys):
    """A Latin-1 zip unpacked on Linux leaves names such as b'caf\\xe9.png'."""
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    os.rename(tmp_path / "train" / "cat" / "0000.png", os.fsdecode(bytes(tmp_path / "train" / "cat") + b"/caf\xe9.png"))
    raw = dataloaders.load_raw(tmp_path, download=False)
    assert len(raw.train_labels) == 30 and (raw.train_labels == 3).sum() == 3
    assert "decoding" in capsys.readouterr().err
    dataloaders.load_raw(tmp_path, download=False)
    assert "decoding" not in capsys.readouterr().err                   # the cache was written and is valid


@pytest.mark.parametrize("change", ["label 12", "label -1", "labels of another shape", "labels swapped"])
def test_a_cache_whose_labels_do_not_match_the_folders_is_rebuilt(tmp_path, capsys, change):
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    reference = dataloaders.load_raw(tmp_path, download=False)
    cache_path = tmp_path / dataloaders.CACHE_NAME
    cache = torch.load(cache_path)                                     # its fingerprint stays valid
    labels = cache["train_labels"]
    cache["train_labels"] = {"label 12": lambda: labels.masked_fill(labels == 0, 12),
                             "label -1": lambda: labels.masked_fill(labels == 0, -1),
                             "labels of another shape": lambda: labels[:, None],
                             "labels swapped": lambda: labels.flip(0)}[change]()
    torch.save(cache, cache_path)
    capsys.readouterr()
    rebuilt = dataloaders.load_raw(tmp_path, download=False)
    assert "is corrupt; rebuilding" in capsys.readouterr().err
    assert torch.equal(rebuilt.train_labels, reference.train_labels)
    assert torch.equal(torch.load(cache_path)["train_labels"], reference.train_labels)


def test_read_only_images_and_an_unwritable_cache_folder_continue_without_the_cache(tmp_path, monkeypatch, capsys):
    write_image_folders(tmp_path / "data", per_class_train=3, per_class_test=2)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a_file" / "cache"))  # cannot be created, even by root
    raw = dataloaders.load_raw(tmp_path / "data", download=False)
    assert len(raw.train_labels) == 30
    err = capsys.readouterr().err
    assert "could not write" in err and "continuing without the cache" in err


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "cifar.tar.gz").write_bytes(b"an archive, not yet unpacked")
    with pytest.raises(UserError, match="cifar.tar.gz is a file, not a folder; pass the folder"):
        dataloaders.load_raw(tmp_path / "cifar.tar.gz")


def test_symbolic_links_that_lead_nowhere_or_in_a_loop_are_skipped_with_a_note(tmp_path, capsys):
    write_image_folders(tmp_path, per_class_train=3, per_class_test=2)
    cats = tmp_path / "train" / "cat"
    os.symlink("loop2.png", cats / "loop1.png")         # two links that lead to each other (ELOOP)
    os.symlink("loop1.png", cats / "loop2.png")
    os.symlink("itself.png", cats / "itself.png")
    os.symlink("nowhere.png", tmp_path / "test" / "dog" / "gone.png")
    raw = dataloaders.load_raw(tmp_path, download=False)
    assert len(raw.train_labels) == 30 and len(raw.test_labels) == 20
    err = capsys.readouterr().err
    assert "skipped 4 symbolic link(s)" in err and "lead nowhere or in a loop" in err
    assert "not images Pillow reads" not in err                # they are not counted as such


@pytest.mark.parametrize("make, says", [
    (lambda folder: folder.write_text("not a folder"), "ship is a file, not a folder"),
    (lambda folder: os.symlink("elsewhere", folder), "ship is a symbolic link to elsewhere, which does not exist"),
    (lambda folder: os.symlink(folder.name, folder), "ship is a symbolic link loop"),
])
def test_a_class_name_that_is_not_a_folder_says_what_it_is(make, says, tmp_path):
    write_image_folders(tmp_path, per_class_train=2, per_class_test=1)
    shutil.rmtree(tmp_path / "train" / "ship")
    make(tmp_path / "train" / "ship")
    with pytest.raises(UserError, match=says) as refused:
        dataloaders.load_raw(tmp_path, download=False)
    assert "missing" not in str(refused.value)


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_counts_as_unset(value, tmp_path, monkeypatch):
    """The XDG spec: an empty or relative $XDG_CACHE_HOME is ignored (~/.cache), never the current folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    elsewhere = dataloaders._cache_paths(tmp_path / "data")[1]
    assert elsewhere.parent == tmp_path / "home" / ".cache" / "cifar10-cnn"


@pytest.mark.parametrize("target, says", [("nowhere", "is a symbolic link to {tmp}/nowhere, which does not exist"),
                                          ("data", "is a symbolic link loop")])
def test_a_data_dir_that_is_a_broken_link_is_named(target, says, tmp_path):
    os.symlink(tmp_path / target, tmp_path / "data")
    with pytest.raises(UserError, match=f"the data folder {tmp_path / 'data'} " + says.format(tmp=tmp_path)):
        dataloaders.load_raw(tmp_path / "data", download=False)
