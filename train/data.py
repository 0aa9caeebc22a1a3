"""Data SPECs shared by ``tinytrain`` and ``tinyexport`` (calibration / evaluation images).

SPEC forms:

* a directory — ImageFolder layout, either ``DIR/train`` + ``DIR/val`` (ImageNet) or flat
  ``DIR/<class>/*.jpg`` (used for every split);
* ``fashion-mnist[:DIR]`` — IDX files (default: the Debian ``dataset-fashion-mnist`` location);
* ``cifar10:DIR`` — the CIFAR-10 "python version" batches, read locally (never downloaded);
* ``digits`` — scikit-learn's 8×8 digits (1,797 images; deterministic 80/20 split);
* ``synthetic[:N]`` — N random images with random labels (10 classes), for smoke runs.

Grey images are expanded to 3 channels. Transforms (``docs/netaug.md`` §4–5):
train = RandomResizedCrop(S) + horizontal flip + ColorJitter(32/255, saturation 0.5); eval = resize
the short side to ceil(S/0.875), centre-crop S. Normalisation is the model's preprocessing
(ImageNet mean/std for our training; 0.5/0.5 for the MCUNet-zoo weights, ``docs/mcunet.md`` §4).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tinyexport.errors import UserError
from tinyexport.json_record import to_record
from tinyexport.safe_io import check_labels, file_kind, short_repr
from tinyexport.train.data_readers import (
    UNREADABLE_IMAGE,
    load_cifar10,
    load_digits_split,
    load_fashion_mnist,
    open_image,
    synthetic_arrays,
)
from tinyexport.train.tv_compat import import_torchvision

_log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
KINDS = ("imagefolder", "fashion-mnist", "cifar10", "digits", "synthetic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Limits of a SPEC and of a folder (docs/guide/training.md, "Bad input"; the file readers' own are
# in tinyexport.train.data_readers): far above any real data set, far below what fills the memory.
MAX_SYNTHETIC_IMAGES = 100_000  # synthetic:N (32x32x3 bytes each: 300 MB at the limit)
MAX_FOLDER_IMAGES = 10_000_000  # per ImageFolder split (ImageNet-1k: 1.28 M; the list is in RAM)
BUILTIN_NAMES = ("fashion-mnist", "fashion_mnist", "fmnist", "cifar10", "digits", "synthetic")


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the model input (recorded in export.json)."""

    resolution: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_ratio: float = 0.875  # eval: resize short side to ceil(S / crop_ratio), centre-crop S

    @property
    def resize(self) -> int:
        return math.ceil(self.resolution / self.crop_ratio)


def preprocessing_record(pre: Preprocessing) -> dict:
    """``pre`` as export.json and the C bundle read it: its fields, the eval resize and the input
    layout and training augmentation it implies."""
    return {**to_record(pre), "resize_short_side": pre.resize,
            "layout": "NCHW float, RGB, (x/255 - mean) / std",
            "train": "RandomResizedCrop + HorizontalFlip + ColorJitter(32/255, 0.5)"}


def mcunet_zoo_preprocessing(resolution: int) -> Preprocessing:
    """MCUNet zoo weights: Resize(int(S·256/224)), CenterCrop(S), mean = std = 0.5 (docs/mcunet.md §4)."""
    return Preprocessing(resolution, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224 / 256)


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: str | None = None
    count: int | None = None

    def describe(self) -> str:
        return self.kind + (f":{self.path}" if self.path else "") + (
            f":{self.count}" if self.count else "")


