"""Random weights: BN recalibration (default without --checkpoint) gives realistic activations."""

import torch

from tinyexport.export.config import ExportConfig
from tinyexport.export.stages import _wants_recalibration
from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.models import build_model


def test_recalibration_default_on_for_random_weights(tmp_path):
    config = ExportConfig(model="mbv2-tiny", out=tmp_path / "o")
    assert _wants_recalibration(config, "random")
    assert not _wants_recalibration(config, "ours")
    off = ExportConfig(model="mbv2-tiny", out=tmp_path / "o", bn_recalibrate=False)
    assert not _wants_recalibration(off, "random")


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


def test_random_init_is_seeded(tmp_path):
    """`tinyexport --model NAME` twice gives the same weights (then the same files); another
    --seed gives others. The caller's global RNG is left as it was."""
    from tinyexport.export.stages import load_model

    config = ExportConfig(model="mcunet-in0", out=tmp_path / "o", num_classes=10)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first, second = load_model(config).model.state_dict(), load_model(config).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = load_model(ExportConfig(model="mcunet-in0", out=tmp_path / "o", num_classes=10,
                                    seed=1)).model.state_dict()
    assert not torch.equal(first["first_conv.conv.weight"], other["first_conv.conv.weight"])
