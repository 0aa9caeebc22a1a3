"""Issue 12 on the training side: progress lines where there is no terminal, CPU threads and
workers that do not fight, and no TensorFlow in a ``tinytrain`` process."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from tinyexport.train import metrics
from tinyexport.train.metrics import EpochMeter, ProgressReport
from tinyexport.train.resources import CpuPlan, plan_cpu, usable_cores
from tinyexport.train.task import TrainTask
from tinyexport.train.trainer import TrainConfig, Trainer


class _PlainTask(TrainTask):
    def export_payload(self, module, meta):  # a bare Sequential has no zoo spec
        return {"state_dict": module.state_dict(), **meta}


def _fit(tmp_path, **config):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    loader = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(5)]
    task = _PlainTask(torch.nn.CrossEntropyLoss(), lambda module, epoch: {"top1": 1.0})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop = TrainConfig(epochs=2, out_dir=str(tmp_path), **config)
    Trainer(model, task, loader, optimizer, None, loop).fit()


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == metrics.__name__ and " step " in r.getMessage()]


def test_progress_lines_every_n_steps_without_a_terminal(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(metrics.sys, "stderr", io.StringIO())  # not a TTY
    caplog.set_level(logging.INFO)
    _fit(tmp_path, log_every_steps=2, log_every_s=3600.0)
    lines = _progress_lines(caplog)
    assert [line.split(":")[0] for line in lines] == [
        "epoch 0 step 2/5", "epoch 0 step 4/5", "epoch 1 step 2/5", "epoch 1 step 4/5"]
    assert all("loss " in line and "images/s" in line and "lr " in line for line in lines)


def test_progress_lines_every_t_seconds_whichever_first(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(metrics.sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO)
    _fit(tmp_path, log_every_steps=50, log_every_s=1e-9)
    assert len(_progress_lines(caplog)) == 10  # every step: the time limit comes first


def test_no_progress_means_no_lines(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(metrics.sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO)
    _fit(tmp_path, progress=False, log_every_steps=1)
    assert _progress_lines(caplog) == []


def test_a_terminal_gets_the_bar_not_lines(caplog):
    caplog.set_level(logging.INFO)
    report = ProgressReport(3, 0, True, every_steps=1, tty=True)
    meter = EpochMeter()
    meter.update(torch.tensor(1.0), None, torch.zeros(2, dtype=torch.long))
    report.update(meter, 0.1)
    assert report.bar is not None and report.bar.n == 1
    report.close()
    assert _progress_lines(caplog) == []


@pytest.mark.parametrize("kw, expected", [
    # in-memory data on a 2-core machine: no worker, one thread (one core left for the rest:
    # on this busy machine 2 threads ran 7x slower than 1)
    (dict(data="digits", cores=2), (0, 1)),
    (dict(data="fashion-mnist", cores=1), (0, 1)),
    # ImageFolder: min(4, cores // 2) workers, the rest less one for torch
    (dict(data="./images", cores=16), (4, 11)),
    (dict(data="./images", cores=2), (1, 1)),
    # explicit values win; OMP_NUM_THREADS leaves torch alone; CUDA keeps 4 workers
    (dict(data="digits", cores=2, workers=8), (8, 1)),
    (dict(data="digits", cores=16, threads=3), (0, 3)),
    (dict(data="digits", cores=2, env={"OMP_NUM_THREADS": "1"}), (0, None)),
    (dict(data="digits", cores=8, device="cuda"), (4, None)),
])
def test_cpu_plan(kw, expected):
    args = {"device": "cpu", "workers": None, "threads": None, "env": {}, **kw}
    plan = plan_cpu(**args)
    assert isinstance(plan, CpuPlan) and (plan.workers, plan.threads) == expected, plan


@pytest.mark.parametrize("flag", ["workers", "threads"])
def test_absurd_threads_or_workers_are_refused_before_any_is_started(flag):
    assert plan_cpu("digits", "cpu", **{"workers": None, "threads": None, flag: 8}, env={},
                    cores=2)
    with pytest.raises(ValueError, match=rf"{flag} \(--{flag}\) is 1,000,000, above 8 \(4 per "
                                         r"usable core of 2, at least 8\)"):
        plan_cpu("digits", "cpu", **{"workers": None, "threads": None, flag: 10 ** 6}, env={},
                 cores=2)
    assert plan_cpu("digits", "cpu", None, 64, {}, cores=16).threads == 64


def test_cores_are_shared_between_local_ranks():
    assert usable_cores({"LOCAL_WORLD_SIZE": "2"}) == max(usable_cores({}) // 2, 1)


SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from tinyexport.train.cli import main
    torch.set_num_threads(1)
    rc = main(["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32", "--epochs", "1",
               "--batch-size", "16", "--limit-train", "32", "--limit-val", "16", "--max-steps",
               "1", "--workers", "0", "--out", sys.argv[1]])
    assert rc == 0, rc
    print("TF" if "tensorflow" in sys.modules else "NO-TF")
""")


def test_tinytrain_does_not_import_tensorflow(tmp_path):
    """A fresh process (other tests' imports must not interfere) runs a tiny default tinytrain."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "NO-TF"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()
