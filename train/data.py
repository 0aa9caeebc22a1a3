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

import contextlib
import gzip
import io
import logging
import math
import multiprocessing
import os
import pickle
import stat
import struct
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tinyexport.errors import UserError
from tinyexport.safe_io import (
    GiB,
    MiB,
    check_labels,
    file_kind,
    open_regular,
    read_exactly,
    short_repr,
)
from tinyexport.train.tv_compat import import_torchvision

_log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
KINDS = ("imagefolder", "fashion-mnist", "cifar10", "digits", "synthetic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Limits every reader checks before allocating (docs/guide/training.md, "Bad input"): far above
# any real data set of ours (ImageNet's largest JPEG is ~15 MB and 10k px; a CIFAR-10 batch 31 MB;
# Fashion-MNIST's largest IDX file 47 MB), far below what a hostile header can ask for.
MAX_IMAGE_SIDE = 16384  # px, either side
MAX_IMAGE_PIXELS = 50_000_000  # px per image (PIL's own bomb limit is 89M)
MAX_IMAGE_FILE_BYTES = 256 * MiB
MAX_DATA_FILE_BYTES = 2 * GiB  # one IDX (decompressed) or CIFAR-10 batch file
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

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(resize_short_side=self.resize, layout="NCHW float, RGB, (x/255 - mean) / std",
                 train="RandomResizedCrop + HorizontalFlip + ColorJitter(32/255, 0.5)")
        return d


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


# ---------------------------------------------------------------- raw arrays (uint8 HWC or HW)

IDX_UBYTE = 0x08  # the IDX type byte of unsigned-byte data (Fashion-MNIST's only type)


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (gzip or plain), checked against its own header before its
    data is read (so a gzip bomb or a header asking for terabytes is refused, not decompressed)."""
    try:
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open_regular(path, "IDX file", MAX_DATA_FILE_BYTES))
            if path.suffix == ".gz":
                f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
            dims = _idx_header(f, path)
            data = read_exactly(f, math.prod(dims), path, "IDX file")
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"IDX file {str(path)!r} cannot be read ({exc}); re-install "
                        "dataset-fashion-mnist or fix the file") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _idx_header(f, path: Path) -> tuple[int, ...]:
    """The dimensions an IDX header declares, checked against the limits."""
    header = f.read(4)
    ndim = header[3] if len(header) == 4 else 0
    raw = f.read(4 * ndim) if header[:3] == bytes((0, 0, IDX_UBYTE)) else b""
    if not 1 <= ndim <= 4 or len(raw) < 4 * ndim:
        raise UserError(f"{str(path)!r} is not an IDX file of unsigned bytes (bad header)")
    dims = struct.unpack(">" + "I" * ndim, raw)
    shape = "x".join(map(str, dims))
    if min(dims) < 1:
        raise UserError(f"IDX file {str(path)!r} declares {shape} values: a dimension of 0 holds "
                        "no data; fix or replace the file")
    if math.prod(dims) > MAX_DATA_FILE_BYTES:
        raise UserError(f"IDX file {str(path)!r} declares {shape} values, above the limit of "
                        f"{MAX_DATA_FILE_BYTES} bytes per data file; fix or replace the file")
    if ndim >= 3:
        check_image_size(dims[2], dims[1], f"IDX file {str(path)!r}")
    return dims


def check_image_size(width: int, height: int, where: str) -> None:
    """Refuse an image whose declared size is 0 or above :data:`MAX_IMAGE_SIDE` /
    :data:`MAX_IMAGE_PIXELS` (before it is decoded or resized)."""
    if min(width, height) < 1 or max(width, height) > MAX_IMAGE_SIDE or (
            width * height > MAX_IMAGE_PIXELS):
        raise UserError(f"{where}: {width}x{height} px images are outside the limits (1.."
                        f"{MAX_IMAGE_SIDE} px a side, {MAX_IMAGE_PIXELS} px an image); shrink or "
                        "remove them")


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():  # a FIFO or device is refused by name when it is read
            return folder / name
    raise UserError(f"Fashion-MNIST file {stem}[.gz] not found in {str(folder)!r}; install the "
                    "Debian package dataset-fashion-mnist or pass fashion-mnist:DIR")


def load_fashion_mnist(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"Fashion-MNIST folder {str(folder)!r} does not exist; install the Debian "
                        "package dataset-fashion-mnist or pass fashion-mnist:DIR")
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
    label_file = _idx_file(folder, f"{prefix}-labels-idx1-ubyte")
    labels = _read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST files in {str(folder)!r} do not match: images "
                        f"{images.shape}, labels {labels.shape} (expected N×H×W and N labels)")
    check_labels(labels, 10, f"Fashion-MNIST labels {str(label_file)!r}")
    return images, labels.astype(np.int64)


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    cut = int(0.8 * len(images))
    index = order[:cut] if split == "train" else order[cut:]
    return images[index], digits.target[index].astype(np.int64)


def load_cifar10(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        raise UserError(f"CIFAR-10 folder {str(folder)!r} lacks {missing}; expected the extracted "
                        "'cifar-10-batches-py' (data_batch_1..5, test_batch)")
    images, labels = [], []
    for name in names:
        data, batch_labels = read_cifar_batch(folder / name)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += batch_labels
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


class _CifarBatchUnpickler(pickle.Unpickler):
    """Unpickles what a real CIFAR-10 python batch holds and nothing else: dicts, lists,
    bytes/str and ints (built in by the pickle protocol) and one uint8 numpy array. Any other
    global (``os.system``, ``builtins.eval``, ...) is refused before it can be called: a batch
    file is data from the user's disk, never code."""

    ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol 2 spells a bytes literal written by Python 3
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch "
                                         "never holds (refused, not run)")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    """``data`` (N×3072 uint8) and ``labels`` of one CIFAR-10 python batch, unpickled with
    :class:`_CifarBatchUnpickler`; anything else is a UserError naming the file."""
    try:
        with open_regular(path, "CIFAR-10 batch", MAX_DATA_FILE_BYTES) as f:
            batch = _CifarBatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, MemoryError) as exc:
        raise UserError(f"CIFAR-10 batch {str(path)!r} cannot be read: {exc or type(exc).__name__}; "
                        "expected a file of the extracted 'cifar-10-batches-py'") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32 or not isinstance(labels, list)
            or len(labels) != len(data) or not all(type(v) is int for v in labels)):
        raise UserError(f"CIFAR-10 batch {str(path)!r} is not a CIFAR-10 python batch (expected "
                        "b'data': uint8 N×3072 and b'labels': N ints in 0..9)")
    if any(not 0 <= v < 10 for v in labels):
        bad = next(v for v in labels if not 0 <= v < 10)
        raise UserError(f"CIFAR-10 batch {str(path)!r}: label {short_repr(bad)} is outside 0..9 "
                        "for 10 classes; fix the labels or the file")
    return data, labels


