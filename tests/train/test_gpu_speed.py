"""GPU-speed choices checked on the CPU (issue 14): NetAug keeps channels_last through every layer
(pointwise weights sliced in the input's memory format, depthwise convs computed NCHW and handed on
channels_last), with the contiguous model's numbers, cuDNN autotuning only in the bounded-shape phase,
``--compile`` refused for NetAug with the reason, and the baseline's BN-statistics lag after a
short high-LR epoch (``--reestimate-bn``)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train import cli
from tinyexport.train.bn_recalibration import reestimate_bn
from tinyexport.train.evaluate import evaluate_top1
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import model_spec
from tinyexport.train.netaug import layers
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.netaug.run import bn_batches, build_loaders, run_training
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, Trainer


def _conv_weights(monkeypatch) -> list[torch.Tensor]:
    seen = []
    real = layers.F.conv2d

    def spy(x, weight, *args):
        seen.append((x, weight, args[-1]))  # args[-1]: groups
        return real(x, weight, *args)

    monkeypatch.setattr(layers.F, "conv2d", spy)
    return seen


@pytest.mark.parametrize("mode", ["min", "random", "min_w"])
def test_netaug_stays_channels_last_through_every_conv(monkeypatch, mode):
    torch.manual_seed(0)
    net = build_supernet(model_spec("mbv2-tiny", 10, 32)).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    outputs = []
    for m in net.modules():
        if isinstance(m, (layers.DynamicConv2d, layers.DynamicBatchNorm2d, layers.DynamicConvBN)):
            m.register_forward_hook(lambda _m, _i, o: outputs.append(o))
    seen = _conv_weights(monkeypatch)
    net.set_mode(mode, torch.Generator().manual_seed(1))
    net(x).sum().backward()
    assert seen and outputs
    assert any(groups > 1 for _, _, groups in seen) and any(groups == 1 for _, _, groups in seen)
    for inp, weight, groups in seen:
        layout = torch.contiguous_format if groups > 1 else torch.channels_last
        assert inp.is_contiguous(memory_format=layout) and weight.is_contiguous(memory_format=layout)
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in outputs)


@pytest.mark.parametrize("mode", ["min", "random"])
def test_channels_last_supernet_computes_what_the_contiguous_one_does(mode):
    """Loss and every gradient equal within float32 rounding, layout changes included. BN in
    eval mode: batch statistics of 4 images at 1×1 px (the last stages at 32 px) are so
    ill-conditioned that float rounding alone moves the gradients by percents, in either layout."""
    torch.manual_seed(0)
    net = build_supernet(model_spec("mbv2-tiny", 10, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        net.to(memory_format=layout).zero_grad()
        net.set_mode(mode, torch.Generator().manual_seed(1))
        loss = net(x.contiguous(memory_format=layout)).square().mean()
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_plain_input_keeps_plain_weights(monkeypatch):
    """NCHW activations (no --channels-last) get NCHW weights, as before: no layout change."""
    torch.manual_seed(0)
    net = build_supernet(model_spec("mbv2-tiny", 10, 32))
    seen = _conv_weights(monkeypatch)
    net(torch.randn(2, 3, 32, 32))
    assert all(w.is_contiguous() for _, w, _ in seen)


def test_cudnn_autotuning_only_in_the_expand_only_phase():
    task = NetAugTask(torch.nn.CrossEntropyLoss(), NetAugSchedule(epochs=4, stop_aug_w_epoch=2))
    assert [task.cudnn_benchmark(e) for e in range(4)] == [False, False, True, True]
    assert TrainTask(torch.nn.CrossEntropyLoss()).cudnn_benchmark(0) is True


def test_compile_is_refused_for_netaug_with_the_reason(tmp_path, capsys):
    code = cli.main(["--model", "mbv2-tiny", "--data", "digits", "--netaug", "--compile",
                     "--out", str(tmp_path / "o")])
    assert code != 0
    err = capsys.readouterr().err
    assert "--compile" in err and "recompiles" in err and "--no-netaug" in err
    net = build_supernet(model_spec("mbv2-tiny", 10, 32))
    with pytest.raises(UserError, match="cannot pay off"):
        Trainer(net, NetAugTask(torch.nn.CrossEntropyLoss(), NetAugSchedule(2, 1)), [], torch.optim.SGD(
            net.parameters(), lr=0.1), None, TrainConfig(1, str(tmp_path / "t"), compile=True))


@pytest.mark.skipif(not os.environ.get("TINYEXPORT_TEST_COMPILE"),
                    reason="torch.compile of mbv2-tiny takes ~2-4 min on the 2 shared CPU cores "
                           "(inductor C++ codegen); set TINYEXPORT_TEST_COMPILE=1 to run it here; "
                           "tests/train/test_gpu.py runs it on CUDA")
def test_compile_runs_one_baseline_step(tmp_path):
    code = cli.main(["--model", "mbv2-tiny", "--data", "synthetic:64", "--no-netaug",
                     "--compile", "--epochs", "1", "--max-steps", "1", "--batch-size", "16",
                     "--resolution", "32", "--limit-val", "16", "--device", "cpu",
                     "--threads", "1", "--no-progress", "--out", str(tmp_path / "c")])
    assert code == 0


def test_reestimate_bn_reports_both_top1s_and_best_pt_holds_the_evaluated_statistics(tmp_path):
    """``--reestimate-bn`` for the baseline (issue 14): the epoch's record holds the top-1 with the
    EMA running statistics and the top-1 after re-estimating them on train images (as NetAug
    always does, docs/netaug.md §1.7); best.pt carries the re-estimated statistics, so evaluating
    it gives the reported top-1 and re-estimating again changes nothing.

    The finding behind the option is a measurement, not asserted here: after one short high-LR
    epoch the EMA (momentum 0.1) trails weights that moved fast. On a 2-core AVX2 CPU (mbv2-tiny,
    Fashion-MNIST subset, 32 px) re-estimating raised the top-1 from 20.5 to 27.6 % at LR 0.4 and
    from 30.7 to 45.0 % at LR 0.05; at this test's LR 1.6 one epoch is chaotic enough that the gap
    changes sign with the CPU's float kernels (+3 points with AVX2, -1.8 with
    ATEN_CPU_CAPABILITY=default), so a fixed gap would test the machine, not the code."""
    recipe = Recipe(model="mbv2-tiny", data="fashion-mnist", resolution=32, epochs=1,
                    warmup_epochs=0, batch_size=64, lr=1.6, netaug=False, reestimate_bn=True,
                    limit_train=1536, limit_val=512, bn_images=512, workers=0)
    result = run_training(recipe, TrainConfig(1, str(tmp_path), progress=False))
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["val_top1"] == result.best_top1
    assert 0 <= record["val_top1_running_stats"] <= 100

    model, _ = model_from_checkpoint(tmp_path / "best.pt")
    _, val_loader, train_set = build_loaders(recipe, 32)
    assert evaluate_top1(model, val_loader, "cpu")["top1"] == pytest.approx(record["val_top1"])
    stats = {k: v.clone() for k, v in model.named_buffers()
             if k.endswith(("running_mean", "running_var"))}
    again = reestimate_bn(model, bn_batches(train_set, recipe))
    for name, buffer in again.named_buffers():
        if name in stats:
            torch.testing.assert_close(buffer, stats[name], rtol=1e-4, atol=1e-5)
