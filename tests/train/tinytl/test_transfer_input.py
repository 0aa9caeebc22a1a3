"""``tinytrain transfer`` against bad input (issue 11) and ``--resolution`` honoured end to end
(issue 12): one ``error:`` line and no traceback, or a ``transfer.pt`` that exports at the asked
size."""

import json

import pytest
import torch

import tinyexport.train.tinytl.transfer as transfer_module
from tinyexport.train.checkpoint_format import make_payload, read_payload, save_checkpoint
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.models import build_model
from tinyexport.train.tinytl.cli import main
from tinyexport.train.tinytl.modules import default_config, insert_lite_residual
from tinyexport.train.tinytl.transfer import TransferConfig


def _args(source, out, *extra):
    return ["--from", str(source), "--method", "tinytl-lb", "--data", "synthetic:24",
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--lr", "1e-2",
            "--max-steps", "1", "--limit-val", "8", "--workers", "0", *extra]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _must_not_run(*args, **kwargs):
    raise AssertionError("data loaders were built before the input was checked")


def test_empty_source_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert main(_args(empty, tmp_path / "out")) == 2
    assert "is empty (0 bytes)" in _one_error_line(capsys)


def test_nan_source_is_refused_naming_the_tensor(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transfer_module, "build_loaders", _must_not_run)
    model = build_model("mbv2-tiny", num_classes=10, resolution=32)
    with torch.no_grad():
        model.first_conv.conv.weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    save_checkpoint(model, path)
    assert main(_args(path, tmp_path / "out")) == 2
    line = _one_error_line(capsys)
    assert "'first_conv.conv.weight' has 1 NaN/Inf value" in line, line
    assert "Tensor-likes" not in line


def test_source_recording_a_huge_resolution_fails_before_allocating(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(transfer_module, "build_model", _must_not_run)
    monkeypatch.setattr(transfer_module, "build_loaders", _must_not_run)
    payload = make_payload(build_model("mbv2-tiny", num_classes=10, resolution=32))
    payload["resolution"] = 100_000
    path = tmp_path / "huge.pt"
    torch.save(payload, path)
    assert main(_args(path, tmp_path / "out")) == 2
    assert "records resolution 100000" in _one_error_line(capsys)


@pytest.mark.parametrize("option, value, named", [
    ("--lr", "nan", "lr (--lr)"), ("--lr", "0", "lr (--lr)"), ("--epochs", "0", "(--epochs)"),
    ("--batch-size", "0", "(--batch-size)"), ("--label-smoothing", "1", "label_smoothing"),
    ("--resolution", "100000", "resolution (--resolution) must be in 32..1024"),
    ("--workers", "-1", "workers (--workers)"), ("--threads", "0", "threads (--threads)"),
    ("--classes", "1,1", "classes (--classes)"),
])
def test_bad_numbers_are_one_line(source, tmp_path, capsys, monkeypatch, option, value, named):
    monkeypatch.setattr(transfer_module, "build_loaders", _must_not_run)
    out = tmp_path / "out"
    assert main(_args(source, out, option, value)) == 2
    assert named in _one_error_line(capsys)
    assert not out.exists()


def test_out_naming_an_existing_file_is_refused(source, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert main(_args(source, target)) == 2
    assert "is an existing file" in _one_error_line(capsys)
    assert target.read_text() == "mine\n"


def _adapter_shapes(state_dict) -> dict:
    return {k: tuple(v.shape) for k, v in state_dict.items() if ".lite." in k or "lite_" in k}


def test_resolution_flag_is_honoured_end_to_end(source, tmp_path):
    """Source trained at 32 px, transfer at 64: base rebuilt at 64, adapters planned for 64,
    transfer.pt and result.json record 64, and the export loader rebuilds it at 64."""
    out = tmp_path / "out"
    assert main(_args(source, out, "--resolution", "64")) == 0
    payload = read_payload(out / "transfer.pt")
    assert payload["resolution"] == 64
    assert json.loads((out / "result.json").read_text())["config"]["resolution"] == 64
    exported, _ = model_from_checkpoint(out / "transfer.pt")
    assert exported.spec.resolution == 64
    planned = {r: _adapter_shapes(insert_lite_residual(
        build_model("mbv2-tiny", 10, r), default_config("mbv2-tiny")).state_dict())
        for r in (32, 64)}
    assert planned[32] != planned[64], "the test needs adapters that depend on the resolution"
    assert planned[64] and _adapter_shapes(payload["state_dict"]) == planned[64]
    src = read_payload(source)["state_dict"]
    assert torch.equal(payload["state_dict"]["first_conv.conv.weight"],
                       src["first_conv.conv.weight"])  # frozen weights carried over unchanged


def test_default_resolution_is_the_sources_and_recorded(source, tmp_path):
    assert main(_args(source, tmp_path)) == 0
    assert read_payload(tmp_path / "transfer.pt")["resolution"] == 32
    assert json.loads((tmp_path / "result.json").read_text())["config"]["resolution"] == 32


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("lr", float("inf")), ("batch_size", -1), ("lite_groups", 0),
    ("limit_train", 0), ("seed", 2**40), ("workers", -2), ("label_smoothing", float("nan")),
])
def test_transfer_config_refuses_bad_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        TransferConfig(data="digits", out_dir="x", model="mbv2-tiny", **{field: value})


def test_at_resolution_keeps_weights_outputs_and_bn_eps():
    model = build_model("mbv2-tiny", num_classes=10, resolution=32).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-3  # as loaded from an MCUNet-zoo file
    rng = torch.get_rng_state()
    resized = transfer_module.at_resolution(model, 64).eval()
    assert torch.equal(torch.get_rng_state(), rng)  # the throwaway init left the RNG alone
    assert resized.spec.resolution == 64 and transfer_module.at_resolution(model, 32) is model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(resized(x), model(x))