def parse_data_spec(text: str) -> DataSpec:
    """Parse a data SPEC string; raise UserError naming the accepted forms."""
    text = str(text).strip()
    head, _, rest = text.partition(":")
    head = head.lower()
    if head in BUILTIN_NAMES and Path(text).exists():  # ambiguous: neither is guessed
        raise UserError(f"data {text!r} names both the built-in {head} data set and the folder "
                        f"{text!r} in {os.getcwd()!r}; pass ./{text} for the folder or {head}: "
                        "for the built-in set")
    if head in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return DataSpec("fashion-mnist", rest or str(FASHION_MNIST_DIR))
    if head == "cifar10":
        if not rest:
            raise UserError("cifar10 needs a folder: cifar10:DIR (the extracted "
                            "cifar-10-batches-py); nothing is downloaded")
        return DataSpec("cifar10", rest)
    if head == "digits":
        if rest:  # nothing after digits is read: saying so beats ignoring it
            raise UserError(f"data {short_repr(text)}: digits is scikit-learn's built-in set and "
                            "takes no :DIR; pass digits, or ./DIR for a folder of your own")
        return DataSpec("digits")
    if head == "synthetic":
        try:
            count = int(rest) if rest else 256
        except ValueError:
            raise UserError(f"synthetic:N needs an integer N, got {short_repr(rest)}") from None
        if not 1 <= count <= MAX_SYNTHETIC_IMAGES:
            raise UserError(f"synthetic:N needs N in 1..{MAX_SYNTHETIC_IMAGES}, got {count}; "
                            "use a real data set for more images")
        return DataSpec("synthetic", count=count)
    if rest and os.sep not in head and not Path(text).exists():
        raise UserError(f"unknown data kind {head!r} in {text!r}; known kinds: fashion-mnist[:DIR], "
                        "cifar10:DIR, digits, synthetic[:N]; for any other data set (ImageNet "
                        "included) pass its ImageFolder directory itself")
    if text and (os.sep in text or Path(text).exists() or text.startswith(".")):
        return DataSpec("imagefolder", text)
    raise UserError(f"unknown data SPEC {text!r}; use an ImageFolder directory, "
                    "fashion-mnist[:DIR], cifar10:DIR, digits or synthetic[:N]")


# ---------------------------------------------------------------- transforms

def build_transform(pre: Preprocessing, train: bool):
    """torchvision transform on PIL images (train-style or eval-style), ending in a normalised tensor."""
    T = import_torchvision().transforms
    size = pre.resolution
    if train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                 T.ColorJitter(brightness=32 / 255, saturation=0.5)]
    else:
        steps = [T.Resize(pre.resize), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(pre.mean, pre.std)])


def _to_rgb_pil(array: np.ndarray):
    from PIL import Image

    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


class ArrayDataset(Dataset):
    """uint8 images (N,H,W[,3]) + labels, transformed on the fly."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, classes: list[str]):
        self.images, self.labels, self.transform, self.classes = images, labels, transform, classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(_to_rgb_pil(self.images[index])), int(self.labels[index])


class SkipCounter:
    """Counts unreadable images across DataLoader worker processes (shared memory)."""

    def __init__(self) -> None:
        self._value = multiprocessing.Value("i", 0)

    def add(self) -> None:
        with self._value.get_lock():
            self._value.value += 1

    @property
    def count(self) -> int:
        return self._value.value


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; unreadable images are skipped (the next readable one is used)
    and counted in ``self.skipped``. Only regular files are images: a FIFO, device or socket
    with an image's name is left out with a warning (reading one would block or never end), and
    an image above the size limits is skipped with a warning naming it and the limit."""

    def __init__(self, root: Path, transform):
        if not root.is_dir():
            raise UserError(f"data folder {str(root)!r} does not exist")
        self.classes = class_folders(root)
        if not self.classes:
            raise UserError(f"data folder {str(root)!r} has no class sub-folders; expected "
                            "ImageFolder layout DIR/<class>/<image> (or DIR/train and DIR/val)")
        self.samples = []
        for i, name in enumerate(self.classes):
            room = MAX_FOLDER_IMAGES - len(self.samples)
            self.samples += [(p, i) for p in _image_files(root / name, room, root)]
        if not self.samples:
            raise UserError(f"data folder {str(root)!r} has class folders but no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        self.root = root
        self.transform = transform
        self.skipped = SkipCounter()
        self._bad: set[int] = set()  # per process; a bad file is counted once per loader worker

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self, path: Path):
        return open_image(path)

    def __getitem__(self, index: int):
        for attempt in range(min(len(self.samples), 64)):
            position = (index + attempt) % len(self.samples)
            if position in self._bad:
                continue
            path, label = self.samples[position]
            try:
                image = self._open(path)
            except UNREADABLE_IMAGE as exc:
                self._bad.add(position)
                self.skipped.add()
                log_unreadable(path, exc)
                continue
            return self.transform(image), label
        raise UserError(f"data folder {str(self.root)!r}: no readable image near index {index} "
                        f"({self.skipped.count} unreadable so far, e.g. "
                        f"{str(self.samples[index][0])!r}); the images are corrupt or not images")


