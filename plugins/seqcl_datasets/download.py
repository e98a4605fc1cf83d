"""Download once into the data home: progress on stderr, checksums, temp file + rename.

A file is written to a temporary name in its final folder and renamed only
after every byte the server announced has arrived and the checksum matches, so
a partial download can never be taken for a complete one; a file already under
its final name is never downloaded again (only checked). Every failure (HTTP
error, unreachable host, connection cut, checksum mismatch) is one line.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from seqcl.errors import SeqclError

#: the data home: ``$SEQCL_DATA``, else the user's cache folder
DATA_ENV = "SEQCL_DATA"
_CHUNK = 1 << 20
TIMEOUT_S = 60
#: without a terminal, a progress line this often (seconds)
PROGRESS_EVERY_S = 10.0


class DownloadError(SeqclError):
    """A download or a downloaded file that cannot be used (exit code 2, one line)."""


def data_home() -> Path:
    """``$SEQCL_DATA``, else ``$XDG_CACHE_HOME/seqcl/data``, else ``~/.cache/seqcl/data``."""
    chosen = os.environ.get(DATA_ENV, "")
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "") or "~/.cache"
    return Path(cache).expanduser() / "seqcl" / "data"


class Hashes:
    """sha256 and md5 of a stream, updated chunk by chunk."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.md5.update(chunk)

    def check(self, what: str, sha256: str | None, md5: str | None) -> None:
        """Raise :class:`DownloadError` if a given checksum differs."""
        for name, want, got in (("sha256", sha256, self.sha256.hexdigest()), ("md5", md5, self.md5.hexdigest())):
            if want and want.lower() != got:
                raise DownloadError(f"{what}: {name} checksum mismatch (got {got}, expected {want})")


def file_hashes(path: Path) -> Hashes:
    hashes = Hashes()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            hashes.update(chunk)
    return hashes


def verify(path: Path, sha256: str | None, md5: str | None, log: Callable[[str], None]) -> None:
    """Check a file against the pinned checksums, or against the sha256 recorded at its first download."""
    hashes = file_hashes(path)
    recorded = _recorded(path)
    if not sha256 and not md5 and recorded:
        sha256 = recorded
    try:
        hashes.check(str(path), sha256, md5)
    except DownloadError as exc:
        raise DownloadError(f"{exc}; delete the file to download it again") from None


def fetch(url: str, dest: Path, sha256: str | None, md5: str | None, log: Callable[[str], None]) -> Path:
    """``dest``, downloaded from ``url`` unless it is already there; checked either way."""
    if dest.is_file():
        verify(dest, sha256, md5, log)
        log(f"{dest.name}: already downloaded ({dest})")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            hashes = _download(url, out, log)
            out.flush()
            os.fsync(out.fileno())
        hashes.check(f"{url}", sha256, md5)
        if not sha256 and not md5:
            log(f"warning: {dest.name}: no checksum is pinned for it; sha256 {hashes.sha256.hexdigest()} "
                "is recorded beside it and checked from now on (pin it in seqcl_datasets/sources.py)")
        (dest.parent / f"{dest.name}.sha256").write_text(f"{hashes.sha256.hexdigest()}  {dest.name}\n")
        os.replace(tmp, dest)
    except DownloadError as exc:
        raise DownloadError(f"{exc}; nothing was kept") from None
    finally:
        tmp.unlink(missing_ok=True)
    log(f"{dest.name}: downloaded to {dest} (sha256 {hashes.sha256.hexdigest()})")
    return dest


def _recorded(path: Path) -> str | None:
    sidecar = path.parent / f"{path.name}.sha256"
    try:
        return sidecar.read_text().split()[0]
    except (OSError, IndexError):
        return None


def _download(url: str, out, log: Callable[[str], None]) -> Hashes:
    """Stream ``url`` into ``out``; the bytes must be as many as the server announced."""
    hashes = Hashes()
    request = urllib.request.Request(url, headers={"User-Agent": "seqcl-data-get"})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason}); the download needs network access") from None
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        size = f" ({total / 1e6:.1f} MB)" if total else ""
        log(f"downloading {url}{size}")
        done = 0
        bar = _bar(total, url.rsplit("/", 1)[-1])
        last = time.perf_counter()
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hashes.update(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                now = time.perf_counter()
                if bar.disable and now - last >= PROGRESS_EVERY_S:
                    last = now
                    log(f"  {done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else ""))
        except (OSError, ValueError, http.client.HTTPException) as exc:  # IncompleteRead, a reset, a timeout
            raise DownloadError(f"{url}: download interrupted after {done} bytes "
                                f"({type(exc).__name__})") from None
        finally:
            bar.close()
    if total is not None and done != total:
        raise DownloadError(f"{url}: download interrupted after {done} of {total} bytes")
    return hashes


def _bar(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty())
