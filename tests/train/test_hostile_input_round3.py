"""Issue 23 on the training side: one fast test per class of hostile input. Every fixture is built
here in ``tmp_path`` (a PNG header is a few bytes; a FIFO is ``os.mkfifo``; an archive of many
entries is ``zipfile``); each case ends in one ``error:`` line (or a warned skip), within seconds,
with nothing of the user's touched."""

from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import zipfile

import numpy as np
import pytest
import torch

import tinyexport.train.netaug.run as run_module
import tinyexport.train.tinytl.transfer as transfer_module
from tinyexport.atomic import folder_lock
from tinyexport.benchmarks.robustness_round3_train import fashion_folder, idx, png_declaring
from tinyexport.errors import UserError
from tinyexport.train.checkpoint_format import make_payload, read_payload
from tinyexport.train.cli import main
from tinyexport.train.data import Preprocessing, build_dataset, load_arrays, parse_data_spec
from tinyexport.train.models import build_model

TINY = ["--model", "mbv2-tiny", "--data", "digits", "--resolution", "32", "--batch-size", "16",
        "--limit-train", "32", "--limit-val", "16", "--max-steps", "1", "--workers", "0",
        "--no-netaug", "--no-progress", "--epochs", "1"]
PRE = Preprocessing(32)


def _must_not_run(*args, **kwargs):
    raise AssertionError("work started before the input was checked")


def _good_png(path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


def _image_folder(root, classes=("cat", "dog")):
    for name in classes:
        (root / name).mkdir(parents=True)
        _good_png(root / name / "good.png")
    return root


# ------------------------------------------------------------ 1. unbounded resources

@pytest.mark.parametrize("width, height", [(50_000, 50_000), (80_000_000, 1), (1, 1_000_000)])
def test_image_declaring_huge_size_is_skipped_with_a_warning(within, tmp_path, caplog, width, height):
    root = _image_folder(tmp_path / "data")
    bomb = root / "cat" / "bomb.png"
    bomb.write_bytes(png_declaring(width, height))
    dataset = build_dataset(str(root), "train", PRE, False)
    with within(20), caplog.at_level(logging.WARNING):
        labels = [dataset[i][1] for i in range(len(dataset))]
    assert len(labels) == 3 and dataset.skipped.count == 1
    warned = [r.getMessage() for r in caplog.records if "bomb.png" in r.getMessage()]
    assert warned and "limit" in warned[0], warned


@pytest.mark.parametrize("images, labels, reason", [
    (idx((2, 0, 0), b""), idx((2,)), "a dimension of 0"),
    (idx((1, 1, 1_000_000)), idx((1,)), "outside the limits"),
    (idx((4_000_000_000, 28, 28), b""), idx((1,)), "above the limit"),
    (idx((2, 28, 28)), idx((2,), bytes((0, 200))), "label 200"),
])
def test_bad_idx_files_are_one_error(within, tmp_path, images, labels, reason):
    spec = fashion_folder(tmp_path / "fm", images, labels)
    with within(20), pytest.raises(UserError, match=reason):
        load_arrays(parse_data_spec(spec), "train")


def test_gzip_bomb_is_refused_after_its_header(within, tmp_path):
    # the header says one 28x28 image; the stream inflates to 64 MB more
    images = idx((1, 28, 28), bytes(28 * 28 + 64 * 2**20))
    spec = fashion_folder(tmp_path / "fm", images, idx((1,)), gz=True)
    with within(20), pytest.raises(UserError, match="more data than its header says"):
        load_arrays(parse_data_spec(spec), "train")


def test_synthetic_count_has_a_limit():
    with pytest.raises(UserError, match=r"N in 1\.\.100000, got 1000000000000"):
        parse_data_spec("synthetic:1000000000000")


def test_archive_with_too_many_entries_is_refused_before_unpacking(within, tmp_path):
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(20_001):
            archive.writestr(f"archive/data/{i}", b"")
    with within(20), pytest.raises(UserError, match="20001 archive entries, above the limit"):
        read_payload(path)


def test_archive_naming_one_member_twice_is_refused(tmp_path):
    path = tmp_path / "twice.pt"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning):
        for _ in range(3):
            archive.writestr("archive/data/0", bytes(1000))
    with pytest.raises(UserError, match="names one archive member more than once"):
        read_payload(path)


