"""The report reads every task the same way: the task's declared primary metric (a generation
task's exact match as much as accuracy), its other metrics, lm-eval scores, the base model's
score, forgetting; method metadata from the method's YAML; schema-1 records; one reference rule
for tables and figures. Synthetic records only: no torch."""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis import claims, figures, tables  # noqa: E402
from peftbench.analysis.load import load_results  # noqa: E402
from peftbench.analysis.report import build  # noqa: E402
from peftbench.analysis.stats import aggregate, full_ft_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GSM8K_METRICS = [{"name": "exact_match", "direction": "max", "primary": True},
                 {"name": "exact_match_flexible", "direction": "max", "primary": False}]


def gsm8k(method: str, seed: int, em: float, *, forgetting: float | None = None, before: float | None = 0.02,
          lm_eval: float | None = None, **kw) -> dict:
    """A causal-LM record of a generation task: exact match primary, forgetting as the llm side
    writes it, the base model's score before training."""
    rec = fx.record(method, model="smollm2-135m", seed=seed, **kw)
    rec["task"] = "gsm8k"
    rec["run_id"] = rec["run_id"].replace("synth", "gsm8k")
    rec["config"]["task"] = {"name": "gsm8k", "kind": "generation", "metrics": GSM8K_METRICS}
    rec["metrics"] = {"test": {"exact_match": em, "exact_match_flexible": em + 0.05},
                      "validation": {"exact_match": em + 0.01, "exact_match_flexible": em + 0.06}}
    if before is not None:
        rec["metrics_before"] = {"test": {"exact_match": before, "exact_match_flexible": before + 0.01}}
    if forgetting is not None:
        rec["forgetting"] = {"kind": "causal_lm", "primary": "ce_increase_nats", "ce_before_nats": 2.0,
                             "ce_after_nats": 2.0 + forgetting, "ce_increase_nats": forgetting, "kl_base_tuned_nats": forgetting / 2,
                             "probe": "builtin", "probe_texts": 64, "probe_tokens": 4096}
    if lm_eval is not None:
        rec["lm_eval"] = {"results": {"peftbench_arith": {"exact_match,none": lm_eval, "exact_match_stderr,none": 0.01}}}
    return rec


def gsm8k_records() -> list[dict]:
    recs = []
    for s in fx.SEEDS:
        o = fx.SEED_OFFSET[s]
        recs += [gsm8k("full_ft", s, 0.40 + o, forgetting=0.30, r=None, targets=None, trainable=135_000_000, can_merge=False, lm_eval=0.5),
                 gsm8k("lora", s, 0.30 + o, forgetting=0.05, trainable=400_000, lm_eval=0.4),
                 gsm8k("lora", s, 0.33 + o, forgetting=0.08, r=16, trainable=800_000, lm_eval=0.42),
                 gsm8k("dora", s, 0.32 + o + 0.002 * s, forgetting=0.06, trainable=420_000, lm_eval=0.41)]
    return recs


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    res = fx.write_all(tmp_path_factory.mktemp("gsm"), gsm8k_records(), broken=False)
    return build([str(res)], tmp_path_factory.mktemp("report"), claims.CLAIMS_DIR)


def md_rows(md: str) -> list[dict[str, str]]:
    lines = [l for l in md.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in re.split(r"(?<!\\)\|", l)[1:-1]]  # noqa: E731
    return [dict(zip(split(lines[0]), split(l))) for l in lines[2:]]


def test_generation_task_reaches_the_tables_with_its_primary_metric(made):
    [(key, t)] = tables.table_groups(made["agg"])
    assert key == ("smollm2-135m", "gsm8k")
    rows = {(r["Method"], r["Capacity"]): r for r in md_rows(tables.to_markdown("t", t))}
    ft, lora = rows[("full_ft", "-")], rows[("lora", "r=8")]
    assert ft["exact_match (primary) (%)"].startswith("**40.2 ± 0.8 (n=3)")  # best: bold
    assert lora["exact_match_flexible (%)"].startswith("35.2")  # the task's other metric is shown too
    assert lora["% of full FT (%)"] == f"{sum(100 * (0.30 + o) / (0.40 + o) for o in fx.SEED_OFFSET.values()) / 3:.1f}"
    assert lora["Base exact_match (%)"] == "2.0 ± 0.0" and lora["Gain over base (pp)"].startswith("28.2")
    assert lora["peftbench_arith.exact_match,none (%)"] == "40.0 ± 0.0"  # lm-eval scores, stderr left out
    assert lora["Forgetting ce_increase_nats"] == "**0.050 ± 0.000**"  # nats as recorded; the least: bold
    fg = tables.best_rows(t, next(c for c in tables.main_columns(t) if c.header.startswith("Forgetting")))
    assert {t.iloc[i]["method"] for i in fg} == {"lora"}  # lower forgetting is better
    assert "Δ vs lora (pp)" in rows[("dora", "r=8")] and "(p=" in rows[("dora", "r=8")]["Δ vs lora (pp)"]


