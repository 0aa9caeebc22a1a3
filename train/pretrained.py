"""Released ImageNet weights of the zoo models, fetched once into the user's cache (``--pretrained``).

Where they come from (the authors' own release links):
- the MCUNet model zoo (``mit-han-lab/mcunet`` ``model_zoo.py``: ``<net_name>.pth`` under the lab's
  release server; a ``{"state_dict": ...}`` in the zoo's key names, loaded through
  :func:`tinyexport.train.checkpoint_format.mcunet_key_map`; docs/mcunet.md §1);
- the NetAug README (``mit-han-lab/tinyml`` ``netaug/``: one Google-Drive ``.pth`` per model in the
  base-model key names, loaded through ``netaug_key_map``; docs/netaug.md §1.8).

A file is downloaded to a temporary name in the cache folder, checked (a readable PyTorch
checkpoint with ``weights_only=True``; its SHA-256 when one is pinned below or was recorded by an
earlier download) and only then renamed into place, so an interrupted download never leaves a
half file that looks cached. Nothing is fetched at run time unless ``--pretrained`` asks for it,
and offline the error says how to place the file by hand.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinyexport.atomic import file_sha256
from tinyexport.errors import UserError
from tinyexport.registry import Registry
from tinyexport.train.checkpoint_format import read_payload
from tinyexport.train.models import MODELS

_log = logging.getLogger(__name__)

MCUNET_RELEASE = "https://hanlab18.mit.edu/projects/tinyml/mcunet/release/"
GOOGLE_DRIVE = "https://drive.google.com/uc?export=download&id="
MIRROR_ENV = "TINYEXPORT_PRETRAINED_MIRROR"  # a folder URL holding the same file names
CACHE_ENV = "TINYEXPORT_CACHE"
TIMEOUT_S = 60
MAX_BYTES = 200 * 1024 * 1024  # every release is < 10 MB; refuse anything absurd


@dataclass(frozen=True)
class Release:
    """One released checkpoint: where it is, its cache file name, what it claims."""

    model: str
    source: str  # "mcunet-zoo" | "netaug"
    url: str
    file_name: str
    top1: str  # published ImageNet top-1 (fp32), as the authors state it
    sha256: str | None = None  # pinned when known; else recorded on the first download


RELEASES: Registry[Release] = Registry("released checkpoint")


def _zoo(model: str, net_name: str, top1: str) -> None:
    RELEASES.add(f"{model}:mcunet-zoo", Release(model, "mcunet-zoo", f"{MCUNET_RELEASE}{net_name}.pth",
                                                 f"{net_name}.pth", top1))


def _netaug(model: str, drive_id: str, top1: str) -> None:
    RELEASES.add(f"{model}:netaug", Release(model, "netaug", GOOGLE_DRIVE + drive_id,
                                            f"netaug-{model}.pth", top1))


_zoo("mcunet-in0", "mcunet-10fps_imagenet", "41.5 %")
_zoo("mcunet-in1", "mcunet-5fps_imagenet", "51.5 %")
_zoo("mcunet-in2", "mcunet-256kb-1mb_imagenet", "60.9 %")
_zoo("mcunet-in3", "mcunet-320kb-1mb_imagenet", "62.2 %")
_zoo("mcunet-in4", "mcunet-512kb-2mb_imagenet", "68.4 %")
_zoo("mbv2-tiny", "mbv2-w0.35-r144_imagenet", "49.7 %")
_zoo("proxyless-w0.3", "proxyless-w0.3-r176_imagenet", "57.0 %")
_netaug("mbv2-tiny", "1rTJQXMO2A9PzzY3Vo9MvaB7_m58H4RIX", "53.3 %")
_netaug("mcunet-in3", "12w2EoPKmHhTqz0yMwld7u766WJOCPfAn", "62.7 %")
_netaug("proxylessnas-w0.35", "1fd9YDVlx6oFC8spoeeM5NtMMLQaWExFP", "60.8 %")

# Without an explicit source: the MCUNet zoo's own release for MCUNet models (what "the released
# MCUNet" means), NetAug's for the nets the zoo does not release or releases as a baseline.
DEFAULT_SOURCE = {"mcunet-in0": "mcunet-zoo", "mcunet-in1": "mcunet-zoo", "mcunet-in2": "mcunet-zoo",
                  "mcunet-in3": "mcunet-zoo", "mcunet-in4": "mcunet-zoo", "proxyless-w0.3": "mcunet-zoo",
                  "mbv2-tiny": "netaug", "proxylessnas-w0.35": "netaug"}


def release_for(model: str, source: str | None = None) -> Release:
    """The release of a zoo model (``source``: ``mcunet-zoo`` or ``netaug``; None: the default)."""
    name = MODELS.canonical(model)
    if name not in DEFAULT_SOURCE:
        raise UserError(f"no released weights for {name!r}; released: "
                        f"{', '.join(sorted(DEFAULT_SOURCE))}")
    return RELEASES.get(f"{name}:{source or DEFAULT_SOURCE[name]}")


def cache_dir() -> Path:
    """``$TINYEXPORT_CACHE``, else ``$XDG_CACHE_HOME/tinyexport``, else ``~/.cache/tinyexport``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinyexport"


