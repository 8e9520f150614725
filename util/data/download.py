"""Downloading and extracting the official CIFAR-10 python batches."""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from util.data.batches import BATCHES_DIR
from util.data.dataset import DataError

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def download_cifar10(
    directory: str | Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 30
) -> Path:
    """Downloads and extracts the official CIFAR-10 python batches into `directory`.

    Returns `directory/cifar-10-batches-py` (what `load_cifar_batches` reads).
    Does nothing if its batches are already there; reuses an already
    downloaded tarball if its md5 matches. The tarball is checked against
    `md5` and extracted only if every member is a plain file or folder inside
    cifar-10-batches-py/. Without network, raises DataError saying where to
    put the batches by hand. `url` may be any urllib URL (tests use file://).
    """
    directory = Path(directory)
    target = directory / BATCHES_DIR
    if (target / "test_batch").is_file() and (target / "batches.meta").is_file():
        log.info("%s: CIFAR-10 batches already present", target)
        return target
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / "cifar-10-python.tar.gz"
    if not (tarball.is_file() and _md5(tarball) == md5):
        _fetch(url, tarball, target, timeout)
        digest = _md5(tarball)
        if digest != md5:
            tarball.unlink()
            raise DataError(
                f"{tarball}: md5 {digest} does not match the expected {md5}; "
                "the download is corrupt and was deleted - try again"
            )
    _extract(tarball, directory)
    if not (target / "test_batch").is_file():
        raise DataError(f"{tarball}: holds no {BATCHES_DIR}/test_batch; not the CIFAR-10 tarball")
    return target


def _fetch(url: str, dest: Path, target: Path, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({getattr(e, 'reason', e)}). Without network access, "
            f"fetch cifar-10-python.tar.gz elsewhere and extract it so that {target}/ holds "
            "data_batch_1..5, test_batch and batches.meta (or place the tarball itself at "
            f"{dest})"
        ) from e
    part.replace(dest)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _extract(tarball: Path, directory: Path) -> None:
    """Extracts only plain files/folders under BATCHES_DIR/; anything else is an error."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if (
                    not (m.isfile() or m.isdir())
                    or Path(m.name).is_absolute()
                    or ".." in parts
                    or not parts
                    or parts[0] != BATCHES_DIR
                ):
                    raise DataError(f"{tarball}: refusing to extract unexpected member {m.name!r}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(directory, members=members, **kwargs)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tarball}: cannot extract ({e})") from e
