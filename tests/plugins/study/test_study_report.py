"""End to end: examples/studies/tiny.yaml with two worker processes, then the report's numbers
recomputed here from each run's summary.json and ranks.pt, and `seqcl compare`."""

import csv
import json
import shutil
import statistics

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from seqcl.cli import main

from study_helpers import EXAMPLES, ledger_trials

METRICS = ["hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr@5", "mrr@10"]
ARMS = {  # csv label → run names (seeds 1 and 2), as the study names them
    "sasrec": ["sasrec__s1", "sasrec__s2"],
    "aclsrec": ["aclsrec__s1", "aclsrec__s2"],
    "lambda (loss.cl.weight=0.05)": ["lambda__loss.cl.weight=0.05__s1", "lambda__loss.cl.weight=0.05__s2"],
    "lambda (loss.cl.weight=0.2)": ["lambda__loss.cl.weight=0.2__s1", "lambda__loss.cl.weight=0.2__s2"],
}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, tiny_file):
    root = tmp_path_factory.mktemp("study")
    args = ["study", str(EXAMPLES / "tiny.yaml"), "--set", f"dataset={tiny_file}", "--set", "train.threads=1",
            "--set", f"data.cache_dir={root / 'cache'}", "--runs-dir", str(root), "--workers", "2"]
    assert main(args) == 0
    return root / "tiny"


def rows(study):
    with open(study / "report.csv") as fh:
        return {r["label"]: r for r in csv.DictReader(fh)}


def user_metrics(run_dirs, split="test"):
    """Per-user metrics written out by hand, averaged over the seeds."""
    out = {m: [] for m in METRICS}
    for d in run_dirs:
        r = torch.load(d / "ranks.pt", weights_only=True)[split].double().numpy()
        for k in (5, 10):
            hit = (r < k).astype(float)
            out[f"hr@{k}"].append(hit)
            out[f"ndcg@{k}"].append(hit / np.log2(r + 2))
            out[f"mrr@{k}"].append(hit / (r + 1))
    return {m: np.mean(v, axis=0) for m, v in out.items()}


def test_every_run_once_in_the_ledger(tiny_study):
    trials = ledger_trials(tiny_study, "tiny")
    assert sorted(t.user_attrs["run"] for t in trials) == sorted(r for runs in ARMS.values() for r in runs)
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(p.name for p in (tiny_study / "runs").iterdir()) == sorted(t.user_attrs["run"] for t in trials)
    for t in trials:
        assert t.user_attrs["run_dir"].endswith(t.user_attrs["run"])
    assert (tiny_study / "logs" / "worker-1.log").is_file() and (tiny_study / "logs" / "worker-2.log").is_file()