def fetch(release: Release, cache: Path | None = None, url: str | None = None) -> Path:
    """The local path of ``release``'s file, downloaded into ``cache`` the first time.

    ``url`` overrides where to download from (tests; ``$TINYEXPORT_PRETRAINED_MIRROR``).
    """
    folder = (cache or cache_dir()) / "weights"
    path = folder / release.file_name
    if not path.is_file():
        _download(url or _mirrored(release), path, release)
    _check_hash(path, release)
    return path


def _mirrored(release: Release) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{release.file_name}" if mirror else release.url


def _download(url: str, path: Path, release: Release) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _log.info("downloading the released %s weights of %s (%s) from %s", release.source,
              release.model, release.top1, url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_limited(url, out, release)
        read_payload(tmp)  # a real checkpoint (not an HTML error page), loadable safely
        digest = file_sha256(tmp)
        if release.sha256 and digest != release.sha256:
            raise UserError(f"the download of {url} has SHA-256 {digest}, expected "
                            f"{release.sha256}; the file changed or was corrupted — not used")
        os.replace(tmp, path)
        _hash_record(path).write_text(digest + "\n")
    except UserError as exc:
        raise UserError(f"{exc} (downloaded from {url})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _copy_limited(url: str, out, release: Release) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - https/file URLs we list
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_BYTES:
                    raise UserError(f"{url} sent more than {MAX_BYTES >> 20} MB; not a released "
                                    "tiny-model checkpoint")
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot download the released weights of {release.model} ({reason}); "
                        f"offline or the host is unreachable. Download {release.url} yourself and "
                        f"pass it as --checkpoint, or place it at "
                        f"{cache_dir() / 'weights' / release.file_name}") from None


def _check_hash(path: Path, release: Release) -> None:
    """A cached file must still have the pinned hash, or the one recorded when it was fetched."""
    record = _hash_record(path)
    expected = release.sha256 or (record.read_text().strip() if record.is_file() else None)
    if expected is None:
        record.write_text(file_sha256(path) + "\n")  # placed by hand: trust it and remember it
        return
    digest = file_sha256(path)
    if digest != expected:
        raise UserError(f"cached weights {str(path)!r} have SHA-256 {digest}, expected "
                        f"{expected}; delete the file to download it again")


def _hash_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def describe(release: Release) -> dict:
    """Plain facts for reports: source, URL, published top-1, cache path and whether it is there."""
    path = cache_dir() / "weights" / release.file_name
    return {"model": release.model, "source": release.source, "url": release.url,
            "published_top1": release.top1, "cache_path": str(path), "cached": path.is_file()}