def log_unreadable(path: Path, exc: BaseException) -> None:
    """A warning for an image skipped because of a limit or a special file (they name it and
    the limit); a debug line for an ordinary corrupt image."""
    if isinstance(exc, (UserError, OverflowError, MemoryError)):
        _warn_once(f"skipping image {str(path)!r}: {str(exc).splitlines()[0][:300]}")
    else:
        _log.debug("skipping unreadable image %s (%s)", path, exc)


def class_folders(root: Path) -> list[str]:
    """The sorted class sub-folder names of an ImageFolder root."""
    return sorted(d.name for d in root.iterdir() if d.is_dir())


def _image_files(folder: Path, limit: int, root: Path) -> list[Path]:
    """The regular files with an image extension under ``folder`` (at most ``limit``, else an
    error naming ``root``), sorted; special files with an image's name are left out with a warning
    (symlinked sub-folders are not followed). One
    ``scandir`` per folder: the file type comes with the listing, no ``stat`` per image."""
    found, special, pending = [], [], [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    (found if entry.is_file() else special).append(Path(entry.path))
        if len(found) > limit:
            raise UserError(f"data folder {str(root)!r} holds more than {MAX_FOLDER_IMAGES:,} "
                            "images, the limit per split; pass a smaller folder")
    for path in special:
        _warn_once(f"skipping {str(path)!r}: it is {_special_kind(path)}, not an image file")
    return sorted(found)


def _special_kind(path: Path) -> str:
    try:
        return file_kind(path.stat().st_mode)
    except OSError as exc:  # a dangling symlink
        return f"unreadable ({exc.strerror})"


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        _log.warning("%s", message)


def _imagefolder_root(path: str, split: str) -> Path:
    root = Path(path)
    if not root.exists():
        raise UserError(f"data folder {path!r} does not exist")
    if not root.is_dir():
        mode = root.stat().st_mode
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise UserError(f"data {path!r} is {kind}, not a folder; pass an ImageFolder directory "
                        "(one sub-folder of images per class, optionally under train/ and val/)")
    wanted = "train" if split == "train" else "val"
    if (root / "train").is_dir() or (root / "val").is_dir():
        if not (root / wanted).is_dir():
            raise UserError(f"data folder {path!r} has train/ or val/ but no {wanted}/ split")
        if wanted == "val":
            _check_same_classes(root)
        return root / wanted
    if wanted == "val":
        _warn_once(f"data folder {path!r} has no train/ and val/ sub-folders: validation uses the "
                   "training images themselves, so its accuracy says nothing about new images; "
                   "split the data into DIR/train/<class> and DIR/val/<class>")
    return root


def _check_same_classes(root: Path) -> None:
    """train/ and val/ of an ImageFolder must name the same classes (labels are their order)."""
    if not (root / "train").is_dir():
        return
    train, val = class_folders(root / "train"), class_folders(root / "val")
    if train != val:
        raise UserError(f"data folder {str(root)!r}: val/ has classes {short_repr(val)} but "
                        f"train/ has {short_repr(train)}; labels are the class folders' order, so "
                        "both splits need the same class folders")


def build_dataset(spec: DataSpec | str, split: str, pre: Preprocessing, train_transform: bool
                  ) -> Dataset:
    """The dataset of a SPEC for ``split`` ("train" or "val") with train- or eval-style transforms.

    Datasets have ``.classes``; ImageFolder ones also ``.skipped`` (unreadable images).
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    transform = build_transform(pre, train_transform)
    if spec.kind == "imagefolder":
        return ImageFolderDataset(_imagefolder_root(spec.path, split), transform)
    images, labels, classes = load_arrays(spec, split)
    return ArrayDataset(images, labels, transform, classes)


def imagefolder_root(spec: DataSpec, split: str) -> Path:
    """The class-folder root of an ImageFolder SPEC for ``split`` (``DIR/train``, ``DIR/val`` or
    ``DIR``)."""
    return _imagefolder_root(spec.path, split)


def load_arrays(spec: DataSpec, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 images (N,H,W or N,H,W,3), int64 labels and class names of an in-memory SPEC.

    Raises:
        ValueError: for an ImageFolder SPEC (its images are files, read by the datasets).
    """
    if spec.kind == "imagefolder":
        raise ValueError("load_arrays reads in-memory data sets, not ImageFolders")
    if spec.kind == "fashion-mnist":
        images, labels = load_fashion_mnist(spec.path, split)
        classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
    elif spec.kind == "digits":
        images, labels = load_digits_split(split)
        classes = [str(i) for i in range(10)]
    elif spec.kind == "cifar10":
        images, labels = load_cifar10(spec.path, split)
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
    else:
        images, labels = synthetic_arrays(spec.count or 256, seed=0 if split == "train" else 1)
        classes = [str(i) for i in range(10)]
    check_labels(labels, len(classes), f"data {spec.describe()!r}")
    return images, labels, classes


def take_images(dataset: Dataset, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``count`` (image, label) pairs as stacked tensors. Random
    train-style augmentation draws from torch's global generator: it is seeded with ``seed`` here
    (and restored after), so the same call gives the same images and an export is reproducible."""
    if len(dataset) == 0:
        raise UserError("the data set is empty")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:count].tolist()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pairs = [dataset[i] for i in order]
    return torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


class SubsetDataset(Dataset):
    """The images at ``indices`` of ``dataset``, labels optionally remapped (``remap[label]``).

    Keeps ``.dataset`` (so ``.skipped`` of an ImageFolder stays reachable) and ``.classes``
    (the remapped classes' names, in ``remap`` order, when both are known).
    """

    def __init__(self, dataset: Dataset, indices: list[int], remap: dict[int, int] | None = None):
        self.dataset, self.indices, self.remap = dataset, indices, remap
        classes = getattr(dataset, "classes", None)
        if remap and classes is not None:
            classes = [classes[c] for c in remap if c < len(classes)]
        self.classes = classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        image, label = self.dataset[self.indices[index]]
        return image, (self.remap[label] if self.remap else label)


def subset(dataset: Dataset, limit: int | None, seed: int, indices: list[int] | None = None,
           remap: dict[int, int] | None = None) -> Dataset:
    """A fixed random ``limit`` of ``indices`` (default: all of ``dataset``), kept in index order.

    The choice is ``torch.randperm(len(indices))`` with a generator seeded by ``seed``, so the same
    call selects the same images on every rank and run. Returns ``dataset`` itself when nothing is
    dropped or remapped (``limit`` None or not below its size).

    Args:
        dataset: any map-style dataset.
        limit: how many images to keep, or None for all of ``indices``.
        seed: the selection seed.
        indices: the candidates (e.g. the images of some classes); None = every index.
        remap: label → new label (e.g. kept classes → 0..K-1), or None.
    """
    keep = list(range(len(dataset))) if indices is None else list(indices)
    if limit is not None and limit < len(keep):
        keep = subset_indices(keep, limit, seed)
    elif indices is None and remap is None:
        return dataset
    return SubsetDataset(dataset, keep, remap)


def subset_indices(candidates: list[int], limit: int | None, seed: int) -> list[int]:
    """The fixed random ``limit`` of ``candidates`` that :func:`subset` keeps, in index order."""
    if limit is None or limit >= len(candidates):
        return list(candidates)
    order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(candidates[i] for i in order[:limit])
