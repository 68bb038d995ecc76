"""How runs were measured, as the analysis reads it: cost figures copied from an earlier run of the
same cost configuration (`measurement.costs_from`) count once in every statistic; timings taken
while other work competed for the cores (`measurement.contended`) are marked in the tables and
left out of timing claims; runs at different resolved precisions never pool, and `peftbench
compare` says when the precisions differ; an MFU that came out above 100% shows as unknown."""
from __future__ import annotations

import copy
import csv
import io
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis import claims, tables  # noqa: E402
from peftbench.analysis import compare as cmp  # noqa: E402
from peftbench.analysis.figures import figures_for  # noqa: E402
from peftbench.analysis.load import load_results, measurement_source  # noqa: E402
from peftbench.analysis.stats import aggregate, one_per_source, per_run  # noqa: E402
from peftbench.experiments.fields import serving_depends_on_weights  # noqa: E402

REASON = "other processes kept 60% of the cores busy during training (limit 15%)"
LORA_SERVING = fx.LORA_SERVING | {"primary_drop_bf16_vs_fp32": 0.006}


def copy_costs(rec: dict, source: dict) -> dict:
    """`rec` with the seed- and lr-independent figures of `source`, as a run that reused them writes it."""
    rec["measurement"]["costs_from"] = source["run_id"]
    for k, v in source["cost"].items():
        if k.startswith("latency_") or k == "adapter_bytes":
            rec["cost"][k] = v
    # the merge variants' logit differences are the run's own (its trained weights); the rest is copied
    if source.get("serving") is None:
        rec["serving"] = None
        return rec
    own = {k: v for k, v in (rec.get("serving") or {}).items() if serving_depends_on_weights(k)}
    rec["serving"] = {**{k: v for k, v in copy.deepcopy(source["serving"]).items() if not serving_depends_on_weights(k)}, **own}
    return rec


def contend(rec: dict, reason: str = REASON) -> dict:
    rec["measurement"].update({"contended": True, "contended_reason": reason, "cpu_share_train_frac": 0.45, "loadavg_1m": 3.2})
    return rec


def runs_of(tmp_path: Path, recs: list[dict]):
    return load_results([fx.write_all(tmp_path, recs, broken=False)]).ok


def shipped(name: str) -> dict:
    """A shipped claim without its regime: these tests count observations on CPU fixtures, which a
    GPU-only or fp32-only claim would otherwise leave out as outside its regime."""
    claim = claims.load_claims([claims.CLAIMS_DIR / f"{name}.yaml"])[0][1]
    return {k: v for k, v in claim.items() if k != "regime"}


def evidence(result: claims.ClaimResult, method: str) -> claims.Evidence:
    return next(e for c in result.conditions for e in c.evidence if e.text.startswith(method))


def seeds(method: str, make=lambda s: {}, **kw) -> list[dict]:
    return [fx.record(method, seed=s, **(kw | make(s))) for s in fx.SEEDS]


# ---------------------------------------------------------------- one observation per measurement

def test_measurement_source_is_costs_from_or_the_run_itself(tmp_path):
    own, copied, self_named = seeds("lora", serving=LORA_SERVING)
    copy_costs(copied, own)
    self_named["measurement"]["costs_from"] = self_named["run_id"]  # measured by itself: no copy
    ok = runs_of(tmp_path, [own, copied, self_named]).set_index("seed")
    assert [measurement_source(ok.loc[s]) for s in fx.SEEDS] == [own["run_id"], own["run_id"], self_named["run_id"]]
    assert ok.loc[1, "measurement.costs_from"] == own["run_id"] and pd.isna(ok.loc[2, "measurement.costs_from"])


