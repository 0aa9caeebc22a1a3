"""fuse_conv_bn: generic pairing (zoo, torchvision layout, TinyTL-style branch) + equivalence."""

import pytest
import torch
from torch import nn

from tinyexport.export.fuse import check_fusion, find_conv_bn_pairs, fuse_and_check, fuse_conv_bn
from tinyexport.train.models import build_model


def _randomise_bn(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


class LiteResidualNet(nn.Module):
    """A TinyTL-style lite residual: AvgPool → grouped conv → norm → ReLU → 1×1 conv → norm →
    bilinear upsample → add onto a main conv+BN+ReLU6 path."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU6())
        self.pool = nn.AvgPool2d(2)
        self.group = nn.Conv2d(3, 8, 3, padding=1, groups=1, bias=False)
        self.norm1 = nn.BatchNorm2d(8)
        self.point = nn.Conv2d(8, 8, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(8)

    def forward(self, x):
        side = self.norm2(self.point(torch.relu(self.norm1(self.group(self.pool(x))))))
        side = nn.functional.interpolate(side, size=x.shape[2:], mode="bilinear",
                                         align_corners=False)
        return self.main(x) + side


@pytest.mark.parametrize("name", ["mbv2-tiny", "mobilenetv2"])
def test_zoo_models_fuse_every_pair(name):
    model = _randomise_bn(build_model(name, num_classes=10, resolution=32))
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused, check = fuse_and_check(model, torch.randn(2, 3, 32, 32))
    assert check.pairs == bns and check.passed
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # input untouched


def test_lite_residual_branch_fuses():
    model = _randomise_bn(LiteResidualNet())
    assert len(find_conv_bn_pairs(model)) == 3
    fused, check = fuse_and_check(model, torch.randn(2, 3, 16, 16))
    assert check.max_abs_diff < 1e-5


def test_bn_reading_two_sources_is_not_fused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the conv output is also used unnormalised

    model = _randomise_bn(Shared())
    assert find_conv_bn_pairs(model) == []
    assert check_fusion(model, fuse_conv_bn(model), torch.randn(1, 3, 4, 4)).passed


def test_check_detects_a_wrong_fusion():
    model = _randomise_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    fused = fuse_conv_bn(model)
    fused[0].bias.data += 0.1
    assert not check_fusion(model, fused, torch.randn(1, 3, 8, 8)).passed
