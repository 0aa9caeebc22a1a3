"""Every registered model reproduces its published params / MACs / peak activation exactly.

Published values: docs/mcunet.md §2.3 (MCUNet zoo, verified against the official
``count_peak_activation_size``) and docs/netaug.md §2–3 (the NetAug base models, ≈ values).
"""

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.models import MODELS, build_model, model_spec
from tinyexport.train.models.profile import profile_zoo_model

EXACT = {  # name: (resolution, params, MACs, peak activation bytes int8)
    "mcunet-in0": (48, 749_840, 6_364_224, 46_080),
    "mcunet-in1": (96, 636_232, 12_790_096, 92_160),
    "mcunet-in2": (160, 729_392, 67_287_200, 332_800),
    "mcunet-in3": (176, 737_408, 81_785_520, 340_736),
    "mcunet-in4": (160, 1_732_640, 125_874_400, 422_400),
    "mbv2-tiny": (144, 750_280, 23_499_152, 311_040),
    "proxyless-w0.3": (176, 754_280, 38_282_216, 247_808),
    "proxylessnas-mobile": (224, 4_080_512, None, None),  # docs/tinytl.md §3.1: 4,080,512 / 320.4M
    "mobilenetv2": (224, 3_504_872, None, None),  # torchvision mobilenet_v2: 3,504,872 params
}
APPROX = {"mbv2-w0.35": (160, 1.677e6, 30.88e6), "proxylessnas-w0.35": (160, 1.781e6, 35.72e6)}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_published_figures_exact(name):
    resolution, params, macs, peak = EXACT[name]
    prof = profile_zoo_model(name)
    assert prof.resolution == resolution
    assert prof.params == params
    if macs is not None:
        assert prof.macs == macs
        assert prof.peak_activation_bytes == peak


def test_proxylessnas_mobile_macs():
    assert round(profile_zoo_model("proxylessnas-mobile").macs / 1e6, 1) == 320.4


@pytest.mark.parametrize("name", sorted(APPROX))
def test_published_figures_approx(name):
    resolution, params, macs = APPROX[name]
    prof = profile_zoo_model(name)
    assert prof.resolution == resolution
    assert abs(prof.params - params) / params < 1e-3
    assert abs(prof.macs - macs) / macs < 1e-3


def test_peak_location_matches_reference():
    # docs/mcunet.md §2.4: in2-in4 peak at block 2 (residual held), mbv2 at block 1, proxyless at block 0
    assert profile_zoo_model("mcunet").bottleneck == "blocks.2.depthwise.conv"
    assert profile_zoo_model("mbv2-tiny").bottleneck.startswith("blocks.1.")
    assert profile_zoo_model("proxyless-w0.3").bottleneck.startswith("blocks.0.")


def test_aliases_resolve_to_the_same_model():
    assert MODELS.canonical("mcunet") == "mcunet-in3"
    assert MODELS.canonical("MobileNetV2-Tiny") == "mbv2-tiny"
    assert MODELS.canonical("mbv2-w0.35-r144") == "mbv2-tiny"


def test_unknown_model_names_known_and_close():
    with pytest.raises(UserError) as err:
        build_model("mcunet-in9")
    assert "mcunet-in3" in str(err.value) and "known:" in str(err.value)


def test_first_block_of_a_stage_has_no_shortcut():
    spec = model_spec("proxylessnas-w0.35")
    stage4_first = spec.blocks[11]  # DS, 2 + 4 + 4 blocks, then stage 4 (32 -> 32, stride 1)
    assert (stage4_first.in_channels, stage4_first.out_channels, stage4_first.stride) == (32, 32, 1)
    assert not stage4_first.shortcut
    for name in MODELS.names():
        for block in model_spec(name).blocks:
            assert not block.shortcut or (block.stride == 1
                                          and block.in_channels == block.out_channels)


def test_stages_recover_netaug_grouping():
    stages = model_spec("mbv2-tiny").stages()
    assert [len(s) for s in stages] == [1, 2, 3, 4, 3, 3, 1]
    stages = model_spec("mcunet").stages()
    assert [len(s) for s in stages] == [1, 4, 3, 3, 3, 3, 1]


@pytest.mark.parametrize("name", ["mbv2-tiny", "mcunet-in0", "mobilenetv2"])
def test_builder_options(name):
    model = build_model(name, num_classes=7, resolution=64, dropout=0.1)
    model.eval()
    assert model.resolution == 64
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"resolution": 16}, {"dropout": 1.5}])
def test_builder_rejects_bad_values(kwargs):
    with pytest.raises(UserError):
        build_model("mbv2-tiny", **kwargs)


def test_torchvision_layout_matches_torchvision():
    from tinyexport.train.tv_compat import import_torchvision

    reference = import_torchvision().models.mobilenet_v2(num_classes=10).state_dict()
    ours = build_model("mobilenetv2", num_classes=10).state_dict()
    assert list(ours) == list(reference)
    assert all(ours[k].shape == reference[k].shape for k in ours)
