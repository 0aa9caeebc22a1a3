"""Shared fixtures of the TinyTL tests."""

import pytest
import torch

from tinyexport.train.checkpoint_format import save_checkpoint
from tinyexport.train.models import build_model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A base checkpoint to transfer from: mbv2-tiny, 10 classes, 32 px, seeded weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("src") / "base.pt"
    save_checkpoint(build_model("mbv2-tiny", num_classes=10, resolution=32), path)
    return path
