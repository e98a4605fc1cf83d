"""Readers: formats, header handling, and one-line errors naming file, line and value."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from seqcl.data import readers
from seqcl.data.loading import load_data
from seqcl.data.options import DataOptions
from seqcl.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("Beauty.txt", "sequences"),
        ("ml-1m.txt.gz", "sequences"),
        ("x.inter", "inter"),
        ("x.INTER.gz", "inter"),
        ("ratings.csv", "csv"),
        ("ratings.tsv", "csv"),
        ("ratings.csv.gz", "csv"),
        ("noext", "sequences"),
    ],
)
def test_resolve_format_by_suffix(name: str, fmt: str) -> None:
    assert readers.resolve_format(name, "auto") == fmt


def test_explicit_format_wins() -> None:
    assert readers.resolve_format("x.csv", "sequences") == "sequences"


# ---------------------------------------------------------------- sequences


def test_sequences_basic_blank_lines_and_tabs(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "1 3 1 2\n\n2\t4 5\t6 7\n  \n3 8\n")
    raw = readers.read_sequences(path)
    assert raw.users == ["1", "2", "3"]
    assert raw.line_numbers.tolist() == [1, 3, 5]
    assert raw.lengths.tolist() == [3, 4, 1]
    assert raw.items.tolist() == [3, 1, 2, 4, 5, 6, 7, 8]


def test_sequences_gzip_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "s.txt.gz"
    path.write_bytes(gzip.compress(b"1 1 2 3\r\n2 2 3 4\r\n"))
    raw = readers.read_sequences(path)
    assert raw.lengths.tolist() == [3, 3]
    assert raw.items.tolist() == [1, 2, 3, 2, 3, 4]


def test_sequences_non_integer_item_names_file_line_value(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty.txt", "1 1 2 3\n2 4 5 6\n\n3 7 x7 8\n")
    with pytest.raises(DataError) as exc:
        readers.read_sequences(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:4: ")
    assert "item id 'x7' is not an integer" in msg


def test_sequences_float_item_is_not_an_integer(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "1 1 2.5 3\n")
    with pytest.raises(DataError, match=r"s\.txt:1: item id '2\.5' is not an integer"):
        readers.read_sequences(path)


def test_sequences_negative_item(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "1 1 2 3\n2 4 -5 6\n")
    with pytest.raises(DataError, match=r"s\.txt:2: item id -5 is negative"):
        readers.read_sequences(path)


def test_sequences_repeated_user_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.txt", "1 1 2 3\n2 4 5 6\n1 7 8 9\n")
    with pytest.raises(DataError, match=r"s\.txt:3: user '1' appears again \(first on line 1\)"):
        readers.read_sequences(path)


@pytest.mark.parametrize("text", ["", "   \n\n\t\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "empty.txt", text)
    with pytest.raises(DataError, match=r"empty\.txt: file is empty"):
        readers.read_sequences(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        readers.read_sequences(tmp_path / "nope.txt")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        readers.read_sequences(tmp_path)


def test_not_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"1 1 2 3\n2 4 \xff 6\n")
    with pytest.raises(DataError, match=r"bin\.txt:2: not UTF-8 text \(byte 0xff\)"):
        readers.read_sequences(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=r"bad\.txt\.gz: cannot read file"):
        readers.read_sequences(path)


def test_load_data_missing_file_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt: file not found"):
        load_data(str(tmp_path / "missing.txt"), DataOptions(cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------- .inter


def test_inter_columns_by_typed_header(tmp_path: Path) -> None:
    text = (
        "timestamp:float\trating:float\titem_id:token\tuser_id:token\n"
        "30\t5\tb\tu1\n10\t4\ta\tu1\n20\t3\ta\tu2\n"
    )
    raw = readers.read_inter(write(tmp_path, "x.inter", text))
    assert len(raw) == 3
    assert raw.user_tokens[raw.users].tolist() == ["u1", "u1", "u2"]
    assert raw.item_tokens[raw.items].tolist() == ["b", "a", "a"]
    assert raw.timestamps.tolist() == [30.0, 10.0, 20.0]
    assert raw.has_timestamp


def test_csv_without_timestamp_says_so_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x.csv", "user,item\nu,b\nu,a\nv,a\n")
    raw = readers.read_csv(path)
    assert not raw.has_timestamp and raw.item_tokens[raw.items].tolist() == ["b", "a", "a"]
    readers.read_csv(path)
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and str(path) in err[0] and "no timestamp column" in err[0] and "file order" in err[0]
    readers.read_csv(write(tmp_path, "t.csv", "user,item,timestamp\nu,b,2\nu,a,1\n"))
    assert capfd.readouterr().err == ""  # a file with timestamps: nothing to say


def test_inter_without_timestamp_keeps_file_order(tmp_path: Path) -> None:
    raw = readers.read_inter(write(tmp_path, "x.inter", "user_id:token\titem_id:token\nu\ta\nu\tb\n"))
    assert not raw.has_timestamp
    assert raw.timestamps.tolist() == [0.0, 0.0]


def test_inter_missing_user_column(tmp_path: Path) -> None:
    path = write(tmp_path, "x.inter", "uid_typo:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"x\.inter:1: no user column in header \['uid_typo', 'item_id'\]"):
        readers.read_inter(path)


def test_inter_malformed_row(tmp_path: Path) -> None:
    path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t2\n")
    with pytest.raises(DataError, match=r"x\.inter:3: expected 3 fields, got 2 in '1\\t2'"):
        readers.read_inter(path)


# ---------------------------------------------------------------- csv


@pytest.mark.parametrize(
    "header",
    ["userId,movieId,rating,timestamp", "user_id,item_id,rating,timestamp", "rating,ts,item,user", "USER,Item,Time"],
)
def test_csv_header_aliases(tmp_path: Path, header: str) -> None:
    cols = header.split(",")
    values = {"user": "u7", "item": "i9", "time": "123", "rating": "4"}

    def role(name: str) -> str:
        n = name.lower().replace("_", "")
        if n.startswith("user"):
            return "user"
        if n in ("movieid", "item", "itemid"):
            return "item"
        return "rating" if n == "rating" else "time"

    row = ",".join(values[role(c)] for c in cols)
    raw = readers.read_csv(write(tmp_path, "r.csv", f"{header}\n{row}\n"))
    assert raw.user_tokens[raw.users].tolist() == ["u7"]
    assert raw.item_tokens[raw.items].tolist() == ["i9"]
    assert raw.timestamps.tolist() == [123.0]


def test_csv_headerless_is_positional_user_item_timestamp(tmp_path: Path) -> None:
    raw = readers.read_csv(write(tmp_path, "r.csv", "5,7,100,3\n5,8,50,4\n"))
    assert raw.user_tokens[raw.users].tolist() == ["5", "5"]
    assert raw.item_tokens[raw.items].tolist() == ["7", "8"]
    assert raw.timestamps.tolist() == [100.0, 50.0]


def test_csv_headerless_with_token_ids(tmp_path: Path) -> None:
    # A non-numeric first field alone is not a header: Amazon-style ids are tokens.
    raw = readers.read_csv(write(tmp_path, "r.csv", "A2XX,B00Y,1369699200\nA2XX,B01Z,1369699300\n"))
    assert raw.user_tokens.tolist() == ["A2XX"]
    assert raw.item_tokens[raw.items].tolist() == ["B00Y", "B01Z"]


def test_tsv_sniffed(tmp_path: Path) -> None:
    raw = readers.read_csv(write(tmp_path, "r.tsv", "user\titem\ttimestamp\n1\t2\t3\n"))
    assert raw.timestamps.tolist() == [3.0]


def test_csv_quoted_fields_and_padding(tmp_path: Path) -> None:
    raw = readers.read_csv(write(tmp_path, "r.csv", 'user,item,timestamp\n"a, b", 7 , 3\n'))
    assert raw.user_tokens.tolist() == ["a, b"]
    assert raw.item_tokens.tolist() == ["7"]


def test_csv_iso_dates(tmp_path: Path) -> None:
    raw = readers.read_csv(write(tmp_path, "r.csv", "user,item,time\n1,2,2020-01-02\n1,3,2020-01-01\n"))
    assert raw.timestamps[0] > raw.timestamps[1]


def test_csv_bad_timestamp_names_line_after_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "user,item,timestamp\n1,2,3\n\n1,3,yesterday\n")
    with pytest.raises(DataError, match=r"r\.csv:4: timestamp 'yesterday' is not a number"):
        readers.read_csv(path)


def test_csv_malformed_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "user,item,timestamp\n1,2,3\n1,2,3,4\n")
    with pytest.raises(DataError, match=r"r\.csv:3: expected 3 fields, got 4 in '1,2,3,4'"):
        readers.read_csv(path)


def test_csv_empty_id(tmp_path: Path) -> None:
    path = write(tmp_path, "r.csv", "user,item,timestamp\n1,2,3\n,2,4\n")
    with pytest.raises(DataError, match=r"r\.csv:3: empty user id"):
        readers.read_csv(path)


def test_csv_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r\.csv: no data rows after the header"):
        readers.read_csv(write(tmp_path, "r.csv", "user,item,timestamp\n\n"))


def test_csv_unknown_header(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r\.csv:1: no user column in header \['a', 'b', 'c'\]"):
        readers.read_csv(write(tmp_path, "r.csv", "a,b,c\n1,2,3\n"))


def test_csv_no_delimiter(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"r\.csv:1: cannot tell the delimiter"):
        readers.read_csv(write(tmp_path, "r.csv", "1 2 3\n"))


# ---------------------------------------------------------------- real files


def test_beauty_raw() -> None:
    raw = readers.read_sequences(shared("Beauty.txt"))
    assert len(raw.users) == 22363
    assert int(raw.lengths.sum()) == 198502
    assert raw.items[:5].tolist() == [1, 2, 3, 4, 5]


def test_ml100k_raw() -> None:
    raw = readers.read_csv(shared("ml-100k.csv"))
    assert len(raw) == 100_000
    assert raw.user_tokens.size == 943 and raw.item_tokens.size == 1682
    assert (raw.user_tokens[raw.users[0]], raw.item_tokens[raw.items[0]], raw.timestamps[0]) == ("196", "242", 881250949)
    assert np.all(raw.timestamps >= 874724710)
