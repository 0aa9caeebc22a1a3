"""Import torchvision with this stack's CPU torch.

PyPI's torchvision 0.28.0 is the CUDA build; its C ops do not load with the CPU torch, and
``import torchvision`` then fails with "operator torchvision::nms does not exist" (see
``docs/toolchain.md`` §3). Defining the two op schemas first makes the import work; transforms and model
definitions work, ``torchvision.ops.nms`` does not (we never use it).
"""

from __future__ import annotations

import functools


@functools.cache
def import_torchvision():
    import torch

    try:
        import torchvision  # noqa: F401 - works as is with a matching (e.g. CUDA) torch

        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")  # noqa: F841 - must stay alive
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass  # already defined
    import_torchvision._lib = lib  # keep the registration alive for the process
    import torchvision

    return torchvision
