"""analysis.claims: the shipped conf/claims/*.yaml give the verdicts the fixture was designed for;
new claims are data; missing data and invalid claims are reported, not raised."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis import claims  # noqa: E402
from peftbench.analysis.load import load_results  # noqa: E402


@pytest.fixture(scope="module")
def ok(tmp_path_factory):
    return load_results([fx.write_all(tmp_path_factory.mktemp("results"))]).ok


@pytest.fixture(scope="module")
def verdicts(ok):
    return {r.id: r for r in claims.evaluate_all(ok)}


DESIGNED = {"lora_merged_no_latency", "adapters_add_latency", "qlora_less_weight_memory",
            "dora_ge_lora", "rslora_scales_with_rank", "loraplus_converges_faster",
            "serving_merged_lora_no_latency_batch1", "serving_second_adapter_mixed_batch"}
# claims made in another regime than the fixture's CPU runs trained under bf16 autocast
OUTSIDE_REGIME = {"serving_bottleneck_latency_15_20": "device = cuda", "serving_bf16_merge_costs_points": "precision = fp32",
                  "guide_adapter_latency_15_20": "device = cuda"}


def test_shipped_claims_all_hold_on_the_designed_fixture(verdicts):
    assert DESIGNED <= set(verdicts)
    assert {k: verdicts[k].verdict for k in DESIGNED} == dict.fromkeys(DESIGNED, claims.HOLDS)
    for k, regime in OUTSIDE_REGIME.items():
        assert verdicts[k].verdict == claims.NOT_APPLICABLE and f"the claim's regime is {regime}" in claims.claim_reason(verdicts[k]), k
    # the study claims (tuned lrs, axes, matched forgetting) parse and run on any records: never invalid
    assert all(v.verdict != claims.INVALID for v in verdicts.values()), {k: v.conditions[0].note for k, v in verdicts.items()}


def test_verdicts_carry_numbers_and_seeds(verdicts):
    ev = verdicts["dora_ge_lora"].conditions[0].evidence
    assert len(ev) == 1 and ev[0].seeds == (0, 1, 2)
    # the fixture's DoRA is LoRA + exactly 3 points on every seed: a t-test has nothing to say
    assert "diff 0.03" in ev[0].text and "zero-variance differences: untested" in ev[0].text
    assert "paired t-test" not in ev[0].text
    slope = verdicts["rslora_scales_with_rank"].conditions[0].evidence[0].text
    assert "rslora 0.06" in slope and "lora 0" in slope


def test_varying_differences_get_a_paired_t_test(tmp_path):
    recs = fx.main_records()
    for r in recs:
        if r["method"] == "dora":  # +3 points give or take: differences now have a variance
            r["metrics"]["test"]["accuracy"] += {0: 0.0, 1: 0.002, 2: -0.002}[r["seed"]]
    ok = load_results([fx.write_all(tmp_path, recs, broken=False)]).ok
    res = claims.evaluate_claim(claims.load_claims([claims.CLAIMS_DIR / "dora_ge_lora.yaml"])[0][1], ok)
    assert res.verdict == claims.HOLDS and "paired t-test p=" in res.conditions[0].evidence[0].text


def test_baseline_prefers_the_same_non_method_setting(tmp_path):
    def rec(method, batch, acc, val):
        r = fx.record(method, acc=acc, r=8 if method != "full_ft" else None, targets="attn_qv" if method != "full_ft" else None)
        r["config"]["batch_size"] = batch
        r["metrics"]["validation"]["accuracy"] = val
        r["run_id"] += f"_b{batch}"
        return r
    # the LoRA at batch 16 is best on validation, but DoRA ran at batch 32: compare with that one
    recs = [rec("lora", 16, 0.9, 0.99), rec("lora", 32, 0.7, 0.5), rec("dora", 32, 0.72, 0.5)]
    ok = load_results([fx.write_all(tmp_path, recs, broken=False)]).ok
    res = claims.evaluate_claim({"id": "x", "statement": "s", "source": "p", "check": "metric_ge_with_tolerance",
                                 "method": "dora", "baseline": "lora", "metric": "accuracy", "tolerance": 0.0}, ok)
    # one seed: the comparison is made (with the right partner), but no interval decides it
    assert res.verdict == claims.CANNOT_TELL and "vs lora 0.7 " in res.conditions[0].evidence[0].text
    assert "one observation" in res.conditions[0].evidence[0].decision.reason


def test_claim_fails_when_the_data_contradicts_it(ok):
    worse = ok.copy()
    worse.loc[worse.method == "dora", "primary"] -= 0.10
    res = claims.evaluate_claim(claims.load_claims([claims.CLAIMS_DIR / "dora_ge_lora.yaml"])[0][1], worse)
    assert res.verdict == claims.FAILS


def test_not_enough_data_when_a_method_is_missing(ok):
    res = claims.evaluate_claim(claims.load_claims([claims.CLAIMS_DIR / "qlora_less_weight_memory.yaml"])[0][1],
                                ok[ok.method != "qlora"])
    assert res.verdict == claims.NO_DATA


def test_single_seed_evidence_says_untested(tmp_path):
    single = load_results([fx.write_all(tmp_path, [fx.record("lora"), fx.record("dora", acc=0.81)], broken=False)]).ok
    res = claims.evaluate_claim({"id": "x", "statement": "s", "source": "p", "check": "metric_ge_with_tolerance",
                                 "method": "dora", "baseline": "lora", "metric": "accuracy", "tolerance": 0.0}, single)
    assert res.verdict == claims.CANNOT_TELL and "single seed: differences untested" in res.conditions[0].evidence[0].text
    assert res.conditions[0].evidence[0].holds  # the point estimate alone would have said holds


def test_a_new_claim_is_just_yaml_and_lists_are_allowed(tmp_path, ok):
    (tmp_path / "mine.yaml").write_text(
        "- id: probe_worse\n  statement: A linear probe trails LoRA.\n  source: folklore\n"
        "  check: metric_less\n  method: linear_probe\n  baseline: lora\n  metric: accuracy\n  tolerance: 0.1\n"
        "  match: []\n"
        "- id: broken\n  statement: no tolerance\n  source: nobody\n  check: metric_less\n  method: lora\n  baseline: dora\n  metric: accuracy\n")
    (tmp_path / "garbage.yaml").write_text("id: [unclosed\n")
    res = {r.id: r for r in claims.evaluate_all(ok, tmp_path)}
    assert res["probe_worse"].verdict == claims.HOLDS
    assert res["broken"].verdict == claims.INVALID and "tolerance" in res["broken"].conditions[0].note
    assert res["?"].verdict == claims.INVALID


def test_claims_markdown_lists_every_claim(verdicts):
    md = claims.to_markdown(list(verdicts.values()))
    assert md.count("| **holds** |") == len(DESIGNED) == 8 and "Hu et al. 2021" in md
    assert "Holm-corrected over" in md or "Corrected over" in md


@pytest.mark.parametrize("bad,why", [
    ({"metric": "acuracy"}, "metric 'acuracy' is not a run column"),
    ({"where": {"precison": "bf16"}}, "where: unknown column 'precison'"),
    ({"match": ["rnak"]}, "match key 'rnak' is not a run column"),
    ({"check": "metric_less", "baseline": None}, "metric_less needs a baseline"),
])
def test_malformed_claim_is_reported_invalid_not_raised(ok, bad, why):
    claim = {"id": "x", "statement": "s", "source": "src", "check": "metric_ge_with_tolerance", "method": "dora",
             "baseline": "lora", "metric": "accuracy", "tolerance": 0.01, **bad}
    res = claims.evaluate_claim(claim, ok)
    assert res.verdict == claims.INVALID and why in res.conditions[0].note


def test_condition_states_metric_and_tolerance_up_front(verdicts, ok):
    assert verdicts["dora_ge_lora"].conditions[0].spec == "dora vs lora: primary, tolerance 0.01"
    md = claims.to_markdown([verdicts["rslora_scales_with_rank"]])
    assert "(rslora vs lora: primary, tolerance" in md


def test_rank_slopes_compare_methods_at_their_own_default_lrs(tmp_path):
    """The shipped methods default to different lrs (lora 2e-3, rslora 1e-3): the claim must still
    be evaluated, each slope along one lr, never through a mix of lrs."""
    recs = [r for r in fx.main_records() if r["method"] in ("lora", "rslora") and r["config"]["method"].get("target_modules") == "attn_qv"]
    for r in recs:
        r["lr"] = r["config"]["method"]["lr"] = 2e-3 if r["method"] == "lora" else 1e-3
    ok = load_results([fx.write_all(tmp_path, recs, broken=False)]).ok
    res = claims.evaluate_claim(claims.load_claims([claims.CLAIMS_DIR / "rslora_scales_with_rank.yaml"])[0][1], ok)
    assert res.verdict == claims.HOLDS, res
    [ev] = res.conditions[0].evidence
    assert "lr 0.001" in ev.text and "lr 0.002" in ev.text


def test_the_ci_verdict_reads_a_lower_is_better_metric_the_right_way(ok):
    """metric_ge_with_tolerance on weight bytes (lower is better): QLoRA is not worse than LoRA,
    on the point estimate and on the interval; LoRA vs QLoRA fails on both."""
    def claim(method, baseline):
        return {"id": "x", "statement": "s", "source": "p", "check": "metric_ge_with_tolerance", "method": method,
                "baseline": baseline, "metric": "cost.weight_bytes", "tolerance": 0}
    q = claims.evaluate_claim(claim("qlora", "lora"), ok)
    assert q.verdict == claims.HOLDS
    assert q.conditions[0].evidence[0].stats["estimate"] < 0  # the raw difference: fewer bytes
    lo = claims.evaluate_claim(claim("lora", "qlora"), ok)
    assert lo.verdict == claims.FAILS


@pytest.mark.parametrize("bad,why", [
    ({"axis": "task.n_trian|task.max_train_samples"}, "axis key 'task.n_trian' is no config key"),
    ({"setting_where": {"task.n_train|task.max_train_sample": [250]}}, "setting_where key 'task.max_train_sample'"),
    ({"free": ["stpes"]}, "free key 'stpes' is no config key"),
])
def test_misspelt_setting_key_is_invalid_not_missing_data(ok, bad, why):
    """A config key no run could set must not read as "not enough data"."""
    claim = {"id": "x", "statement": "s", "source": "src", "check": "axis_slope_compare", "method": "full_ft",
             "baseline": "lora", "metric": "primary", "axis": "task.n_train|task.max_train_samples", "tolerance": 0.0,
             **bad}
    res = claims.evaluate_claim(claim, ok)
    assert res.verdict == claims.INVALID and why in res.conditions[0].note


def test_shipped_claims_name_only_config_keys():
    known = claims.config_keys()
    assert {"task.n_train", "task.max_train_samples", "batch_size", "steps", "method.r"} <= known
    for _, claim in claims.load_claims(claims.claim_files()):
        assert claims.setting_key_problems(claim, known) == [], claim.get("id")


def test_setting_keys_may_be_run_columns_or_keys_the_runs_set(ok):
    """`free: [targets]` names a run column, and a user's own config key is set by their runs: neither
    is a typo."""
    claim = {"id": "x", "check": "axis_slope_compare", "axis": "batch_size", "free": ["targets", "steps"],
             "setting_where": {"my_task.custom_key": [1]}, "tolerance": 0.0}
    runs = ok.assign(setting_items=[{**items, "my_task.custom_key": "1"} for items in ok["setting_items"]])
    assert claims.setting_key_problems(claim, claims.known_settings(runs)) == []
    assert "'my_task.custom_key'" in claims.setting_key_problems(claim, claims.known_settings(ok))[0]
