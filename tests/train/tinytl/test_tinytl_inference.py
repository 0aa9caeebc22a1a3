"""Export-friendly global pooling and the inference cost of the adapters (docs/tinytl.md §2, §3.1)."""

import pytest
import torch
from torch import nn

from tinyexport.train.models import build_model
from tinyexport.train.tinytl.inference import adapter_cost_record, adapter_inference_cost, remove_lite_residual
from tinyexport.train.tinytl.modules import (
    GlobalAvgPool2d,
    LiteResidual,
    default_config,
    has_lite_residual,
    insert_lite_residual,
    plan_sites,
)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 5)])
def test_global_pool_equals_adaptive_pool(size):
    x = torch.randn(2, 6, *size)
    torch.testing.assert_close(GlobalAvgPool2d()(x), nn.AdaptiveAvgPool2d(1)(x), atol=1e-6,
                               rtol=0)


def test_tiny_block_rule_uses_global_pool_and_k1():
    """mbv2-tiny @ 64 px: blocks 14–16 see a 2×2 input, block_res = 1 → global pool, k = 1."""
    sites = plan_sites(build_model("mbv2-tiny", resolution=64), default_config("mbv2-tiny"))
    tiny = [s for s in sites if s.downsample is None]
    assert [s.index for s in tiny] == [14, 15, 16] and {s.kernel_size for s in tiny} == {1}


def test_global_pool_branch_exports_as_average_pool(tmp_path):
    """The root cause of the TRANSPOSEs: ``AdaptiveAvgPool2d(1)`` exports as a 4-D
    ``ReduceMean(keepdims=1)``, which onnx2tf lowers as NHWC→NCHW TRANSPOSE + MEAN. The branch
    must reach ONNX as ``AveragePool`` (→ AVERAGE_POOL_2D) with no ReduceMean."""
    import onnx

    from tinyexport.export.to_onnx import to_onnx

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)  # to_onnx feeds a 1×3×R×R image
            self.lite = LiteResidual(8, 8, 3, 1, downsample=None)

        def forward(self, x):
            return self.lite(self.stem(x))

    path = to_onnx(Branch().eval(), tmp_path / "b.onnx", 2)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "AveragePool" in ops and "ReduceMean" not in ops and "GlobalAveragePool" not in ops


def test_remove_lite_residual_is_pure_and_equivalent():
    adapted = insert_lite_residual(build_model("mbv2-tiny", num_classes=5, resolution=32))
    base = remove_lite_residual(adapted)
    assert has_lite_residual(adapted) and not has_lite_residual(base)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # every final-norm scale is 0: the branches add exact zeros
        torch.testing.assert_close(base.eval()(x), adapted.eval()(x), atol=1e-6, rtol=0)


def test_adapter_inference_cost_counts_the_adapters():
    adapted = insert_lite_residual(build_model("mbv2-tiny", num_classes=5, resolution=32))
    cost = adapter_cost_record(adapter_inference_cost(adapted, 32))
    lite_params = sum(p.numel() for m in adapted.modules() if isinstance(m, LiteResidual)
                      for p in m.parameters())
    assert cost["adapters"] == 16 and cost["added"]["params"] == lite_params
    assert cost["added"]["macs"] > 0 and cost["added"]["weight_bytes_int8"] > 0
    with pytest.raises(ValueError, match="lite residuals"):
        adapter_inference_cost(remove_lite_residual(adapted), 32)
