"""The training engine: exact kill-and-resume on CPU, the NaN guard, the LR schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tinyexport.errors import StageError
from tinyexport.train import engine
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.task import NetAugTask


def _recipe(**kw) -> Recipe:
    values = dict(model="mbv2-tiny", data="digits", resolution=32, epochs=3, warmup_epochs=1,
                  batch_size=16, base_lr=0.05, stop_aug_w_epoch=1, bn_images=32, workers=0,
                  limit_train=64, limit_val=32, max_steps_per_epoch=2)
    values.update(kw)
    return Recipe(**values)


def _config(out, **kw) -> engine.TrainConfig:
    return engine.TrainConfig(epochs=3, out_dir=str(out), progress=False, tensorboard=False,
                              max_steps_per_epoch=2, **kw)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_kill_and_resume_is_bit_identical(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run_training(_recipe(), _config(straight))

    crashed = tmp_path / "crashed"
    original = NetAugTask.on_epoch_start

    def crash_at_epoch_2(self, module, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        original(self, module, epoch)

    monkeypatch.setattr(NetAugTask, "on_epoch_start", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(_recipe(), _config(crashed))
    assert _state(crashed / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(NetAugTask, "on_epoch_start", original)
    run_training(_recipe(), _config(crashed, resume=True))

    a, b = _state(straight / "checkpoint.pt"), _state(crashed / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["task"]["generator"], b["task"]["generator"])
    lines = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    for name in ("best.pt", "target.pt", "config.yaml"):
        assert (crashed / name).is_file()


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "nan"
    original = NetAugTask.train_step

    def nan_in_epoch_1(self, ctx):
        result = original(self, ctx)
        if ctx.epoch == 1:
            return engine.StepResult(torch.tensor(float("nan")), None)
        return result

    monkeypatch.setattr(NetAugTask, "train_step", nan_in_epoch_1)
    with pytest.raises(StageError, match="loss became nan at epoch 1 step 2"):
        run_training(_recipe(), _config(out))
    assert _state(out / "checkpoint.pt")["epoch"] == 1  # the last good checkpoint is kept


def test_warmup_cosine_starts_at_unscaled_lr_and_ends_at_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = engine.warmup_cosine(opt, base_lr=0.025, peak_lr=0.4, warmup_steps=10,
                                 total_steps=110)
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


def test_no_weight_decay_on_bn_and_bias():
    from tinyexport.train.models import build_model

    groups = engine.param_groups(build_model("mbv2-tiny", 10, 32), 4e-5)
    assert groups[0]["weight_decay"] == 4e-5 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim == 1 for p in groups[1]["params"])
