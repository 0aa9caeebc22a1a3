"""Random weights: BN recalibration (default without --checkpoint) gives realistic activations."""

import torch

from tinyexport.export.pipeline import ExportConfig
from tinyexport.export.run import _wants_recalibration
from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.models import build_model


def test_recalibration_default_on_for_random_weights(tmp_path):
    config = ExportConfig(model="mbv2-tiny", out=tmp_path / "o")
    assert _wants_recalibration(config, {"kind": "random"})
    assert not _wants_recalibration(config, {"kind": "ours"})
    off = ExportConfig(model="mbv2-tiny", out=tmp_path / "o", bn_recalibrate=False)
    assert not _wants_recalibration(off, {"kind": "random"})


@torch.no_grad()
def test_recalibration_restores_activation_range():
    torch.manual_seed(0)
    model = build_model("mcunet-in0", num_classes=10, resolution=32).eval()
    images = torch.randn(16, 3, 32, 32)
    before = model(images).abs().max().item()
    after = reestimate_bn(model, [images[:8], images[8:]])(images).abs().max().item()
    # he_fout init with unit running_var shrinks activations layer by layer (collapse); with
    # batch statistics every BN output has unit variance again.
    assert after > 100 * before and after > 1e-2
