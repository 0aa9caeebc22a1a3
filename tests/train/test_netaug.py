"""NetAug supernet: candidate lists (docs/netaug.md §4), slicing / extraction equivalence, channel
sorting, BN re-estimation of the base slice, sampling and checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from tinyexport.train.models import model_spec
from tinyexport.train.netaug.supernet import (
    SubnetConfig,
    build_candidates,
    build_supernet,
)
from tinyexport.train.netaug.supernet_checkpoint import base_model_from_payload, supernet_payload
from tinyexport.train.netaug.surgery import extract_base_subnet, sort_channels
from tinyexport.train.netaug.task import phase_mode, reestimate_base_bn_

# float32 conv/BN re-ordering tolerance: summation order changes only (outputs are O(1e-2..1)).
ATOL, RTOL = 1e-5, 1e-4


def _trained_like(name="mbv2-tiny", res=32, classes=10, seed=0):
    """A supernet whose BN stats / weights are not at init (a few random train-mode passes)."""
    torch.manual_seed(seed)
    net = build_supernet(model_spec(name, classes, res))
    gen = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.set_mode("random", gen)
            net(torch.randn(4, 3, res, res))
    net.set_mode("min")
    return net.eval()


def _max_config(net) -> SubnetConfig:
    c = net.candidates
    return SubnetConfig(c.stem[-1], tuple(w[-1] for w in c.stages),
                        c.final[-1] if c.final else None,
                        tuple(e[-1] if e else None for e in c.expand))


def test_mbv2_tiny_candidates_equal_worked_example():
    """docs/netaug.md §4 worked example (MBV2-Tiny, width list [1, 1.8, 2.6])."""
    c = build_candidates(model_spec("mbv2-tiny"), (1.0, 1.8, 2.6))
    assert c.stem == (16, 29, 42)
    assert c.stages == ((8, 14, 21), (8, 14, 21), (16, 29, 42), (24, 43, 62), (32, 58, 83),
                        (56, 101, 146), (112, 202, 291))
    assert c.final == (448, 806, 1165)
    assert c.expand[0] is None  # the DS block has no expand ratio
    assert [round(e, 6) for e in c.expand[1]] == [6.0, 9.6, 13.2, 16.8]
    net = build_supernet(model_spec("mbv2-tiny"))
    assert net.blocks[1].expand.conv.out_channels == 353  # round(21 × 16.8), §4
    assert net.blocks[-1].expand.conv.out_channels == 2453  # round(146 × 16.8)
    assert net.classifier.in_features == 1165


@pytest.mark.parametrize("name,stem,stages,final", [
    ("mbv2-w0.35", (16, 29, 42), (8, 8, 16, 24, 32, 56, 112), (1280, 2304, 3328)),
    ("proxylessnas-w0.35", (16, 29, 42), (8, 16, 16, 32, 32, 64, 112), (1280, 2304, 3328)),
    ("mcunet", (16, 26, 35), (8, 16, 24, 40, 48, 96, 160), None),
])
def test_candidates_per_model(name, stem, stages, final):
    spec = model_spec(name)
    c = build_candidates(spec, spec.width_mult_list)
    mults = spec.width_mult_list
    assert c.stem == stem
    assert c.stages == tuple(tuple(int(w * f + 0.5) for f in mults) for w in stages)
    assert c.final == final
    for block, e in zip(spec.blocks, c.expand, strict=True):
        if block.expand:
            base = block.mid_channels / block.in_channels
            assert e == pytest.approx(tuple(base * f for f in (1.0, 1.6, 2.2, 2.8)))


@pytest.mark.parametrize("name", ["mbv2-tiny", "proxylessnas-w0.35", "mcunet"])
def test_extract_base_equals_supernet_in_min_mode(name):
    net = _trained_like(name)
    base = extract_base_subnet(net)
    assert type(base).__name__ == "MBNet"
    for key, tensor in base.state_dict().items():  # a slice per tensor
        assert tensor.shape <= net.state_dict()[key].shape
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(base(x), net(x), atol=0.0, rtol=0.0)  # identical ops


def test_extract_is_pure():
    net = _trained_like()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    extract_base_subnet(net)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])


def test_mid_width_follows_active_input_width():
    net = _trained_like()
    cfg = net.base_config()
    wide = SubnetConfig(cfg.stem, (21,) + cfg.stage_widths[1:], cfg.final, cfg.expand_ratios)
    net.set_active(wide)
    net(torch.randn(1, 3, 32, 32))
    # block 1 (first MB block, e = 6) gets 21 input channels: mid = round_half_up(6 × 21) = 126
    assert net.blocks[1].expand.conv.active_out == 126


def test_sorting_preserves_the_full_supernet_function():
    net = _trained_like()
    net.set_active(_max_config(net))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        sorted_net = sort_channels(net)
        torch.testing.assert_close(sorted_net(x), net(x), atol=ATOL, rtol=RTOL)
    block = sorted_net.blocks[1]
    importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])  # descending L1 norm
    # output channels and the DS block are never permuted
    assert torch.equal(sorted_net.blocks[0].project.conv.weight, net.blocks[0].project.conv.weight)
    assert torch.equal(sorted_net.first_conv.conv.weight, net.first_conv.conv.weight)


def test_sampling_is_reproducible_and_respects_modes():
    net = _trained_like()
    a = [net.sample_config("random", torch.Generator().manual_seed(3)) for _ in range(1)]
    b = [net.sample_config("random", torch.Generator().manual_seed(3)) for _ in range(1)]
    assert a == b
    gen = torch.Generator().manual_seed(0)
    base = net.base_config()
    for _ in range(20):
        cfg = net.sample_config("min_w", gen)
        assert (cfg.stem, cfg.stage_widths, cfg.final) == (base.stem, base.stage_widths,
                                                           base.final)
    assert phase_mode(0, 155, 75) == "random" and phase_mode(79, 155, 75) == "random"
    assert phase_mode(80, 155, 75) == "min_w" and phase_mode(154, 155, 75) == "min_w"


def test_bn_reestimation_writes_direct_subset_statistics_into_base_slice():
    net = _trained_like()
    batches = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    base = reestimate_base_bn_(net, batches, sync=False)
    # direct computation for the stem BN: biased variance per batch, averaged over batches
    stem = extract_base_subnet(net).first_conv.conv
    c = stem.out_channels
    with torch.no_grad():
        outs = [stem(b) for b in batches]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=False) for o in outs]).mean(0)
    torch.testing.assert_close(net.first_conv.bn.running_mean[:c], mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(net.first_conv.bn.running_var[:c], var, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(base.first_conv.bn.running_var, var, atol=1e-6, rtol=1e-5)
    # augmented channels keep their statistics
    assert torch.equal(net.first_conv.bn.running_var[c:], before["first_conv.bn.running_var"][c:])


def test_checkpoint_round_trip_extracts_base():
    net = _trained_like()
    base, meta = base_model_from_payload(supernet_payload(net, epoch=1, top1=50.0))
    assert meta["kind"] == "netaug-supernet" and not base.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(base(x), net(x), atol=0.0, rtol=0.0)
