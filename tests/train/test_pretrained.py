"""``--pretrained``: released weights fetched from a real HTTP server on loopback into the cache,
checked, reused, and clear errors offline or for a bad download (issue 12 §11)."""

import functools
import http.server
import json
import socket
import threading

import pytest
import torch

from tinyexport.errors import UserError
from tinyexport.train import pretrained
from tinyexport.train.checkpoint_format import mcunet_key_map
from tinyexport.train.models import build_model


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _zoo_file(path):
    """A checkpoint in the MCUNet zoo's own format (its key names, {"state_dict": ...})."""
    torch.manual_seed(0)
    model = build_model("mcunet-in0")
    theirs = {mcunet_key_map(model)[k]: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": theirs}, path)
    return model


def test_download_is_checked_cached_and_reused(tmp_path, server):
    www, base = server
    release = pretrained.release_for("mcunet-in0")
    _zoo_file(www / release.file_name)
    cache = tmp_path / "cache"
    path = pretrained.fetch(release, cache, url=f"{base}/{release.file_name}")
    assert path == cache / "weights" / release.file_name and path.is_file()
    assert (path.parent / (path.name + ".sha256")).read_text().strip()
    assert pretrained.fetch(release, cache, url=f"{base}/{release.file_name}") == path
    assert len(_Handler.requests) == 1  # the second call used the cache
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".part")] == []
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # corrupted in the cache
    with pytest.raises(UserError, match="expected"):
        pretrained.fetch(release, cache)


def test_offline_is_one_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    release = pretrained.release_for("mcunet")
    with pytest.raises(UserError, match="offline or the host is unreachable.*--checkpoint"):
        pretrained.fetch(release, tmp_path, url=f"http://127.0.0.1:{port}/x.pth")
    assert not list((tmp_path / "weights").iterdir())


def test_an_html_page_is_not_cached(tmp_path, server):
    www, base = server
    (www / "page.pth").write_text("<html>quota exceeded</html>")
    release = pretrained.release_for("mbv2-tiny")
    with pytest.raises(UserError, match="not a readable PyTorch file"):
        pretrained.fetch(release, tmp_path, url=f"{base}/page.pth")
    assert not list((tmp_path / "weights").iterdir())


def test_sources_and_unknown_models():
    assert pretrained.release_for("mcunet").source == "mcunet-zoo"
    assert pretrained.release_for("mcunet", "netaug").url.startswith(pretrained.GOOGLE_DRIVE)
    assert pretrained.release_for("mbv2-tiny").source == "netaug"
    with pytest.raises(UserError, match="no released weights for 'mobilenetv2'"):
        pretrained.release_for("mobilenetv2")


def test_tinyexport_pretrained_through_a_mirror(tmp_path, server, monkeypatch):
    """The CLI path: the mirror serves the release, the export loads it strictly."""
    from tinyexport.export.cli import main

    www, base = server
    _zoo_file(www / pretrained.release_for("mcunet-in0").file_name)
    monkeypatch.setenv(pretrained.MIRROR_ENV, base)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert main(["--model", "mcunet-in0", "--pretrained", "--calib-images", "16", "--min-agreement", "0",
                 "--check-images", "8", "--no-firmware", "--out", str(out)]) == 0
    doc = json.loads((out / "export.json").read_text())
    assert doc["weights_source"].startswith("mcunet-zoo release")
    assert doc["checkpoint_meta"]["source_format"] == "mcunet-zoo"
    assert doc["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # the zoo's own normalisation


def test_transfer_from_pretrained_through_a_mirror(tmp_path, server, monkeypatch):
    from tinyexport.train.tinytl.cli import main

    www, base = server
    _zoo_file(www / pretrained.release_for("mcunet-in0").file_name)
    monkeypatch.setenv(pretrained.MIRROR_ENV, base)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    out = tmp_path / "tl"
    assert main(["--model", "mcunet-in0", "--pretrained", "--data", "digits", "--method",
                 "tinytl-lb", "--epochs", "1", "--max-steps", "1", "--limit-train", "16",
                 "--limit-val", "16", "--batch-size", "8", "--out", str(out)]) == 0
    assert (out / "transfer.pt").is_file()
    assert main(["--model", "mcunet-in0", "--pretrained", "--from", "x.pt", "--data", "digits",
                 "--out", str(tmp_path / "o")]) == 2