def test_yaml_alias_bomb_is_refused(tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
              for i in range(8)]
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("\n".join(lines + ["epochs: *i"]) + "\n")
    assert main(TINY + ["--config", str(recipe), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line()
    assert "anchor/alias &a (line 1)" in line and len(line) < 300, line


# ------------------------------------------------------------ 2. special files

def test_fifo_inside_an_image_folder_is_left_out(within, tmp_path, caplog):
    root = _image_folder(tmp_path / "data")
    os.mkfifo(root / "cat" / "pipe.jpg")
    with within(20), caplog.at_level(logging.WARNING):
        dataset = build_dataset(str(root), "train", PRE, False)
        assert [dataset[i][1] for i in range(len(dataset))] == [0, 1]
    assert any("pipe.jpg" in r.getMessage() and "a FIFO" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p) or p, "is a FIFO (named pipe)"),
    (lambda p: "/dev/zero", "is a character device"),
])
def test_special_checkpoint_is_named_for_what_it_is(within, tmp_path, make, kind):
    path = make(tmp_path / "best.pt")
    with within(20), pytest.raises(UserError, match=re.escape(kind)):
        read_payload(path)


def test_fifo_data_file_is_named_for_what_it_is(within, tmp_path):
    folder = tmp_path / "fm"
    folder.mkdir()
    os.mkfifo(folder / "train-images-idx3-ubyte")
    (folder / "train-labels-idx1-ubyte").write_bytes(idx((1,)))
    with within(20), pytest.raises(UserError, match="is a FIFO"):
        load_arrays(parse_data_spec(f"fashion-mnist:{folder}"), "train")


# ------------------------------------------------------------ 3. checkpoint metadata

def _payload() -> dict:
    return make_payload(build_model("mbv2-tiny", num_classes=10, resolution=32))


def _without(key):
    def change(p):
        del p[key]
    return change


def _set(key, value):
    def change(p):
        p[key] = value
    return change


def _weight(transform):
    def change(p):
        key = "first_conv.conv.weight"
        p["state_dict"][key] = transform(p["state_dict"][key])
    return change


BAD_PAYLOADS = {
    "no num_classes": (_without("num_classes"), "lacks ['num_classes']"),
    "no model": (_without("model"), "lacks ['model']"),
    "kind a list": (_set("kind", ["base"]), "its 'kind' is ['base'], not one of"),
    "model an int": (_set("model", 7), "its 'model' is 7, not a zoo model name"),
    "model a list": (_set("model", ["mbv2-tiny"]), "not a zoo model name"),
    "num_classes 10**12": (_set("num_classes", 10**12), "records num_classes"),
    "int entry": (lambda p: p["state_dict"].__setitem__("classifier.bias", 3),
                  "'classifier.bias' is of type int, not a tensor"),
    "int64 weights": (_weight(lambda w: w.to(torch.int64)), "holds int64 values"),
    "complex weights": (_weight(lambda w: w.to(torch.complex64)), "holds complex64 values"),
    "bool weights": (_weight(lambda w: w > 0), "holds bool values"),
    "huge weights": (_weight(lambda w: w * 1e12), "above the limit of 1e+06"),
    "Inf weights": (_weight(lambda w: w.index_fill(0, torch.tensor([0]), float("inf"))),
                    "NaN/Inf value"),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS)
def test_bad_checkpoint_metadata_fails_at_load(within, tmp_path, one_error_line, monkeypatch, case):
    monkeypatch.setattr(transfer_module, "build_loaders", _must_not_run)
    payload = _payload()
    change, reason = BAD_PAYLOADS[case]
    change(payload)
    source = tmp_path / "source.pt"
    torch.save(payload, source)
    argv = ["transfer", "--from", str(source), "--data", "synthetic:24", "--out",
            str(tmp_path / "out"), "--epochs", "1", "--workers", "0", "--no-progress"]
    with within(30):
        assert main(argv) == 2
    line = one_error_line()
    assert reason in line and "source.pt" in line, line


