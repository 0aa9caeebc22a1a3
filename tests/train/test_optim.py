"""Optimiser helpers: the per-iteration warmup-cosine LR and the no-decay parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from tinyexport.train.models import build_model
from tinyexport.train.optim import param_groups, warmup_cosine


def test_warmup_cosine_starts_at_the_start_factor_and_ends_at_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, peak_lr=0.4, start_factor=1 / 16, warmup_steps=10, total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.025)
    assert lrs[10] == pytest.approx(0.4)
    assert lrs[60] == pytest.approx(0.2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isfinite(v) for v in lrs)


def test_warmup_cosine_rejects_total_not_above_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        warmup_cosine(opt, 0.1, 1.0, warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="start_factor"):
        warmup_cosine(opt, 0.1, 0.0, warmup_steps=10, total_steps=20)


def test_no_weight_decay_on_bn_and_bias():
    groups = param_groups(build_model("mbv2-tiny", 10, 32), 4e-5)
    assert groups[0]["weight_decay"] == 4e-5 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])
