"""Data SPECs: parsing, each source, grey→RGB, transforms, corrupt images, clear errors."""

import numpy as np
import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.data import (
    FASHION_MNIST_DIR,
    Preprocessing,
    build_dataset,
    mcunet_zoo_preprocessing,
    parse_data_spec,
    take_images,
)

PRE = Preprocessing(32)


def test_parse_specs(tmp_path):
    assert parse_data_spec("digits").kind == "digits"
    assert parse_data_spec("synthetic:12").count == 12
    assert parse_data_spec("fashion-mnist").path == str(FASHION_MNIST_DIR)
    assert parse_data_spec(f"fashion-mnist:{tmp_path}").path == str(tmp_path)
    assert parse_data_spec(str(tmp_path)).kind == "imagefolder"


@pytest.mark.parametrize("spec, fragment", [
    ("imagenet", "unknown data SPEC"), ("synthetic:x", "integer"), ("synthetic:0", r"in 1\.\.100000"),
    ("cifar10", "cifar10:DIR"),
])
def test_bad_specs(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_data_spec(spec)


def test_eval_resize_is_ceil_of_crop_ratio():
    # docs/netaug.md §5: 183 for 160, 165 for 144, 202 for 176
    assert [Preprocessing(s).resize for s in (160, 144, 176)] == [183, 165, 202]
    assert mcunet_zoo_preprocessing(176).resize == 202 and mcunet_zoo_preprocessing(176).mean == (
        0.5, 0.5, 0.5)


def test_digits_grey_to_rgb_normalised():
    ds = build_dataset("digits", "val", PRE, train_transform=False)
    x, y = take_images(ds, 8)
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(x[:, 0] * 0.229 + 0.485, x[:, 0] * 0.229 + 0.485)
    # grey expanded: channels equal before normalisation
    raw = x * torch.tensor(PRE.std).view(1, 3, 1, 1) + torch.tensor(PRE.mean).view(1, 3, 1, 1)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6)
    assert len(build_dataset("digits", "train", PRE, True)) + len(ds) == 1797


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_idx():
    ds = build_dataset("fashion-mnist", "val", PRE, train_transform=False)
    assert len(ds) == 10_000 and ds.classes[9] == "Ankle boot"
    assert ds[0][0].shape == (3, 32, 32)


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        build_dataset(f"fashion-mnist:{tmp_path / 'nope'}", "val", PRE, False)


def _image_folder(root, bad: int = 0):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 50, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    for i in range(bad):
        (root / "cat" / f"broken{i}.jpg").write_bytes(b"not a jpeg")


def test_image_folder_flat_and_split(tmp_path):
    _image_folder(tmp_path / "flat")
    ds = build_dataset(str(tmp_path / "flat"), "val", PRE, False)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    _image_folder(tmp_path / "split" / "train")
    _image_folder(tmp_path / "split" / "val")
    assert len(build_dataset(str(tmp_path / "split"), "train", PRE, True)) == 6


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    _image_folder(tmp_path, bad=2)
    ds = build_dataset(str(tmp_path), "val", PRE, False)
    images = [ds[i][0] for i in range(len(ds))]
    assert all(img.shape == (3, 32, 32) for img in images)
    assert ds.skipped.count == 2


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "no class sub-folders"),
    (lambda p: (p / "a").mkdir(parents=True), "no images"),
])
def test_image_folder_errors(tmp_path, make, fragment):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(UserError, match=fragment):
        build_dataset(str(root), "val", PRE, False)


def test_take_images_is_reproducible_with_augmentation():
    """Train-style (random crop / flip) images drawn twice with the same seed are identical, and
    the caller's global RNG state is left as it was (exports are reproducible)."""
    import torch

    from tinyexport.train.data import Preprocessing, build_dataset, parse_data_spec, take_images

    dataset = build_dataset(parse_data_spec("synthetic:16"), "train", Preprocessing(32), True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, _ = take_images(dataset, 8, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = take_images(dataset, 8, seed=0)
    assert torch.equal(a, b)


def test_unknown_kind_and_file_as_data_say_what_they_are(tmp_path):
    with pytest.raises(UserError, match="unknown data kind 'imagenet'.*ImageFolder directory"):
        parse_data_spec("imagenet:/x")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        build_dataset(str(text), "val", PRE, False)
