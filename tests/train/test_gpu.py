"""CUDA checks of the training loop (marked ``gpu``; skipped without a CUDA device). Run by
``scripts/gpu_check.sh``: AMP steps stay finite, channels_last gives the contiguous loss, a NetAug
epoch, a TinyTL transfer epoch, NCCL under torchrun, kill-and-resume and ``--compile`` on the GPU,
and the on-device pipeline against the CPU one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinyexport.train import cli
from tinyexport.train.data import Preprocessing
from tinyexport.train.data_readers import synthetic_arrays
from tinyexport.train.device_data import BatchAugment
from tinyexport.train.models import build_model, model_spec
from tinyexport.train.netaug.run import run_training
from tinyexport.train.netaug.supernet import build_supernet
from tinyexport.train.netaug.task import NetAugSchedule, NetAugTask
from tinyexport.train.task import StepContext

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
COMMON = ["--model", "mbv2-tiny", "--resolution", "64", "--batch-size", "32", "--limit-train",
          "256", "--limit-val", "128", "--device", "cuda", "--no-progress"]


def _step(model, amp, channels_last, netaug=False, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(16, 3, 64, 64, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    crit = torch.nn.CrossEntropyLoss()
    if netaug:
        task = NetAugTask(crit, NetAugSchedule(2, 1))
        ctx = StepContext(model, model, x, y, 0, 0, "cuda", amp, None)
        return task.train_step(ctx).loss
    with torch.autocast("cuda", dtype=amp, enabled=amp is not None):
        loss = crit(model(x).float(), y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("netaug", [False, True])
def test_amp_steps_stay_finite(amp, netaug):
    torch.manual_seed(0)
    model = (build_supernet(model_spec("mbv2-tiny", 10, 64)) if netaug
             else build_model("mbv2-tiny", 10, 64)).cuda()
    assert torch.isfinite(_step(model, amp, True, netaug))


@pytest.mark.parametrize("netaug", [False, True])
def test_channels_last_gives_the_contiguous_loss(netaug):
    """Tolerance 1e-3 relative: cuDNN picks other algorithms (and TF32) for the two layouts."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    losses = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = (build_supernet(model_spec("mbv2-tiny", 10, 64)) if netaug
                 else build_model("mbv2-tiny", 10, 64)).cuda()
        losses.append(_step(model, None, channels_last, netaug).item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_device_pipeline_on_cuda_matches_cpu():
    """Same generator draws on both devices; float differences only (grid_sample kernels)."""
    images = torch.from_numpy(synthetic_arrays(32, 28)[0])
    pre = Preprocessing(32)
    cpu = BatchAugment(pre, True, seed=1)(images)
    gpu = BatchAugment(pre, True, seed=1)(images.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("extra", [["--netaug", "--amp", "bf16", "--channels-last"],
                                   ["--no-netaug", "--amp", "fp16"]])
def test_cli_epoch_on_cuda(tmp_path, extra):
    code = cli.main([*COMMON, "--data", "fashion-mnist", "--epochs", "2", "--max-steps", "4",
                     *extra, "--out", str(tmp_path / "o")])
    assert code == 0 and (tmp_path / "o" / "target.pt").is_file()


def test_transfer_epoch_on_cuda(tmp_path):
    assert cli.main([*COMMON, "--data", "fashion-mnist", "--no-netaug", "--epochs", "1",
                     "--max-steps", "2", "--out", str(tmp_path / "src")]) == 0
    code = cli.main(["transfer", "--from", str(tmp_path / "src" / "target.pt"), "--data",
                     "digits", "--epochs", "1", "--max-steps", "2", "--device", "cuda",
                     "--out", str(tmp_path / "tl")])
    assert code == 0


def test_compile_baseline_on_cuda(tmp_path):
    code = cli.main([*COMMON, "--data", "synthetic:128", "--no-netaug", "--compile", "--epochs",
                     "1", "--max-steps", "3", "--out", str(tmp_path / "c")])
    assert code == 0


def test_kill_and_resume_on_cuda(tmp_path, monkeypatch, small_run):
    """With ``deterministic`` a killed and resumed GPU run equals the uninterrupted one bit for
    bit: sampled sub-networks, data order, augmentation and weights. (Without it cuDNN's
    atomics-based kernels differ run to run; on an H200 two uninterrupted runs of this recipe
    already differed by 0.1 in a weight after 4 steps.)"""

    config = {"device": "cuda", "deterministic": True}
    run_training(small_run.recipe(data_pipeline="device"), small_run.config(tmp_path / "a", **config))
    original = NetAugTask.on_epoch_start

    def crash(self, module, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        original(self, module, epoch)

    monkeypatch.setattr(NetAugTask, "on_epoch_start", crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(small_run.recipe(data_pipeline="device"), small_run.config(tmp_path / "b", **config))
    monkeypatch.setattr(NetAugTask, "on_epoch_start", original)
    run_training(small_run.recipe(data_pipeline="device"), small_run.config(tmp_path / "b", resume=True, **config))
    a, b = small_run.state(tmp_path / "a" / "checkpoint.pt"), small_run.state(tmp_path / "b" / "checkpoint.pt")
    assert torch.equal(a["task"]["generator"], b["task"]["generator"])
    assert torch.equal(a["loader"]["generator"], b["loader"]["generator"])
    for key, value in a["model"].items():
        if value.is_floating_point():
            assert torch.equal(value, b["model"][key]), key


def test_nccl_under_torchrun(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m",
         "tinyexport.train", *COMMON, "--data", "fashion-mnist", "--epochs", "1", "--max-steps",
         "3", "--out", str(tmp_path / "ddp")], capture_output=True, text=True, env=env,
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (Path(tmp_path) / "ddp" / "best.pt").is_file()
