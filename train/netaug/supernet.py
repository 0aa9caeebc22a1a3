"""The NetAug augmented supernet over an ``MBNet`` spec (docs/netaug.md §1.2–1.3).

* Width candidates of every augmented layer: ``round_half_up(C·f)`` for f in the model's width
  multiplier list (integers, not multiples of 8). Augmented: the stem conv, the DS block's output,
  every stage's width (one per stage: blocks with an identity shortcut reuse their input width),
  the head MB block and the final 1×1 conv.
* Expand candidates per MB block: ``e·f`` for f in the expand list, with ``e = mid/in (+1e-10)``;
  the active mid width is ``round_half_up(ratio × ACTIVE input width)``.
* Tensors are allocated at the maximum (``in_max = round_half_up(C·max f)``, mid max =
  ``round_half_up(in_max · e · max f)``); a sub-network is the leading slice of every tensor, so
  the base model is the first C channels everywhere (``extract_base_subnet``).

Key names equal ``MBNet``'s: ``first_conv.{conv,bn}``, ``blocks.<i>.{expand,depthwise,project}``,
``final_conv``, ``classifier``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tinyexport.train.models.spec import NetSpec, round_half_up
from tinyexport.train.netaug.layers import DynamicConvBN, DynamicLinear

EXPAND_LIST = (1.0, 1.6, 2.2, 2.8)  # aug_expand_list of every reference script (docs/netaug.md §4)
MODES = ("min", "random", "min_w", "min_e")


@dataclass(frozen=True)
class SubnetConfig:
    """One sub-network: stem width, one width per stage group (``NetSpec.stages()``), the final
    conv width (None without a final conv) and one expand ratio per block (None for the DS
    block)."""

    stem: int
    stage_widths: tuple[int, ...]
    final: int | None
    expand_ratios: tuple[float | None, ...]


@dataclass(frozen=True)
class Candidates:
    """Candidate lists of a supernet (element 0 is always the base choice)."""

    stem: tuple[int, ...]
    stages: tuple[tuple[int, ...], ...]
    final: tuple[int, ...] | None
    expand: tuple[tuple[float, ...] | None, ...]


def width_candidates(width: int, mults: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(round_half_up(width * f) for f in mults)


def build_candidates(spec: NetSpec, width_mults: tuple[float, ...],
                     expand_mults: tuple[float, ...] = EXPAND_LIST) -> Candidates:
    """The width / expand candidate lists of ``spec`` (docs/netaug.md §1.2, worked example §4)."""
    if not width_mults or width_mults[0] != 1.0 or list(width_mults) != sorted(width_mults):
        raise ValueError(f"width_mult_list must start with 1.0 and increase, got {width_mults!r}")
    if not expand_mults or expand_mults[0] != 1.0 or list(expand_mults) != sorted(expand_mults):
        raise ValueError(f"expand_list must start with 1.0 and increase, got {expand_mults!r}")
    stages = tuple(width_candidates(spec.blocks[g[0]].out_channels, width_mults)
                   for g in spec.stages())
    expand = tuple(tuple(_base_ratio(b) * f for f in expand_mults) if b.expand else None
                   for b in spec.blocks)
    final = width_candidates(spec.final_conv, width_mults) if spec.final_conv else None
    return Candidates(width_candidates(spec.stem_channels, width_mults), stages, final, expand)


def _base_ratio(block) -> float:
    """Reference: ``expand_ratio = mid / in + 1e-10`` so round_half_up(e·in) gives mid back."""
    return block.mid_channels / block.in_channels + 1e-10


class NetAugSupernet(nn.Module):
    """Weight-sharing supernet; ``set_active(config)`` selects the sub-network to run."""

    def __init__(self, spec: NetSpec, width_mults: tuple[float, ...] | None = None,
                 expand_mults: tuple[float, ...] = EXPAND_LIST):
        super().__init__()
        self.spec = spec
        self.width_mults = tuple(width_mults or spec.width_mult_list)
        self.expand_mults = tuple(expand_mults)
        self.candidates = build_candidates(spec, self.width_mults, self.expand_mults)
        self._group_of = {i: s for s, g in enumerate(spec.stages()) for i in g}
        self._build_layers()
        self.active: SubnetConfig = self.base_config()
        self.set_active(self.active)

    def _build_layers(self) -> None:
        spec, cand, eps, mom = self.spec, self.candidates, self.spec.bn_eps, self.spec.bn_momentum
        self.first_conv = DynamicConvBN(spec.in_channels, cand.stem[-1], 3, 2, eps=eps,
                                        momentum=mom)
        self.blocks = nn.ModuleList()
        cin = cand.stem[-1]
        for i, block in enumerate(spec.blocks):
            cout = cand.stages[self._group_of[i]][-1]
            self.blocks.append(DynamicMBBlock(cin, cout, block, cand.expand[i], eps, mom))
            cin = cout
        self.final_conv = (DynamicConvBN(cin, cand.final[-1], 1, eps=eps, momentum=mom)
                           if cand.final else None)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = DynamicLinear(cand.final[-1] if cand.final else cin, spec.num_classes)

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    # ------------------------------------------------------------ configurations

    def base_config(self) -> SubnetConfig:
        cand = self.candidates
        return SubnetConfig(cand.stem[0], tuple(s[0] for s in cand.stages),
                            cand.final[0] if cand.final else None,
                            tuple(e[0] if e else None for e in cand.expand))

    def sample_config(self, mode: str, generator: torch.Generator) -> SubnetConfig:
        """Uniform draws (base option included) from ``generator`` (docs/netaug.md §1.3).

        Draw order is fixed (stem, stages, final, expand ratios), and every rank seeds the generator
        identically, so all ranks sample the same sub-network (pitfall 11)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        base = self.base_config()
        if mode == "min":
            return base
        cand = self.candidates

        def pick(options):
            return options[int(torch.randint(len(options), (1,), generator=generator))]

        widths = mode in ("random", "min_e")
        stem = pick(cand.stem) if widths else base.stem
        stages = tuple(pick(s) for s in cand.stages) if widths else base.stage_widths
        final = (pick(cand.final) if cand.final else None) if widths else base.final
        if mode in ("random", "min_w"):
            ratios = tuple(pick(e) if e else None for e in cand.expand)
        else:
            ratios = base.expand_ratios
        return SubnetConfig(stem, stages, final, ratios)

    def set_active(self, config: SubnetConfig) -> None:
        """Select a sub-network (mid widths follow the active input width at forward time)."""
        self.active = config
        self.first_conv.conv.active_out = config.stem
        for i, block in enumerate(self.blocks):
            block.active_out = config.stage_widths[self._group_of[i]]
            block.active_ratio = config.expand_ratios[i]
        if self.final_conv is not None:
            self.final_conv.conv.active_out = config.final

    def set_mode(self, mode: str, generator: torch.Generator | None = None) -> SubnetConfig:
        if mode != "min" and generator is None:
            raise ValueError(f"mode {mode!r} needs a generator")
        config = self.sample_config(mode, generator) if mode != "min" else self.base_config()
        self.set_active(config)
        return config

    # ------------------------------------------------------------ forward

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_conv(x)
        for block in self.blocks:
            x = block(x)
        return self.final_conv(x) if self.final_conv is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


