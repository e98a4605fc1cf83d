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


def _stage_folder(folder, records, patience):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"train:\n  patience: {patience}\n")
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "valid": {"mrr@10": v}, "seconds": 10.0 * e}) + "\n"
        for e, v in enumerate(records, 1)))


def test_status_reads_a_run_in_stages_from_its_latest_stage(tmp_path, capsys):
    """S3Rec's table run pre-trains for hours: the row says which stage it is in, with that stage's epochs."""
    study = tmp_path / "t"
    cells = [{"run": f"s3rec__s{i}", "same_as": None} for i in (1, 2, 3, 4)]
    (study / "runs").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"name": "t", "mode": "grid", "metric": "mrr@10", "cells": cells}))
    stages = "stages:\n- {name: pretrain, objective: mip}\n- {name: finetune, objective: ce}\ntrain:\n  patience: 10\n"
    for i in (1, 2, 3, 4):
        run = study / "runs" / (f"s3rec__s{i}" + ("" if i == 1 else ".incomplete"))
        run.mkdir()
        (run / "config.yaml").write_text(stages)
    runs = study / "runs"
    _stage_folder(runs / "s3rec__s1" / "1-pretrain", [0.001, 0.002], 150)  # finished: both stages
    _stage_folder(runs / "s3rec__s1" / "2-finetune", [0.01, 0.03, 0.02], 10)
    (runs / "s3rec__s1" / "summary.json").write_text("{}")
    _stage_folder(runs / "s3rec__s2.incomplete" / "1-pretrain.incomplete", [0.001, 0.003, 0.002, 0.001], 150)
    _stage_folder(runs / "s3rec__s3.incomplete" / "1-pretrain", [0.001], 150)  # pre-trained; fine-tuning claimed
    (runs / "s3rec__s3.incomplete" / "2-finetune.incomplete").mkdir()
    # s3rec__s4: claimed, no stage begun

    assert main(["study", "status", str(study)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| s3rec")}
    assert rows["s3rec__s1"][:4] == ["finished, stage 2/2 finetune", "3", "0.0300 (2)", "1 / 10"]
    assert rows["s3rec__s2"][:5] == ["in progress, stage 1/2 pretrain", "4", "0.0030 (2)", "2 / 150", "25"]
    assert rows["s3rec__s3"][:2] == ["in progress, stage 2/2 finetune", "–"]
    assert rows["s3rec__s4"] == ["started", "–", "–", "–", "–", "–"]
    assert out.rstrip().endswith("1 finished, 2 in progress, 1 started")