# ------------------------------------------------------------ 4. data that lies

def test_flat_image_folder_warns_once_that_val_is_train(tmp_path, caplog):
    root = _image_folder(tmp_path / "flat")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            build_dataset(str(root), "val", PRE, False)
    warned = [r for r in caplog.records if "validation uses the training images" in r.getMessage()]
    assert len(warned) == 1


@pytest.mark.parametrize("val_classes", [("cow", "dog"), ("cat", "dog", "eel")])
def test_val_classes_differing_from_train_are_refused(tmp_path, val_classes):
    _image_folder(tmp_path / "data" / "train")
    _image_folder(tmp_path / "data" / "val", val_classes)
    with pytest.raises(UserError, match=r"val/ has classes \[.*\] but train/ has \['cat', 'dog'\]"):
        build_dataset(str(tmp_path / "data"), "val", PRE, False)


@pytest.mark.parametrize("label", [-5, 999, 2**40])
def test_cifar_label_out_of_range_names_file_and_value(tmp_path, label):
    folder = tmp_path / "cifar"
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, label]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UserError, match=rf"test_batch'?: label {label} is outside 0\.\.9"):
        load_arrays(parse_data_spec(f"cifar10:{folder}"), "val")


def test_builtin_name_shadowing_a_folder_is_an_error_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    with pytest.raises(UserError, match="names both the built-in digits data set and the folder"):
        parse_data_spec("digits")
    assert parse_data_spec("./digits").kind == "imagefolder"
    assert parse_data_spec("digits:").kind == "digits"


# ------------------------------------------------------------ 5. run folders never overwritten

