"""Architecture specs of the MobileNetV2-style nets in the zoo (pure data, no torch).

A net is: a 3×3 stride-2 stem conv → a list of inverted-bottleneck (MB) blocks (the first one is
the depthwise-separable block, expand 1) → an optional 1×1 "feature-mix" conv → global average pool
→ dropout → Linear. Facts: ``docs/mcunet.md`` §2.1–2.2 and ``docs/netaug.md`` §2.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Input bounds of every zoo net, checked here once (spec, CLIs and export all call these). The nets
# downsample 32x, so a smaller input leaves the last stage no pixel; above 1024 px the int8 input
# alone is 3 MB, far beyond any microcontroller, and the float activations of a batch run into GBs.
MIN_RESOLUTION = 32
MAX_RESOLUTION = 1024
# A classifier needs two classes; 1,000 is ImageNet's, 100,000 keeps the head's weights < 100 MB.
MIN_CLASSES = 2
MAX_CLASSES = 100_000


def resolution_problem(value: object) -> str | None:
    """Why ``value`` cannot be a zoo net's input resolution (None when it can)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"resolution must be an integer, got {value!r}"
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        return (f"resolution must be in {MIN_RESOLUTION}..{MAX_RESOLUTION} (the nets downsample "
                f"32x; microcontroller inputs are far below 1024 px), got {value}")
    return None


def num_classes_problem(value: object) -> str | None:
    """Why ``value`` cannot be a classifier's class count (None when it can)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"num_classes must be an integer, got {value!r}"
    if not MIN_CLASSES <= value <= MAX_CLASSES:
        return f"num_classes must be in {MIN_CLASSES}..{MAX_CLASSES:,}, got {value}"
    return None


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, one step up if that drops below 90 % (docs/netaug.md §2)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def round_half_up(value: float) -> int:
    """Integer rounding with halves going up (NetAug's ``make_divisible(v, 1)``, docs/netaug.md §1.2)."""
    return int(value + 0.5)


@dataclass(frozen=True)
class BlockSpec:
    """One MB block: [1×1 expand] → k×k depthwise (stride) → 1×1 project, optional identity add.

    ``mid == in_channels`` with ``expand=False`` is the depthwise-separable block (no expand conv).
    ``source_index`` is the block's index in the original config (ZeroLayer blocks are skipped there).
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    mid_channels: int
    shortcut: bool
    expand: bool = True
    source_index: int | None = None

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {self.stride}")
        if self.shortcut and (self.stride != 1 or self.in_channels != self.out_channels):
            raise ValueError("an identity shortcut needs stride 1 and in == out channels")
        if not self.expand and self.mid_channels != self.in_channels:
            raise ValueError("a block without expand conv has mid == in channels")

    @property
    def expand_ratio(self) -> float:
        return self.mid_channels / self.in_channels


@dataclass(frozen=True)
class NetSpec:
    """A whole net. ``final_conv`` is the 1×1 feature-mix width (None = no such conv)."""

    name: str
    resolution: int
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    final_conv: int | None
    num_classes: int = 1000
    dropout: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    in_channels: int = 3
    width_mult_list: tuple[float, ...] = (1.0, 1.8, 2.6)  # NetAug aug_width_mult_list (docs/netaug.md §4)
    notes: str = ""

    def __post_init__(self) -> None:
        for problem in (num_classes_problem(self.num_classes), resolution_problem(self.resolution)):
            if problem:
                raise ValueError(problem)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        channels = self.stem_channels
        for i, block in enumerate(self.blocks):
            if block.in_channels != channels:
                raise ValueError(f"block {i} expects {block.in_channels} input channels, gets {channels}")
            channels = block.out_channels

    @property
    def feature_channels(self) -> int:
        return self.final_conv if self.final_conv is not None else self.blocks[-1].out_channels

    def with_(self, **changes) -> NetSpec:
        return replace(self, **changes)

    def stages(self) -> list[list[int]]:
        """Block indices grouped into stages: a new stage starts at every block without shortcut.

        This recovers NetAug's stage list exactly (input-stem DS block, the five stages, the head MB
        block), because within a stage every block after the first has an identity shortcut.
        """
        groups: list[list[int]] = []
        for i, block in enumerate(self.blocks):
            if not block.shortcut or not groups:
                groups.append([i])
            else:
                groups[-1].append(i)
        return groups


def parse_blocks(text: str, stem_channels: int, mid_rule: str = "exact",
                 zero_blocks: tuple[int, ...] = ()) -> tuple[BlockSpec, ...]:
    """Parse the compact ``k/expand/out[/s2]`` notation of docs/mcunet.md §2.2 (``×N`` repeats).

    Shortcuts follow the rule that matches every config used here: stride 1, in == out and not the
    first block of a stage (the first block always changes width or stride in these configs).
    ``mid_rule``: ``exact`` (mid = in × expand, the zoo JSONs) or ``div8`` (make_divisible(round(
    e·in), 8), the NetAug base models). ``zero_blocks`` are source indices of ZeroLayer blocks.
    """
    tokens: list[str] = []
    for token in text.split():
        if token.startswith(("×", "x")) and tokens:
            tokens += [tokens[-1]] * (int(token[1:]) - 1)
        else:
            tokens.append(token)
    blocks: list[BlockSpec] = []
    channels = stem_channels
    source = 0
    for token in tokens:
        while source in zero_blocks:
            source += 1
        parts = token.split("/")
        k, e, out = int(parts[0]), float(parts[1]), int(parts[2])
        stride = 2 if len(parts) > 3 and parts[3] == "s2" else 1
        if e == 1:
            mid, expand = channels, False
        elif mid_rule == "exact":
            mid, expand = round(channels * e), True
        else:
            mid, expand = make_divisible(round(e * channels), 8), True
        shortcut = stride == 1 and channels == out and bool(blocks)
        blocks.append(BlockSpec(channels, out, k, stride, mid, shortcut, expand, source))
        channels = out
        source += 1
    return tuple(blocks)


def stage_blocks(stem_channels: int, ds_out: int, stages: list[tuple], head: tuple | None,
                 mid_rule: str = "div8") -> tuple[BlockSpec, ...]:
    """Build blocks from NetAug-style stage tables: (n, out, stride, expands, kernels) per stage.

    ``head`` is (out, expand or None, kernel, mid or None) for the head MB block.
    """
    parts = [f"3/1/{ds_out}"]
    for n, out, stride, expands, kernels in stages:
        for i in range(n):
            s = "/s2" if (i == 0 and stride == 2) else ""
            parts.append(f"{kernels[i]}/{expands[i]}/{out}{s}")
    blocks = list(parse_blocks(" ".join(parts), stem_channels, mid_rule))
    # stride-1 first blocks of a stage (e.g. ProxylessNAS-0.35 stage 4, 32→32) never get a shortcut
    index = 1
    for n, *_ in stages:
        blocks[index] = replace(blocks[index], shortcut=False)
        index += n
    if head is not None:
        out, expand, kernel, mid = head
        cin = blocks[-1].out_channels
        mid = mid if mid is not None else make_divisible(round(expand * cin), 8)
        blocks.append(BlockSpec(cin, out, kernel, 1, mid, False, True, len(blocks)))
    return tuple(blocks)


@dataclass(frozen=True)
class ZooEntry:
    """A registered model: its spec factory inputs and provenance."""

    name: str
    spec: NetSpec
    aliases: tuple[str, ...] = field(default_factory=tuple)
