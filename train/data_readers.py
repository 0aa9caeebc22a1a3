"""Readers of data-set files: the built-in sets as raw uint8 arrays (Fashion-MNIST's IDX files,
CIFAR-10's python batches, scikit-learn's digits, synthetic images) and one image file as a PIL
image. Each checks the file and what its header declares against the limits below before it
allocates or decodes (docs/guide/training.md, "Bad input"). :mod:`tinyexport.train.data` turns
them into data sets.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from tinyexport.errors import UserError
from tinyexport.safe_io import GiB, MiB, check_labels, open_regular, read_exactly, short_repr

# Limits every reader checks before allocating (docs/guide/training.md, "Bad input"): far above
# any real data set of ours (ImageNet's largest JPEG is ~15 MB and 10k px; a CIFAR-10 batch 31 MB;
# Fashion-MNIST's largest IDX file 47 MB), far below what a hostile header can ask for.
MAX_IMAGE_SIDE = 16384  # px, either side
MAX_IMAGE_PIXELS = 50_000_000  # px per image (PIL's own bomb limit is 89M)
MAX_IMAGE_FILE_BYTES = 256 * MiB
MAX_DATA_FILE_BYTES = 2 * GiB  # one IDX (decompressed) or CIFAR-10 batch file


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


# ---------------------------------------------------------------- one image file

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