def test_table_numbers_match_the_runs(tiny_study):
    table = rows(tiny_study)
    assert list(table) == list(ARMS)
    for label, runs in ARMS.items():
        summaries = [json.loads((tiny_study / "runs" / r / "summary.json").read_text()) for r in runs]
        assert table[label]["n_seeds"] == "2" and table[label]["seeds"] == "1;2"
        for m in METRICS:
            values = [s["test"][m] for s in summaries]
            assert float(table[label][f"{m}_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
            assert float(table[label][f"{m}_std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert table["sasrec"]["is_baseline"] == "True" and table["sasrec"]["hr@5_p"] == ""


def test_significance_matches_scipy_on_the_saved_ranks(tiny_study):
    table = rows(tiny_study)
    base = user_metrics([tiny_study / "runs" / r for r in ARMS["sasrec"]])
    for label in ("aclsrec", "lambda (loss.cl.weight=0.2)"):
        arm = user_metrics([tiny_study / "runs" / r for r in ARMS[label]])
        for m in METRICS:
            delta = arm[m].mean() - base[m].mean()
            assert float(table[label][f"{m}_delta"]) == pytest.approx(delta, abs=1e-12)
            diff = arm[m] - base[m]
            p = 1.0 if not diff.any() else stats.ttest_rel(arm[m], base[m]).pvalue
            assert float(table[label][f"{m}_p"]) == pytest.approx(p, rel=1e-9)
            assert float(table[label][f"{m}_ci_low"]) <= delta <= float(table[label][f"{m}_ci_high"])
            if base[m].mean():
                assert float(table[label][f"{m}_improve_pct"]) == pytest.approx(100 * delta / base[m].mean())


def test_markdown_marks_best_and_runner_up_and_improve(tiny_study):
    table = rows(tiny_study)
    md = (tiny_study / "report.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["variant", "seeds", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR@5", "MRR@10",
                      "Improve (MRR@10)"]
    body = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines[1:5])}
    for i, m in enumerate(METRICS, start=2):
        means = {label: round(float(r[f"{m}_mean"]), 12) for label, r in table.items()}
        ordered = sorted(set(means.values()), reverse=True)
        for label, mean in means.items():
            cell = body[label + (" (baseline)" if label == "sasrec" else "")][i]
            assert cell.startswith("**") == (mean == ordered[0])
            assert cell.startswith("<u>") == (len(ordered) > 1 and mean == ordered[1])
            assert f"{float(table[label][f'{m}_mean']):.4f}" in cell
    improve = body["aclsrec"][-1]
    assert improve.startswith(f"{float(table['aclsrec']['mrr@10_improve_pct']):+.2f}%")
    assert body["sasrec (baseline)"][-1] == "—"
    assert "![plot-lambda-loss.cl.weight](plot-lambda-loss.cl.weight.png)" in md


def test_sweep_plot_holds_the_table_numbers(tiny_study):
    png = tiny_study / "plot-lambda-loss.cl.weight.png"
    image = Image.open(png)
    assert image.format == "PNG" and image.size[0] > 300
    data = json.loads(image.text["Description"])
    table = rows(tiny_study)
    assert data["x"] == [0.05, 0.2] and data["key"] == "loss.cl.weight"
    for m in ("hr@5", "ndcg@5", "mrr@5"):
        expect = [float(table[f"lambda (loss.cl.weight={x})"][f"{m}_mean"]) for x in ("0.05", "0.2")]
        assert data["series"][m]["mean"] == pytest.approx(expect)
        assert data["baseline"][m] == pytest.approx([float(table["sasrec"][f"{m}_mean"])] * 2)


def test_report_command_with_wilcoxon(tiny_study, capsys):
    assert main(["study", "report", str(tiny_study), "--test", "wilcoxon", "--bootstrap", "100", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Wilcoxon signed-rank test" in out and "100 resamples" in out
    base = user_metrics([tiny_study / "runs" / r for r in ARMS["sasrec"]])
    arm = user_metrics([tiny_study / "runs" / r for r in ARMS["aclsrec"]])
    p = stats.wilcoxon(arm["hr@10"], base["hr@10"]).pvalue
    assert float(rows(tiny_study)["aclsrec"]["hr@10_p"]) == pytest.approx(p, rel=1e-9)
    assert main(["study", "report", str(tiny_study)]) == 0  # back to the defaults for the other tests
    capsys.readouterr()
    assert main(["study", "report", str(tiny_study / "runs")]) == 2
    assert "not a study directory" in capsys.readouterr().err


def test_report_on_another_split_sits_beside_the_default_one(tiny_study, capsys):
    before = {name: (tiny_study / name).read_bytes() for name in ("report.md", "report.csv")}
    assert main(["study", "report", str(tiny_study), "--split", "test_history_kept", "--bootstrap", "0",
                 "--no-plots"]) == 0
    assert "report-test_history_kept.md" in capsys.readouterr().err
    assert {name: (tiny_study / name).read_bytes() for name in before} == before  # the default is not overwritten
    assert (tiny_study / "report-test_history_kept.md").read_text().startswith(
        "# Study `tiny`\n\nTest split, the user's history kept in the ranking (RecBole's protocol), ")
    with open(tiny_study / "report-test_history_kept.csv") as fh:
        kept = {r["label"]: r for r in csv.DictReader(fh)}
    for label, runs in ARMS.items():
        values = [json.loads((tiny_study / "runs" / r / "summary.json").read_text())["test_history_kept"]["mrr@10"]
                  for r in runs]
        assert float(kept[label]["mrr@10_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)


def test_the_study_files_split_is_the_reports_default(tiny_study, tmp_path, capsys):
    study = tmp_path / "tiny"
    shutil.copytree(tiny_study, study, ignore=shutil.ignore_patterns("report*", "*.png"))
    info = json.loads((study / "study.json").read_text())
    info["spec"]["split"] = "valid"  # as `split: valid` in the study file writes it
    (study / "study.json").write_text(json.dumps(info))
    assert main(["study", "report", str(study), "--bootstrap", "0", "--no-plots"]) == 0
    assert "Valid split" in capsys.readouterr().out
    assert not (study / "report.md").exists()  # nothing read from the test split
    with open(study / "report-valid.csv") as fh:
        table = {r["label"]: r for r in csv.DictReader(fh)}
    for label, runs in ARMS.items():
        values = [json.loads((study / "runs" / r / "summary.json").read_text())["valid"]["mrr@10"] for r in runs]
        assert float(table[label]["mrr@10_mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
    assert main(["study", "report", str(study), "--split", "test", "--bootstrap", "0", "--no-plots"]) == 0
    assert (study / "report.md").read_text().startswith("# Study `tiny`\n\nTest split")  # the flag wins


def test_compare_two_runs(tiny_study, capsys):
    a, b = tiny_study / "runs" / "sasrec__s1", tiny_study / "runs" / "aclsrec__s1"
    assert main(["compare", str(a), str(b), "--bootstrap", "500"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[0] in METRICS}
    ua, ub = user_metrics([a]), user_metrics([b])
    for m in METRICS:
        cols = lines[m]
        assert float(cols[1]) == pytest.approx(ua[m].mean(), abs=5e-5)
        assert float(cols[2]) == pytest.approx(ub[m].mean(), abs=5e-5)
        assert float(cols[3]) == pytest.approx(ub[m].mean() - ua[m].mean(), abs=5e-5)
        p = 1.0 if not (ub[m] - ua[m]).any() else stats.ttest_rel(ub[m], ua[m]).pvalue
        shown = cols[-1].rstrip("*")
        assert shown == "<1e-4" and p < 1e-4 or float(shown) == pytest.approx(p, abs=5e-5)
    assert main(["compare", str(a), str(a)]) == 0  # a run against itself: no difference at all
    out = capsys.readouterr().out
    assert "+0.0000" in out and " 1.0000" in out and "*" not in out.split("p:")[1]
    assert main(["compare", str(a), str(tiny_study)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_learning_curves_plot_every_run_from_its_metrics(tiny_study):
    md = (tiny_study / "report.md").read_text()
    assert "![plot-curves](plot-curves.png)" in md
    data = json.loads(Image.open(tiny_study / "plot-curves.png").text["Description"])
    assert sorted(data["series"]) == sorted(r for runs in ARMS.values() for r in runs)
    for run, series in data["series"].items():
        records = [json.loads(x) for x in (tiny_study / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        assert series["epoch"] == [r["epoch"] for r in records]
        assert series["valid"] == pytest.approx([r["valid"]["mrr@10"] for r in records])


def test_cost_table_and_over_seed_test_match_the_runs(tiny_study):
    md = (tiny_study / "report.md").read_text()
    summaries = {r: json.loads((tiny_study / "runs" / r / "summary.json").read_text()) for r in ARMS["aclsrec"]}
    best = [s["best_epoch"] for s in summaries.values()]
    cost = next(line for line in md.splitlines() if line.startswith("| aclsrec |") and line.endswith(" s |"))
    cells = [c.strip() for c in cost.strip("|").split("|")]
    mean, sd = statistics.mean(best), statistics.stdev(best)
    assert cells[1] == f"{mean:.1f} ± {sd:.1f}"
    # over seeds: headline metric paired by seed, scipy's paired t-test
    base = [json.loads((tiny_study / "runs" / r / "summary.json").read_text())["test"]["mrr@10"]
            for r in ARMS["sasrec"]]
    arm = [summaries[r]["test"]["mrr@10"] for r in ARMS["aclsrec"]]
    seeds = next(line for line in md.splitlines() if line.startswith("| aclsrec | 1, 2 |"))
    cells = [c.strip() for c in seeds.strip("|").split("|")]
    assert cells[2] == f"{statistics.mean(a - b for a, b in zip(arm, base)):+.4f}"
    p = 1.0 if arm == base else stats.ttest_rel(arm, base).pvalue
    assert cells[3] == ("–" if np.isnan(p) else f"{p:.4f}" if p >= 1e-4 else "<1e-4")


def test_references_shown_beside_their_row(tiny_study, tmp_path):
    import shutil

    from seqcl_study.report import build_report, markdown

    study = tmp_path / "tiny"
    shutil.copytree(tiny_study, study)
    info = json.loads((study / "study.json").read_text())
    info["spec"]["references"] = {"aclsrec": {"source": "paper, Table 2", "hr@5": 0.0582, "mrr@10": 0.0357}}
    (study / "study.json").write_text(json.dumps(info))
    md = markdown(build_report(study, n_boot=0))
    lines = md.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| aclsrec | 2 |"))
    ref = [c.strip() for c in lines[row + 1].strip("|").split("|")]
    assert ref[0] == "↳ *paper, Table 2*" and ref[2] == "0.0582" and ref[7] == "0.0357" and ref[3] == ""


def test_compare_pairs_users_by_their_ids(tiny_study, capsys, tmp_path):
    """ranks.pt row u is user ids.json users[u]: runs whose user lists differ are not paired."""
    import json
    import shutil

    a = tiny_study / "runs" / "sasrec__s1"
    b = shutil.copytree(tiny_study / "runs" / "aclsrec__s1", tmp_path / "b")
    ids = json.loads((b / "ids.json").read_text())
    ids["users"][:2] = ids["users"][1::-1]
    (b / "ids.json").write_text(json.dumps(ids))
    assert main(["compare", str(a), str(b)]) == 2
    assert "list different users in ids.json" in capsys.readouterr().err
