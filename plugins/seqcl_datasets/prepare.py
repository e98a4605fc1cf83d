"""Raw publisher files → the one-line-per-user files the papers train on.

Each reader streams the raw records (archives are read in place, never
unpacked; the Yelp file is gigabytes) into :class:`seqcl.data.readers.RawInteractions`;
then the core's pipeline (:func:`seqcl.data.preprocess.preprocess_interactions_with_report`,
SPEC §1) does the rest: stable sort by time, repeated (user, item) pairs
removed (earliest kept), iterative 5-core, users and items renumbered by first
appearance. ``docs/datasets.md`` lists each step and its source.
"""

from __future__ import annotations

import ast
import gzip
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from seqcl.atomic import atomic_write_text
from seqcl.data.dataset import SequenceData
from seqcl.data.options import DataOptions
from seqcl.data.preprocess import PrepReport, preprocess_interactions_with_report
from seqcl.data.readers import RawInteractions, interactions_from_columns
from seqcl.errors import DataError

from .download import DownloadError, Hashes
from .sources import Source

#: the papers' preprocessing thresholds (5-core; every kept user has >= 5 items anyway)
OPTIONS = DataOptions(k_core=5, min_user_items=3)
#: S3-Rec's Yelp window (data_process.py: reviews dated outside it are dropped; string comparison)
YELP_FROM, YELP_TO = "2019-01-01 00:00:00", "2019-12-31 00:00:00"

Columns = tuple[list[str], list[str], list[float]]


# ---------------------------------------------------------------- opening


@contextmanager
def open_records(path: Path, member: str | None, member_sha256: str | None) -> Iterator[Iterator[bytes]]:
    """The lines of ``member`` inside the archive ``path`` (zip, tar), or of ``path`` itself (gzip-aware).

    ``member_sha256`` is checked once the last line has been read (a wrong file
    fails before anything is written).
    """
    with ExitStack() as stack:
        stream = _open(path, member, stack)
        hashes = Hashes()

        def lines() -> Iterator[bytes]:
            with _bar(path) as bar:
                for line in stream:
                    hashes.update(line)
                    bar.update(1)
                    yield line
            if member_sha256:
                hashes.check(f"{path}:{member}", member_sha256, None)

        yield lines()


def _bar(path: Path):
    """A line counter on stderr while reading (the Yelp file has millions); only on a terminal."""
    import sys

    from tqdm import tqdm

    return tqdm(desc=f"reading {path.name}", unit=" lines", unit_scale=True, leave=False, file=sys.stderr,
                disable=not sys.stderr.isatty(), miniters=10_000)


def _open(path: Path, member: str | None, stack: ExitStack) -> IO[bytes]:
    name = path.name.lower()
    try:
        if zipfile.is_zipfile(path):
            archive = stack.enter_context(zipfile.ZipFile(path))
            return stack.enter_context(archive.open(_find(archive.namelist(), member, path)))
        if name.endswith((".tar", ".tar.gz", ".tgz")) and tarfile.is_tarfile(path):
            archive = stack.enter_context(tarfile.open(path))
            found = _find(archive.getnames(), member, path)
            return stack.enter_context(archive.extractfile(found))  # type: ignore[arg-type]
        if name.endswith(".gz"):
            return stack.enter_context(gzip.open(path, "rb"))
        return stack.enter_context(open(path, "rb"))
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def _find(names: list[str], member: str | None, path: Path) -> str:
    """``member`` in the archive; else the one entry with its file name (archives nest differently)."""
    if member is None:
        raise DataError(f"{path}: an archive, but this data set reads a plain file")
    if member in names:
        return member
    base = PurePosixPath(member).name
    matches = [n for n in names if PurePosixPath(n).name == base]
    if len(matches) != 1:
        raise DataError(f"{path}: no {member} in the archive" if not matches
                        else f"{path}: {len(matches)} files named {base} in the archive")
    return matches[0]


# ---------------------------------------------------------------- readers


