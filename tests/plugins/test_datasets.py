"""``seqcl data get``: fixture archives served from 127.0.0.1, checksums, failures, each data set's pipeline.

No test touches the outside network: every URL is a local server's (``--mirror``
or ``--from``), or the table's entry is replaced in the test.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from seqcl.cli import main
from seqcl.data.loading import load_data
from seqcl.data.options import DataOptions
from seqcl_datasets import sources
from seqcl_datasets.sources import SOURCES, Remote

from conftest import SHARED_DATA


class Handler(BaseHTTPRequestHandler):
    """``/<file>`` from ``files``; ``/missing/…`` is a 404; ``/cut/<file>`` stops half way through."""

    files: dict[str, bytes] = {}
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/missing/") or name not in self.files:
            self.send_error(404, "Not Found")
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/cut/"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.files, Handler.hits = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("SEQCL_DATA", str(path))
    return path


def pin(monkeypatch, name: str, body: bytes, **changes) -> None:
    """Point the table's entry at the fixture: its archive sha256 pinned to ``body``'s."""
    source = SOURCES[name]
    remote = dataclasses.replace(source.remote or Remote(f"https://example.invalid/{name}.zip"),
                                 sha256=hashlib.sha256(body).hexdigest(), md5=None)
    monkeypatch.setitem(SOURCES, name, dataclasses.replace(source, remote=remote, **changes))


def get(capsys, *args: str) -> tuple[int, str, list[str]]:
    code = main(["data", "get", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip().splitlines()


def zipped(member: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, text)
    return buf.getvalue()


def sequences(path: Path) -> list[list[int]]:
    data, _ = load_data(str(path), DataOptions())
    return [data.items[data.offsets[u]:data.offsets[u + 1]].tolist() for u in range(data.num_users)]


# ---------------------------------------------------------------- MovieLens-100K against the shared copy


def u_data() -> str:
    """GroupLens ``u.data`` rebuilt from ``ml-100k.csv`` (the same rows, tab separated, no header)."""
    path = SHARED_DATA / "ml-100k.csv"
    if not path.is_file():
        pytest.skip("../shared/data/ml-100k.csv not present")
    lines = path.read_text().splitlines()
    assert lines[0] == "user_id,item_id,rating,timestamp"
    return "".join(line.replace(",", "\t") + "\n" for line in lines[1:])


def test_udata_checksum_pinned_in_the_table():
    """The table's u.data sha256 is the file's (size and hash ends as the shared data README records)."""
    body = u_data().encode()
    assert len(body) == 1_979_173
    digest = hashlib.sha256(body).hexdigest()
    assert digest.startswith("06416e59") and digest.endswith("dca490")
    assert SOURCES["ml-100k"].member_sha256 == digest


def test_ml100k_pipeline_matches_the_reference(server, home, capsys, monkeypatch):
    archive = zipped("ml-100k/u.data", u_data())
    Handler.files["ml-100k.zip"] = archive
    pin(monkeypatch, "ml-100k", archive)
    code, out, err = get(capsys, "ml-100k", "--mirror", server + "/")
    assert code == 0, err
    assert out == str(home / "ml-100k.txt") and (home / "downloads" / "ml-100k.zip").read_bytes() == archive
    data, _ = load_data(out, DataOptions())
    assert (data.num_users, data.num_items, data.num_actions) == (943, 1349, 99287)
    assert sequences(Path(out)) == sequences(SHARED_DATA / "ml-100k.csv")  # the core's CSV path, user by user
    assert err[-1].endswith("actions 99287 -> the same")
    assert not list((home / "downloads").glob(".*part"))
    # never downloaded twice: the output is reused, and --force re-reads the cached archive
    assert get(capsys, "ml-100k", "--mirror", server + "/")[1] == out
    code, _, err = get(capsys, "ml-100k", "--mirror", server + "/", "--force")
    assert code == 0 and any("already downloaded" in line for line in err)
    assert Handler.hits == ["/ml-100k.zip"]


def test_member_checksum_catches_a_different_file(server, capsys, monkeypatch):
    archive = zipped("ml-100k/u.data", "1\t2\t3\t881250949\n")
    Handler.files["ml-100k.zip"] = archive
    pin(monkeypatch, "ml-100k", archive)
    code, _, err = get(capsys, "ml-100k", "--mirror", server)
    assert code == 2 and [line for line in err if line.startswith("error")] == err[-1:]
    assert "ml-100k.zip:ml-100k/u.data: sha256 checksum mismatch" in err[-1]
    assert err[-1].endswith("not the publisher's file")


# ---------------------------------------------------------------- failures: one line, nothing kept


def test_checksum_mismatch(server, home, capsys):
    Handler.files["ml-100k.zip"] = b"not the GroupLens zip"
    code, out, err = get(capsys, "ml-100k", "--mirror", server)
    assert code == 2 and out == ""
    assert err[-1].startswith("error: ") and "md5 checksum mismatch" in err[-1] and "0e33842e" in err[-1]
    assert err[-1].endswith("nothing was kept") and list((home / "downloads").iterdir()) == []


def test_http_error(server, home, capsys):
    code, _, err = get(capsys, "ml-100k", "--mirror", server + "/missing")
    assert code == 2 and err == [f"error: {server}/missing/ml-100k.zip: HTTP 404 Not Found; nothing was kept"]
    assert list((home / "downloads").iterdir()) == []


def test_interrupted_download(server, home, capsys):
    Handler.files["ml-100k.zip"] = b"x" * 10_000
    code, _, err = get(capsys, "ml-100k", "--mirror", server + "/cut")
    assert code == 2 and "download interrupted after 5000" in err[-1] and "of 10000 bytes" in err[-1]
    assert len([line for line in err if line.startswith("error")]) == 1
    assert list((home / "downloads").iterdir()) == []  # no partial file, under any name


def test_unreachable_host(home, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = get(capsys, "ml-100k", "--mirror", f"http://127.0.0.1:{port}")
    assert code == 2 and "cannot connect" in err[-1] and "needs network access" in err[-1]


def test_unknown_name(capsys):
    code, _, err = get(capsys, "ml-10k")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: unknown data set 'ml-10k' (did you mean")


def test_corrupted_cached_download_is_reported(server, home, capsys, monkeypatch):
    archive = zipped("ml-100k/u.data", u_data())
    Handler.files["ml-100k.zip"] = archive
    pin(monkeypatch, "ml-100k", archive)
    assert get(capsys, "ml-100k", "--mirror", server)[0] == 0
    (home / "downloads" / "ml-100k.zip").write_bytes(archive[:-10])
    code, _, err = get(capsys, "ml-100k", "--mirror", server, "--force")
    assert code == 2 and "checksum mismatch" in err[-1] and err[-1].endswith("delete the file to download it again")


# ---------------------------------------------------------------- the other data sets' readers and pipeline


def reference(rows: list[tuple[str, str, float]], k: int = 5) -> list[list[int]]:
    """S3-Rec's data_process.py, literally: per user in first-appearance order, stable sort by time,
    (repeated pairs removed, earliest kept: SPEC §1), iterative k-core, ids by first appearance."""
    seqs: dict[str, list[tuple[float, str]]] = {}
    for user, item, t in rows:
        seqs.setdefault(user, []).append((t, item))
    users = {u: [] for u in seqs}
    for u, pairs in seqs.items():
        for _, item in sorted(pairs, key=lambda p: p[0]):
            if item not in users[u]:
                users[u].append(item)
    while True:
        count: dict[str, int] = {}
        for s in users.values():
            for i in s:
                count[i] = count.get(i, 0) + 1
        new = {u: [i for i in s if count[i] >= k] for u, s in users.items() if len(s) >= k}
        new = {u: s for u, s in new.items() if s}
        if new == users:
            break
        users = new
    ids: dict[str, int] = {}
    return [[ids.setdefault(i, len(ids) + 1) for i in s] for s in users.values()]


def random_rows(seed: int, n: int = 900) -> list[tuple[str, str, float]]:
    """Users and items with skewed activity, repeated pairs and timestamp ties."""
    rng = random.Random(seed)
    return [(f"U{int(rng.paretovariate(1.2)) % 60}", f"B{int(rng.paretovariate(1.0)) % 80:04d}",
             float(rng.randrange(1_300_000_000, 1_300_000_400, 50))) for _ in range(n)]


@pytest.mark.parametrize("name", ["beauty", "sports", "toys"])
def test_amazon_json(server, home, capsys, monkeypatch, name):
    rows = random_rows(len(name))
    lines = [json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": int(t),
                         "reviewText": "fine"}) for u, i, t in rows]
    lines[3] = repr({"reviewerID": rows[3][0], "asin": rows[3][1], "unixReviewTime": int(rows[3][2])})  # Python literal
    body = gzip.compress(("\n".join(lines) + "\n").encode())
    filename = SOURCES[name].remote.filename
    Handler.files[filename] = body
    pin(monkeypatch, name, body)
    code, out, err = get(capsys, name, "--mirror", server)
    assert code == 0, err
    assert out == str(home / f"{SOURCES[name].output}.txt")
    expected = reference(rows)
    assert len(expected) > 3
    assert sequences(Path(out)) == expected
    assert Path(out).read_text().splitlines()[0].split()[0] == "1"  # users numbered 1..N in line order


def test_ml1m_ratings_dat(server, capsys, monkeypatch):
    rows = random_rows(7)
    text = "".join(f"{u[1:]}::{i[1:]}::4::{int(t)}\n" for u, i, t in rows)
    body = zipped("ml-1m/ratings.dat", text)
    Handler.files["ml-1m.zip"] = body
    pin(monkeypatch, "ml-1m", body)
    code, out, err = get(capsys, "ml-1m", "--mirror", server)
    assert code == 0, err
    assert sequences(Path(out)) == reference([(u[1:], i[1:], t) for u, i, t in rows])


def test_yelp_needs_a_file_and_keeps_2019(tmp_path, capsys):
    code, _, err = get(capsys, "yelp")
    assert code == 2 and len(err) == 1 and "https://www.yelp.com/dataset" in err[0] and "--from" in err[0]
    rows = random_rows(3)
    dates = ["2018-12-31 23:59:59", "2019-01-01 00:00:00", "2019-06-01 12:00:00", "2019-12-31 00:00:01"]
    records, kept = [], []
    for n, (u, i, t) in enumerate(rows):
        date = dates[n % 4] if n % 5 == 0 else f"2019-03-{1 + int(t) % 28:02d} 10:{n % 60:02d}:00"
        records.append(json.dumps({"review_id": str(n), "user_id": u, "business_id": i, "stars": 4, "date": date}))
        if "2019-01-01 00:00:00" <= date <= "2019-12-31 00:00:00":
            kept.append((u, i, float("".join(c for c in date if c.isdigit()))))
    review = "\n".join(records) + "\n"
    tar_path = tmp_path / "yelp_dataset.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("yelp_academic_dataset_review.json")
        info.size = len(review.encode())
        tar.addfile(info, io.BytesIO(review.encode()))
    code, out, err = get(capsys, "yelp", "--from", str(tar_path))
    assert code == 0, err
    assert len(kept) < len(rows) and sequences(Path(out)) == reference(kept)
    plain = tmp_path / "yelp_academic_dataset_review.json"
    plain.write_text(review)
    code, out2, _ = get(capsys, "yelp", "--from", str(plain), "--force")
    assert code == 0 and sequences(Path(out2)) == reference(kept)


def test_every_entry_is_complete():
    """The one table: every data set has a reader, an output stem, and a URL or a manual route."""
    from seqcl_datasets.prepare import READERS

    assert set(SOURCES) == {"beauty", "sports", "toys", "yelp", "ml-1m", "ml-100k"}
    for source in SOURCES.values():
        assert source.reader in READERS and source.output
        assert source.remote is not None or source.manual
        if source.remote is not None:
            assert source.remote.url.startswith(("http://snap.stanford.edu/", "https://files.grouplens.org/"))
    assert sources.AMAZON_2014 in SOURCES["beauty"].remote.url
