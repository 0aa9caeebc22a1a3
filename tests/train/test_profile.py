"""Profiler conventions on hand-computable toy nets, and agreement with torchprofile."""

import torch
from torch import nn

from tinyexport.train.models import build_model
from tinyexport.train.models.layers import MBBlock
from tinyexport.train.models.profile import profile_model


class TwoLayer(nn.Module):
    """conv 3x3 s1 3->4 on 8x8 (pad 1), then global pool and Linear 4->2.

    conv MACs = 4*8*8 (out elems) * 3*3*3 = 6,912; linear = 4*2 = 8 → 6,920.
    Act: conv in+out = 3*64 + 4*64 = 448; linear 4 + 2 = 6 → peak 448 at "conv".
    params = 4*3*3*3 + 4*2 + 2 = 118.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


class ResidualToy(nn.Module):
    """One MB block 4->4 (mid 8, k3, s1) with identity shortcut on 4x4 input.

    expand: in 4*16=64, out 8*16=128 → 192; MACs 128*4 = 512
    depthwise: in 128 + out 128 + held block input 64 = 320; MACs 128*9 = 1,152
    project: in 128 + out 64 = 192; MACs 64*8 = 512. Peak 320 at the depthwise.
    """

    def __init__(self):
        super().__init__()
        self.block = MBBlock(4, 4, 3, 1, 8, residual=True)

    def forward(self, x):
        return self.block(x)


def test_two_layer_by_hand():
    prof = profile_model(TwoLayer(), resolution=8)
    assert prof.macs == 6_920
    assert prof.params == 118
    assert prof.peak_activation_bytes == 448
    assert prof.bottleneck == "conv"
    assert [layer.op for layer in prof.layers] == ["conv", "linear"]


def test_residual_block_input_is_held_at_depthwise():
    prof = profile_model(ResidualToy(), resolution=4, in_channels=4)
    acts = {layer.name: layer.activation_elements for layer in prof.layers}
    assert acts == {"block.expand.conv": 192, "block.depthwise.conv": 320,
                    "block.project.conv": 192}
    assert prof.macs == 512 + 1_152 + 512
    assert prof.peak_activation_bytes == 320


def test_int4_bytes_per_element_halves_peak():
    prof = profile_model(ResidualToy(), resolution=4, in_channels=4, bytes_per_element=0.5)
    assert prof.peak_activation_bytes == 160


def _fold_bn(model: nn.Module) -> nn.Module:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in model.modules():
        if hasattr(module, "conv") and hasattr(module, "bn"):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def test_macs_agree_with_torchprofile_on_bn_folded_model():
    """torchprofile counts BN unless folded (docs/mcunet.md §2.3); folded, it adds only the global
    pool (one op per pooled element) and the classifier bias."""
    from torchprofile import profile_macs

    model = build_model("mcunet-in0")
    ours = profile_model(model, 48).macs
    theirs = profile_macs(_fold_bn(model), torch.zeros(1, 3, 48, 48))
    assert ours <= theirs <= ours * 1.001
