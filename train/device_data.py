"""The on-device data pipeline: batched augmentation on the GPU (or, identically, on the CPU).

``tinytrain --data-pipeline device`` (the default on CUDA) replaces the per-sample PIL transforms
of :mod:`tinyexport.train.data`, which cap a GPU run at the images/s the CPU workers can augment:

* in-memory data sets (Fashion-MNIST, CIFAR-10, digits, synthetic) are uploaded to the device
  once as a uint8 tensor and sampled by index (:class:`DeviceArrayLoader`);
* ImageFolder images are read as bytes by DataLoader workers and decoded in batches with
  ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG on CUDA); images it cannot decode (PNG,
  a CPU torchvision without its image extension) are decoded with PIL (:class:`DeviceFolderLoader`);
* :class:`BatchAugment` applies the train transform of ``data.build_transform`` —
  RandomResizedCrop(S, scale 0.08–1, ratio 3/4–4/3) + horizontal flip + ColorJitter(brightness
  32/255, saturation 0.5) in a random order per image — as batched tensor ops, then normalises;
  the eval transform (resize the short side to ceil(S/0.875), centre-crop S) likewise.

Per-image random parameters are drawn from a seeded CPU ``torch.Generator`` (the same numbers on
any device), a fixed count per batch, and the loader's ``state_dict`` (that generator) goes into
``checkpoint.pt``, so a resumed run draws exactly what the uninterrupted run drew.

Differences to the PIL path (training only; the eval path matches it within one grey level, tested):
the crop is resampled by ``grid_sample`` (bilinear, no antialiasing: a crop shrunk by more than 2×
aliases a little, where PIL filters; in-memory images of 28–32 px are enlarged, not shrunk) and the
result is not rounded to 8 bits before the colour jitter.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tinyexport.errors import UserError
from tinyexport.safe_io import read_capped
from tinyexport.train.data import (
    IMAGE_EXTENSIONS,
    DataSpec,
    ImageFolderDataset,
    Preprocessing,
    imagefolder_root,
    load_arrays,
    log_unreadable,
)
from tinyexport.train.data_readers import MAX_IMAGE_FILE_BYTES, UNREADABLE_IMAGE, check_image_size, open_image
from tinyexport.train.tv_compat import import_torchvision

_log = logging.getLogger(__name__)

PIPELINES = ("auto", "cpu", "device")
SCALE = (0.08, 1.0)  # RandomResizedCrop defaults (torchvision)
LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 boxes, then a centre crop
BRIGHTNESS = 32 / 255
SATURATION = 0.5
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's "L" conversion, as torchvision's rgb_to_grayscale


def resolve_pipeline(pipeline: str, device: str) -> str:
    """``auto`` → ``device`` on CUDA, ``cpu`` elsewhere.

    Raises:
        ValueError: an unknown pipeline name.
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"data_pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if pipeline == "auto":
        return "device" if device == "cuda" else "cpu"
    return pipeline


@dataclass(frozen=True)
class AugmentParams:
    """Per-image parameters of one batch (CPU tensors): crop boxes ``(top, left, h, w)``, flips,
    brightness and saturation factors, and whether brightness comes first."""

    boxes: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    saturation: torch.Tensor
    brightness_first: torch.Tensor