def test_second_run_into_a_finished_run_is_refused(tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.pt").write_bytes(b"the user's best model")
    assert main(TINY + ["--out", str(out)]) == 2
    line = one_error_line()
    assert "holds a previous run (best.pt)" in line and "--resume" in line, line
    assert (out / "best.pt").read_bytes() == b"the user's best model"


@pytest.mark.parametrize("through_symlink", [False, True])
def test_transfer_never_writes_over_its_source(tmp_path, one_error_line, monkeypatch, through_symlink):
    monkeypatch.setattr(transfer_module, "run_transfer", _must_not_run)
    run = tmp_path / "run"
    run.mkdir()
    torch.save(_payload(), run / "best.pt")
    before = (run / "best.pt").read_bytes()
    out = run
    if through_symlink:
        out = tmp_path / "link"
        out.symlink_to(run)
    argv = ["transfer", "--from", str(run / "best.pt"), "--data", "synthetic:24", "--out",
            str(out), "--workers", "0"]
    assert main(argv) == 2
    assert "a source is never a destination" in one_error_line()
    assert (run / "best.pt").read_bytes() == before


def test_two_runs_into_one_folder_the_second_is_refused(tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    out = tmp_path / "run"
    out.mkdir()
    with folder_lock(out / "run"):  # what the first, still running, run holds
        assert main(TINY + ["--out", str(out)]) == 2
    assert "is being written by another run right now" in one_error_line()


def test_out_inside_the_data_folder_is_refused(tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    root = _image_folder(tmp_path / "data")
    argv = [a if a != "digits" else str(root) for a in TINY]
    assert main(argv + ["--out", str(root / "run")]) == 2
    assert "is inside --data" in one_error_line()
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]


# ------------------------------------------------------------ 6. names from files

@pytest.mark.parametrize("special", [False, True])
def test_a_skipped_file_is_named_escaped(tmp_path, caplog, special):
    root = _image_folder(tmp_path / "data")
    hostile = root / "cat" / "x\n stm32f746 fits\x1b]0;t\x07.png"
    if special:
        os.mkfifo(hostile)
    else:
        hostile.write_bytes(png_declaring(50_000, 50_000))
    with caplog.at_level(logging.WARNING):
        dataset = build_dataset(str(root), "train", PRE, False)
        [dataset[i] for i in range(len(dataset))]
    warned = [r.getMessage() for r in caplog.records if "stm32f746" in r.getMessage()]
    assert warned and all("\n" not in m and "\x1b" not in m and "\\x1b" in m for m in warned)


# ------------------------------------------------------------ 8. signals

@pytest.mark.parametrize("command", ["train", "transfer"])
def test_a_stopped_run_says_what_it_kept_and_how_to_go_on(tmp_path, one_error_line, monkeypatch,
                                                          command):
    import tinyexport.train.cli as cli_module

    out = tmp_path / "run"

    def one_epoch_then_sigterm(*args, **kwargs):
        (out / "checkpoint.pt").write_bytes(b"epoch 0")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not stopped")

    monkeypatch.setattr(cli_module, "run_training", one_epoch_then_sigterm)
    monkeypatch.setattr(cli_module.transfer_cli, "run_transfer", one_epoch_then_sigterm)
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        argv = TINY if command == "train" else ["transfer", "--model", "mbv2-tiny", "--data",
                                                 "synthetic:24", "--workers", "0"]
        assert main(argv + ["--out", str(out)]) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
    line = one_error_line()
    assert "stopped by SIGTERM" in line and "nothing of this run was kept" not in line, line
    assert ("--resume to continue" in line) == (command == "train"), line
    assert (out / "checkpoint.pt").read_bytes() == b"epoch 0"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]  # the lock is gone


# ------------------------------------------------------------ 9. unhelpful errors

@pytest.mark.parametrize("option, value, expected", [
    ("--out", "/", "is the file system's root"),
    ("--out", "", "must name a folder"),
    ("--seed", str(2**70), "seed (--seed) must be an integer in 0..4294967295"),
    ("--lr", "1e308", "lr (--lr) must be a number in (0, 10]"),
    ("--baseline-lr", "1e20", "baseline_lr (--baseline-lr) must be a number in (0, 10]"),
])
def test_out_seed_and_lr_out_of_range_are_one_line(tmp_path, one_error_line, monkeypatch, option, value,
                                                   expected):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    argv = TINY + ["--out", str(tmp_path / "run")] + [option, value]
    assert main(argv) == 2
    assert expected in one_error_line()


def test_out_dot_is_the_current_folder(tmp_path, monkeypatch):
    from tinyexport.train.trainer import claim_out_dir

    monkeypatch.chdir(tmp_path)
    with claim_out_dir(".") as out:
        assert out.resolve() == tmp_path.resolve()


def test_transfer_help_offers_no_resume(capsys):
    with pytest.raises(SystemExit):
        main(["transfer", "--help"])
    assert "--resume" not in capsys.readouterr().out


def test_transfer_val_data_of_other_classes_is_refused(tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(transfer_module, "build_adapted", _must_not_run)
    _image_folder(tmp_path / "a")
    _image_folder(tmp_path / "b", ("cow", "dog"))
    argv = ["transfer", "--model", "mbv2-tiny", "--data", str(tmp_path / "a"), "--val-data",
            str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--workers", "0",
            "--resolution", "32"]
    assert main(argv) == 2
    line = one_error_line()
    assert "has classes ['cow', 'dog'] but --data" in line and "['cat', 'dog']" in line, line


def test_resume_from_a_fifo_is_named_for_what_it_is(within, tmp_path, one_error_line, monkeypatch):
    monkeypatch.setattr(run_module, "build_loaders", _must_not_run)
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "checkpoint.pt")
    with within(20):
        assert main(TINY + ["--out", str(out), "--resume"]) == 2
    assert "it is a FIFO (named pipe), not a regular file" in one_error_line()


def test_image_folder_above_the_image_limit_is_refused(tmp_path, monkeypatch):
    import tinyexport.train.data as data_module

    monkeypatch.setattr(data_module, "MAX_FOLDER_IMAGES", 3)
    root = _image_folder(tmp_path / "data")
    for i in range(2):
        _good_png(root / "dog" / f"more{i}.png")
    with pytest.raises(UserError, match="holds more than 3 images, the limit per split"):
        build_dataset(str(root), "train", PRE, False)
