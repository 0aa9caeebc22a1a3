"""Registered model builders: ``build_model(name, num_classes=1000, resolution=None, dropout=0.0)``.

| name (aliases) | what | native res | source |
|---|---|---|---|
| mbv2-tiny (mobilenetv2-tiny, mbv2-w0.35-r144) | MobileNetV2 ×0.35, final conv 448 | 144 | docs/netaug.md §2.1 |
| mbv2-w0.35 | MobileNetV2 ×0.35, final conv 1280 | 160 | docs/netaug.md §2.2 |
| proxylessnas-w0.35 | ProxylessNAS-Mobile ×0.35 | 160 | docs/netaug.md §2.3 |
| mcunet (mcunet-in3), mcunet-in0 … in4 | MCUNet zoo | per zoo | docs/mcunet.md §2.2 |
| proxyless-w0.3 | MCUNet-zoo baseline | 176 | docs/mcunet.md §2.2 |
| proxylessnas-mobile | ProxylessNAS-Mobile ×1.0 (TinyTL backbone) | 224 | docs/tinytl.md §3.1 |
| mobilenetv2 | MobileNetV2 ×1.0, torchvision module layout | 224 | torchvision |
"""

from __future__ import annotations

from collections.abc import Callable

from tinyexport.errors import UserError
from tinyexport.registry import Registry
from tinyexport.train.models.mbnet import MBNet
from tinyexport.train.models.spec import NetSpec, num_classes_problem, parse_blocks, resolution_problem, stage_blocks
from tinyexport.train.models.tv_mobilenetv2 import TorchvisionMobileNetV2

MODELS: Registry[Callable[[], NetSpec]] = Registry("model")

_MBV2_035_STAGES = [
    (2, 8, 2, [6] * 2, [3] * 2),
    (3, 16, 2, [6] * 3, [3] * 3),
    (4, 24, 2, [6] * 4, [3] * 4),
    (3, 32, 1, [6] * 3, [3] * 3),
    (3, 56, 2, [6] * 3, [3] * 3),
]


@MODELS.register("mbv2-tiny", "mobilenetv2-tiny", "mbv2-w0.35-r144", "tinymbv2")
def _mbv2_tiny() -> NetSpec:
    blocks = stage_blocks(16, 8, _MBV2_035_STAGES, head=(112, 6, 3, None))
    return NetSpec("mbv2-tiny", 144, 16, blocks, final_conv=448,
                   notes="NetAug MobileNetV2-Tiny = MCUNet-zoo mbv2-w0.35-r144")


@MODELS.register("mbv2-w0.35", "mbv2-0.35")
def _mbv2_w035() -> NetSpec:
    blocks = stage_blocks(16, 8, _MBV2_035_STAGES, head=(112, 6, 3, None))
    return NetSpec("mbv2-w0.35", 160, 16, blocks, final_conv=1280)


@MODELS.register("proxylessnas-w0.35", "proxylessnas-0.35")
def _proxylessnas_w035() -> NetSpec:
    stages = [
        (2, 16, 2, [3, 3], [5, 3]),
        (4, 16, 2, [3, 3, 3, 3], [7, 3, 5, 5]),
        (4, 32, 2, [6, 3, 3, 3], [7, 5, 5, 5]),
        (4, 32, 1, [6, 3, 3, 3], [5, 5, 5, 5]),
        (4, 64, 2, [6, 6, 3, 3], [7, 7, 7, 7]),
    ]
    blocks = stage_blocks(16, 8, stages, head=(112, 6, 7, None))
    return NetSpec("proxylessnas-w0.35", 160, 16, blocks, final_conv=1280,
                   notes="NetAug ProxylessNAS-Mobile w0.35 r160 (not an MCUNet-zoo config)")


# MCUNet zoo, k/expand/out(/s2) per block (docs/mcunet.md §2.2; checked against the zoo JSON configs).
_MCUNET_ZOO = {
    "mcunet-in0": (48, 24, "3/1/16 5/4/16/s2 3/3/16 3/4/16 7/5/24/s2 5/4/24 5/5/24 7/5/48/s2 "
                           "5/4/48 3/5/56 5/4/56 3/5/56 3/6/112/s2 5/4/112 3/6/192"),
    "mcunet-in1": (96, 16, "3/1/8 3/4/16/s2 3/3/16 7/3/24/s2 3/5/24 3/5/40/s2 7/4/40 5/4/48 "
                           "3/3/48 3/4/48 7/5/96/s2 5/4/96 5/4/96 3/6/160"),
    "mcunet-in2": (160, 16, "3/1/8 5/3/16/s2 7/6/16 3/5/16 5/5/16 3/5/24/s2 7/6/24 5/6/24 "
                            "7/4/40/s2 5/5/40 3/5/48 5/5/48 3/4/48 5/6/96/s2 5/4/96 5/3/96 "
                            "3/4/96 5/5/160"),
    "mcunet-in3": (176, 16, "3/1/8 7/3/16/s2 3/5/16 7/5/16 5/4/16 5/5/24/s2 5/5/24 5/5/24 "
                            "3/5/40/s2 7/6/40 5/4/40 5/5/48 7/5/48 3/5/48 3/6/96/s2 7/5/96 "
                            "3/4/96 7/5/160"),
    "mcunet-in4": (160, 32, "3/1/16 7/3/24/s2 3/5/24 5/4/24 7/5/40/s2 3/4/40 7/4/40 7/3/80/s2 "
                            "3/3/80 7/3/80 3/4/96 5/3/96 5/3/96 7/4/192/s2 7/3/192 5/3/192 "
                            "5/4/320"),
}