def _crop_boxes(u: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes from uniform draws ``u`` (N, attempts, 4).

    The first attempt whose box fits wins; when none fits, the central crop of the image clamped
    to the ratio range (torchvision's fallback)."""
    H, W = heights[:, None].double(), widths[:, None].double()
    area = H * W * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[..., 0].double())
    ratio = torch.exp(LOG_RATIO[0] + (LOG_RATIO[1] - LOG_RATIO[0]) * u[..., 1].double())
    w = torch.round(torch.sqrt(area * ratio))
    h = torch.round(torch.sqrt(area / ratio))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    top = torch.floor(u[..., 2].double() * (H - h + 1))
    left = torch.floor(u[..., 3].double() * (W - w + 1))
    first = torch.where(ok.any(1), ok.double().argmax(1), torch.zeros_like(ok[:, 0], dtype=torch.long))
    pick = lambda t: t.gather(1, first[:, None])[:, 0]  # noqa: E731 - local one-liner
    boxes = torch.stack([pick(top), pick(left), pick(h), pick(w)], 1)
    fallback = _central_boxes(heights.double(), widths.double())
    return torch.where(ok.any(1)[:, None], boxes, fallback).long()


def _central_boxes(H: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    lo, hi = math.exp(LOG_RATIO[0]), math.exp(LOG_RATIO[1])
    in_ratio = W / H
    w = torch.where(in_ratio < lo, W, torch.where(in_ratio > hi, torch.round(H * hi), W))
    h = torch.where(in_ratio < lo, torch.round(W / lo), H)
    return torch.stack([torch.div(H - h, 2, rounding_mode="floor"),
                        torch.div(W - w, 2, rounding_mode="floor"), h, w], 1)


class BatchAugment:
    """The train or eval transform of ``data.build_transform`` on uint8 image batches.

    Args:
        pre: resolution, eval resize and normalisation.
        train: train-style (random) or eval-style (resize + centre crop) transform.
        seed: seed of the parameter generator (train only).
    """

    def __init__(self, pre: Preprocessing, train: bool, seed: int = 0):
        self.pre, self.train = pre, train
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def draw(self, heights: torch.Tensor, widths: torch.Tensor) -> AugmentParams:
        """Parameters for images of the given sizes (a fixed number of draws per image)."""
        n = len(heights)
        u = torch.rand(n, CROP_ATTEMPTS, 4, generator=self.generator, dtype=torch.float64)
        v = torch.rand(n, 4, generator=self.generator, dtype=torch.float64)
        return AugmentParams(_crop_boxes(u, heights, widths), v[:, 0] < 0.5,
                             (1 - BRIGHTNESS + 2 * BRIGHTNESS * v[:, 1]).float(),
                             (1 - SATURATION + 2 * SATURATION * v[:, 2]).float(), v[:, 3] < 0.5)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float (N,3,S,S) from uint8 ``images`` (N,H,W), (N,H,W,3) or (N,C,H,W)."""
        x = as_nchw(images)
        if not self.train:
            return self.normalize(eval_resize_crop(x, self.pre))
        n, _, h, w = x.shape
        params = self.draw(torch.full((n,), h), torch.full((n,), w))
        return self.finish(crop_resize(x.float() / 255, params, self.pre.resolution), params)

    def apply_each(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Like ``__call__`` for images of different sizes (each (C,H,W) uint8, one device)."""
        if not self.train:
            return self.normalize(torch.cat([eval_resize_crop(as_nchw(i[None]), self.pre)
                                             for i in images]))
        sizes = torch.tensor([i.shape[-2:] for i in images])
        params = self.draw(sizes[:, 0], sizes[:, 1])
        crops = []
        for k, image in enumerate(images):
            top, left, h, w = params.boxes[k].tolist()
            crop = as_nchw(image[None])[..., top:top + h, left:left + w].float()
            crops.append(F.interpolate(crop, (self.pre.resolution,) * 2, mode="bilinear",
                                       antialias=True, align_corners=False) / 255)
        x = torch.cat(crops)
        flip = params.flip.to(x.device)[:, None, None, None]
        return self.finish(torch.where(flip, x.flip(-1), x), params)

    def finish(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        return self.normalize(color_jitter(x.clamp(0, 1), params))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x in [0,1], 1 or 3 channels) → 3 channels, ``(x - mean) / std``."""
        mean = torch.tensor(self.pre.mean, device=x.device)[None, :, None, None]
        std = torch.tensor(self.pre.std, device=x.device)[None, :, None, None]
        return (x.expand(-1, 3, -1, -1) - mean) / std


def as_nchw(images: torch.Tensor) -> torch.Tensor:
    """(N,H,W) → (N,1,H,W); (N,H,W,3) → (N,3,H,W); (N,C,H,W) unchanged (C 1 or 3)."""
    if images.dim() == 3:
        return images[:, None]
    if images.dim() == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
        return images.permute(0, 3, 1, 2)
    return images


def crop_resize(x: torch.Tensor, params: AugmentParams, size: int) -> torch.Tensor:
    """Each image's box resized to ``size``² (bilinear, half-pixel centres as ``F.interpolate``),
    mirrored where ``params.flip``; one ``grid_sample`` for the batch."""
    n, _, H, W = x.shape
    top, left, h, w = params.boxes.double().unbind(1)
    sign = torch.where(params.flip, -1.0, 1.0).double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = sign * w / W
    theta[:, 0, 2] = (2 * left + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * top + h) / H - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, 1, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """torchvision's ColorJitter(brightness, saturation) with per-image factors and order. Grey
    (1-channel) images skip saturation, which leaves a grey RGB image unchanged."""
    def brightness(t):
        return (t * params.brightness.to(t.device)[:, None, None, None]).clamp(0, 1)

    def saturation(t):
        if t.shape[1] == 1:
            return t
        weights = torch.tensor(GREY_WEIGHTS, device=t.device, dtype=t.dtype)[None, :, None, None]
        grey = (t * weights).sum(1, keepdim=True)
        factor = params.saturation.to(t.device)[:, None, None, None]
        return (grey + factor * (t - grey)).clamp(0, 1)

    first = params.brightness_first.to(x.device)[:, None, None, None]
    return torch.where(first, saturation(brightness(x)), brightness(saturation(x)))


def eval_resize_crop(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """Resize the short side to ``pre.resize`` (bilinear, antialiased, rounded to 8 bits as PIL
    does), centre-crop ``pre.resolution``; uint8 (N,C,H,W) → float in [0, 1]."""
    _, _, h, w = x.shape
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(pre.resize * long / short)
    size = (pre.resize, new_long) if h <= w else (new_long, pre.resize)
    y = F.interpolate(x.float(), size, mode="bilinear", antialias=True, align_corners=False)
    y = y.round().clamp(0, 255)
    s = pre.resolution
    top, left = int(round((size[0] - s) / 2.0)), int(round((size[1] - s) / 2.0))
    return y[..., top:top + s, left:left + s] / 255


class DeviceArrayLoader:
    """Batches of an in-memory data set held on ``device``, augmented there.

    Args:
        images, labels: the whole split (uint8 arrays; uploaded once).
        indices: the images to use (e.g. a ``--limit-train`` subset), or None for all.
        sampler_kw: ``DistributedSampler`` arguments (world, rank, shuffle, seed, drop_last): the
            same index order as the CPU pipeline's DataLoader.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: list[int] | None,
                 batch_size: int, augment: BatchAugment, device: torch.device | str,
                 drop_last: bool, **sampler_kw):
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.array(images)).to(self.device)  # a writable copy
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        self.indices = torch.arange(len(images)) if indices is None else torch.tensor(indices)
        self.sampler = DistributedSampler(range(len(self.indices)), drop_last=drop_last,
                                          **sampler_kw)
        self.batch_size, self.augment, self.drop_last = batch_size, augment, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        order = self.indices[torch.tensor(list(self.sampler), dtype=torch.long)]
        for k in range(len(self)):
            chosen = order[k * self.batch_size:(k + 1) * self.batch_size].to(self.device)
            yield self.augment(self.images[chosen]), self.labels[chosen]

    def state_dict(self) -> dict:
        return self.augment.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.augment.load_state_dict(state)


