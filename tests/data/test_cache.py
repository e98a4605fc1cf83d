"""Cache: keys, hits that skip parsing, atomic writes, corrupt entries; options validation."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from seqcl.data import cache, readers
from seqcl.data.dataset import SequenceData
from seqcl.data.loading import load_data
from seqcl.data.options import DataOptions
from seqcl.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

SEQS = "1 1 2 3 4\n2 2 3 4 5\n3 5 4 3\n"
CSV = "user,item,timestamp\n" + "".join(f"u{u},i{i},{u * 10 + i}\n" for u in range(6) for i in range(6))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def options(tmp_path: Path, **kw: object) -> DataOptions:
    return DataOptions(cache_dir=str(tmp_path / "cache"), **kw)  # type: ignore[arg-type]


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kw: object) -> None:
        raise AssertionError("the reader ran although the cache should have answered")

    for name in ("read_sequences", "read_csv", "read_inter"):
        monkeypatch.setattr(readers, name, boom)


def same(a: SequenceData, b: SequenceData) -> bool:
    return torch.equal(a.items, b.items) and torch.equal(a.offsets, b.offsets) and a.num_items == b.num_items


# ---------------------------------------------------------------- hits


@pytest.mark.parametrize(("name", "text"), [("s.txt", SEQS), ("r.csv", CSV)])
def test_second_load_skips_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    first, key = load_data(str(path), options(tmp_path))
    assert (tmp_path / "cache" / f"{key}.pt").is_file()
    no_parsing(monkeypatch)
    second, key2 = load_data(str(path), options(tmp_path))
    assert key2 == key and same(first, second)
    assert second.name == path.stem


def test_beauty_cached_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = SHARED / "Beauty.txt"
    if not src.is_file():
        pytest.skip(f"{src} not available")
    first, key = load_data(str(src), options(tmp_path))
    no_parsing(monkeypatch)
    second, _ = load_data(str(src), options(tmp_path))
    assert same(first, second) and second.num_users == 22363 and second.name == "Beauty"


def test_key_follows_content_not_path(tmp_path: Path) -> None:
    a = write(tmp_path, "a.txt", SEQS)
    (tmp_path / "b").mkdir()
    b = tmp_path / "b" / "a.txt"
    shutil.copy(a, b)
    _, ka = load_data(str(a), options(tmp_path))
    _, kb = load_data(str(b), options(tmp_path))
    assert ka == kb
    a.write_text(SEQS + "4 1 2 3\n")
    data, kc = load_data(str(a), options(tmp_path))
    assert kc != ka and data.num_users == 4  # an edited file is never served stale


@pytest.mark.parametrize(
    "change", [{"k_core": 4}, {"max_len": 200}, {"min_user_items": 4}, {"format": "sequences"}]
)
def test_key_changes_with_every_data_option(tmp_path: Path, change: dict[str, object]) -> None:
    path = write(tmp_path, "s.txt", SEQS)
    _, base = load_data(str(path), options(tmp_path))
    _, other = load_data(str(path), dataclasses.replace(options(tmp_path), **change))
    assert other != base  # max_len too: components key their own caches by this key


def test_key_ignores_cache_dir_and_includes_format() -> None:
    o = DataOptions()
    assert cache.cache_key("h", o, "csv") == cache.cache_key("h", dataclasses.replace(o, cache_dir="/x"), "csv")
    assert cache.cache_key("h", o, "csv") != cache.cache_key("h", o, "inter")
    assert cache.cache_key("h", o, "csv") != cache.cache_key("h2", o, "csv")


def test_env_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQCL_CACHE_DIR", str(tmp_path / "env"))
    _, key = load_data(str(write(tmp_path, "s.txt", SEQS)), DataOptions())
    assert (tmp_path / "env" / f"{key}.pt").is_file()


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("garbage", [b"", b"not a torch file", "truncate"])
def test_corrupt_entry_is_rebuilt(tmp_path: Path, garbage: bytes | str) -> None:
    path = write(tmp_path, "s.txt", SEQS)
    good, key = load_data(str(path), options(tmp_path))
    entry = tmp_path / "cache" / f"{key}.pt"
    blob = entry.read_bytes()
    entry.write_bytes(blob[: len(blob) // 2] if garbage == "truncate" else garbage)  # type: ignore[arg-type]
    again, key2 = load_data(str(path), options(tmp_path))
    assert key2 == key and same(good, again)
    assert cache.load_cached(tmp_path / "cache", key) is not None  # rewritten whole


def test_foreign_or_inconsistent_entry_is_rejected(tmp_path: Path) -> None:
    bad = {"version": cache.FORMAT_VERSION, "items": torch.tensor([1, 2]), "offsets": torch.tensor([0, 3]), "num_items": 2}
    torch.save(bad, tmp_path / "k.pt")
    assert cache.load_cached(tmp_path, "k") is None
    torch.save({"version": cache.FORMAT_VERSION + 1}, tmp_path / "k.pt")
    assert cache.load_cached(tmp_path, "k") is None


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = SequenceData(torch.tensor([1, 2, 3]), torch.tensor([0, 3]), 3)

    def killed(obj: object, f: object) -> None:
        f.write(b"half a file")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.save_cached(tmp_path, "k", data)
    assert list(tmp_path.iterdir()) == []


def test_save_roundtrip_leaves_no_temp_files(tmp_path: Path) -> None:
    data = SequenceData(torch.tensor([1, 2, 3, 2]), torch.tensor([0, 3, 4]), 3, "x")
    path = cache.save_cached(tmp_path, "k", data)
    assert path == tmp_path / "k.pt" and [p.name for p in tmp_path.iterdir()] == ["k.pt"]
    back = cache.load_cached(tmp_path, "k")
    assert back is not None and same(back, data) and back.name == "x"


def test_full_disk_warns_once_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    """torch.save on a full disk raises RuntimeError (not OSError) after writing part of the file."""

    def disk_full(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 part of a zip")  # type: ignore[attr-defined]
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                           "file data/0: file write failed\nmore detail")

    monkeypatch.setattr(torch, "save", disk_full)
    src = write(tmp_path, "s.txt", SEQS)
    first, key = load_data(str(src), options(tmp_path))
    second, _ = load_data(str(src), options(tmp_path))  # the cache is still full: no second warning
    assert first.num_users == 3 and same(first, second)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(tmp_path / "cache" / f"{key}.pt") in err[0] and "file write failed" in err[0], err
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file, under the final name or any other


def test_entry_with_changed_item_id_is_rebuilt(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path, "s.txt", SEQS)
    good, key = load_data(str(src), options(tmp_path))
    entry = tmp_path / "cache" / f"{key}.pt"
    blob = torch.load(entry, weights_only=True)
    items = blob["items"].clone()
    items[0] = 1 if int(items[0]) != 1 else 2  # still a valid id: only a checksum can tell
    torch.save({**blob, "items": items}, entry)  # a whole, valid archive
    again, _ = load_data(str(src), options(tmp_path))
    assert same(again, good)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(entry) in err[0] and "rebuilding" in err[0], err
    assert torch.equal(torch.load(entry, weights_only=True)["items"], good.items)  # rewritten
    assert same(load_data(str(src), options(tmp_path))[0], good) and capfd.readouterr().err == ""


def test_unwritable_cache_is_not_fatal(tmp_path: Path) -> None:
    blocker = write(tmp_path, "blocker", "a file where the cache dir should be")
    data, _ = load_data(str(write(tmp_path, "s.txt", SEQS)), DataOptions(cache_dir=str(blocker / "sub")))
    assert data.num_users == 3


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k_core": 0}, "data.k_core must be >= 1, got 0"),
        ({"min_user_items": 2}, "data.min_user_items must be >= 3, got 2"),
        ({"max_len": 0}, "data.max_len must be >= 1, got 0"),
        ({"k_core": True}, "data.k_core must be an integer, got True"),
        ({"max_len": "50"}, "data.max_len must be an integer, got '50'"),
        ({"format": "parquet"}, "data.format must be one of auto, sequences, inter, csv, got 'parquet'"),
    ],
)
def test_options_validate(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        dataclasses.replace(DataOptions(), **change).validate()
    assert str(exc.value).startswith(message)


def test_load_data_validates_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.k_core"):
        load_data(str(write(tmp_path, "s.txt", SEQS)), options(tmp_path, k_core=0))


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEQCL_CACHE_DIR", raising=False)
    assert DataOptions().resolved_cache_dir() == Path("~/.cache/seqcl").expanduser()
    monkeypatch.setenv("SEQCL_CACHE_DIR", "/tmp/env-cache")
    assert DataOptions().resolved_cache_dir() == Path("/tmp/env-cache")
    assert DataOptions(cache_dir="/tmp/explicit").resolved_cache_dir() == Path("/tmp/explicit")