def test_one_per_source_keeps_the_measuring_run_and_only_for_copied_figures(tmp_path):
    recs = seeds("lora", serving=LORA_SERVING)
    copy_costs(recs[0], recs[2])  # seed 0 copies seed 2: seed 2, the measuring run, stays
    copy_costs(recs[1], recs[2])
    ok = runs_of(tmp_path, recs)
    assert list(one_per_source(ok, ["serving.mixed_noise_frac"])["seed"]) == [2]
    # the merge variants' test scores are copied with the timings: one observation ...
    assert list(one_per_source(ok, ["serving.primary_drop_bf16_vs_fp32"])["seed"]) == [2]
    # ... their logit differences are each run's own
    assert sorted(one_per_source(ok, ["serving.merged_bf16_max_abs_logit_diff"])["seed"]) == [0, 1, 2]
    assert list(one_per_source(ok, ["cost.adapter_bytes"])["seed"]) == [2]
    assert sorted(one_per_source(ok, ["primary", "cost.weight_bytes"])["seed"]) == [0, 1, 2]  # measured by every run


def test_copies_of_a_source_that_is_not_loaded_count_once(tmp_path):
    recs = seeds("lora", serving=LORA_SERVING)
    for r in recs[1:]:
        r["measurement"]["costs_from"] = "minilm__synth__lora__r8__elsewhere"
    ok = runs_of(tmp_path, recs)
    assert sorted(one_per_source(ok, ["serving.mixed_noise_frac"])["seed"]) == [0, 1]


def test_bf16_merge_drop_claim_counts_copied_merge_scores_once(tmp_path):
    recs = seeds("lora", lambda s: {"serving": LORA_SERVING | {"primary_drop_bf16_vs_fp32": 0.004 + 0.002 * s}})
    copy_costs(recs[1], recs[0])
    copy_costs(recs[2], recs[0])
    res = claims.evaluate_claim(shipped("serving_bf16_merge_costs_points"), runs_of(tmp_path, recs))
    ev = evidence(res, "lora")
    # the merge variants' test passes are measured once per configuration: one observation
    assert ev.seeds == (0,) and "counted once" in ev.text


def test_serving_claims_keep_independent_measurements(tmp_path):
    recs = seeds("lora", lambda s: {"serving": LORA_SERVING | {"mixed_second_adapter_overhead_frac": 0.04 + 0.002 * s}})
    copy_costs(recs[1], recs[0])  # seed 2 measured its own
    res = claims.evaluate_claim(shipped("serving_second_adapter_mixed_batch"), runs_of(tmp_path, recs))
    ev = evidence(res, "lora serving.mixed_second_adapter_overhead_frac")
    assert ev.seeds == (0, 2) and "1 of 3 runs reuse" in ev.text


def test_batch1_and_latency_overhead_claims_count_copies_once(tmp_path):
    lora = seeds("lora", serving=LORA_SERVING)
    houlsby = seeds("houlsby", r=None, targets=None, reduction_factor=16, lat_unmerged=0.25, can_merge=False,
                    serving=fx.HOULSBY_SERVING)
    for recs in (lora, houlsby):
        for r in recs[1:]:
            copy_costs(r, recs[0])
    ok = runs_of(tmp_path, lora + houlsby)
    for name, method in (("serving_merged_lora_no_latency_batch1", "lora"), ("lora_merged_no_latency", "lora"),
                         ("adapters_add_latency", "houlsby"), ("serving_bottleneck_latency_15_20", "houlsby")):
        ev = evidence(claims.evaluate_claim(shipped(name), ok), method)
        assert ev.seeds == (0,) and "counted once" in ev.text, (name, ev.text)


def test_latency_range_claim_has_one_observation_per_measurement(tmp_path):
    recs = seeds("houlsby", r=None, targets=None, reduction_factor=16, lat_unmerged=0.17, can_merge=False)
    copy_costs(recs[1], recs[0])
    copy_costs(recs[2], recs[0])
    ev = evidence(claims.evaluate_claim(shipped("guide_adapter_latency_15_20"), runs_of(tmp_path, recs)), "houlsby")
    assert ev.stats["n"] == 1 and math.isnan(ev.stats["ci_low"]) and "counted once" in ev.text