def _split(lines: Iterator[bytes], sep: bytes, source: str) -> Columns:
    """``user SEP item SEP rating SEP timestamp`` lines (MovieLens ``u.data`` and ``ratings.dat``)."""
    users, items, times = [], [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.rstrip(b"\r\n").split(sep)
        if len(fields) != 4:
            raise DataError(f"{source}:{n}: expected user, item, rating, timestamp, got {line[:80]!r}")
        try:
            times.append(float(fields[3]))
        except ValueError:
            raise DataError(f"{source}:{n}: timestamp {fields[3][:40]!r} is not a number") from None
        users.append(fields[0].decode())
        items.append(fields[1].decode())
    return users, items, times


def _json_records(lines: Iterator[bytes], source: str) -> Iterator[tuple[int, dict]]:
    """One record per line: JSON, or the Python-literal lines some Amazon files hold (read safely)."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except ValueError:
            try:
                yield n, ast.literal_eval(line.decode())
            except (ValueError, SyntaxError, UnicodeDecodeError):
                raise DataError(f"{source}:{n}: not a JSON record: {line[:80]!r}") from None


def _field(record: dict, key: str, source: str, n: int):
    try:
        return record[key]
    except (KeyError, TypeError):
        raise DataError(f"{source}:{n}: no {key!r} in the record") from None


def read_amazon(lines: Iterator[bytes], source: str) -> Columns:
    """McAuley's review files: (reviewerID, asin, unixReviewTime); every rating kept (S3-Rec: rating > 0)."""
    users, items, times = [], [], []
    for n, record in _json_records(lines, source):
        users.append(str(_field(record, "reviewerID", source, n)))
        items.append(str(_field(record, "asin", source, n)))
        times.append(float(_field(record, "unixReviewTime", source, n)))
    return users, items, times


def read_yelp(lines: Iterator[bytes], source: str) -> Columns:
    """Yelp reviews dated in S3-Rec's window: (user_id, business_id, date as YYYYMMDDhhmmss)."""
    users, items, times = [], [], []
    for n, record in _json_records(lines, source):
        date = str(_field(record, "date", source, n))
        if date < YELP_FROM or date > YELP_TO:
            continue
        digits = "".join(c for c in date if c.isdigit())
        if not digits:
            raise DataError(f"{source}:{n}: date {date!r} has no digits")
        users.append(str(_field(record, "user_id", source, n)))
        items.append(str(_field(record, "business_id", source, n)))
        times.append(float(digits))
    return users, items, times


READERS: dict[str, Callable[[Iterator[bytes], str], Columns]] = {
    "movielens-tab": lambda lines, source: _split(lines, b"\t", source),
    "movielens-dat": lambda lines, source: _split(lines, b"::", source),
    "amazon-json": read_amazon,
    "yelp-json": read_yelp,
}


# ---------------------------------------------------------------- pipeline


def read_raw(source: Source, path: Path) -> RawInteractions:
    """The raw interactions of ``source`` from the downloaded (or given) file ``path``."""
    label = f"{path}:{source.member}" if source.member and _is_archive(path) else str(path)
    member_sha256 = source.member_sha256 if _is_archive(path) else None
    try:
        with open_records(path, source.member, member_sha256) as lines:
            users, items, times = READERS[source.reader](lines, label)
    except DownloadError as exc:
        raise DownloadError(f"{exc}; not the publisher's file") from None
    return interactions_from_columns(label, users, items, times)


def _is_archive(path: Path) -> bool:
    return zipfile.is_zipfile(path) or (path.name.lower().endswith((".tar", ".tar.gz", ".tgz"))
                                        and tarfile.is_tarfile(path))


def preprocess(source: Source, raw: RawInteractions) -> tuple[SequenceData, PrepReport]:
    """SPEC §1 with k = 5 (the papers' 5-core)."""
    return preprocess_interactions_with_report(raw, OPTIONS, source.output)


def write_sequences(data: SequenceData, path: Path) -> Path:
    """``user item item …`` lines, users 1..N in order (the S3-Rec/ICLRec ``*.txt`` format), atomically."""
    lines = []
    for u in range(data.num_users):
        items = data.items[data.offsets[u]:data.offsets[u + 1]].tolist()
        lines.append(" ".join(map(str, [u + 1, *items])))
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "\n".join(lines) + "\n")
