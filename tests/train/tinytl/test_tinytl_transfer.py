"""``tinytrain transfer`` on CPU for all six methods; frozen parts bit-identical; checkpoints."""

import json

import pytest
import torch

from tinyexport.train.checkpoint_format import read_payload
from tinyexport.train.model_from_checkpoint import model_from_checkpoint
from tinyexport.train.tinytl.cli import main
from tinyexport.train.tinytl.methods import METHODS
from tinyexport.train.tinytl.transfer_checkpoint import build_from_payload, model_from_payload


def _run(source, out, method, *extra):
    return main(["--from", str(source), "--method", method, "--data", "synthetic:24",
                 "--out", str(out), "--epochs", "1", "--batch-size", "8", "--lr", "1e-2",
                 "--max-steps", "2", "--limit-val", "16", *extra])


# Two methods in the default suite (CPU budget); all six under -m slow.
_FAST = ("ft-last", "tinytl-lb")


@pytest.mark.parametrize("method", [m if m in _FAST else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
def test_transfer_all_methods_keep_frozen_bit_identical(source, tmp_path, method, capsys):
    assert _run(source, tmp_path, method) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["frozen_unchanged"] is True and result["method"] == method
    before = build_from_payload(read_payload(tmp_path / "transfer.pt"))
    src = read_payload(source)["state_dict"]
    after = before.state_dict()
    trained = {n for n, p in before.named_parameters() if p.requires_grad}
    # every frozen backbone tensor of the source equals the transferred one, bit for bit
    frozen_keys = [k for k in src if not k.startswith("classifier")]
    moved = []
    for k in frozen_keys:
        ours = k.replace("blocks.", "blocks.", 1)
        block_key = _adapted_key(ours, after)
        if block_key in trained or not _is_frozen(block_key, method):
            continue
        if not torch.equal(after[block_key], src[k]):
            moved.append(block_key)
    assert moved == []
    if method != "ft-full":
        changed = [n for n in trained if not n.startswith("classifier")]
        assert method == "ft-last" or changed


def _adapted_key(key, adapted_sd):
    if key in adapted_sd:
        return key
    head, idx, rest = key.split(".", 2)
    return f"{head}.{idx}.block.{rest}"


def _is_frozen(key, method):
    if method == "ft-full":
        return False
    if method in ("ft-norm-last",) and ".bn." in key:
        return False
    if method in ("tinytl-b", "tinytl-lb") and key.endswith("bias"):
        return False
    return True


def test_tinytl_checkpoint_roundtrip_and_export_handler(source, tmp_path, capsys):
    assert _run(source, tmp_path, "tinytl-lb", "--ws") == 0
    model, meta = model_from_checkpoint(tmp_path / "transfer.pt")
    assert meta["kind"] == "tinytl" and meta["ws_folded"] and meta["method"] == "tinytl-lb"
    assert not any(type(m).__name__ == "WSConv2d" for m in model.modules())
    ref = build_from_payload(read_payload(tmp_path / "transfer.pt")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_group_norm_checkpoint_refused_for_export(source, tmp_path, capsys):
    assert _run(source, tmp_path, "tinytl-b", "--norm", "gn", "--frozen-bits", "8") == 0
    payload = read_payload(tmp_path / "transfer.pt")
    with pytest.raises(Exception, match="GroupNorm"):
        model_from_payload(payload)
    gn = build_from_payload(payload)
    frozen_conv = gn.first_conv.conv.weight
    assert len(torch.unique(frozen_conv)) <= 256


def test_bad_method_is_one_line_error(source, tmp_path, capsys):
    assert _run(source, tmp_path, "tinytl-q") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown transfer method") and "Traceback" not in err
