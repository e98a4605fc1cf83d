"""Id maps for every input format: through preprocessing, the data cache and back (seqcl.ids)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqcl.data import cache
from seqcl.data.loading import load_data
from seqcl.data.options import DataOptions
from seqcl.data.preprocess import drop_short_users
from seqcl.errors import ConfigError
from seqcl.ids import IdMap


def back(data) -> dict[str, list[str]]:
    """Each user's sequence in the file's own ids, through the maps."""
    ids = IdMap.of(data)
    off = data.offsets.tolist()
    return {ids.users[u]: [ids.items[i - 1] for i in data.items[off[u]:off[u + 1]].tolist()]
            for u in range(data.num_users)}


FILES = {
    # name: (file text, expected user → item tokens after preprocessing)
    "numbered.txt": ("u1 1 2 3\nshort 1 2\nu2 3 2 1 4\n", {"u1": ["1", "2", "3"], "u2": ["3", "2", "1", "4"]}),
    "sparse.txt": ("a 10 500 7\nb 7 7000 10 10\n", {"a": ["10", "500", "7"], "b": ["7", "7000", "10", "10"]}),
    "shop.csv": ("user,item,timestamp\nzed,B07,5\nann,B01,1\nzed,B01,2\nann,B07,3\nzed,X9,1\nann,X9,0\nann,B01,9\n",
                 {"zed": ["X9", "B01", "B07"], "ann": ["X9", "B01", "B07"]}),
    "shop.inter": ("user_id:token\titem_id:token\ttimestamp:float\nq\tii\t3\nq\tjj\t1\nq\tkk\t2\np\tjj\t0\np\tkk\t1\n"
                   "p\tii\t2\n", {"q": ["jj", "kk", "ii"], "p": ["jj", "kk", "ii"]}),
}


@pytest.mark.parametrize("name", FILES)
def test_every_format_maps_back_to_the_files_ids(tmp_path, name):
    text, expected = FILES[name]
    path = tmp_path / name
    path.write_text(text)
    options = DataOptions(k_core=1, cache_dir=str(tmp_path / "cache"))
    data, key = load_data(str(path), options)
    assert back(data) == expected
    assert list(back(data)) == list(expected)  # user rows in file order
    cached, _ = load_data(str(path), options)  # the second load comes from the cache
    assert cache.cache_path(tmp_path / "cache", key).is_file()
    assert (cached.item_ids, cached.user_ids) == (data.item_ids, data.user_ids)


def test_numbered_file_map_is_the_identity(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("7 1 2 3\n8 4 3 2\n")
    data, _ = load_data(str(path), DataOptions(cache_dir=str(tmp_path)))
    assert data.item_ids == ["1", "2", "3", "4"] and data.user_ids == ["7", "8"]


def test_builtin_ids_follow_dropped_users():
    data, _ = load_data("builtin", DataOptions())
    assert data.item_ids == [str(i) for i in range(1, data.num_items + 1)]
    assert data.user_ids == [str(u) for u in range(1, data.num_users + 1)]
    lengths = data.lengths()
    dropped = drop_short_users(data, int(lengths.float().median()))
    kept = [str(u + 1) for u in range(data.num_users) if lengths[u] >= int(lengths.float().median())]
    assert dropped.user_ids == kept and dropped.item_ids == data.item_ids


def test_cache_entry_with_a_changed_id_map_is_rebuilt(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(FILES["shop.csv"][0])
    options = DataOptions(k_core=1, cache_dir=str(tmp_path / "cache"))
    data, key = load_data(str(path), options)
    entry = cache.cache_path(tmp_path / "cache", key)
    blob = torch.load(entry, weights_only=True)
    blob["item_ids"] = list(reversed(blob["item_ids"]))  # a wrong map would silently mislabel every item
    torch.save(blob, entry)
    assert cache.load_cached(tmp_path / "cache", key) is None


def test_id_map_file_round_trip_and_errors(tmp_path):
    ids = IdMap(["b", "a"], ["u"])
    (tmp_path / "ids.json").write_text(json.dumps(ids.to_json()))
    again = IdMap.read(tmp_path / "ids.json")
    assert again == ids and again.internal("a") == 2 and again.internal("zz") is None
    assert again.unknown(["a", "zz", 3]) == ["zz", "3"]
    with pytest.raises(ConfigError, match="no id map"):
        IdMap.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": 1, "items": [1, 2], "users": []}))
    with pytest.raises(ConfigError, match="not a seqcl id map"):
        IdMap.read(tmp_path / "bad.json")


def test_every_run_folder_has_the_maps(tmp_path, tiny_file):
    """Training writes ids.json and model.json, for a numbered file too (identity map)."""
    from seqcl.cli import main

    from conftest import TINY

    assert main(["train", "--dataset", str(tiny_file), "--epochs", "1", *TINY, "--set", f"run.dir={tmp_path}"]) == 0
    (run,) = [p for p in Path(tmp_path).iterdir() if p.is_dir()]
    ids = IdMap.read(run / "ids.json")
    data, _ = load_data(str(tiny_file), DataOptions(max_len=20))
    assert ids.items == [str(i) for i in range(1, data.num_items + 1)]
    assert ids.users == [line.split()[0] for line in tiny_file.read_text().splitlines()]
    assert json.loads((run / "model.json").read_text())["num_items"] == data.num_items
