"""``seqcl study status``: each run's state, epochs and best valid metric, read from its folder."""

import json
import shutil

from seqcl.cli import main

from study_helpers import write_spec


def test_status_of_finished_in_progress_and_not_started_runs(tmp_path, tiny_file, capsys):
    spec = write_spec(tmp_path / "s.yaml", tiny_file, variants={"a": {"augmenter": "none"}}, seeds=[1, 2, 3],
                      base={"train": {"epochs": 2, "batch_size": 128, "threads": 1, "patience": 7}})
    assert main(["study", str(spec), "--runs-dir", str(tmp_path / "runs"), "--no-report"]) == 0
    runs = tmp_path / "runs" / "t" / "runs"
    (runs / "a__s2" / "summary.json").unlink()  # as a run stopped after its second epoch leaves it
    (runs / "a__s2").rename(runs / "a__s2.incomplete")
    shutil.rmtree(runs / "a__s3")
    (runs / "a__s3.incomplete").mkdir()  # claimed, stopped before its first epoch was saved
    capsys.readouterr()

    assert main(["study", "status", str(tmp_path / "runs" / "t")]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| a__")}
    for run in ("a__s1", "a__s2"):
        folder = runs / run if run == "a__s1" else runs / f"{run}.incomplete"
        records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        best = max(records, key=lambda r: r["valid"]["mrr@10"])
        assert rows[run][1:4] == ["2", f"{best['valid']['mrr@10']:.4f} ({best['epoch']})",
                                  f"{2 - best['epoch']} / 7"]
    assert rows["a__s1"][0] == "finished" and rows["a__s2"][0] == "in progress"
    assert rows["a__s3"] == ["started", "–", "–", "–", "–", "–"]
    assert out.rstrip().endswith("1 finished, 1 in progress, 1 started")
    shutil.rmtree(runs / "a__s3.incomplete")
    assert main(["study", "status", str(tmp_path / "runs" / "t")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("1 finished, 1 in progress, 1 not started")

    assert main(["study", "status", str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