def _register_mcunet(name: str, aliases: tuple[str, ...] = ()) -> None:
    resolution, stem, text = _MCUNET_ZOO[name]

    def build() -> NetSpec:
        return NetSpec(name, resolution, stem, parse_blocks(text, stem), final_conv=None,
                       width_mult_list=(1.0, 1.6, 2.2), notes="MCUNet model zoo")

    MODELS.add(name, build, aliases)


_register_mcunet("mcunet-in0", ("mcunet-10fps",))
_register_mcunet("mcunet-in1", ("mcunet-5fps",))
_register_mcunet("mcunet-in2", ("mcunet-256kb-1mb",))
_register_mcunet("mcunet-in3", ("mcunet", "mcunet-320kb-1mb"))
_register_mcunet("mcunet-in4", ("mcunet-512kb-2mb",))


@MODELS.register("proxyless-w0.3", "proxyless-w0.3-r176")
def _proxyless_w03() -> NetSpec:
    text = ("3/1/8 5/3/16/s2 3/3/16 7/3/16/s2 3/3/16 5/3/16 5/3/16 7/6/24/s2 5/3/24 ×3 5/6/32 "
            "5/3/32 ×3 7/6/64/s2 7/6/64 7/3/64 7/3/64 7/6/96")
    # source blocks 3 and 4 are ZeroLayers in the zoo JSON; their indices matter for key mapping
    return NetSpec("proxyless-w0.3", 176, 16, parse_blocks(text, 16, zero_blocks=(3, 4)),
                   final_conv=384,
                   bn_eps=1e-3, notes="MCUNet-zoo baseline proxyless-w0.3-r176")


@MODELS.register("proxylessnas-mobile", "proxyless-mobile", "proxyless_mobile")
def _proxylessnas_mobile() -> NetSpec:
    text = ("3/1/16 5/3/32/s2 3/3/32 7/3/40/s2 3/3/40 5/3/40 5/3/40 7/6/80/s2 5/3/80 ×3 5/6/96 "
            "5/3/96 ×3 7/6/192/s2 7/6/192 7/3/192 7/3/192 7/6/320")
    # source blocks 3 and 4 are ZeroLayers in proxyless_mobile.json (docs/tinytl.md §3.1)
    return NetSpec("proxylessnas-mobile", 224, 32, parse_blocks(text, 32, zero_blocks=(3, 4)),
                   final_conv=1280, bn_eps=1e-3, notes="ProxylessNAS-Mobile x1.0 (TinyTL backbone)")


@MODELS.register("mobilenetv2", "mobilenet-v2", "mbv2")
def _mobilenetv2() -> NetSpec:
    text = ("3/1/16 3/6/24/s2 3/6/24 3/6/32/s2 3/6/32 ×2 3/6/64/s2 3/6/64 ×3 3/6/96 3/6/96 ×2 "
            "3/6/160/s2 3/6/160 ×2 3/6/320")
    return NetSpec("mobilenetv2", 224, 32, parse_blocks(text, 32), final_conv=1280,
                   dropout=0.2, notes="MobileNetV2 x1.0, torchvision module layout")


TORCHVISION_LAYOUT = frozenset({"mobilenetv2"})


def list_models() -> list[str]:
    return MODELS.names()


def check_bounds(resolution: int | None = None, num_classes: int | None = None) -> None:
    """Raise a UserError naming the flag when a resolution or class count is out of the zoo's
    bounds (``spec.MIN_RESOLUTION`` ...); None means "not given"."""
    for flag, value, problem in (("--resolution", resolution, resolution_problem),
                                 ("--num-classes", num_classes, num_classes_problem)):
        message = problem(value) if value is not None else None
        if message:
            raise UserError(f"{flag}: {message}")


def model_spec(name: str, num_classes: int = 1000, resolution: int | None = None,
               dropout: float | None = None) -> NetSpec:
    """The spec of a registered model with the user's class count, resolution and dropout."""
    spec = MODELS.get(name)()
    check_bounds(resolution=resolution, num_classes=num_classes)
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
    changes: dict = {"num_classes": num_classes}
    if resolution is not None:
        changes["resolution"] = resolution
    if dropout is not None:
        changes["dropout"] = dropout
    return spec.with_(**changes)


def build_model(name: str, num_classes: int = 1000, resolution: int | None = None,
                dropout: float | None = None):
    """Build a registered model (random init) as an ``nn.Module`` with ``.spec`` and ``.resolution``."""
    spec = model_spec(name, num_classes, resolution, dropout)
    if spec.name in TORCHVISION_LAYOUT:
        return TorchvisionMobileNetV2(spec)

    return MBNet(spec)
