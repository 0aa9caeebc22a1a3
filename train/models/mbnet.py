"""``MBNet``: the MobileNetV2-style net of a :class:`NetSpec` (MCUNet zoo, NetAug bases, Proxyless).

State-dict keys: ``first_conv.{conv,bn}``, ``blocks.<i>.{expand,depthwise,project}.{conv,bn}``,
``final_conv.{conv,bn}``, ``classifier.{weight,bias}``. ``tinyexport.train.checkpoint_format`` maps the
MCUNet-zoo and NetAug key names onto these.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyexport.train.models.layers import ConvBNAct, MBBlock, he_fout_init_
from tinyexport.train.models.spec import NetSpec


class MBNet(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        eps, mom = spec.bn_eps, spec.bn_momentum
        self.first_conv = ConvBNAct(spec.in_channels, spec.stem_channels, 3, 2, eps=eps,
                                    momentum=mom)
        self.blocks = nn.ModuleList(
            MBBlock(b.in_channels, b.out_channels, b.kernel_size, b.stride, b.mid_channels,
                    b.shortcut, b.expand, eps=eps, momentum=mom)
            for b in spec.blocks
        )
        last = spec.blocks[-1].out_channels
        self.final_conv = (ConvBNAct(last, spec.final_conv, 1, eps=eps, momentum=mom)
                           if spec.final_conv is not None else None)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(spec.feature_channels, spec.num_classes)
        he_fout_init_(self)

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        if self.final_conv is not None:
            x = self.final_conv(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))