def synthetic_arrays(count: int, size: int = 32, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
            rng.integers(0, classes, count).astype(np.int64))


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


class ImageTooLarge(UserError):
    """An image whose header declares a size above the limits (skipped, never decoded)."""


# What reading one image may raise: decoder errors, PIL's bomb guard (not an OSError), size
# arithmetic overflowing, our own limits and special-file refusals.
UNREADABLE_IMAGE = (OSError, ValueError, SyntaxError, EOFError, OverflowError, MemoryError,
                    struct.error, UserError)


def open_image(path: Path, data: bytes | None = None):
    """The RGB PIL image of file ``path`` (or of its bytes ``data``), refused before decoding
    when it is not a regular file, is larger than :data:`MAX_IMAGE_FILE_BYTES` or declares more
    than the pixel limits."""
    from PIL import Image

    with contextlib.ExitStack() as stack:
        f = io.BytesIO(data) if data is not None else stack.enter_context(
            open_regular(path, "image", MAX_IMAGE_FILE_BYTES))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = stack.enter_context(Image.open(f))
            check_image_size(*image.size, f"image {str(path)!r}")
        except (UserError, Image.DecompressionBombError) as exc:
            raise ImageTooLarge(_too_large(path, exc)) from None
        return image.convert("RGB")


def _too_large(path: Path, exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return (f"image {str(path)!r} declares more pixels than PIL decodes (a decompression bomb), "
            f"outside the limits (1..{MAX_IMAGE_SIDE} px a side, {MAX_IMAGE_PIXELS} px an image); "
            "shrink or remove it")


def log_unreadable(path: Path, exc: BaseException) -> None:
    """A warning for an image skipped because of a limit or a special file (they name it and
    the limit); a debug line for an ordinary corrupt image."""
    if isinstance(exc, (UserError, OverflowError, MemoryError)):
        _warn_once(f"skipping image {path}: {str(exc).splitlines()[0][:300]}")
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
        _warn_once(f"skipping {path}: it is {_special_kind(path)}, not an image file")
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
