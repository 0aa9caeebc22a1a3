"""The lite residual module and where it goes (``docs/tinytl.md`` §2, §3).

``LiteResidual`` is the branch R: 2×2 avg pool → k×k conv (2 groups, the block's stride) → norm →
ReLU → 1×1 conv → norm (scale 0 at init). ``LiteResidualBlock`` wraps a block B:
``out = B(x) + Up(R(x))`` with a bilinear upsample to B's output size. Calling B itself (its own
identity add included) keeps the zoo block's hooks usable by the inference profiler; the official
net computes ``(MBConv(x) + Up(R(x))) + x``, equal up to float summation order.

Insertion (``insert_lite_residual``) is pure: it deep-copies the model.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tinyexport.errors import UserError
from tinyexport.train.models.layers import he_fout_init_
from tinyexport.train.models.spec import make_divisible

# docs/tinytl.md §3.1: the official kernel schedule uses a hard-coded resolution of 128.
OFFICIAL_SCHEDULE_RESOLUTION = 128


@dataclass(frozen=True)
class LiteResidualConfig:
    """How lite residuals are inserted.

    ``kernel_size`` is the maximum kernel of the schedule (docs/tinytl.md §3.1) or, with
    ``fixed_kernel=True``, the kernel of every module (the torchvision seed rule, §3.2).
    ``schedule_resolution`` None means "the model's stem output resolution" (general rule).
    ``blocks`` None means "every block but the first"; only the community torchvision rule
    (``fixed_kernel`` on the torchvision layout, :func:`seed_mobilenetv2_config`) takes
    ``features[1..17]``, the first block included.
    """

    kernel_size: int = 5
    groups: int = 2
    downsample: int = 2
    expand: float = 1.0
    fixed_kernel: bool = False
    schedule_resolution: int | None = None
    blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kernel_size < 1 or self.kernel_size % 2 != 1:
            raise ValueError(f"lite residual kernel_size must be odd and >= 1, "
                             f"got {self.kernel_size}")
        if self.groups < 1:
            raise ValueError(f"lite residual groups must be >= 1, got {self.groups}")
        if self.downsample < 1:
            raise ValueError(f"lite residual downsample must be >= 1, got {self.downsample}")
        if self.expand <= 0:
            raise ValueError(f"lite residual expand must be > 0, got {self.expand}")

    @classmethod
    def from_dict(cls, d: dict) -> LiteResidualConfig:
        d = dict(d)
        if d.get("blocks") is not None:
            d["blocks"] = tuple(int(b) for b in d["blocks"])
        return cls(**d)


def default_config(model_name: str) -> LiteResidualConfig:
    """The insertion rule of a zoo model. ProxylessNAS-Mobile and MobileNetV2 follow the official
    inserter (docs/tinytl.md §3.1): every block but the first, kernel schedule from the hard-coded
    resolution 128, as ``LiteResidualModule.insert_lite_residual`` does on any ProxylessNASNets
    (ofa's MobileNetV2 is one). Other zoo nets: the same rule, the schedule started at the stem
    output resolution. The community k=3-everywhere placement is :func:`seed_mobilenetv2_config`.
    """
    if model_name in ("proxylessnas-mobile", "mobilenetv2"):
        return LiteResidualConfig(schedule_resolution=OFFICIAL_SCHEDULE_RESOLUTION)
    return LiteResidualConfig()


def seed_mobilenetv2_config() -> LiteResidualConfig:
    """The community torchvision-MobileNetV2 placement (docs/tinytl.md §3.2): k=3 lite residuals on
    all 17 blocks ``features[1..17]``, the first included. Not the official rule; kept to
    reproduce that repo's figures (and to rebuild checkpoints written with it)."""
    return LiteResidualConfig(kernel_size=3, fixed_kernel=True)


class GlobalAvgPool2d(nn.Module):
    """Global average pooling written as an ``avg_pool2d`` whose window is the whole input.

    Equal to ``AdaptiveAvgPool2d(1)``, but ONNX gets an ``AveragePool`` (fixed H×W window at
    export) instead of ``ReduceMean(keepdims=1)``: onnx2tf lowers that 4-D ReduceMean feeding a
    conv as NHWC→NCHW TRANSPOSE + MEAN, and TRANSPOSE is not allowed in the int8 graph (the
    export's TFLM check), while ``AveragePool`` becomes one AVERAGE_POOL_2D.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=x.shape[2:])


class LiteResidual(nn.Sequential):
    """The branch R (docs/tinytl.md §2). ``downsample`` None = global pool and a 1×1 kernel."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, groups: int = 2,
                 downsample: int | None = 2, expand: float = 1.0):
        mid = make_divisible(int(cin * expand), 8)
        if cin % groups or mid % groups:
            raise UserError(f"a lite residual with {groups} groups needs in ({cin}) and mid "
                            f"({mid}) channels divisible by {groups}; pass another --lr-groups")
        if downsample is None:
            kernel_size, pooling = 1, GlobalAvgPool2d()
        else:
            pooling = nn.AvgPool2d(downsample, downsample, 0)
        super().__init__(OrderedDict([
            ("pooling", pooling),
            ("conv1", nn.Conv2d(cin, mid, kernel_size, stride, kernel_size // 2, groups=groups,
                                bias=False)),
            ("bn1", nn.BatchNorm2d(mid)),
            ("act", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(mid, cout, 1, bias=False)),
            ("final_bn", nn.BatchNorm2d(cout)),
        ]))
        self.downsample = downsample
        he_fout_init_(self)
        nn.init.zeros_(self.final_bn.weight)  # the branch outputs exactly 0 at init (§2)


