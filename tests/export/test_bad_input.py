"""Bad input: one clear message, exit != 0, nothing written (no conversion runs)."""

import torch

from tinyexport.export.cli import main


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


def test_unknown_model(tmp_path, capsys):
    code, err = _run(["--model", "mcunett", "--int8", "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "unknown model 'mcunett'" in err and "mcunet" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_of_another_architecture(tmp_path, capsys):
    from tinyexport.train.checkpoint_format import save_checkpoint
    from tinyexport.train.models import build_model

    path = tmp_path / "other.pt"
    model = build_model("mbv2-tiny", num_classes=10, resolution=32)
    torch.save(model.state_dict(), path)  # a plain state_dict: --model decides the architecture
    code, err = _run(["--model", "mcunet", "--int8", "--checkpoint", str(path), "--out",
                      str(tmp_path / "o")], capsys)
    assert code != 0 and "does not match model" in err and "blocks." in err
    assert not (tmp_path / "o").exists()
    save_checkpoint(model, tmp_path / "ours.pt")
    code, err = _run(["--model", "mcunet", "--int8", "--checkpoint", str(tmp_path / "ours.pt"),
                      "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "does not match the checkpoint's model" in err


def test_nan_weights(tmp_path, capsys):
    from tinyexport.train.checkpoint_format import save_checkpoint
    from tinyexport.train.models import build_model

    model = build_model("mbv2-tiny", num_classes=10, resolution=32)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    save_checkpoint(model, tmp_path / "nan.pt")
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--checkpoint", str(tmp_path / "nan.pt"),
                      "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "classifier.weight" in err and "NaN" in err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))


def test_missing_and_empty_data_folder(tmp_path, capsys):
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--resolution", "32", "--calib-data",
                      str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "does not exist" in err
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--resolution", "32", "--calib-data",
                      str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "no images" in err
    assert not (tmp_path / "o").exists()


def test_unreadable_images_only(tmp_path, capsys):
    folder = tmp_path / "bad" / "cls"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"not an image")
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--resolution", "32", "--calib-data",
                      str(tmp_path / "bad"), "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "no readable image" in err


def test_missing_checkpoint_and_bad_counts(tmp_path, capsys):
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--checkpoint", str(tmp_path / "x.pt"),
                      "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "does not exist" in err
    code, err = _run(["--model", "mbv2-tiny", "--int8", "--calib-images", "0"], capsys)
    assert code != 0 and "--calib-images must be in 1..100000, got 0" in err


def test_int8_is_the_default(tmp_path, capsys):
    """--int8 is optional (the only target); validation still runs without it."""
    code, err = _run(["--model", "mcunett", "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "unknown model 'mcunett'" in err and "--int8" not in err


def _fails_fast(tmp_path, capsys, extra, fragment):
    out = tmp_path / "o"
    code, err = _run(["--model", "mbv2-tiny", "--resolution", "32", "--num-classes", "10",
                      "--out", str(out), *extra], capsys)
    assert code != 0 and fragment in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    return err


def test_arguments_are_validated_before_any_work(tmp_path, capsys):
    _fails_fast(tmp_path, capsys, ["--board", "nosuchboard"], "unknown board 'nosuchboard'")
    _fails_fast(tmp_path, capsys, ["--check-images", "100", "--calib-images", "10"],
                "--check-images 100 exceeds --calib-images 10")
    _fails_fast(tmp_path, capsys, ["--no-firmware", "--patch", "on", "--board", "stm32f746"],
                "--board and --patch on need the firmware stage")
    _fails_fast(tmp_path, capsys, ["--patch-max-mac-overhead", "-5"], "--patch-max-mac-overhead")
    _fails_fast(tmp_path, capsys, ["--checkpoint", str(tmp_path)], "is a folder")
    _fails_fast(tmp_path, capsys, ["--eval-data", str(tmp_path / "missing")], "does not exist")
    _fails_fast(tmp_path, capsys, ["--eval-data", "imagenet:/x"], "unknown data kind 'imagenet'")
    junk = tmp_path / "junk"
    for cls in ("a", "b"):
        (junk / cls).mkdir(parents=True)
        for i in range(3):
            (junk / cls / f"{i}.jpg").write_text("not an image")
    _fails_fast(tmp_path, capsys, ["--eval-data", str(junk)], "no readable image")


def test_force_never_deletes_what_is_not_an_export(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "sub" / "data.csv").write_text("1,2")
    code, err = _run(["--model", "mbv2-tiny", "--resolution", "32", "--num-classes", "10",
                      "--out", str(out), "--force"], capsys)
    assert code != 0 and "will not replace" in err and "notes.txt" in err
    assert (out / "notes.txt").read_text() == "keep me" and (out / "sub" / "data.csv").exists()


def test_class_count_mismatch_is_a_warning():
    from tinyexport.export.stages import class_mismatch
    from tinyexport.export.state import DataInfo

    digits = DataInfo("digits", images=100, split="val", classes=10)
    assert class_mismatch(10, digits) is None
    assert "3 outputs but --eval-data digits has 10 classes" in class_mismatch(3, digits)


def test_emulate_requests_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """``--emulate`` needs a board with a Cortex-M4/M7 core, the firmware stage, and the
    toolchain and sources (named with how to get them); all before the conversion."""
    from tinyexport.firmware_eval import emulate

    out = ["--model", "mbv2-tiny", "--resolution", "32", "--out", str(tmp_path / "o")]
    code, err = _run([*out, "--emulate"], capsys)
    assert code != 0 and "add --board" in err
    code, err = _run([*out, "--emulate", "--board", "rp2040"], capsys)
    assert code != 0 and "no emulated core" in err
    code, err = _run([*out, "--emulate", "--board", "f746", "--no-firmware"], capsys)
    assert code != 0 and "--no-firmware" in err
    for var in ("TFLM_SRC", "THIRD_PARTY_SRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TINYEXPORT_CORTEX_M_SRC", str(tmp_path / "none"))
    monkeypatch.setattr(emulate, "missing_tools", lambda: [])
    code, err = _run([*out, "--emulate", "--board", "f746"], capsys)
    assert code != 0 and "fetch-sources" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_board_requests_resolve_before_any_work(tmp_path):
    """--board all / several / a board file, with --sram / --flash, and the default folder that
    names the boards (the README's order: one model for two boards must not collide)."""
    from tinyexport.export.cli import _config, build_parser

    def config(*argv):
        return _config(build_parser().parse_args(["--model", "mcunet", *argv]))

    f746 = config("--board", "stm32f746")
    assert str(f746.out) == "exports/mcunet-in3-r176-int8-stm32f746" and f746.board.name == "stm32f746"
    assert config().out != f746.out != config("--board", "stm32h743").out
    two = config("--board", "f746", "--board", "rp2040", "--flash", "900KB")
    assert [b.name for b in two.boards] == ["stm32f746", "rp2040"] and two.board is two.boards[0]
    assert {b.flash_bytes for b in two.boards} == {900_000}
    every = config("--board", "all")
    assert len(every.boards) == 8 and str(every.out).endswith("-int8-8-boards")
    board_file = tmp_path / "cam.yaml"
    board_file.write_text("name: cam\nsram: 512KiB\nflash: 2MiB\nreserve: {sram: 100KiB}\n")
    cam = config("--board", str(board_file))
    assert cam.board.name == "cam" and cam.board.sram_budget == 412 * 1024


def test_bad_budget_is_one_line(tmp_path, capsys):
    code, err = _run(["--model", "mcunet", "--board", "f746", "--sram", "-5", "--out",
                      str(tmp_path / "o")], capsys)
    assert code == 2 and "--sram" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_failed_emulation_names_logs_that_still_exist(tmp_path):
    """`--emulate` failing inside the partial folder: the log it names is copied beside the
    output folder (the partial folder is removed) and the message names the copy."""
    from tinyexport.errors import UserError
    from tinyexport.export.pipeline import keep_emulation_logs

    partial = tmp_path / ".o.123.partial"
    log = partial / "emulation" / "cortex-m4" / "build_firmware.log"
    log.parent.mkdir(parents=True)
    log.write_text("arm-none-eabi-g++: error\n")
    kept = keep_emulation_logs(UserError(f"build failed (see {log}):\nerror"), partial,
                               tmp_path / "o")
    assert isinstance(kept, UserError) and str(partial) not in str(kept)
    copy = tmp_path / "o.emulation-logs" / "cortex-m4" / "build_firmware.log"
    assert str(copy) in str(kept) and copy.read_text() == log.read_text()
    other = UserError("unrelated")
    assert keep_emulation_logs(other, partial, tmp_path / "o") is other