class DynamicMBBlock(nn.Module):
    """MB block with an active output width and expand ratio; keys as ``MBBlock``."""

    def __init__(self, max_in: int, max_out: int, block, ratios: tuple[float, ...] | None,
                 eps: float, momentum: float):
        super().__init__()
        self.residual = block.shortcut
        if block.expand:
            max_mid = round_half_up(max_in * max(ratios))
            self.expand = DynamicConvBN(max_in, max_mid, 1, eps=eps, momentum=momentum)
        else:
            max_mid, self.expand = max_in, None
        self.depthwise = DynamicConvBN(max_mid, max_mid, block.kernel_size, block.stride,
                                       depthwise=True, eps=eps, momentum=momentum)
        self.project = DynamicConvBN(max_mid, max_out, 1, act=False, eps=eps, momentum=momentum)
        self.active_out: int | None = None
        self.active_ratio: float | None = None

    @property
    def depthwise_conv(self) -> nn.Conv2d:
        return self.depthwise.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand is not None:
            self.expand.conv.active_out = round_half_up(self.active_ratio * x.shape[1])
            y = self.expand(x)
        self.project.conv.active_out = self.active_out
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


def kaiming_uniform_init_(model: nn.Module) -> nn.Module:
    """NetAug init (docs/netaug.md §1.6): conv ``kaiming_uniform_(a=√5)`` on the max-size tensors, BN
    1/0, Linear trunc-normal(std 0.02) with zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_uniform_(module.weight, a=5 ** 0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build_supernet(spec: NetSpec, width_mults: tuple[float, ...] | None = None,
                   expand_mults: tuple[float, ...] = EXPAND_LIST) -> NetAugSupernet:
    """A supernet with NetAug's kaiming-uniform init (seed the RNG before calling)."""
    return kaiming_uniform_init_(NetAugSupernet(spec, width_mults, expand_mults))
