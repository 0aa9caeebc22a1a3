"""Issue 23 on the export / report side: one fast test per class of hostile input. Every fixture is
built here in ``tmp_path`` (a sparse file, a FIFO, a patched zip directory, an edited flatbuffer);
each case ends in one ``error:`` line naming the value, why and what to do, a non-zero exit, and
nothing of the user's lost."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tinyexport import atomic, errors
from tinyexport.benchmarks.report_cli import main as tinyreport
from tinyexport.benchmarks.robustness_round3 import (
    HOSTILE,
    MODEL,
    declare_member_sizes,
    hostile_tflite,
    zero_plan,
)
from tinyexport.errors import printable, run_cli
from tinyexport.export.cli import _numerics_lines
from tinyexport.export.cli import main as tinyexport
from tinyexport.export.config import ExportConfig
from tinyexport.export.convert import subprocess_env
from tinyexport.export.pipeline import check_user_paths
from tinyexport.firmware_eval.bundle import labels_header
from tinyexport.quantize.int8_checks import db_text
from tinyexport.quantize.layer_report import LayerError, render_layer_table
from tinyexport.safe_io import check_labels

SMALL = ["--model", "mcunet-in0", "--resolution", "32", "--num-classes", "10", "--no-firmware"]


@pytest.fixture
def one_error_line(capsys):
    """Reads stdout + stderr: exactly one ``error:`` line, no traceback, no control character
    anywhere; returns that line."""
    def read() -> str:
        out = capsys.readouterr()
        text = out.out + out.err
        lines = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in text, text
        assert not any(c in text for c in "\x1b\x07"), text
        return lines[0]

    return read


# --- 1. unbounded resources ------------------------------------------------------------------


@pytest.mark.parametrize("kind, reason", [
    ("declared", "unpacks to 3.91 GiB, above the limit"),
    ("entries", "holds 17 arrays, above the limit of 16"),
    ("shape", "declares shape (1000000, 1000000)"),
    ("sparse", "above the limit of 256 MiB"),
])
def test_npz_bombs_are_refused_before_allocation(within, tmp_path, one_error_line, kind, reason):
    path = tmp_path / "bomb.npz"
    if kind == "declared":
        np.savez(path, images=np.zeros((1, 16, 16, 3), np.float32))
        declare_member_sizes(path, 0xFA000000)
    elif kind == "entries":
        np.savez(path, **{f"a{i}": np.zeros(1) for i in range(17)})
    elif kind == "shape":
        header = np.lib.format
        with open(path, "wb") as f:
            header.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                              "shape": (10 ** 6, 10 ** 6)})
            f.write(b"\0" * 64)
    else:
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04")
            f.truncate(20 * 2 ** 30)  # sparse: no disk used
    with within(10):
        assert tinyreport([str(MODEL), "--measure", "--images", str(path)]) == 2
    assert reason in one_error_line()


def test_sparse_tflite_is_refused_before_reading(within, tmp_path, one_error_line):
    path = tmp_path / "huge.tflite"
    with open(path, "wb") as f:
        f.write(b"\0\0\0\0TFL3")
        f.truncate(20 * 2 ** 30)
    with within(10):
        assert tinyreport([str(path)]) == 2
    assert "TFLite model" in (line := one_error_line()) and "above the limit of 256 MiB" in line


def test_yaml_alias_bomb_board_file_is_refused(within, tmp_path, one_error_line):
    bomb = tmp_path / "board.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}] " for i in range(8)]
    bomb.write_text("\n".join(lines) + "\nname: evil\nsram: 1\nflash: 1\n")
    with within(10):
        assert tinyreport(["--model", "mcunet-in0", "--board", str(bomb)]) == 2
    assert "board file" in (line := one_error_line()) and "anchor/alias" in line


@pytest.mark.parametrize("args, reason", [
    (["--calib-data", "synthetic:1000000000000"], "synthetic:N needs N in 1..100000"),
    (["--calib-images", str(10 ** 12)], "--calib-images must be in 1..100000"),
    (["--eval-images", "-1"], "--eval-images must be in 1..100000"),
    (["--calib-data", "digits:/etc"], "digits is scikit-learn's built-in set and takes no :DIR"),
])
def test_huge_data_requests_are_refused(tmp_path, one_error_line, args, reason):
    assert tinyexport(SMALL + ["--out", str(tmp_path / "o"), *args]) == 2
    assert reason in one_error_line()
    assert not (tmp_path / "o").exists()


def test_an_export_under_a_3gb_address_space_limit_says_so_before_work(tmp_path):
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3_000_000 * 1024,) * 2)

    done = subprocess.run([sys.executable, "-m", "tinyexport.export", *SMALL, "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert "ulimit -v 3000000" in errors[0] and "raise it" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_memory_error_is_one_line(one_error_line):
    def body() -> int:
        raise MemoryError

    assert run_cli(body) == 1
    assert "out of memory" in one_error_line()


# --- 2. special files ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev", "folder"])
def test_special_files_are_named_for_what_they_are(within, tmp_path, one_error_line, kind):
    if kind == "fifo":
        path = tmp_path / "model.tflite"
        os.mkfifo(path)
        expected = "is a FIFO (named pipe), not a regular file"
    elif kind == "dev":
        path = tmp_path / "zero.tflite"
        path.symlink_to("/dev/zero")
        expected = "is a character device, not a regular file"
    else:
        path = tmp_path / "dir.tflite"
        path.mkdir()
        expected = "is a folder"
    with within(10):
        assert tinyreport([str(path)]) == 2
    assert expected in one_error_line()
    with within(10):  # the same path as --images, as a checkpoint and as a board file
        assert tinyreport([str(MODEL), "--measure", "--images", str(path)]) == 2
        assert expected in one_error_line()
        assert tinyexport(SMALL + ["--checkpoint", str(path), "--out", str(tmp_path / "o")]) == 2
        assert "checkpoint" in one_error_line()
        board = tmp_path / "board.yaml"
        board.symlink_to(path)
        assert tinyreport(["--model", "mcunet-in0", "--board", str(board)]) == 2
        assert expected in one_error_line()


# --- 3. checkpoint metadata, SQNR inf ----------------------------------------------------------


@pytest.mark.parametrize("change, reason", [
    (lambda sd: {k: (v.to(torch.int64) if v.is_floating_point() else v) for k, v in sd.items()},
     "int64 values; weights must be floating point"),
    (lambda sd: {k: (v.to(torch.complex64) if v.is_floating_point() else v) for k, v in sd.items()},
     "complex64 values"),
    (lambda sd: {k: (v * 1e12 + 1e12 if v.is_floating_point() else v) for k, v in sd.items()},
     "above the limit of 1e+06"),
])
def test_export_checkpoint_goes_through_the_train_side_validation(within, tmp_path, one_error_line,
                                                                  change, reason):
    from tinyexport.train.checkpoint_format import make_payload
    from tinyexport.train.models import build_model

    model = build_model("mcunet-in0", num_classes=10, resolution=32)
    payload = make_payload(model)
    payload["state_dict"] = change(payload["state_dict"])
    torch.save(payload, tmp_path / "c.pt")
    with within(20):
        assert tinyexport(["--checkpoint", str(tmp_path / "c.pt"), "--out",
                           str(tmp_path / "o")]) == 2
    assert reason in one_error_line()
    assert not (tmp_path / "o").exists()


def test_infinite_sqnr_is_printed_everywhere():
    assert db_text("inf") == "inf" and db_text(float("inf")) == "inf" and db_text(12.34) == "12.3"
    table = render_layer_table([LayerError("t", "CONV_2D", (1, 2), "inf", "m")])
    assert "| inf |" in table
    doc = {"checks": {"int8 checks": {"images": 4, "top1_agreement": 1.0, "sqnr_db": "inf"}},
           "weights": "checkpoint"}
    assert "output SQNR inf dB" in _numerics_lines(doc)[0]


# --- 4. data that lies -------------------------------------------------------------------------


@pytest.mark.parametrize("images, labels, reason", [
    (np.full((2, 16, 16, 3), np.nan, np.float32), None, "NaN or Inf"),
    (np.full((2, 16, 16, 3), np.inf, np.float32), None, "NaN or Inf"),
    (np.zeros((2, 16, 16, 3), np.float32), np.array([0, -5]), "label -5"),
    (np.zeros((2, 16, 16, 3), np.float32), np.array([999, 0]), "label 999"),
    (np.zeros((2, 16, 16, 3), np.float32), np.array([2 ** 40, 0]), f"label {2 ** 40}"),
    (np.zeros((2, 16, 16, 3), np.float32), np.array([10, 0]), "outside 0..9 for 10 classes"),
])
def test_images_and_labels_that_lie_are_refused(within, tmp_path, one_error_line, images, labels, reason):
    path = tmp_path / "x.npz"
    np.savez(path, images=images, **({} if labels is None else {"labels": labels}))
    with within(60):
        assert tinyreport([str(MODEL), "--measure", "--images", str(path)]) == 2
    assert reason in one_error_line()


def test_eval_data_with_more_classes_than_outputs_is_refused_before_work(tmp_path, one_error_line):
    argv = ["--model", "mcunet-in0", "--resolution", "32", "--num-classes", "5", "--no-firmware",
            "--eval-data", "digits", "--out", str(tmp_path / "o")]
    assert tinyexport(argv) == 2
    assert "has 10 classes, more than the model's 5 outputs" in one_error_line()
    assert not (tmp_path / "o").exists()


def test_a_digits_folder_next_to_the_builtin_name_is_an_error(tmp_path, one_error_line,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits" / "a").mkdir(parents=True)
    assert tinyexport(SMALL + ["--calib-data", "digits", "--out", str(tmp_path / "o")]) == 2
    assert "pass ./digits for the folder or digits: for the built-in set" in one_error_line()


def test_eval_labels_beyond_the_model_outputs_are_refused():
    with pytest.raises(Exception, match="label 7 .* outside 0..4 for 5 classes"):
        check_labels(np.array([0, 7]), 5, "--eval-data 'digits' for a model with 5 outputs")


# --- 5. --force and symlinks -------------------------------------------------------------------


def test_force_moves_foreign_files_aside_never_deletes(tmp_path, caplog):
    out = tmp_path / "export"
    with atomic.atomic_dir(out) as tmp:
        (tmp / "firmware").mkdir()
        (tmp / "firmware" / "main.cc").write_text("generated")
        (tmp / "model.tflite").write_bytes(b"m1")
    (out / "my_notes.md").write_text("mine")
    (out / "firmware" / "main.cc").write_text("edited by hand")
    with caplog.at_level(logging.WARNING), atomic.atomic_dir(out, force=True) as tmp:
        (tmp / "model.tflite").write_bytes(b"m2")
    assert (out / "model.tflite").read_bytes() == b"m2" and not (out / "my_notes.md").exists()
    backup = tmp_path / "export.backup-1"
    assert (backup / "my_notes.md").read_text() == "mine"
    assert (backup / "firmware" / "main.cc").read_text() == "edited by hand"
    assert "export.backup-1" in caplog.text and "my_notes.md" in caplog.text
    with atomic.atomic_dir(out, force=True) as tmp:  # nothing foreign now: a plain replacement
        (tmp / "model.tflite").write_bytes(b"m3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.backup-1"]


def test_force_through_a_symlink_writes_the_target(tmp_path):
    real = tmp_path / "real"
    with atomic.atomic_dir(real) as tmp:
        (tmp / "f").write_text("1")
    link = tmp_path / "link"
    link.symlink_to(real)
    with atomic.atomic_dir(link, force=True) as tmp:
        (tmp / "f").write_text("2")
    assert link.is_symlink() and (real / "f").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_checkpoint_inside_out_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "c.pt").write_bytes(b"x")
    config = ExportConfig(model="mcunet-in0", out=out, checkpoint=out / "c.pt", force=True)
    with pytest.raises(Exception, match="is inside --out"):
        check_user_paths(config)
    assert (out / "c.pt").read_bytes() == b"x"


# --- 6. names from a file ----------------------------------------------------------------------


def _hostile_model(tmp_path: Path, custom: bool) -> Path:
    path = tmp_path / ("custom.tflite" if custom else "names.tflite")
    hostile_tflite(path, custom)
    return path


def test_names_from_a_model_file_are_printed_escaped(tmp_path, capsys, one_error_line):
    assert tinyreport([str(_hostile_model(tmp_path, custom=True))]) != 0
    line = one_error_line()
    assert "\\x0a stm32f746 fits\\x1b]0;title\\x07" in line
    assert tinyreport([str(_hostile_model(tmp_path, custom=False)), "--board", "stm32f746"]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07") and not any(
        ln.startswith(" stm32f746 fits") for ln in out.splitlines())


def test_board_names_from_a_board_file_are_printed_escaped(tmp_path, capsys):
    board = tmp_path / "board.yaml"
    board.write_text('name: "evil\\n stm32f746 fits\\e]0;t\\a"\nsram: 1\nflash: 1\n')
    assert tinyreport(["--model", "mcunet-in0", "--board", str(board)]) == 3
    out = capsys.readouterr().out
    assert "evil\\x0a stm32f746 fits\\x1b]0;t\\x07" in out and "\x1b" not in out


def test_printable_and_c_strings():
    assert printable(HOSTILE) == "\\x0a stm32f746 fits\\x1b]0;title\\x07"
    assert printable("a\u2028b\u200bc") == "a\\u2028b\\u200bc" and printable("é ü") == "é ü"
    header = labels_header(SimpleNamespace(shape=(1, 2)), ["ok", HOSTILE])
    assert "\x1b" not in header and "\n stm32f746" not in header
    assert '"\\012 stm32f746 fits\\033]0;title\\007"' in header


# --- 7. a report that contradicts itself -------------------------------------------------------


def test_offline_plan_below_the_lower_bound_is_an_error(tmp_path, one_error_line):
    path = tmp_path / "zeros.tflite"
    zero_plan(path)
    assert tinyreport([str(path), "--board", "stm32f746"]) != 0
    assert "below the live-set lower bound" in one_error_line()
    assert tinyreport([str(path)]) != 0  # without a board: the report itself is refused
    assert "below the live-set lower bound" in one_error_line()


def test_outputs_differing_from_the_reference_void_the_verdict():
    from tinyexport.errors import UserError
    from tinyexport.firmware_eval.verdicts import check_consistent

    check_consistent(bit_exact={"equal": False, "mismatches": 2, "values": 40, "max_abs_diff": 1})
    with pytest.raises(UserError, match="40/40 values .*first at op #3 CONV_2D"):
        check_consistent(bit_exact={"equal": False, "mismatches": 40, "values": 40,
                                    "max_abs_diff": 90,
                                    "first_difference": {"op": 3, "opcode": "CONV_2D"}})


# --- 8. signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_clean_up(tmp_path, one_error_line, sig):
    out = tmp_path / "export"
    before = signal.signal(sig, signal.SIG_DFL)  # under nohup SIGHUP arrives ignored

    def body() -> int:
        with atomic.atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            os.kill(os.getpid(), sig)
            raise AssertionError("not stopped")

    assert run_cli(body) == 128 + sig
    assert f"stopped by {signal.Signals(sig).name}" in one_error_line()
    assert list(tmp_path.iterdir()) == []  # no .export.*.partial, no .export.lock
    restored = signal.signal(sig, before)
    assert restored is signal.SIG_DFL  # the handler run_cli installed is gone again


def test_an_ignored_hangup_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with errors.terminating_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # nohup's promise: nothing happens
    finally:
        signal.signal(signal.SIGHUP, before)


def test_onnx2tf_child_gets_a_private_tmpdir(tmp_path):
    env = subprocess_env(tmp_path / "t")
    assert env["TMPDIR"] == env["TMP"] == env["TEMP"] == str(tmp_path / "t")


# --- 9. unhelpful clean errors -----------------------------------------------------------------


@pytest.mark.parametrize("args, reason", [
    (["--out", "."], "is the current folder"),
    (["--out", ""], "--out is empty"),
    (["--out", "/"], "is the file system's root"),
    (["--seed", str(2 ** 70)], "--seed must be an integer in 0..4294967295"),
    (["--min-agreement", "nan"], "--min-agreement must be a fraction"),
    (["--patch-max-mac-overhead", "1e30"], "--patch-max-mac-overhead"),
    (["--sram", "9" * 400], "is outside 1 B..1 TiB"),
    (["--flash", "0"], "is outside 1 B..1 TiB"),
])
def test_out_and_numbers_out_of_range_are_one_line(tmp_path, one_error_line, monkeypatch, args,
                                                   reason):
    monkeypatch.chdir(tmp_path)
    assert tinyexport(SMALL + args) == 2
    assert reason in one_error_line()
    assert list(tmp_path.iterdir()) == []