def test_paired_cost_comparison_pairs_measurements_not_copies(tmp_path):
    lora = seeds("lora", adapter_bytes=300_000)
    qlora = seeds("qlora", adapter_bytes=200_000)
    for recs in (lora, qlora):
        for r in recs[1:]:
            copy_costs(r, recs[0])
    claim = {"id": "x", "statement": "s", "source": "p", "check": "metric_less", "method": "qlora", "baseline": "lora",
             "metric": "cost.adapter_bytes", "tolerance": 0}
    ev = evidence(claims.evaluate_claim(claim, runs_of(tmp_path, lora + qlora)), "qlora")
    assert ev.seeds == (0,) and ev.stats["n"] == 1 and "single seed" in ev.text and "4 of 6 runs reuse" in ev.text
    # the primary metric is each run's own: all seeds stay paired
    claim |= {"check": "metric_ge_with_tolerance", "metric": "primary", "tolerance": 0.02}
    assert evidence(claims.evaluate_claim(claim, runs_of(tmp_path / "b", lora + qlora)), "qlora").seeds == (0, 1, 2)


def test_tuned_compare_on_a_copied_cost_counts_it_once(tmp_path):
    lora = seeds("lora", lat_unmerged=0.02)
    dora = seeds("dora", lat_unmerged=0.30)
    for recs in (lora, dora):
        for r in recs[1:]:
            copy_costs(r, recs[0])
    claim = {"id": "x", "statement": "s", "source": "p", "check": "tuned_compare", "method": "dora", "baseline": "lora",
             "metric": "cost.latency_overhead_unmerged_frac", "relation": "less", "tolerance": 0.0}
    [ev] = claims.evaluate_claim(claim, runs_of(tmp_path, lora + dora)).conditions[0].evidence
    assert ev.stats["n"] == 1 and ev.seeds == (0,)


# ---------------------------------------------------------------- contended timings

def test_timing_claims_leave_contended_runs_out_and_say_so(tmp_path):
    recs = seeds("houlsby", r=None, targets=None, reduction_factor=16, lat_unmerged=0.25, can_merge=False)
    contend(recs[2])
    res = claims.evaluate_claim(shipped("adapters_add_latency"), runs_of(tmp_path, recs))
    [cond] = res.conditions
    assert res.verdict == claims.HOLDS and cond.evidence[0].seeds == (0, 1)
    assert "left out 1 run(s)" in cond.note and recs[2]["run_id"] in cond.note and REASON in cond.note


def test_contended_runs_of_other_methods_go_unmentioned(tmp_path):
    recs = seeds("lora") + [contend(r) for r in seeds("houlsby", r=None, targets=None, reduction_factor=16, can_merge=False)]
    [cond] = claims.evaluate_claim(shipped("lora_merged_no_latency"), runs_of(tmp_path, recs)).conditions
    assert cond.evidence[0].seeds == (0, 1, 2) and "left out" not in cond.note


def test_a_timing_claim_with_only_contended_runs_has_no_data(tmp_path):
    recs = [contend(r) for r in seeds("houlsby", r=None, targets=None, reduction_factor=16, lat_unmerged=0.25, can_merge=False)]
    res = claims.evaluate_claim(shipped("adapters_add_latency"), runs_of(tmp_path, recs))
    assert res.verdict == claims.NO_DATA and "left out 3 run(s)" in res.conditions[0].note


def test_claims_on_untimed_figures_keep_contended_runs(tmp_path):
    recs = [contend(r) for r in seeds("lora")] + [contend(r) for r in seeds("qlora", weight_bytes=30_000_000)]
    res = claims.evaluate_claim(shipped("qlora_less_weight_memory"), runs_of(tmp_path, recs))
    assert res.verdict == claims.HOLDS and all(c.evidence[0].seeds == (0, 1, 2) and "left out" not in c.note for c in res.conditions)


def test_copied_timings_are_as_contended_as_the_run_that_measured_them(tmp_path):
    kw = dict(r=None, targets=None, reduction_factor=16, lat_unmerged=0.25, can_merge=False)
    # seed 0 measured latency under contention; seeds 1 and 2 copied it
    bad = seeds("houlsby", **kw)
    contend(bad[0])
    for r in bad[1:]:
        copy_costs(r, bad[0])
    res = claims.evaluate_claim(shipped("adapters_add_latency"), runs_of(tmp_path / "bad", bad))
    assert res.verdict == claims.NO_DATA and "left out 3 run(s)" in res.conditions[0].note
    # seed 1's own training was contended, but its latency came from a clean seed 0: latency keeps it,
    # training throughput does not
    good = seeds("houlsby", **kw)
    contend(good[1])
    for r in good[1:]:
        copy_costs(r, good[0])
    ok = runs_of(tmp_path / "good", good)
    lat = claims.evaluate_claim(shipped("adapters_add_latency"), ok).conditions[0]
    assert lat.evidence[0].seeds == (0,) and "left out" not in lat.note
    tput = claims.evaluate_claim({"id": "x", "statement": "s", "source": "p", "check": "metric_in_range", "method": "houlsby",
                                  "metric": "cost.train_tokens_per_s_median", "range": [1000, 5000], "tolerance": 0}, ok).conditions[0]
    assert tput.evidence[0].seeds == (0, 2) and good[1]["run_id"] in tput.note


