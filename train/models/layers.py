"""Building blocks shared by the zoo nets, the NetAug supernet and TinyTL.

Every conv is followed by BatchNorm; convs carry no bias (``docs/netaug.md`` §2).
Blocks expose ``residual`` and ``depthwise_conv`` so the activation profiler can apply MCUNet's
"block input held at the depthwise conv" rule (``docs/mcunet.md`` §2.3) to any module layout.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    """k×k conv (padding k//2, no bias) → BatchNorm → optional ReLU6. Keys: ``conv``, ``bn``, ``act``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: bool = True, eps: float = 1e-5, momentum: float = 0.1):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(cout, eps=eps, momentum=momentum)
        if act:
            layers["act"] = nn.ReLU6(inplace=True)
        super().__init__(layers)


class MBBlock(nn.Module):
    """Inverted bottleneck: [1×1 expand] → k×k depthwise → 1×1 project, plus identity if ``residual``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, mid: int,
                 residual: bool, expand: bool = True, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.residual = residual
        self.expand = ConvBNAct(cin, mid, 1, eps=eps, momentum=momentum) if expand else None
        self.depthwise = ConvBNAct(mid, mid, kernel_size, stride, groups=mid, eps=eps,
                                   momentum=momentum)
        self.project = ConvBNAct(mid, cout, 1, act=False, eps=eps, momentum=momentum)

    @property
    def depthwise_conv(self) -> nn.Conv2d:
        return self.depthwise.conv

    def main_branch(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        return self.project(self.depthwise(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main_branch(x)
        return y + x if self.residual else y


def he_fout_init_(model: nn.Module) -> nn.Module:
    """The baseline init of the reference code: conv ~ N(0, sqrt(2/(k²·C_out))), BN 1/0, Linear
    uniform(±1/sqrt(in)) with zero bias (docs/netaug.md §1.6, docs/tinytl.md §2)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            bound = 1.0 / module.in_features ** 0.5
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
