"""NetAug's learning-rate regime on any world size (docs/netaug.md §4), its phase / sort schedule
fields, and evaluation that leaves the training RNG alone."""

from __future__ import annotations

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train.models import model_spec
from tinyexport.train.netaug.recipe import Recipe, resolve_recipe
from tinyexport.train.netaug.run import build_optimizer, netaug_schedule
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.surgery import extract_base_subnet
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask, phase_mode
from tinyexport.train.task import StepContext, TrainTask


def _supernet():
    torch.manual_seed(0)
    return build_supernet(model_spec("mbv2-tiny", 10, 32))


def test_fashion_mnist_netaug_recipe_starts_at_the_warmup_not_the_peak_on_one_process():
    recipe = resolve_recipe(None, {"model": "mbv2-tiny", "data": "fashion-mnist"})
    assert recipe.netaug and recipe.warmup_epochs >= 1
    peak = recipe.lr * recipe.batch_size / 256  # world size 1
    assert recipe.peak_lr(1) == pytest.approx(peak)
    optimizer, scheduler = build_optimizer(_supernet(), recipe, steps_per_epoch=10)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(peak * recipe.warmup_start_factor)
    assert recipe.warmup_start_factor < 0.5  # a real ramp, not peak -> peak
    for _ in range(10 * recipe.warmup_epochs):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(peak)


def test_lr_is_per_256_images_of_the_global_batch():
    recipe = Recipe(lr=0.05, batch_size=128)
    assert recipe.peak_lr(16) == pytest.approx(0.4)  # the reference's 16 x 128 run
    assert recipe.peak_lr(1) == pytest.approx(0.025)
    assert Recipe(lr=0.05, batch_size=64).peak_lr(1) == pytest.approx(0.0125)


def test_the_baseline_keeps_its_own_lr():
    assert Recipe(lr=0.05, baseline_lr=0.2, netaug=False).lr_per_256() == 0.2
    assert Recipe(lr=0.05, baseline_lr=0.2, netaug=True).lr_per_256() == 0.05
    assert Recipe(lr=0.05, netaug=False).lr_per_256() == 0.05


def test_every_shipped_recipe_names_a_per_256_lr_and_a_ramp():
    from tinyexport.train.netaug.recipe import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        recipe = resolve_recipe(str(path), {})
        assert 0 < recipe.warmup_start_factor < 1, path.name
        assert recipe.lr == pytest.approx(0.05), path.name  # the reference's per-image LR


def test_a_recipe_with_the_old_base_lr_key_says_what_replaced_it(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("base_lr: 0.025\n")
    with pytest.raises(UserError, match="replaced by 'lr'.*per 256 images"):
        resolve_recipe(str(path), {})


def test_stop_netaug_epoch_switches_the_augmented_pass_off_for_the_last_epochs():
    assert [phase_mode(e, 6, 3, 1) for e in range(6)] == ["random"] * 3 + ["min_w"] * 2 + ["off"]
    assert phase_mode(154, 155, 75) == "min_w"  # reference default 0: never off
    with pytest.raises(ValueError, match="stop_netaug_epoch"):
        Recipe(epochs=3, stop_netaug_epoch=3)


def test_sort_schedule_sorts_every_nth_width_phase_epoch():
    every_2 = NetAugSchedule(epochs=8, stop_aug_w_epoch=3, sort_channels_every=2)
    assert [every_2.sorts_at(e) for e in range(8)] == [True, False, True, False, True] + [False] * 3
    reference = netaug_schedule(Recipe(epochs=4, stop_aug_w_epoch=2))
    assert [reference.sorts_at(e) for e in range(4)] == [True, True, False, False]
    assert not NetAugSchedule(4, 2, sort_channels=False).sorts_at(0)


def test_a_stopped_netaug_step_runs_the_base_alone():
    net = _supernet()
    task = NetAugTask(torch.nn.CrossEntropyLoss(), NetAugSchedule(2, 1, stop_netaug_epoch=1))
    task.on_epoch_start(net, 1)
    assert task.mode == "off"
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    result = task.train_step(StepContext(net, net, x, y, 1, 0, "cpu", None, None))
    assert len(calls) == 1 and task.last_config is None and torch.isfinite(result.loss)


def test_evaluation_and_base_extraction_leave_the_training_rng_alone():
    net = _supernet()
    before = torch.get_rng_state()
    extract_base_subnet(net)
    assert torch.equal(torch.get_rng_state(), before)

    def evaluate(module, epoch):
        torch.randn(100)  # e.g. a DataLoader drawing its base seed, or a module init
        return {"top1": 1.0}

    assert TrainTask(torch.nn.CrossEntropyLoss(), evaluate).evaluate(net, 0) == {"top1": 1.0}
    assert torch.equal(torch.get_rng_state(), before)
