"""Training tests run torch single-threaded: on a busy 2-core machine torch's thread pool
busy-waits and a step gets 10x slower."""

from types import SimpleNamespace

import pytest
import torch

from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.task import NetAugTask
from tinyexport.train.trainer import TrainConfig


@pytest.fixture
def one_error_line(capsys):
    """Reads stderr: exactly one ``error:`` line and no traceback; returns that line."""
    def read() -> str:
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    return read


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recipe(**kw) -> Recipe:
    values = dict(model="mbv2-tiny", data="digits", resolution=32, epochs=3, warmup_epochs=1,
                  batch_size=16, lr=0.05, stop_aug_w_epoch=1, bn_images=32, workers=0,
                  limit_train=64, limit_val=32, max_steps_per_epoch=2)
    values.update(kw)
    return Recipe(**values)


def _config(out, **kw) -> TrainConfig:
    return TrainConfig(epochs=3, out_dir=str(out), progress=False, tensorboard=False,
                       max_steps_per_epoch=2, **kw)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _killed_then_resumed(recipe: Recipe, out, monkeypatch) -> None:
    """Run ``recipe`` into ``out``, killed (KeyboardInterrupt) at the start of epoch 2, then
    resumed to the end: the path a SIGKILL and ``--resume`` take."""
    original = NetAugTask.on_epoch_start

    def crash_at_epoch_2(self, module, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill")
        original(self, module, epoch)

    monkeypatch.setattr(NetAugTask, "on_epoch_start", crash_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_training(recipe, _config(out))
    assert _state(out / "checkpoint.pt")["epoch"] == 2
    monkeypatch.setattr(NetAugTask, "on_epoch_start", original)
    run_training(recipe, _config(out, resume=True))


@pytest.fixture()
def small_run():
    """A tiny NetAug run's recipe / loop config builders, a checkpoint reader and the
    kill-and-resume path (CPU, seconds)."""
    return SimpleNamespace(recipe=_recipe, config=_config, state=_state,
                           killed_then_resumed=_killed_then_resumed)
