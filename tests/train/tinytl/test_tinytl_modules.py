"""Lite residual module, insertion rules and the equivalence of insertion (docs/tinytl.md §2, §3)."""

import pytest
import torch
from torch import nn

from tinyexport.errors import UserError
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.modules import (
    LiteResidual,
    LiteResidualBlock,
    LiteResidualConfig,
    default_config,
    insert_lite_residual,
    lite_residuals,
    plan_sites,
    seed_mobilenetv2_config,
)


def test_proxyless_mobile_official_sites():
    """docs/tinytl.md §3.1 table: 19 modules, k=5 except the last four (k=3), strides per block."""
    model = build_model("proxylessnas-mobile", num_classes=102)
    sites = plan_sites(model, default_config("proxylessnas-mobile"))
    assert len(sites) == 19
    kernels = [s.kernel_size for s in sites]
    assert kernels == [5] * 15 + [3] * 4
    assert [model.spec.blocks[s.index].source_index for s in sites][:3] == [1, 2, 5]
    strides = {model.spec.blocks[s.index].source_index: s.stride for s in sites}
    assert [k for k, v in strides.items() if v == 2] == [1, 5, 9, 17]
    assert all(s.downsample == 2 for s in sites)


def test_proxyless_mobile_lite_param_count():
    """1,816,416 lite residual parameters (docs/tinytl.md §1)."""
    adapted = insert_lite_residual(build_model("proxylessnas-mobile", num_classes=102))
    lite = lite_residuals(adapted)
    assert len(lite) == 19
    assert sum(p.numel() for m in lite for p in m.parameters()) == 1_816_416
    assert lite[0].conv1.in_channels == 16 and lite[0].conv1.out_channels == 16
    assert lite[0].conv1.groups == 2 and lite[0].conv1.stride == (2, 2)


def test_mobilenetv2_official_rule_skips_the_first_block():
    """Official inserter (docs/tinytl.md §3.1) on MobileNetV2: features[2..17], the kernel schedule
    from resolution 128 (k=5 until block_res < 5, then 3)."""
    adapted = insert_lite_residual(build_model("mobilenetv2", num_classes=10))
    wrapped = [i for i, m in enumerate(adapted.features) if isinstance(m, LiteResidualBlock)]
    assert wrapped == list(range(2, 18))
    kernels = [m.conv1.kernel_size[0] for m in lite_residuals(adapted)]
    assert kernels == [5] * 13 + [3] * 3


def test_mobilenetv2_seed_rule_covers_features_1_to_17():
    adapted = insert_lite_residual(build_model("mobilenetv2", num_classes=10, resolution=64),
                                   seed_mobilenetv2_config())
    wrapped = [i for i, m in enumerate(adapted.features) if isinstance(m, LiteResidualBlock)]
    assert wrapped == list(range(1, 18))
    assert {m.conv1.kernel_size for m in lite_residuals(adapted)} == {(3, 3)}
    assert not any(m.residual for m in adapted.features if isinstance(m, LiteResidualBlock))


@pytest.mark.parametrize("name", ["mbv2-tiny", "mcunet", "proxylessnas-w0.35", "mobilenetv2"])
def test_insertion_leaves_outputs_unchanged(name):
    """Final-norm scale 0 → the branch adds exact zeros; atol 1e-6 allows nothing else."""
    torch.manual_seed(0)
    base = build_model(name, num_classes=5, resolution=64).eval()
    adapted = insert_lite_residual(base).eval()
    assert adapted is not base and not lite_residuals(base)  # pure
    n_blocks = len(base.spec.blocks)
    expected = n_blocks - 1
    assert len(lite_residuals(adapted)) == expected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), base(x), atol=1e-6, rtol=0)


def test_nonzero_branch_changes_output_and_module_order():
    lite = LiteResidual(16, 24, 3, 2)
    assert [n for n, _ in lite.named_children()] == ["pooling", "conv1", "bn1", "act", "conv2",
                                                     "final_bn"]
    assert isinstance(lite.pooling, nn.AvgPool2d) and lite.conv1.groups == 2
    assert torch.count_nonzero(lite.final_bn.weight) == 0
    block = LiteResidualBlock(nn.Conv2d(16, 24, 3, 2, 1), lite, residual=False).eval()
    x = torch.randn(1, 16, 15, 15)
    before = block(x)
    nn.init.ones_(lite.final_bn.weight)
    assert before.shape == (1, 24, 8, 8)
    assert not torch.allclose(block(x), before)


def test_bad_config_and_double_insertion():
    with pytest.raises(ValueError, match="odd"):
        LiteResidualConfig(kernel_size=4)
    adapted = insert_lite_residual(build_model("mbv2-tiny", num_classes=3, resolution=64))
    with pytest.raises(UserError, match="already"):
        insert_lite_residual(adapted)
    with pytest.raises(UserError, match="out of range"):
        insert_lite_residual(build_model("mbv2-tiny", resolution=64),
                             LiteResidualConfig(blocks=(99,)))
