"""One real export shared by the export tests: a small model trained here on ``digits``.

Cost (2 shared cores): training ~4 epochs of mbv2-tiny @ 32 px plus one export with 64
calibration images. torch runs single-threaded here: on an oversubscribed 2-core machine its
OpenMP workers spin and a training step takes 10-25x longer (measured 1.2 s vs 16-34 s).
"""

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

RESOLUTION = 32
EPOCHS = 4


@contextmanager
def _single_thread_torch():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_digits_model(path: Path) -> None:
    """A plain training loop: mbv2-tiny, 10 classes, 32 px, a few epochs on sklearn digits."""
    from tinyexport.train.checkpoint_format import save_checkpoint
    from tinyexport.train.data import Preprocessing, build_dataset, take_images
    from tinyexport.train.models import build_model

    torch.manual_seed(0)
    dataset = build_dataset("digits", "train", Preprocessing(RESOLUTION), train_transform=False)
    images, labels = take_images(dataset, len(dataset), seed=0)
    model = build_model("mbv2-tiny", num_classes=10, resolution=RESOLUTION)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(images)).split(64):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    save_checkpoint(model.eval(), path)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """mbv2-tiny trained a few epochs on digits (our checkpoint format, no recorded data)."""
    checkpoint = tmp_path_factory.mktemp("digits_checkpoint") / "digits.pt"
    with _single_thread_torch():
        _train_digits_model(checkpoint)
    return checkpoint


@pytest.fixture(scope="session")
def digits_export(tmp_path_factory, digits_checkpoint):
    """(output folder, export.json dict, exit code) of ``tinyexport`` on the trained model."""
    import json

    from tinyexport.export.cli import main

    root = tmp_path_factory.mktemp("digits_export")
    checkpoint = digits_checkpoint
    out = root / "out"
    with _single_thread_torch():
        code = main(["--model", "mbv2-tiny", "--int8", "--checkpoint", str(checkpoint),
                     "--resolution", str(RESOLUTION), "--calib-data", "digits", "--calib-images",
                     "64", "--check-images", "32", "--eval-data", "digits", "--eval-images",
                     "360", "--bn-recalibrate", "--quant-report", "--out", str(out)])
    doc = json.loads((out / "export.json").read_text()) if code == 0 else None
    return out, doc, code