@pytest.fixture(scope="module")
def contended_tables(tmp_path_factory):
    """The main fixture with one houlsby seed timed under contention and lora r8's seeds 1, 2
    reusing seed 0's latency and serving figures."""
    recs = fx.main_records()
    houlsby = [r for r in recs if r["method"] == "houlsby"]
    contend(houlsby[1])
    lora = sorted((r for r in recs if r["method"] == "lora" and r["config"]["method"]["r"] == 8
                   and r["config"]["method"]["target_modules"] == "attn_qv"), key=lambda r: r["seed"])
    for r in lora[1:]:
        copy_costs(r, lora[0])
    ok = load_results([fx.write_all(tmp_path_factory.mktemp("results"), recs, broken=False)]).ok
    agg = aggregate(ok)
    table = dict(tables.table_groups(agg))[("minilm", "synth")]
    return ok, agg, table, houlsby, lora


def md_list(md: str) -> list[dict[str, str]]:
    lines = [l for l in md.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in l.split("|")[1:-1]]  # noqa: E731
    header = split(lines[0])
    return [dict(zip(header, split(l))) for l in lines[2:]]


def md_rows(md: str) -> dict[str, dict[str, str]]:
    return {f"{r['Method']} {r['Capacity']} {r['Targets']}": r for r in md_list(md)}


def test_tables_mark_contended_timings_and_name_the_runs(contended_tables):
    _, _, table, houlsby, _ = contended_tables
    md = tables.to_markdown("t", table)
    row, lora = md_rows(md)["houlsby - -"], md_rows(md)["lora r=8 attn_qv"]
    for header in ("Train tok/s (tokens/s)", "Step time (ms)", "MFU (%)", "Latency overhead unmerged (%)"):
        assert row[header].strip("*").endswith(tables.CONTENDED), header
        assert tables.CONTENDED not in lora[header]
    assert tables.CONTENDED not in row["Weights (MiB)"] and tables.CONTENDED not in row["Trainable params (count)"]
    note = next(l for l in md.splitlines() if l.startswith(f"- {tables.CONTENDED}"))
    assert houlsby[1]["run_id"] in note and REASON in note and houlsby[0]["run_id"] not in note
    details = md_rows(tables.to_markdown("t", table, details=True))["houlsby - -"]
    assert details["Train time (s)"].endswith(tables.CONTENDED)
    assert r"$^\ddagger$" in tables.to_latex("t", table)
    assert tables.CONTENDED in tables.to_html("t", table)


def test_tables_say_which_runs_copied_their_costs(contended_tables):
    ok, agg, table, _, lora = contended_tables
    md = tables.to_markdown("t", table)
    note = next(l for l in md.splitlines() if "copied from an earlier run" in l)
    assert f"{lora[1]['run_id']}, {lora[2]['run_id']} from {lora[0]['run_id']}" in note
    # the means are what the runs carry: copies change nothing there
    row = table[(table["method"] == "lora") & (table["capacity"] == "r=8") & (table["targets"] == "attn_qv")].iloc[0]
    assert row["cost.latency_overhead_unmerged_frac"] == pytest.approx(0.10)
    runs = per_run(ok, agg)
    listing = tables.runs_markdown(runs)
    assert "| Measurement |" in listing
    line = next(l for l in listing.splitlines() if f"| {lora[2]['seed']} |" in l and "| lora | r=8 | attn_qv |" in l)
    assert f"copied from {lora[0]['run_id']}" in line
    assert any(REASON in l and tables.CONTENDED in l for l in listing.splitlines())
    rows = list(csv.DictReader(io.StringIO(tables.runs_csv(runs))))
    assert {r["measurement.costs_from"] for r in rows if r["run_id"] == lora[1]["run_id"]} == {lora[0]["run_id"]}


