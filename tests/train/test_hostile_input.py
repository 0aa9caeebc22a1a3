"""Issue 11 on the training side: every bad ``checkpoint.pt`` under ``--resume``, failed writes and
bad numbers give one ``error:`` line, a non-zero exit code, no traceback, and delete nothing."""

from __future__ import annotations

import argparse
import errno
import pickle
import shutil

import pytest
import torch

import tinyexport.train.netaug.run as run_module
import tinyexport.train.trainer as trainer_module
from tinyexport.train.cli import main
from tinyexport.train.netaug.recipe import Recipe
from tinyexport.train.trainer import TrainConfig

TINY = ["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32", "--batch-size", "16",
        "--limit-train", "32", "--limit-val", "16", "--max-steps", "1", "--workers", "0",
        "--no-netaug", "--no-progress"]
RESUMABLE = "is not a resumable checkpoint of this run"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-epoch run (its ``checkpoint.pt`` is the good one the cases damage)."""
    out = tmp_path_factory.mktemp("finished")
    torch.set_num_threads(1)
    assert main(TINY + ["--epochs", "1", "--out", str(out)]) == 0
    return out


def _good_state(finished) -> dict:
    return torch.load(finished / "checkpoint.pt", weights_only=True)


def _truncated(finished, path):
    data = (finished / "checkpoint.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _without_optimizer(finished, path):
    state = _good_state(finished)
    del state["optimizer"]
    torch.save(state, path)


def _other_model(finished, path):
    state = _good_state(finished)
    state["model"]["classifier.weight"] = torch.zeros(3, 7)
    torch.save(state, path)


def _nan_weights(finished, path):
    state = _good_state(finished)
    state["model"]["classifier.weight"][0, 0] = float("nan")
    torch.save(state, path)


def _bad_optimizer(finished, path):
    state = _good_state(finished)
    state["optimizer"]["param_groups"] = []
    torch.save(state, path)


BAD_CHECKPOINTS = {
    "empty": (lambda f, p: p.write_bytes(b""), "empty (0 bytes"),
    "not a zip or pickle": (lambda f, p: p.write_text("hello, not a checkpoint\n"),
                            "not a readable PyTorch file"),
    "truncated zip": (_truncated, "not a readable PyTorch file"),
    "truncated pickle": (lambda f, p: p.write_bytes(pickle.dumps({"model": 1})[:9]),
                         "not a readable PyTorch file"),
    "python object": (lambda f, p: torch.save({"x": argparse.Namespace()}, p),
                      "holds a Python object (argparse.Namespace)"),
    "not a dict": (lambda f, p: torch.save([1, 2, 3], p), "holds a list"),
    "no optimizer": (_without_optimizer, "lacks ['optimizer']"),
    "another model": (_other_model, "weights belong to another model"),
    "NaN weights": (_nan_weights, "'classifier.weight' has 1 NaN/Inf value"),
    "bad optimizer state": (_bad_optimizer, "its optimizer state does not fit"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoint_under_resume_is_one_line_and_kept(finished, tmp_path, capsys, case):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    make, reason = BAD_CHECKPOINTS[case]
    make(finished, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    assert main(TINY + ["--epochs", "2", "--resume", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert RESUMABLE in line and reason in line, line
    assert "delete it or start without --resume" in line
    assert "weights_only=False" not in line
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing of the user's touched


def test_good_checkpoint_still_resumes(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    assert main(TINY + ["--epochs", "2", "--resume", "--out", str(out)]) == 0
    assert _good_state(out)["epoch"] == 2


def test_out_naming_an_existing_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert main(TINY + ["--epochs", "1", "--out", str(target)]) == 2
    assert "is an existing file, not a folder" in _one_error_line(capsys)
    assert target.read_text() == "mine\n"


def test_out_under_sys_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    assert main(TINY + ["--epochs", "1", "--out", "/sys/tinyexport-test/run"]) != 0
    line = _one_error_line(capsys)
    assert "/sys/tinyexport-test" in line and "choose another --out" in line


def test_read_only_out_is_one_line(tmp_path, capsys, monkeypatch):
    """A read-only mount, simulated (the tests may run as root, who may write anywhere)."""
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(trainer_module.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "ro")]) != 0
    line = _one_error_line(capsys)
    assert "Read-only file system" in line and "choose another --out" in line


def test_disk_full_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.save's zip writer reports a full disk as "unexpected pos" (a RuntimeError)."""
    def full(obj, path, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 640 vs 538")

    monkeypatch.setattr(torch, "save", full)
    assert main(TINY + ["--epochs", "1", "--out", str(tmp_path / "full")]) != 0
    line = _one_error_line(capsys)
    assert "disk full" in line and "best.pt" in line


@pytest.mark.parametrize("option, value, named", [
    ("--lr", "nan", "lr (--lr)"), ("--lr", "inf", "lr (--lr)"),
    ("--lr", "-0.1", "lr (--lr)"), ("--lr", "0", "lr (--lr)"),
    ("--baseline-lr", "nan", "baseline_lr (--baseline-lr)"),
    ("--warmup-start-factor", "0", "warmup_start_factor (--warmup-start-factor)"),
    ("--warmup-start-factor", "1.5", "warmup_start_factor (--warmup-start-factor)"),
    ("--stop-netaug-epoch", "-1", "stop_netaug_epoch (--stop-netaug-epoch)"),
    ("--sort-channels-every", "0", "sort_channels_every (--sort-channels-every)"),
    ("--epochs", "0", "epochs (--epochs)"), ("--batch-size", "0", "batch_size (--batch-size)"),
    ("--workers", "-1", "workers (--workers)"), ("--threads", "0", "threads (--threads)"),
    ("--seed", "-1", "seed (--seed)"), ("--max-steps", "0", "(--max-steps)"),
    ("--resolution", "100000", "resolution (--resolution) must be in 32..1024"),
    ("--resolution", "8", "resolution (--resolution) must be in 32..1024"),
])
def test_bad_numbers_fail_before_anything_is_built(tmp_path, capsys, monkeypatch, option, value,
                                                   named):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    out = tmp_path / "run"
    assert main(TINY + ["--epochs", "1", option, value, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert named in line and "checkpoint.pt" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("field, value", [
    ("lr", float("nan")), ("weight_decay", -1e-4), ("weight_decay", float("inf")),
    ("label_smoothing", 1.0), ("label_smoothing", float("nan")), ("momentum", 1.5),
    ("dropout", -0.1), ("warmup_epochs", -1), ("bn_images", 0), ("epochs", 2.5),
    ("expand_list", ()), ("width_mult_list", (1.0, float("nan"))),
])
def test_recipe_refuses_bad_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        Recipe(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("max_steps_per_epoch", 0), ("log_every_steps", 0), ("log_every_s", 0.0),
    ("log_every_s", float("nan")), ("seed", -3),
])
def test_train_config_refuses_bad_numbers(tmp_path, field, value):
    values = {"epochs": 1, "out_dir": str(tmp_path), field: value}
    with pytest.raises(ValueError, match=field):
        TrainConfig(**values)


def _must_not_run(*args, **kwargs):
    raise AssertionError("data loaders were built before the input was checked")