def test_generation_task_reaches_figures_stats_and_claims(made):
    agg = made["agg"]
    figs = {f.name.split("__")[-1]: f for f in made["figures"]}
    for name in ("metric_vs_params", "metric_vs_rank", "learning_vs_forgetting", "metric_vs_memory"):
        assert figs[name].files, (name, figs[name].skipped)
    verdicts = {r.id: r for r in made["claims"]}
    assert verdicts["dora_ge_lora"].verdict == claims.HOLDS  # the claim reads exact match: the task's primary metric
    assert "primary=0.3" in verdicts["dora_ge_lora"].conditions[0].evidence[0].text
    row = agg[(agg["method"] == "lora") & (agg["capacity"] == "r=8")].iloc[0]
    assert row["primary_metric"] == "exact_match" and row["primary_ci95"] > 0


@pytest.mark.slow
def test_generation_task_in_csv_and_runs_md(tmp_path):
    res = fx.write_all(tmp_path / "r", gsm8k_records(), broken=False)
    build([str(res)], tmp_path / "out", tmp_path / "no_claims")
    [table] = (tmp_path / "out" / "tables").glob("*.csv")
    rows = list(csv.DictReader(table.open()))
    lora = next(r for r in rows if r["method"] == "lora" and r["capacity"] == "r=8")
    assert float(lora["metrics.test.exact_match_mean"]) == pytest.approx(0.30 + sum(fx.SEED_OFFSET.values()) / 3)
    assert float(lora["forgetting_mean"]) == pytest.approx(0.05) and lora["forgetting_key"] == "ce_increase_nats"
    assert float(lora["forgetting.kl_base_tuned_nats_mean"]) == pytest.approx(0.025)
    assert float(lora["lm_eval.peftbench_arith.exact_match,none_mean"]) == pytest.approx(0.4)
    runs = (tmp_path / "out" / "runs.md").read_text()
    assert "| exact_match | 30.0% | 2.0% |" in runs and "ce_increase_nats=0.05" in runs


def test_lower_is_better_primary_metric_turns_ratios_and_bolding(tmp_path):
    def rec(method, ppl, **kw):
        r = fx.record(method, **kw)
        r["config"]["task"]["metrics"] = [{"name": "perplexity", "direction": "min", "primary": True}]
        r["metrics"] = {"test": {"perplexity": ppl}, "validation": {"perplexity": ppl}}
        return r
    recs = [rec("full_ft", 10.0, r=None, targets=None), rec("lora", 12.5), rec("dora", 11.0)]
    [(_, t)] = tables.table_groups(aggregate(load_results([fx.write_all(tmp_path, recs, broken=False)]).ok))
    rows = {r["Method"]: r for r in md_rows(tables.to_markdown("t", t))}
    assert rows["lora"]["% of full FT (%)"] == "80.0"  # 10 / 12.5: below 100 = worse, either direction
    assert rows["full_ft"]["perplexity (primary)"].startswith("**10.0")  # lowest is best
    assert rows["dora"]["Δ vs lora"].startswith("-1.5")


@pytest.mark.slow
def test_diverged_runs_are_listed_but_never_averaged(tmp_path):
    bad = fx.record("lora", seed=1, acc=0.1)
    bad.update({"status": "diverged", "diverged_at_step": 17, "error": "loss became nan at step 17"})
    recs = [fx.record("lora", seed=0, acc=0.8), bad]
    loaded = load_results([fx.write_all(tmp_path / "r", recs, broken=False)])
    assert len(loaded.ok) == 1 and loaded.ok["primary"].iloc[0] == 0.8
    [row] = loaded.failed.to_dict("records")
    assert row["status"] == "diverged" and "step 17" in row["error"]
    build([str(tmp_path / "r")], tmp_path / "out", tmp_path / "no_claims")
    runs = (tmp_path / "out" / "runs.md").read_text()
    assert "| diverged | minilm | synth | lora | 1 |" in runs