class LiteResidualBlock(nn.Module):
    """``block(x) + Up(lite_residual(x))``.

    ``residual`` tells the training-memory model to hold the block input during the whole block,
    lite branch included: True for an MBNet block with a shortcut (the official ofa
    ``ResidualBlock`` wraps the adapter, §6.2), False in the torchvision layout (the S8 adapter
    wraps ``InvertedResidual``, whose own hold ends before the branch runs).
    """

    def __init__(self, block: nn.Module, lite_residual: LiteResidual, residual: bool):
        super().__init__()
        self.block = block
        self.lite_residual = lite_residual
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.block(x)
        side = self.lite_residual(x)
        # Also after a global pool (1×1 → H×W replicates the value): one explicit resize keeps
        # every adapter the same RESIZE_BILINEAR + same-shape ADD in the int8 graph. (The
        # TRANSPOSEs once seen there came from the global pool, see ``GlobalAvgPool2d``.)
        side = F.interpolate(side, size=main.shape[2:], mode="bilinear", align_corners=False)
        return main + side


@dataclass(frozen=True)
class Site:
    """One insertion: the block's index, channels, stride and the chosen kernel / pooling."""

    index: int
    in_channels: int
    out_channels: int
    stride: int
    kernel_size: int
    downsample: int | None


def _kernel(block_res: int, config: LiteResidualConfig) -> tuple[int, int | None]:
    if config.fixed_kernel:
        return config.kernel_size, config.downsample
    if block_res == 1:
        return 1, None
    k = config.kernel_size
    while block_res < k:
        k -= 2
    return k, config.downsample


def plan_sites(model: nn.Module, config: LiteResidualConfig) -> list[Site]:
    """The insertion sites: every block but the first (kernel schedule of docs/tinytl.md §3.1).

    ``block_res = max(1, R // downsample)`` is taken before the block's stride divides R;
    R starts at ``schedule_resolution`` (official 128) or the stem output resolution.
    """
    specs = model.spec.blocks
    # the community torchvision rule (§3.2) wraps features[1..17], the first block included
    first = 0 if config.fixed_kernel and not hasattr(model, "blocks") else 1
    chosen = config.blocks if config.blocks is not None else tuple(range(first, len(specs)))
    bad = [i for i in chosen if not 0 <= i < len(specs)]
    if bad:
        raise UserError(f"lite residual block indices {bad} out of range 0..{len(specs) - 1}")
    res = config.schedule_resolution or model.spec.resolution // 2
    sites = []
    for i, b in enumerate(specs):
        block_res = max(1, res // config.downsample)
        res //= b.stride
        if i in chosen:
            k, ds = _kernel(block_res, config)
            sites.append(Site(i, b.in_channels, b.out_channels, b.stride, k, ds))
    return sites


def _block_list(model: nn.Module) -> tuple[nn.Module, int]:
    """The container of the blocks and the offset of block 0 in it."""
    if hasattr(model, "blocks"):
        return model.blocks, 0
    if hasattr(model, "features"):
        return model.features, 1  # torchvision layout: features[0] is the stem
    raise UserError(f"{type(model).__name__} has no blocks/features to insert lite residuals into")


def insert_lite_residual(model: nn.Module, config: LiteResidualConfig | None = None) -> nn.Module:
    """A copy of ``model`` with a lite residual around each planned block (pure).

    The copy computes the same function as ``model`` (every final norm scale is 0).
    """
    if has_lite_residual(model):
        raise UserError("the model already has lite residual modules")
    config = config or default_config(model.spec.name)
    new = copy.deepcopy(model)
    container, offset = _block_list(new)
    torchvision_layout = offset == 1
    for site in plan_sites(new, config):
        block = container[site.index + offset]
        lite = LiteResidual(site.in_channels, site.out_channels, site.kernel_size, site.stride,
                            config.groups, site.downsample, config.expand)
        residual = bool(getattr(block, "residual", False)) and not torchvision_layout
        container[site.index + offset] = LiteResidualBlock(block, lite, residual)
    new.lite_residual_config = config
    return new


def has_lite_residual(model: nn.Module) -> bool:
    return any(isinstance(m, LiteResidual) for m in model.modules())


def lite_residuals(model: nn.Module) -> list[LiteResidual]:
    return [m for m in model.modules() if isinstance(m, LiteResidual)]
