"""The on-device data pipeline (``tinyexport.train.device_data``), run on the CPU: shapes and
ranges, determinism for a seed, exact resume of its generator (alone and through a killed and
resumed ``tinytrain`` run), the eval transform against the PIL path, and ImageFolder batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyexport.train.data import Preprocessing, _to_rgb_pil, build_transform
from tinyexport.train.data_readers import synthetic_arrays
from tinyexport.train.device_data import (
    BatchAugment,
    DeviceArrayLoader,
    DeviceSource,
    _crop_boxes,
    resolve_pipeline,
)
from tinyexport.train.netaug.run import run_training


def _images(n=16, size=28):
    return torch.from_numpy(synthetic_arrays(n, size)[0])


def test_pipeline_choice():
    assert resolve_pipeline("auto", "cuda") == "device"
    assert resolve_pipeline("auto", "cpu") == "cpu"
    assert resolve_pipeline("device", "cpu") == "device"
    with pytest.raises(ValueError, match="auto"):
        resolve_pipeline("gpu", "cpu")


def test_train_batch_shape_range_and_normalisation():
    pre = Preprocessing(32)
    out = BatchAugment(pre, True, seed=0)(_images())
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    mean, std = torch.tensor(pre.mean)[:, None, None], torch.tensor(pre.std)[:, None, None]
    pixels = out * std + mean  # back to [0, 1]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    grey = BatchAugment(pre, True, seed=0)(_images()[..., 0])  # (N,H,W) grey → 3 channels
    assert grey.shape == (16, 3, 32, 32)


def test_crop_boxes_follow_torchvision_rules():
    """Boxes lie inside the image, their area is 8-100 % of it (ratio 3/4..4/3) or the fallback."""
    u = torch.rand(500, 10, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    boxes = _crop_boxes(u, torch.full((500,), 28), torch.full((500,), 40))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all()
    assert (left + w <= 40).all() and (h > 0).all() and (w > 0).all()
    area = (h * w).double() / (28 * 40)
    assert area.min() >= 0.06 and area.max() <= 1.0  # 0.08 before rounding the sides


def test_same_seed_same_batch_and_state_resumes_exactly():
    pre, x = Preprocessing(32), _images()
    a, b = BatchAugment(pre, True, seed=3), BatchAugment(pre, True, seed=3)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), BatchAugment(pre, True, seed=4)(x))
    state = a.state_dict()
    expected = a(x)
    c = BatchAugment(pre, True, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c(x), expected)


@pytest.mark.parametrize("size,resolution", [(28, 32), (28, 144), (40, 32), (36, 24)])
def test_eval_transform_matches_pil_within_one_grey_level(size, resolution):
    """Tolerance: 1/255 of the pixel range. PIL resizes uint8 in fixed point and torch in float
    with the same antialiased bilinear filter; after rounding to 8 bits ~10-20 % of the pixels
    differ by one grey level, none by more."""
    images = synthetic_arrays(8, size, seed=5)[0]
    pre = Preprocessing(resolution)
    reference = torch.stack([build_transform(pre, False)(_to_rgb_pil(a)) for a in images])
    ours = BatchAugment(pre, False)(torch.from_numpy(images))
    std = torch.tensor(pre.std)[None, :, None, None]
    levels = ((ours - reference) * std * 255).abs()
    assert ours.shape == reference.shape
    assert levels.max() <= 1.0 + 1e-3


def test_array_loader_batches_order_and_state():
    images, labels = synthetic_arrays(40, 28)
    aug = BatchAugment(Preprocessing(32), True, seed=0)
    loader = DeviceArrayLoader(images, labels, list(range(0, 40, 2)), 8, aug, "cpu", True,
                               num_replicas=1, rank=0, shuffle=True, seed=0)
    assert len(loader) == 2
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(8, 3, 32, 32)] * 2
    order = [i for i in loader.sampler]  # the DataLoader's DistributedSampler order
    expected = torch.from_numpy(labels)[torch.tensor(list(range(0, 40, 2)))[order[:8]]]
    assert torch.equal(batches[0][1], expected)
    assert set(loader.state_dict()) == {"generator"}


def test_imagefolder_loader_decodes_in_batches(tmp_path):
    """JPEG bytes → decode_jpeg on the device (or PIL when torchvision's image extension is
    missing, as on this CPU stack) → batched train and eval transforms; a corrupt file is replaced
    by a readable image of the batch and counted."""
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for c in range(2):
        (tmp_path / str(c)).mkdir()
        for k in range(5):
            path = tmp_path / str(c) / f"{k}.jpg"
            Image.fromarray(rng.integers(0, 255, (30 + k, 40, 3), dtype=np.uint8)).save(path)
            samples.append((path, c))
    (tmp_path / "0" / "0.jpg").write_bytes(b"not a jpeg")
    source = DeviceSource(["0", "1"], samples=samples)
    pre = Preprocessing(24)
    train = source.loader(list(range(10)), 4, BatchAugment(pre, True), "cpu", True,
                          num_replicas=1, rank=0, shuffle=False)
    shapes = [tuple(x.shape) for x, _ in train]
    assert shapes == [(4, 3, 24, 24)] * 2 and int(train.skipped) == 1
    val = source.loader(list(range(1, 10)), 4, BatchAugment(pre, False), "cpu", False,
                        num_replicas=1, rank=0, shuffle=False)
    assert sum(len(y) for _, y in val) == 9


def test_device_pipeline_kill_and_resume_is_bit_identical(tmp_path, monkeypatch, small_run):
    """``--data-pipeline device`` on the CPU: the augmentation generator goes into
    checkpoint.pt and a killed run continues with exactly the uninterrupted run's weights."""
    recipe = small_run.recipe(data_pipeline="device")
    run_training(recipe, small_run.config(tmp_path / "straight"))
    small_run.killed_then_resumed(recipe, tmp_path / "crashed", monkeypatch)
    a = small_run.state(tmp_path / "straight" / "checkpoint.pt")
    b = small_run.state(tmp_path / "crashed" / "checkpoint.pt")
    assert torch.equal(a["loader"]["generator"], b["loader"]["generator"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
