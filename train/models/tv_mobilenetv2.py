"""MobileNetV2 ×1.0 in torchvision's module layout (the seed TinyTL backbone, docs/tinytl.md §3.2).

Keys match ``torchvision.models.mobilenet_v2()`` exactly (``features.<i>...``, ``classifier.1``), so
torchvision checkpoints load strictly; we build it ourselves because torchvision's C ops do not load
with the CPU torch of this stack (docs/toolchain.md §3).
"""

from __future__ import annotations

import torch
from torch import nn

from tinyexport.train.models.layers import ConvBNAct, he_fout_init_
from tinyexport.train.models.spec import BlockSpec, NetSpec


class _TVConv(nn.Sequential):
    """torchvision's Conv2dNormActivation: keys ``0`` (conv), ``1`` (bn), ``2`` (ReLU6)."""

    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True, eps=1e-5):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=eps)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class TVInvertedResidual(nn.Module):
    """torchvision's InvertedResidual: ``conv`` = [expand] dw, pw-linear conv, bn."""

    def __init__(self, b: BlockSpec, eps: float):
        super().__init__()
        self.residual = b.shortcut
        self.stride = b.stride
        layers: list[nn.Module] = []
        if b.expand:
            layers.append(_TVConv(b.in_channels, b.mid_channels, 1, eps=eps))
        layers.append(_TVConv(b.mid_channels, b.mid_channels, b.kernel_size, b.stride,
                              groups=b.mid_channels, eps=eps))
        layers += [nn.Conv2d(b.mid_channels, b.out_channels, 1, bias=False),
                   nn.BatchNorm2d(b.out_channels, eps=eps)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = b.out_channels

    @property
    def depthwise_conv(self) -> nn.Conv2d:
        return self.conv[1][0] if len(self.conv) == 4 else self.conv[0][0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class TorchvisionMobileNetV2(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        eps = spec.bn_eps
        layers: list[nn.Module] = [_TVConv(spec.in_channels, spec.stem_channels, 3, 2, eps=eps)]
        layers += [TVInvertedResidual(b, eps) for b in spec.blocks]
        layers.append(_TVConv(spec.blocks[-1].out_channels, spec.final_conv, 1, eps=eps))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(spec.dropout),
                                        nn.Linear(spec.final_conv, spec.num_classes))
        he_fout_init_(self)

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


__all__ = ["TorchvisionMobileNetV2", "TVInvertedResidual", "ConvBNAct"]
