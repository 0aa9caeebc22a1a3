"""reestimate_bn against a direct computation of docs/netaug.md §1.7."""

import torch
from torch import nn

from tinyexport.train.bn_recalibration import reestimate_bn


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 1, bias=False), nn.BatchNorm2d(5)).eval()


def test_matches_direct_computation_and_is_pure():
    model = _net()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(6, 3, 8, 8) * 2 + 1, torch.randn(2, 3, 8, 8)]
    new = reestimate_bn(model, batches)
    # direct: first BN sees conv outputs; mean/biased var per batch, weighted by batch size
    convs = [model[0](b) for b in batches]
    means = [c.mean((0, 2, 3)) for c in convs]
    vars_ = [c.var((0, 2, 3), unbiased=False) for c in convs]
    expect_mean = (means[0] * 6 + means[1] * 2) / 8
    expect_var = (vars_[0] * 6 + vars_[1] * 2) / 8
    torch.testing.assert_close(new[1].running_mean, expect_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new[1].running_var, expect_var, atol=1e-5, rtol=1e-5)
    # second BN sees the batch-normalised (train-style) first layer
    second = []
    for b, m, v in zip(batches, means, vars_, strict=True):
        x = (model[0](b) - m[None, :, None, None]) / torch.sqrt(v[None, :, None, None] + 1e-5)
        x = x * model[1].weight[None, :, None, None] + model[1].bias[None, :, None, None]
        second.append(model[3](torch.relu(x)))
    expect2 = (second[0].mean((0, 2, 3)) * 6 + second[1].mean((0, 2, 3)) * 2) / 8
    torch.testing.assert_close(new[4].running_mean, expect2, atol=1e-5, rtol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} of the input model changed"
    assert not new.training
    assert "forward" not in vars(new[1])  # the recording forward is removed


def test_empty_batches_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="at least one batch"):
        reestimate_bn(_net(), [])