@pytest.mark.slow
def test_older_records_read_as_before(tmp_path):
    ok = load_results([fx.write_all(tmp_path, fx.main_records(), broken=False)]).ok
    agg = aggregate(ok)
    table = dict(tables.table_groups(agg))[("minilm", "synth")]
    out = tables.to_markdown("t", table) + tables.to_markdown("t", table, details=True) + tables.to_markdown("t", table, details="serving")
    assert tables.CONTENDED not in out and "copied" not in out and "unknown" not in out
    runs = per_run(ok, agg)
    assert "Measurement" not in tables.runs_markdown(runs)
    assert tables.runs_csv(runs).splitlines()[0].split(",")[:len(tables.RUN_CSV)] == tables.RUN_CSV
    assert "measurement." not in tables.runs_csv(runs).splitlines()[0]
    assert ok["measurement.costs_from"].isna().all() and not ok["measurement.contended"].any()


# ---------------------------------------------------------------- precision

def test_runs_at_different_resolved_precisions_are_never_pooled(tmp_path):
    recs = []
    for prec in ("bf16", "fp32"):
        for r in seeds("lora", precision=prec):
            r["config"]["precision"] = "auto"  # what was asked; the top-level precision is what ran
            r["provenance"]["precision_requested"] = "auto"
            recs.append(r)
    ok = runs_of(tmp_path, recs)
    assert len(ok) == 6  # the same seed at two precisions is two runs, not a re-run
    agg = aggregate(ok)
    assert sorted(zip(agg["precision"], agg["n"])) == [("bf16", 3), ("fp32", 3)]
    rows = md_list(tables.to_markdown("t", dict(tables.table_groups(agg))[("minilm", "synth")]))
    assert sorted(r["Precision"] for r in rows) == ["bf16", "fp32"]


def test_compare_says_when_precisions_differ(tmp_path, capsys):
    mine, ref = seeds("lora", precision="bf16"), seeds("lora", precision="fp32")
    fx.write_all(tmp_path / "mine", mine, broken=False)
    fx.write_all(tmp_path / "ref", ref, broken=False)
    [c] = cmp.compare(load_results([tmp_path / "mine"]).ok, load_results([tmp_path / "ref"]).ok)
    line = "precision differs: bf16 here, fp32 in reference; numbers are not comparable bit for bit"
    # identical numbers, but at another precision: never "bit-identical", and the line says why
    assert c.verdict == cmp.WITHIN_CI and c.detail.startswith(line)
    cmp.main([str(tmp_path / "mine"), "--reference", str(tmp_path / "ref")])
    assert line in capsys.readouterr().out


def test_compare_prefers_the_reference_at_the_same_precision(tmp_path):
    mine = seeds("lora", precision="bf16")
    ref = seeds("lora", precision="bf16") + seeds("lora", precision="fp32")
    [c] = cmp.compare(load_results([fx.write_all(tmp_path / "m", mine, broken=False)]).ok,
                      load_results([fx.write_all(tmp_path / "r", ref, broken=False)]).ok)
    assert c.verdict == cmp.BIT_IDENTICAL and "precision differs" not in c.detail


# ---------------------------------------------------------------- unknown MFU

MFU_WHY = "measured MFU 2.2 is above 100%: the peak FLOP/s it divides by was measured too low"


def unknown_mfu(rec: dict) -> dict:
    rec["cost"]["mfu_frac"] = None
    rec["measurement"]["mfu_unknown_reason"] = MFU_WHY
    return rec


