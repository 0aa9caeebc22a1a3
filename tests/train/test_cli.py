"""``tinytrain`` end to end: one tiny NetAug run writes every output; bad input is one line;
(slow) ``tinyexport --int8`` of its ``target.pt``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tinyexport.train.cli import main
from tinyexport.train.model_from_checkpoint import model_from_checkpoint

TINY = ["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32", "--epochs", "2",
        "--batch-size", "16", "--limit-train", "64", "--limit-val", "32", "--max-steps", "2",
        "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinytrain")
    torch.set_num_threads(1)
    assert main(TINY + ["--netaug", "--out", str(out)]) == 0
    return out


def test_netaug_run_writes_all_outputs(run_dir):
    for name in ("checkpoint.pt", "best.pt", "target.pt", "config.yaml", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "tensorboard").exists()  # TensorBoard is opt-in (--tensorboard)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(0.0 <= r["val_top1"] <= 100.0 for r in records)
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["kind"] == "netaug-supernet"
    target = torch.load(run_dir / "target.pt", weights_only=True)
    assert target["kind"] == "base"


def test_target_equals_base_of_best(run_dir):
    base, meta = model_from_checkpoint(run_dir / "best.pt")
    target, _ = model_from_checkpoint(run_dir / "target.pt")
    assert meta["kind"] == "netaug-supernet"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(base(x), target(x), atol=0.0, rtol=0.0)


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(TINY + ["--data", "no-such-spec", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown data SPEC" in err[0]
    assert main(TINY + ["--resume", "--out", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(TINY + ["--amp", "fp16", "--device", "cpu", "--out", str(tmp_path)]) == 2


def test_baseline_run(tmp_path):
    assert main(TINY + ["--no-netaug", "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert torch.load(tmp_path / "best.pt", weights_only=True)["kind"] == "base"
    assert (tmp_path / "target.pt").is_file()


@pytest.mark.slow
def test_tinyexport_int8_of_target(tmp_path):
    """A longer tiny run (so the logits are not near-ties), then the real exporter on target.pt."""
    run = tmp_path / "run"
    args = TINY + ["--netaug", "--limit-train", "640", "--max-steps", "40", "--out", str(run)]
    assert main(args) == 0
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "tinyexport.export", "--model", "mbv2-tiny", "--checkpoint",
           str(run / "target.pt"), "--int8", "--resolution", "32", "--calib-data", "digits",
           "--calib-images", "128", "--check-images", "64", "--no-bn-recalibrate",
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_int8.tflite").is_file()


def test_help_of_tinytrain_and_of_the_transfer_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--netaug" in out and "--limit-train" in out and "transfer" in out
    with pytest.raises(SystemExit) as done:
        main(["transfer", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tinytrain transfer")
    for option in ("--from", "--method", "--limit-train", "--limit-val", "--max-steps", "--out"):
        assert option in out, option
    for old in ("--train-count", "--val-count", "--max-steps-per-epoch"):  # hidden aliases
        assert old not in out, old


def test_out_is_required_in_both(capsys):
    with pytest.raises(SystemExit) as done:
        main(TINY)
    assert done.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["transfer", "--model", "mbv2-tiny", "--data", "synthetic:24"])
    assert done.value.code == 2 and "--out" in capsys.readouterr().err


def test_transfer_subcommand_must_come_first(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--model", "mbv2-tiny", "transfer", "--data", "digits", "--out", str(tmp_path)])
    assert done.value.code == 2 and "comes first" in capsys.readouterr().err


def test_transfer_old_spellings_are_hidden_aliases(tmp_path, capsys):
    """`--train-count/--val-count/--max-steps-per-epoch` still work (one release) and warn."""
    from tinyexport.train.tinytl.cli import build_parser

    old = build_parser().parse_args(["--data", "d", "--out", "o", "--train-count", "40",
                                     "--val-count", "16", "--max-steps-per-epoch", "2"])
    new = build_parser().parse_args(["--data", "d", "--out", "o", "--limit-train", "40",
                                     "--limit-val", "16", "--max-steps", "2"])
    for key in ("limit_train", "limit_val", "max_steps_per_epoch"):
        assert getattr(old, key) == getattr(new, key), key
    assert not getattr(new, "renamed_options", [])
    args = ["transfer", "--model", "mbv2-tiny", "--resolution", "32", "--data", "synthetic:24",
            "--method", "ft-last", "--epochs", "1", "--batch-size", "8", "--train-count", "16",
            "--val-count", "8", "--max-steps-per-epoch", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "--train-count is renamed --limit-train" in capsys.readouterr().err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["limit_train"] == 16 and result["config"]["max_steps_per_epoch"] == 1
