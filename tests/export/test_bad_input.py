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
    from tinyexport.train.checkpoint import save_checkpoint
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
    from tinyexport.train.checkpoint import save_checkpoint
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
    assert code != 0 and "--calib-images must be >= 1" in err