@pytest.mark.slow
def test_schema_1_records_read_as_schema_2(tmp_path):
    new = fx.main_records()
    old = [fx.as_v1(r) for r in new]
    assert "latency_overhead_unmerged" in old[2]["cost"] and "can_merge" in old[2]["cost"]
    a = aggregate(load_results([fx.write_all(tmp_path / "new", new, broken=False)]).ok)
    b = aggregate(load_results([fx.write_all(tmp_path / "old", old, broken=False)]).ok)
    cols = ["primary_mean", "metrics.test.macro_f1_mean", "cost.latency_overhead_unmerged_frac", "cost.mfu_frac",
            "method_info.can_merge", "measurement.memory_kind", "pct_of_full_ft_percent", "vs_baseline_diff"]
    # the old records carry no report block: the shipped YAML of the same method supplies it, so
    # roles (full reference, baseline) and the comparisons built on them survive too
    key = ["method", "targets", "primary_mean"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    for c in cols:
        assert a[c].astype(str).tolist() == b[c].astype(str).tolist(), c
    assert a["pct_of_full_ft_percent"].notna().sum() > 10


def test_a_newer_schema_is_skipped_with_a_reason(tmp_path):
    rec = fx.record("lora")
    rec["schema_version"] = 3
    loaded = load_results([fx.write_all(tmp_path, [rec], broken=False)])
    assert loaded.ok.empty and "schema_version 3 cannot be read" in loaded.problems[0].reason


@pytest.mark.slow
def test_table_and_figure_pick_the_same_full_ft_run(tmp_path):
    """Two full-FT lrs (the better one on validation wins) and one at another batch size (which
    the PEFT rows did not use): the table's % of full FT and the figure's dashed line must both
    take the lr=3e-4 run at the PEFT rows' batch size."""
    def ft(lr, val, acc, batch=None):
        r = fx.record("full_ft", r=None, targets=None, lr=lr, acc=acc)
        r["metrics"]["validation"]["accuracy"] = val
        if batch:
            r["config"]["batch_size"] = batch
            r["run_id"] += f"_b{batch}"
        r["run_id"] += f"_lr{lr}"
        return r
    recs = [ft(1e-4, 0.70, 0.71), ft(3e-4, 0.80, 0.79), ft(3e-4, 0.99, 0.95, batch=64),
            fx.record("lora", r=4, acc=0.6), fx.record("lora", r=8, acc=0.7)]
    agg = aggregate(load_results([fx.write_all(tmp_path, recs, broken=False)]).ok)
    lora = agg[agg["method"] == "lora"].iloc[0]
    table_ref = full_ft_reference(agg, lora)
    figure_ref = figures.reference_row(agg)
    assert table_ref["config_id"] == figure_ref["config_id"] == lora["full_ft_ref"]
    assert figure_ref["lr"] == 3e-4 and figure_ref["primary_mean"] == pytest.approx(0.79)
    assert lora["pct_of_full_ft_percent"] == pytest.approx(100 * 0.6 / 0.79)


def test_a_new_method_needs_nothing_in_analysis(tmp_path):
    """A method the analysis has never heard of: its YAML's report block decides role, order,
    style and capacity; without one, the documented defaults apply."""
    vera = fx.record("my_vera", r=None, targets=None, acc=0.83)
    vera["config"]["method"].update({"peft_kwargs": {"r": 64}, "target_modules": "attn_qv",
                                     "report": {"family": "vector", "order": 5, "color": "#123456", "marker": "8",
                                                "capacity_key": "peft_kwargs.r", "role": None}})
    bare = fx.record("mystery", r=None, targets=None, acc=0.5)
    agg = aggregate(load_results([fx.write_all(tmp_path, [fx.record("full_ft", r=None, targets=None), fx.record("lora"), vera, bare],
                                               broken=False)]).ok)
    [(_, t)] = tables.table_groups(agg)
    assert list(t["method"]) == ["full_ft", "my_vera", "lora", "mystery"]  # report.order; no block: last
    v = t[t["method"] == "my_vera"].iloc[0]
    assert (v["capacity"], v["capacity_value"], v["color"], v["marker"]) == ("r=64", 64.0, "#123456", "8")
    assert t[t["method"] == "mystery"].iloc[0]["role"] == "-" and t[t["method"] == "mystery"].iloc[0]["capacity"] == "-"


@pytest.mark.slow
def test_no_method_name_is_written_outside_the_methods_and_no_metric_name_in_analysis():
    """Adding a method is its YAML (and perhaps one file in methods/); adding a metric is its task's
    YAML and builder. Code elsewhere (the scripts that draw the docs' tables too) branches on roles
    and declarations, never on these names."""
    methods = {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")}
    metrics = {"accuracy", "macro_f1", "exact_match", "rouge_l", "f1"}
    found = []
    for folder, names in (("analysis", methods | metrics), ("experiments", methods), ("peftbench", methods), ("scripts", methods)):
        for path in (ROOT / folder).rglob("*.py"):
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                for name in names:
                    if re.search(rf"[\"']{re.escape(name)}[\"']", code):
                        found.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    assert found == []


def test_every_method_yaml_has_a_complete_report_block():
    import yaml

    for path in (ROOT / "conf" / "method").glob("*.yaml"):
        rep = yaml.safe_load(path.read_text()).get("report")
        assert set(rep) >= {"family", "order", "color", "marker", "capacity_key", "role"}, path.name
        assert rep["role"] in (None, "full_reference", "lower_reference", "baseline"), path.name
        assert not math.isnan(float(rep["order"])) and rep["color"].startswith("#"), path.name
        json.dumps(rep)  # plain data: travels in the record's config
