"""The handoff between the two halves: records written by real runs, read by the report."""
from __future__ import annotations

import csv

import pytest


@pytest.mark.slow
def test_report_reads_what_the_runs_wrote(run_small, tmp_path):
    from peftbench.analysis.report import build

    recs = {m: run_small(f"method={m}", "steps=4", "measure.latency=true", "measure.latency_repeats=5")
            for m in ("full_ft", "lora", "pfeiffer")}
    assert all(r["status"] == "ok" for r in recs.values())
    made = build([str(tmp_path / "results")], tmp_path / "report", tmp_path / "no_claims")
    assert not made["loaded"].problems and made["loaded"].failed.empty
    [table] = (tmp_path / "report" / "tables").glob("*.csv")
    rows = {r["method"]: r for r in csv.DictReader(table.open())}
    assert set(rows) == {"full_ft", "lora", "pfeiffer"}
    for m, rec in recs.items():
        row = rows[m]
        # one name from the record to the CSV: the record path is the column
        assert int(float(row["params.trainable"])) == rec["params"]["trainable"]
        assert float(row["metrics.test.accuracy_mean"]) == pytest.approx(rec["metrics"]["test"]["accuracy"])
        assert float(row["primary_mean"]) == pytest.approx(rec["metrics"]["test"]["accuracy"])
        assert float(row["cost.peak_train_mem_growth_bytes"]) == rec["cost"]["peak_train_mem_growth_bytes"]
        assert float(row["cost.latency_overhead_unmerged_frac"]) == pytest.approx(rec["cost"]["latency_overhead_unmerged_frac"])
        # precision=auto, resolved (fp32 in tests on every CPU: tests/conftest.py)
        assert row["precision"] == rec["precision"] == "fp32" and row["device"] == "cpu"
    ratio = recs["lora"]["metrics"]["test"]["accuracy"] / recs["full_ft"]["metrics"]["test"]["accuracy"]
    assert float(rows["lora"]["pct_of_full_ft_percent"]) == pytest.approx(100 * ratio)
    assert rows["pfeiffer"]["cost.latency_overhead_merged_frac"] == ""  # cannot merge: no number
    html = (tmp_path / "report" / "index.html").read_text()
    assert "n/a (cannot merge)" in html and "single seed: differences untested" in html
    runs = list(csv.DictReader((tmp_path / "report" / "runs.csv").open()))
    assert len(runs) == 3  # one row per run
    by = {r["method"]: r for r in runs}
    assert float(by["lora"]["pct_of_full_ft_same_seed_percent"]) == pytest.approx(100 * ratio)
    assert "| lora |" in (tmp_path / "report" / "runs.md").read_text()