def test_unknown_mfu_shows_as_unknown_never_zero(tmp_path):
    recs = [unknown_mfu(r) for r in seeds("lora")] + seeds("dora")
    unknown_mfu(recs[-1])  # dora: one seed of three unknown
    ok = runs_of(tmp_path, recs)
    agg = aggregate(ok)
    table = dict(tables.table_groups(agg))[("minilm", "synth")]
    md = tables.to_markdown("t", table)
    rows = md_rows(md)
    assert rows["lora r=8 attn_qv"]["MFU (%)"] == "unknown"
    assert rows["dora r=8 attn_qv"]["MFU (%)"] == "30.0"  # the mean of the seeds that have one
    note = next(l for l in md.splitlines() if "MFU 'unknown'" in l)
    assert MFU_WHY in note and recs[-1]["run_id"] in note
    lora_csv = next(r for r in csv.DictReader(io.StringIO(tables.to_csv(table))) if r["method"] == "lora")
    assert lora_csv["cost.mfu_frac"] == ""
    assert "MFU unknown" in tables.runs_markdown(per_run(ok, agg))


@pytest.mark.slow
def test_figures_draw_with_unknown_mfu(tmp_path):
    recs = [unknown_mfu(r) for r in seeds("lora") + seeds("dora", trainable=80_000)]
    ok = runs_of(tmp_path / "results", recs)
    figs = figures_for(ok, aggregate(ok), tmp_path / "out")
    assert any(f.files for f in figs) and all(f.files or f.skipped for f in figs)


def test_a_resumed_run_is_marked_where_its_timings_cover_only_the_steps_after_resuming(tmp_path):
    """A run resumed from a checkpoint timed its training from that start only: the training-time
    cell of its row is marked, the note and the runs listing say from which step and what came
    before, and its per-step figures (throughput) are not marked."""
    recs = fx.main_records()
    houlsby = [r for r in recs if r["method"] == "houlsby"]
    houlsby[1]["checkpoint"] = {"every_steps": 10, "resumed_from_step": 30, "train_s_before_resume": 12.0}
    ok = load_results([fx.write_all(tmp_path, recs, broken=False)]).ok
    agg = aggregate(ok)
    table = dict(tables.table_groups(agg))[("minilm", "synth")]
    details = tables.to_markdown("t", table, details=True)
    rows = md_rows(details)
    assert rows["houlsby - -"]["Train time (s)"].endswith(tables.RESUMED)
    assert tables.RESUMED not in rows["lora r=8 attn_qv"]["Train time (s)"]
    note = next(l for l in details.splitlines() if l.startswith(f"- {tables.RESUMED}"))
    assert houlsby[1]["run_id"] in note and "step 30" in note and "12 s of training in earlier starts" in note
    assert houlsby[0]["run_id"] not in note
    main = md_rows(tables.to_markdown("t", table))["houlsby - -"]
    assert tables.RESUMED not in main["Train tok/s (tokens/s)"]
    runs = per_run(ok, agg)
    line = next(l for l in tables.runs_markdown(runs).splitlines() if "resumed from a checkpoint at step 30" in l)
    assert "| houlsby |" in line
    rows_csv = list(csv.DictReader(io.StringIO(tables.runs_csv(runs))))
    assert {r["checkpoint.resumed_from_step"] for r in rows_csv if r["run_id"] == houlsby[1]["run_id"]} == {"30"}


def test_claims_on_training_time_leave_resumed_runs_out_and_say_so(tmp_path):
    """A resumed run timed its training from its last start only: a claim on training time leaves
    it out, naming it; a claim on its median step time keeps it."""
    lora, ft = seeds("lora"), seeds("dora")
    lora[1]["checkpoint"] = {"every_steps": 10, "resumed_from_step": 30, "train_s_before_resume": 12.0}
    claim = {"id": "x", "statement": "s", "source": "p", "check": "metric_less", "method": "lora", "baseline": "dora",
             "metric": "timing.train_s", "tolerance": 0}
    [cond] = claims.evaluate_claim(claim, runs_of(tmp_path / "a", lora + ft)).conditions
    assert cond.evidence[0].seeds == (0, 2)
    assert "left out 1 run(s) whose timings cover only part of their training" in cond.note and lora[1]["run_id"] in cond.note
    claim["metric"] = "cost.step_time_ms_median"  # a median over the steps it timed: it stands
    [cond] = claims.evaluate_claim(claim, runs_of(tmp_path / "b", lora + ft)).conditions
    assert cond.evidence[0].seeds == (0, 1, 2) and "left out" not in cond.note