class EncodedFiles(Dataset):
    """``(file bytes as a uint8 tensor, label)`` of ``samples`` (read by DataLoader workers)."""

    def __init__(self, samples: list[tuple[Path, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:  # regular files under the size cap only (a FIFO would block the worker forever)
            data = read_capped(path, "image", MAX_IMAGE_FILE_BYTES)
        except UserError as exc:
            log_unreadable(path, exc)
            data = b""  # decodes to None: skipped and counted like any unreadable image
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), label


def _as_lists(batch):
    return [b for b, _ in batch], torch.tensor([label for _, label in batch])


def decode_images(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """(3,H,W) uint8 RGB images on ``device``: one batched ``decode_jpeg`` call when it works
    (nvJPEG on CUDA), else PIL one by one (PNG, or torchvision without its image extension);
    None for an image PIL cannot read either."""
    io_ = import_torchvision().io
    if all(_within_limits(e) for e in encoded):  # nvJPEG would allocate what a header asks
        try:
            return list(io_.decode_jpeg(encoded, mode=io_.ImageReadMode.RGB, device=device))
        except (RuntimeError, ValueError):
            pass
    return [_pil_decode(e, device) for e in encoded]


def _within_limits(encoded: torch.Tensor) -> bool:
    """Whether the image header declares a size within ``data.check_image_size``'s limits."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded.numpy().tobytes())) as image:
            check_image_size(*image.size, "image")
    except UNREADABLE_IMAGE:
        return False
    except Image.DecompressionBombError:
        return False
    return True


def _pil_decode(encoded: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        array = np.asarray(open_image(Path("<bytes>"), encoded.numpy().tobytes()))
    except UNREADABLE_IMAGE as exc:
        log_unreadable(Path("an image of the batch"), exc)
        return None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(device)


class DeviceFolderLoader:
    """Batches of an ImageFolder: bytes read by ``workers`` processes, decoded and augmented on
    ``device``. ``samples`` are ``(path, label)`` pairs (``ImageFolderDataset.samples``)."""

    def __init__(self, samples: list[tuple[Path, int]], batch_size: int, augment: BatchAugment,
                 device: torch.device | str, drop_last: bool, workers: int, **sampler_kw):
        self.device = torch.device(device)
        files = EncodedFiles([s for s in samples if s[0].suffix.lower() in IMAGE_EXTENSIONS])
        self.sampler = DistributedSampler(files, drop_last=drop_last, **sampler_kw)
        self.loader = DataLoader(files, batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=workers, collate_fn=_as_lists)
        self.augment = augment
        self.skipped = torch.zeros((), dtype=torch.long)  # unreadable images replaced

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for encoded, labels in self.loader:
            images = decode_images(encoded, self.device)
            good = [k for k, image in enumerate(images) if image is not None]
            if not good:
                raise UserError(f"no image of a batch of {len(images)} could be decoded; the "
                                "ImageFolder's files are corrupt or not images")
            if len(good) < len(images):  # as the PIL path: an unreadable image is replaced
                self.skipped.add_(len(images) - len(good))
                fill = [good[k % len(good)] for k in range(len(images))]
                images = [images[k] if images[k] is not None else images[f]
                          for k, f in enumerate(fill)]
                labels = torch.tensor([int(labels[k] if images[k] is not None else labels[f])
                                       for k, f in enumerate(fill)])
            yield self.augment.apply_each(images), labels.to(self.device)

    def state_dict(self) -> dict:
        return self.augment.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.augment.load_state_dict(state)


@dataclass(frozen=True)
class DeviceSource:
    """One split of a data SPEC for the on-device pipeline: in-memory arrays, or ImageFolder
    ``(path, label)`` samples."""

    classes: list[str]
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    samples: list[tuple[Path, int]] | None = None

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.samples)

    def loader(self, indices: list[int], batch_size: int, augment: BatchAugment,
               device: torch.device | str, drop_last: bool, workers: int = 0, **sampler_kw):
        """A :class:`DeviceArrayLoader` or :class:`DeviceFolderLoader` over ``indices``."""
        if self.images is not None:
            return DeviceArrayLoader(self.images, self.labels, indices, batch_size, augment,
                                     device, drop_last, **sampler_kw)
        return DeviceFolderLoader([self.samples[i] for i in indices], batch_size, augment, device,
                                  drop_last, workers, **sampler_kw)


def device_source(spec: DataSpec, split: str) -> DeviceSource:
    """The ``split`` of ``spec`` as a :class:`DeviceSource` (nothing decoded yet)."""
    if spec.kind == "imagefolder":
        folder = ImageFolderDataset(imagefolder_root(spec, split), None)
        return DeviceSource(folder.classes, samples=folder.samples)
    images, labels, classes = load_arrays(spec, split)
    return DeviceSource(classes, images, labels)
