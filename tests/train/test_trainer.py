"""The Trainer: exact kill-and-resume on CPU, the NaN guard, one epoch of a plain task."""

from __future__ import annotations

import json

import pytest
import torch

from tinyexport.errors import StageError
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.task import NetAugTask
from tinyexport.train.task import StepResult, TrainTask
from tinyexport.train.trainer import TrainConfig, Trainer


def test_kill_and_resume_is_bit_identical(tmp_path, monkeypatch, small_run):
    straight = tmp_path / "straight"
    run_training(small_run.recipe(), small_run.config(straight))

    crashed = tmp_path / "crashed"
    small_run.killed_then_resumed(small_run.recipe(), crashed, monkeypatch)

    a, b = small_run.state(straight / "checkpoint.pt"), small_run.state(crashed / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["task"]["generator"], b["task"]["generator"])
    lines = [json.loads(x) for x in (crashed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    for name in ("best.pt", "target.pt", "config.yaml"):
        assert (crashed / name).is_file()


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, monkeypatch, small_run):
    out = tmp_path / "nan"
    original = NetAugTask.train_step

    def nan_in_epoch_1(self, ctx):
        result = original(self, ctx)
        if ctx.epoch == 1:
            return StepResult(torch.tensor(float("nan")), None)
        return result

    monkeypatch.setattr(NetAugTask, "train_step", nan_in_epoch_1)
    with pytest.raises(StageError, match="loss became nan at epoch 1 step 2"):
        run_training(small_run.recipe(), small_run.config(out))
    assert small_run.state(out / "checkpoint.pt")["epoch"] == 1  # the last good checkpoint is kept


class _PlainTask(TrainTask):
    def export_payload(self, module, meta):  # a bare Sequential has no zoo spec
        return {"state_dict": module.state_dict(), **meta}


def test_plain_task_epoch_counts_steps_and_writes_outputs(tmp_path, small_run):
    """A linear classifier on 3 batches of 4: 3 steps per epoch, best.pt from the evaluate_fn."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    loader = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(3)]
    task = _PlainTask(torch.nn.CrossEntropyLoss(), lambda module, epoch: {"top1": 10.0 * epoch})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = TrainConfig(epochs=2, out_dir=str(tmp_path), progress=False, tensorboard=False)
    trainer = Trainer(model, task, loader, optimizer, None, config)
    metrics = trainer.train_one_epoch(0)
    assert metrics["steps"] == 3 and trainer.progress.step == 3
    result = Trainer(model, task, loader, optimizer, None, config).fit()
    assert (result.epochs_run, result.best_top1, result.best_epoch) == (2, 10.0, 1)
    assert result.last_metrics["steps"] == 6 and result.last_metrics["val_top1"] == 10.0
    assert small_run.state(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()


def test_deterministic_fit_sets_the_flags_only_while_it_runs(tmp_path):
    """``deterministic``: deterministic kernels (warn-only) and no cuDNN autotuning during ``fit``;
    the process-wide flags are restored afterwards, also when the run stops with an error."""
    seen = []

    def evaluate(module, epoch):
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled(),
                     torch.backends.cudnn.deterministic))
        if epoch == 1:
            raise KeyboardInterrupt
        return {"top1": 1.0}

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    loader = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,)))]
    config = TrainConfig(epochs=2, out_dir=str(tmp_path), progress=False, tensorboard=False,
                         deterministic=True)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    trainer = Trainer(model, _PlainTask(torch.nn.CrossEntropyLoss(), evaluate), loader,
                      torch.optim.SGD(model.parameters(), lr=0.1), None, config)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert seen == [(True, True, True)] * 2
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) \
        == before == (False, False)
