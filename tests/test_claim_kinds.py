"""The claim checks that compare methods at tuned learning rates, along a config axis, at matched
performance, or against a range; on fabricated records (no torch), each giving holds / fails /
not enough data. Also: 'not enough data' names the study that supplies the claim."""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from peftbench.analysis.claims import CANNOT_TELL, FAILS, HOLDS, INVALID, NO_DATA, evaluate_all, evaluate_claim, name_settings, to_markdown
from peftbench.analysis.load import load_results, setting_labels
from fixtures_analysis.analysis_records import record, write_all

OFFSET = {0: 0.0, 1: 0.01, 2: -0.006, 3: 0.004, 4: -0.003, 5: 0.007, 6: -0.008, 7: 0.002, 8: 0.005, 9: -0.001}


def run(method: str, seed: int, lr: float, acc: float, *, r: int | None = 16, targets: str | None = "all_linear",
        steps: int = 100, config: dict[str, Any] | None = None, forgetting: float | None = None,
        before: float | None = None) -> dict[str, Any]:
    rec = record(method, seed=seed, acc=acc + OFFSET[seed], r=r, targets=targets, lr=lr, steps=steps)
    for k, v in (config or {}).items():
        rec["config"].setdefault("task", {})
        node = rec["config"]
        *head, last = k.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    rec["run_id"] += f"__lr{lr:g}__" + "_".join(f"{k}{v}" for k, v in sorted((config or {}).items()))
    if before is not None:  # the base model's score before training
        rec["metrics_before"] = {"test": {"accuracy": before}, "validation": {"accuracy": before}}
    if forgetting is not None:
        rec["forgetting"] = {"kind": "hidden_drift", "primary": "hidden_drift_cos", "hidden_drift_cos": forgetting + OFFSET[seed] / 10}
    return rec


def peaked(peak_lr: float, top: float, lr: float) -> float:
    """A score that falls 10 points per decade away from the best lr."""
    return top - 0.1 * abs(math.log10(lr / peak_lr))


FT_GRID, LORA_GRID = (3e-5, 1e-4, 3e-4, 1e-3), (3e-4, 1e-3, 3e-3, 1e-2)


def lr_grid_runs(lora_peak: float = 1e-3, ft_peak: float = 1e-4, ft_grid=FT_GRID, lora_grid=LORA_GRID,
                 seeds=(0, 1, 2)) -> list[dict[str, Any]]:
    recs = []
    for s in seeds:
        recs += [run("full_ft", s, lr, peaked(ft_peak, 0.90, lr), r=None, targets=None) for lr in ft_grid]
        recs += [run("lora", s, lr, peaked(lora_peak, 0.86, lr)) for lr in lora_grid]
    return recs


def ok_frame(tmp_path: Path, recs: list[dict[str, Any]]):
    return load_results([write_all(tmp_path / "runs", recs, broken=False)]).ok


def verdict(claim: dict[str, Any], tmp_path: Path, recs: list[dict[str, Any]]) -> str:
    return evaluate_claim(claim, ok_frame(tmp_path, recs)).verdict


BASE = {"id": "x", "statement": "s", "source": "test"}


def lr_ratio(expected: float) -> dict[str, Any]:
    return {**BASE, "check": "best_lr_ratio", "method": "lora", "baseline": "full_ft", "metric": "primary",
            "expected": expected, "tolerance": 0.3}


def test_best_lr_ratio(tmp_path):
    recs = lr_grid_runs()  # LoRA peaks at 1e-3, full FT at 1e-4: 10x
    result = evaluate_claim(lr_ratio(10), ok_frame(tmp_path / "a", recs))
    assert result.verdict == HOLDS
    st = result.conditions[0].evidence[0].stats
    assert st["n"] == 3 and 10 ** st["estimate"] == pytest.approx(10.0)
    assert verdict(lr_ratio(1), tmp_path / "b", recs) == FAILS
    two_lrs = lr_grid_runs(ft_grid=FT_GRID[:2], lora_grid=LORA_GRID[:2])
    assert verdict(lr_ratio(10), tmp_path / "c", two_lrs) == NO_DATA
    assert verdict({**lr_ratio(10), "where_method": {"tragets": "attn_qv"}}, tmp_path / "d", recs) == INVALID


def tuned(relation: str, tolerance: float, **extra: Any) -> dict[str, Any]:
    return {**BASE, "check": "tuned_compare", "method": "dora", "baseline": "lora", "metric": "primary",
            "relation": relation, "tolerance": tolerance, "match": ["capacity", "targets", "steps"], **extra}


@pytest.mark.slow
def test_tuned_compare(tmp_path):
    recs = lr_grid_runs()
    # DoRA best at 3e-3 (another lr than LoRA's), 1 point above LoRA's best
    dora = [run("dora", s, lr, peaked(3e-3, 0.87, lr)) for s in (0, 1, 2) for lr in LORA_GRID]
    result = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path / "a", recs + dora))
    assert result.verdict == HOLDS
    ev = result.conditions[0].evidence[0]
    assert "lr 0.003" in ev.text and "lr 0.001" in ev.text
    assert ev.stats["estimate"] == pytest.approx(0.01) and ev.stats["n"] == 3
    assert verdict(tuned("greater", 0.02), tmp_path / "b", recs + dora) == FAILS
    assert verdict(tuned("within", 0.02), tmp_path / "c", recs) == NO_DATA
    # ratio_in: LoRA's tuned 0.86 over full FT's 0.90 = 95.6%
    ratio = {**tuned("ratio_in", 0.0, range=[0.95, 1.0]), "method": "lora", "baseline": "full_ft", "match": ["steps"]}
    assert verdict(ratio, tmp_path / "d", recs) == HOLDS
    assert verdict({**ratio, "range": [0.97, 1.0]}, tmp_path / "e", recs) == FAILS


def batch_runs(lora_drop: float, ft_drop: float) -> list[dict[str, Any]]:
    recs = []
    for s in (0, 1, 2):
        for bs, steps, k in ((4, 400, 0), (16, 100, 1)):
            # each side's best lr in the middle of its grid: the grid brackets every pick
            recs += [run("full_ft", s, lr, 0.90 - k * ft_drop - (0.02 if lr != 1e-4 else 0), r=None, targets=None, steps=steps,
                         config={"batch_size": bs}) for lr in (3e-5, 1e-4, 3e-4)]
            recs += [run("lora", s, lr, 0.86 - k * lora_drop - (0.02 if lr != 1e-3 else 0), steps=steps, config={"batch_size": bs})
                     for lr in (3e-4, 1e-3, 3e-3)]
    return recs


@pytest.mark.slow
def test_axis_slope_compare(tmp_path):
    claim = {**BASE, "check": "axis_slope_compare", "method": "lora", "baseline": "full_ft", "metric": "primary",
             "axis": "batch_size", "free": ["steps"], "relation": "less", "tolerance": 0.0}
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", batch_runs(lora_drop=0.08, ft_drop=0.01)))
    assert result.verdict == HOLDS
    assert result.conditions[0].evidence[0].stats["estimate"] == pytest.approx((-0.08 + 0.01) / 2)  # per doubling
    assert verdict(claim, tmp_path / "b", batch_runs(lora_drop=0.0, ft_drop=0.05)) == FAILS
    one_batch = [r for r in batch_runs(0.08, 0.01) if r["config"]["batch_size"] == 16]
    assert verdict(claim, tmp_path / "c", one_batch) == NO_DATA
    # without `free: [steps]` the two batch sizes (at different steps) never form one line
    assert verdict({**claim, "free": []}, tmp_path / "d", batch_runs(0.08, 0.01)) == NO_DATA


def size_runs(key: str, ft_gain: float) -> list[dict[str, Any]]:
    """Full FT and LoRA at 250 and 1000 training examples, the size set by `key`; full FT gains
    `ft_gain` over LoRA per doubling of the size."""
    return [run(m, s, lr, 0.80 + (ft_gain * k if m == "full_ft" else 0.0) - (0.02 if lr not in (1e-4, 1e-3) else 0),
                r=None if m == "full_ft" else 16, targets=None if m == "full_ft" else "all_linear", config={key: n})
            for s in (0, 1, 2) for k, n in ((0, 250), (2, 1000))
            for m, lrs in (("full_ft", (3e-5, 1e-4, 3e-4)), ("lora", (3e-4, 1e-3, 3e-3))) for lr in lrs]


@pytest.mark.slow
@pytest.mark.parametrize("key", ["task.n_train", "task.max_train_samples"])
def test_data_size_claims_read_either_size_key(tmp_path, key):
    """The shipped data-size claims name the training-set size as `task.n_train|task.max_train_samples`:
    generated tasks set the first, file datasets (SST-2) the second, and both give verdicts."""
    claims_dir = Path(__file__).resolve().parents[1] / "conf" / "claims"
    gains = yaml.safe_load((claims_dir / "guide_full_ft_gains_with_data.yaml").read_text())
    small = yaml.safe_load((claims_dir / "guide_lora_matches_full_ft_small_data.yaml").read_text())
    result = evaluate_claim(gains, ok_frame(tmp_path / "a", size_runs(key, 0.02)))
    assert result.verdict == HOLDS and f"per doubling of {key} " in result.conditions[0].evidence[0].text
    assert verdict(gains, tmp_path / "b", size_runs(key, -0.02)) == FAILS
    # at 250 and 1000 examples full FT leads by 0 and 4 points: the small-data claim fails on the 1000
    result = evaluate_claim(small, ok_frame(tmp_path / "c", size_runs(key, 0.02)))
    assert result.verdict == FAILS and len(result.conditions[0].evidence) == 2
    assert verdict(small, tmp_path / "d", size_runs(key, 0.0)) == HOLDS


def test_size_key_falls_through_null_to_the_next():
    from peftbench.analysis.claims.kinds import setting_value

    assert setting_value({"task.n_train": "null", "task.max_train_samples": "250"}, "task.n_train|task.max_train_samples") == 250
    assert setting_value({"task.n_train": "1000", "task.max_train_samples": "250"}, "task.n_train|task.max_train_samples") == 1000
    assert setting_value({"task.max_train_samples": "null"}, "task.n_train|task.max_train_samples") is None


def forgetting_runs(ft_forgetting: float, ft_acc: float = 0.85) -> list[dict[str, Any]]:
    recs = []
    for s in (0, 1, 2):
        recs += [run("lora", s, lr, acc, forgetting=0.10, before=0.40) for lr, acc in ((3e-4, 0.80), (1e-3, 0.85), (3e-3, 0.80))]
        recs += [run("full_ft", s, lr, acc, r=None, targets=None, forgetting=f, before=0.40) for lr, acc, f in
                 ((3e-5, ft_acc - 0.05, ft_forgetting / 2), (1e-4, ft_acc, ft_forgetting), (3e-4, ft_acc + 0.05, 2 * ft_forgetting))]
    return recs


@pytest.mark.slow
def test_forgetting_at_matched(tmp_path):
    claim = {**BASE, "check": "forgetting_at_matched", "method": "lora", "baseline": "full_ft", "metric": "primary",
             "forgetting": "forgetting", "match_within": 0.02, "relation": "less", "tolerance": 0.0}
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", forgetting_runs(ft_forgetting=0.30)))
    assert result.verdict == HOLDS
    assert result.conditions[0].evidence[0].stats["estimate"] == pytest.approx(-0.20, abs=1e-6)  # matched with full FT at 1e-4
    assert verdict(claim, tmp_path / "b", forgetting_runs(ft_forgetting=0.05)) == FAILS
    assert verdict(claim, tmp_path / "c", forgetting_runs(ft_forgetting=0.30, ft_acc=0.50)) == NO_DATA  # nothing within 2 points
    # only runs that learned take part: LoRA gained 0.45 over the base model's 0.40
    assert verdict({**claim, "min_gain": 0.3}, tmp_path / "d", forgetting_runs(ft_forgetting=0.30)) == HOLDS
    assert verdict({**claim, "min_gain": 0.5}, tmp_path / "e", forgetting_runs(ft_forgetting=0.30)) == NO_DATA


@pytest.mark.slow
def test_forgetting_at_matched_on_the_frontier(tmp_path):
    """partner: frontier sets every LoRA lr against the least-forgetting full-FT run that does at
    least as well, so a full-FT run that learns more and forgets less decides it."""
    claim = {**BASE, "check": "forgetting_at_matched", "method": "lora", "baseline": "full_ft", "metric": "primary",
             "forgetting": "forgetting", "match_within": 0.02, "relation": "less", "tolerance": 0.0, "partner": "frontier"}
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", forgetting_runs(ft_forgetting=0.30)))
    assert result.verdict == HOLDS
    # LoRA 0.85/0.10 vs full FT 1e-4 (0.85/0.30): -0.20; LoRA 0.80/0.10 (twice) vs full FT 3e-5 (0.80/0.15): -0.05
    assert result.conditions[0].evidence[0].stats["estimate"] == pytest.approx(-0.10, abs=1e-6)
    assert "every lr" in result.conditions[0].evidence[0].text
    assert verdict(claim, tmp_path / "b", forgetting_runs(ft_forgetting=0.05)) == FAILS
    # a full-FT run that scores higher and forgets least: the closest match misses it, the frontier does not
    better = [run("full_ft", s, 1e-3, 0.87, r=None, targets=None, forgetting=0.02, before=0.40) for s in (0, 1, 2)]
    recs = forgetting_runs(ft_forgetting=0.30) + better
    closest = {k: v for k, v in claim.items() if k != "partner"}
    assert verdict(closest, tmp_path / "c", recs) == HOLDS
    assert verdict(claim, tmp_path / "d", copy.deepcopy(recs)) == FAILS
    # a LoRA run that no full-FT run matches is named, not dropped
    best = [run("lora", s, 1e-2, 0.95, forgetting=0.10, before=0.40) for s in (0, 1, 2)]
    text = evaluate_claim(claim, ok_frame(tmp_path / "f", forgetting_runs(ft_forgetting=0.30) + best)).conditions[0].evidence[0].text
    assert "s0 lr 0.01: 0.951/0.1 vs none as good" in text  # matched on validation (0.95 + 0.001)
    bad = evaluate_claim({**claim, "partner": "nearest"}, ok_frame(tmp_path / "e", forgetting_runs(ft_forgetting=0.30)))
    assert bad.verdict == INVALID and "partner must be closest or frontier" in bad.conditions[0].note


@pytest.mark.slow
def test_one_method_under_rl_against_itself_under_sft(tmp_path):
    """RL's Razor: LoRA trained by GRPO against LoRA trained by SFT at matched accuracy. The sides
    are one method told apart by their objective (a supervised record carries none), and `across`
    lets them differ in the objective's own keys and the batch size."""
    recs = []
    for s in (0, 1, 2):
        recs += [run("lora", s, lr, acc, forgetting=0.02, before=0.40,
                     config={"objective.name": "grpo", "objective.num_generations": 8, "batch_size": 2})
                 for lr, acc in ((1e-4, 0.78), (3e-4, 0.85), (1e-3, 0.80))]
        recs += [run("lora", s, lr, acc, forgetting=0.10, before=0.40, config={"batch_size": 16})
                 for lr, acc in ((3e-4, 0.80), (1e-3, 0.85), (3e-3, 0.82))]
    claim = {**BASE, "check": "forgetting_at_matched", "method": "lora", "baseline": "lora", "metric": "primary",
             "setting_where_method": {"objective.name": ["grpo"]}, "setting_where_baseline": {"objective.name": ["sft", None]},
             "across": ["objective", "batch_size"], "forgetting": "forgetting", "match_within": 0.02, "relation": "less",
             "tolerance": 0.0}
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", recs))
    assert result.verdict == HOLDS, result.conditions[0].note
    assert result.conditions[0].evidence[0].stats["estimate"] == pytest.approx(-0.08, abs=1e-6)
    # without `across` the two objectives share no setting: no pair, no verdict
    assert verdict({k: v for k, v in claim.items() if k != "across"}, tmp_path / "b", copy.deepcopy(recs)) == NO_DATA
    # without the sides' own filters, GRPO runs would be their own partners
    both = {k: v for k, v in claim.items() if not k.startswith("setting_where_")}
    assert evaluate_claim(both, ok_frame(tmp_path / "c", copy.deepcopy(recs))).conditions[0].evidence[0].stats["estimate"] != pytest.approx(-0.08, abs=1e-6)


def test_metric_in_range(tmp_path):
    recs = [record("houlsby", seed=s, r=None, targets=None, reduction_factor=16, lat_unmerged=0.17 + OFFSET[s], can_merge=False)
            for s in (0, 1, 2)]
    claim = {**BASE, "check": "metric_in_range", "method": "houlsby", "metric": "cost.latency_overhead_unmerged_frac",
             "range": [0.15, 0.20], "tolerance": 0.0}
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", recs))
    assert result.verdict == HOLDS and result.conditions[0].evidence[0].stats["n"] == 3
    assert verdict({**claim, "range": [0.0, 0.1]}, tmp_path / "b", recs) == FAILS
    assert verdict({**claim, "method": "pfeiffer"}, tmp_path / "c", recs) == NO_DATA


def test_not_enough_data_names_the_study(tmp_path):
    """The hint comes from the studies' own claim lists (conf/study/*.yaml)."""
    folder = tmp_path / "claims"
    folder.mkdir()
    src = Path(__file__).resolve().parents[1] / "conf" / "claims" / "lwr_lora_lr_10x_full_ft.yaml"
    (folder / src.name).write_text(src.read_text())
    results = evaluate_all(ok_frame(tmp_path, copy.deepcopy(lr_grid_runs(ft_grid=FT_GRID[:1]))), folder)
    cond = results[0].conditions[0]
    assert cond.verdict == NO_DATA and "peftbench reproduce lora_without_regret" in cond.note


def test_a_reference_with_other_measurement_switches_is_still_the_reference(tmp_path):
    """Measurement never changes what a run trains: full FT run with latency and forgetting off is
    the reference of LoRA runs that measured them. A training setting (batch size) still splits."""
    ratio = {**tuned("ratio_in", 0.0, range=[0.95, 1.0]), "method": "lora", "baseline": "full_ft", "match": ["steps"]}
    measured = {"measure.latency": True, "forgetting.enabled": True}
    recs = []
    for s in (0, 1, 2):
        recs += [run("full_ft", s, lr, peaked(1e-4, 0.90, lr), r=None, targets=None,
                     config={"measure.latency": False, "forgetting.enabled": False}) for lr in FT_GRID]
        recs += [run("lora", s, lr, peaked(1e-3, 0.86, lr), config=measured) for lr in LORA_GRID]
    assert verdict(ratio, tmp_path / "a", recs) == HOLDS
    other_batch = [run("full_ft", s, lr, peaked(1e-4, 0.90, lr), r=None, targets=None, config={"batch_size": 4})
                   for s in (0, 1, 2) for lr in FT_GRID]
    lora = [r for r in recs if r["method"] == "lora"]
    assert verdict(ratio, tmp_path / "b", lora + other_batch) == NO_DATA


@pytest.mark.slow
def test_the_interval_decides_never_the_point_estimate(tmp_path):
    """A point estimate inside the tolerance is not a verdict: tight seeds hold, seeds whose
    interval reaches across the tolerance cannot tell (and say how many seeds would decide), an
    interval wholly outside fails, and one seed cannot tell."""
    recs = lr_grid_runs()
    tight = [run("dora", s, lr, peaked(1e-3, 0.87, lr)) for s in (0, 1, 2) for lr in LORA_GRID]  # +1 point every seed
    spread = {0: 0.03, 1: -0.025, 2: 0.025}  # mean +1 point, seeds disagree by 5.5
    noisy = [run("dora", s, lr, peaked(1e-3, 0.86, lr) + spread[s]) for s in (0, 1, 2) for lr in LORA_GRID]
    held = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path / "a", recs + tight))
    assert held.verdict == HOLDS
    unsure = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path / "b", recs + noisy))
    ev = unsure.conditions[0].evidence[0]
    assert ev.holds and unsure.verdict == CANNOT_TELL  # the point estimate says holds; the interval does not
    assert ev.stats["ci_low"] < -0.02 < 0.02 < ev.stats["ci_high"]
    assert ev.decision.seeds_needed is not None and ev.decision.seeds_needed > 3
    assert f"about {ev.decision.seeds_needed} seeds would decide" in ev.decision.reason
    assert "minimum detectable effect" in ev.decision.reason and ev.decision.mde > 0
    failed = evaluate_claim(tuned("greater", 0.02), ok_frame(tmp_path / "c", recs + tight))
    assert failed.verdict == FAILS  # +1 point, no spread: wholly below +2
    one_seed = [r for r in recs + tight if r["seed"] == 0]
    single = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path / "d", one_seed))
    assert single.verdict == CANNOT_TELL and "one observation" in single.conditions[0].evidence[0].decision.reason
    text = to_markdown([unsure])
    assert "| **cannot tell** |" in text and "reaches across" in text and "point estimate inside" in text


@pytest.mark.slow
def test_holm_corrects_over_the_whole_report(tmp_path):
    """One comparison that holds on its own at p just under 0.05 cannot tell once the report judges
    several: the correction multiplies the smallest p by the number of comparisons."""
    from peftbench.analysis.verdicts import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, float("nan")])[0] == pytest.approx(0.2) and math.isnan(holm([0.2, float("nan")])[1])
    recs = lr_grid_runs()
    spread = {0: 0.004, 1: -0.003, 2: 0.002}
    dora = [run("dora", s, lr, peaked(1e-3, 0.86, lr) + spread[s]) for s in (0, 1, 2) for lr in LORA_GRID]
    folder = tmp_path / "claims"
    folder.mkdir()
    claim = tuned("within", 0.012)
    (folder / "one.yaml").write_text(yaml.safe_dump({**claim, "id": "one"}))
    alone = evaluate_all(ok_frame(tmp_path / "a", recs + dora), folder)[0]
    p_alone = alone.conditions[0].evidence[0].decision.p_holm
    for i in range(2, 6):
        (folder / f"c{i}.yaml").write_text(yaml.safe_dump({**claim, "id": f"c{i}"}))
    many = {r.id: r for r in evaluate_all(ok_frame(tmp_path / "b", recs + dora), folder)}
    p_many = many["one"].conditions[0].evidence[0].decision.p_holm
    assert p_many == pytest.approx(min(1.0, 5 * p_alone))
    assert alone.verdict == HOLDS and p_alone < 0.05 < p_many and many["one"].verdict == CANNOT_TELL
    # its 95% interval still lies inside the region: the reason says so, and why it does not decide
    reason = many["one"].conditions[0].evidence[0].decision.reason
    assert "lies inside where the claim holds" in reason and "once corrected for the report's 5 tests" in reason
    assert "reaches across" not in reason and f"Holm-corrected p={p_many:.3g}, not below 0.05" in reason


def test_a_pick_on_the_edge_of_its_grid_is_not_applicable_and_names_the_lr_to_add(tmp_path):
    # LoRA's best lr is the highest of its grid: the optimum may lie above it
    recs = lr_grid_runs(lora_peak=1e-2)
    result = evaluate_claim(tuned("ge", 0.02, method="lora", baseline="full_ft", match=["steps"]), ok_frame(tmp_path / "a", recs))
    [ev] = result.conditions[0].evidence
    assert result.verdict == "not applicable"
    assert "lora's validation pick lr 0.01 is the highest of" in ev.not_applicable and "add lr=0.033" in ev.not_applicable
    ratio = evaluate_claim(lr_ratio(10), ok_frame(tmp_path / "b", recs))
    assert ratio.verdict == "not applicable" and "does not bracket the optimum" in ratio.conditions[0].evidence[0].not_applicable


def test_the_lr_optimum_is_a_vertex_not_a_grid_point(tmp_path):
    """Between grid points: a LoRA curve peaking at 2e-3 (between 1e-3 and 3e-3) gives a best lr
    between them, not either grid value."""
    recs = []
    for s in (0, 1, 2):
        recs += [run("full_ft", s, lr, 0.90 - 0.1 * math.log10(lr / 1e-4) ** 2, r=None, targets=None) for lr in FT_GRID]
        recs += [run("lora", s, lr, 0.86 - 0.1 * math.log10(lr / 2e-3) ** 2) for lr in LORA_GRID]
    st = evaluate_claim(lr_ratio(20), ok_frame(tmp_path, recs)).conditions[0].evidence[0].stats
    assert 10 ** st["estimate"] == pytest.approx(20.0, rel=0.02)


@pytest.mark.slow
def test_runs_that_did_not_learn_are_left_out(tmp_path):
    """A LoRA that stays at the base model's score on validation says nothing about lrs: left out,
    by name, and with no learned runs the claim is not applicable."""
    recs = lr_grid_runs()
    for r in recs:
        r["metrics_before"] = {"validation": {"accuracy": 0.60}, "test": {"accuracy": 0.60}}
        r["eval_items"] = {"validation": 500, "test": 1000}
        if r["method"] == "lora" and r["seed"] == 2:  # collapsed: validation at the base model's score
            r["metrics"]["validation"]["accuracy"] = 0.605
    claim = tuned("ge", 0.05, method="lora", baseline="full_ft", match=["steps"])
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", recs))
    [cond] = result.conditions
    # one collapsed seed beside two that learned: kept (dropping it would keep only the good seeds), and named
    assert "kept 4 run(s) that did not learn beside seeds of the same configuration" in cond.note
    # named as a reader names a configuration, not by run id
    assert "lora r=16 all_linear lr 3e-04, 100 steps (seed 2)" in cond.note
    assert not any(r["run_id"] in cond.note for r in recs)
    assert cond.evidence[0].seeds == (0, 1, 2)
    for r in recs:
        if r["method"] == "lora":
            r["metrics"]["validation"]["accuracy"] = 0.61
    gone = evaluate_claim(claim, ok_frame(tmp_path / "b", recs))
    assert gone.verdict == "not applicable" and "none of whose 12 run(s) learned" in gone.conditions[0].note
    assert "not above the base model 0.6" in gone.conditions[0].note
    # the majority class is a floor too: a record that says it
    for r in recs:
        r["metrics_majority"] = {"validation": {"accuracy": 0.95}}
        r["metrics_before"] = None
    assert evaluate_claim(claim, ok_frame(tmp_path / "c", lr_grid_runs())).verdict != "not applicable"
    assert "not above the majority class 0.95" in evaluate_claim(claim, ok_frame(tmp_path / "d", recs)).conditions[0].note


def with_items(recs: list[dict[str, Any]], n: int = 400, digest: str = "d" * 16) -> list[dict[str, Any]]:
    """Per-item test outcomes whose mean is each run's accuracy; items shared by the runs of a seed
    (a harder item is harder for every method), as they are on one test set."""
    import numpy as np

    from peftbench.experiments.outcomes import encode

    for r in recs:
        acc = r["metrics"]["test"]["accuracy"]
        order = np.random.default_rng(r["seed"]).permutation(n)  # item difficulty: one order per seed
        correct = np.zeros(n)
        correct[order[: round(acc * n)]] = 1
        r["metrics"]["test"]["accuracy"] = float(correct.mean())
        r["items"] = {"test": encode(correct, digest, "accuracy")}
    return recs


@pytest.mark.slow
def test_a_paired_bootstrap_over_seeds_and_items_decides_where_records_keep_items(tmp_path):
    ratio = {**tuned("ratio_in", 0.0, range=[0.9, float("inf")]), "method": "lora", "baseline": "full_ft", "match": ["steps"]}
    ten = tuple(range(10))
    result = evaluate_claim(ratio, ok_frame(tmp_path / "a", with_items(lr_grid_runs(seeds=ten))))
    [ev] = result.conditions[0].evidence
    assert ev.stats["interval"] == "bootstrap" and ev.stats["items"] == 400 and ev.stats["n"] == 10
    assert "paired bootstrap over 10 seeds x 400 test items" in ev.text
    assert ev.stats["ci_low"] < ev.stats["estimate"] < ev.stats["ci_high"]
    assert result.verdict == HOLDS and "paired bootstrap" in ev.decision.reason  # 86/90 = 95.6%: above 90%
    assert ev.decision.p_holm >= 2 / 4001  # a bootstrap p is never 0
    again = evaluate_claim(ratio, ok_frame(tmp_path / "b", with_items(lr_grid_runs(seeds=ten))))
    assert again.conditions[0].evidence[0].stats == ev.stats  # the bootstrap has its own fixed generator
    # two test sets (another digest) never pair item by item, and 3 seeds are too few to resample:
    # the t interval over seeds decides
    mixed = with_items([r for r in lr_grid_runs(seeds=ten) if r["method"] == "lora"]) + \
        with_items([r for r in lr_grid_runs(seeds=ten) if r["method"] == "full_ft"], digest="e" * 16)
    assert evaluate_claim(ratio, ok_frame(tmp_path / "c", mixed)).conditions[0].evidence[0].stats.get("interval") is None
    three = evaluate_claim(ratio, ok_frame(tmp_path / "d", with_items(lr_grid_runs())))
    assert three.conditions[0].evidence[0].stats.get("interval") is None


def test_a_claim_outside_its_regime_is_not_applicable(tmp_path):
    recs = lr_grid_runs()
    claim = {**tuned("ge", 0.05, method="lora", baseline="full_ft", match=["steps"]), "regime": {"batch_size": {"min": 32}},
             "regime_text": "batch 32 and more"}
    for r in recs:
        r["config"]["batch_size"] = 16
    result = evaluate_claim(claim, ok_frame(tmp_path / "a", recs))
    assert result.verdict == "not applicable" and result.regime == "batch 32 and more"
    assert "the claim's regime is batch_size >= 32" in result.conditions[0].note and "had batch_size 16" in result.conditions[0].note
    for r in recs:
        r["config"]["batch_size"] = 64
    assert evaluate_claim(claim, ok_frame(tmp_path / "b", recs)).verdict == HOLDS


def test_evidence_names_what_sets_a_setting_apart(tmp_path):
    """A setting hash alone means nothing to a reader: evaluate_all adds the keys whose values
    differ between the runs' settings (not the method's own parameters, not measurement switches)."""
    recs = [run(m, s, lr, 0.8, r=16 if m == "lora" else None, targets="all_linear" if m == "lora" else None,
                config={"task.n_train": n, "measure.latency": m == "lora"})
            for m in ("lora", "full_ft") for s in (0, 1, 2) for lr in (1e-4, 1e-3) for n in (250, 1000)]
    ok = ok_frame(tmp_path, recs)
    labels = setting_labels(ok)
    assert sorted(set(labels.values())) == ["task.n_train=1000", "task.n_train=250"]
    h = next(k for k, v in labels.items() if v == "task.n_train=250")
    assert name_settings(f"minilm synth steps=100 setting={h}", labels).endswith(f"setting={h} (task.n_train=250)")
    claim = {**tuned("ge", 0.02), "method": "lora", "baseline": "full_ft", "match": ["steps"]}
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "x.yaml").write_text(yaml.safe_dump(claim))
    wheres = [e.where for e in evaluate_all(ok, folder)[0].conditions[0].evidence]
    assert len(wheres) == 2 and all("(task.n_train=" in w for w in wheres)


def test_a_failed_claim_says_why_in_one_line(tmp_path):
    """A claim that fails names its source and its likely reason, as one line even when the
    YAML folds them over several (folded blocks end in a newline)."""
    claim = yaml.safe_load("""
id: x
statement: >
  LoRA beats
  full FT.
source: >
  Someone et al.
  2025.
if_fails: >
  short runs
  of a small model.
check: tuned_compare
method: lora
baseline: full_ft
metric: primary
relation: greater
tolerance: 0.0
""")
    result = evaluate_claim(claim, ok_frame(tmp_path, lr_grid_runs()))
    assert result.verdict == FAILS
    assert result.disagreement() == "Our runs disagree with Someone et al. 2025. Likely reason: short runs of a small model."
    assert result.statement == "LoRA beats full FT."


def test_a_claim_holds_only_when_every_condition_can_be_judged_and_holds():
    from peftbench.analysis.verdicts import combine, combine_conditions

    assert combine_conditions([HOLDS, "not applicable"]) == "not applicable"  # never holds on the rest
    assert combine_conditions([FAILS, "not applicable"]) == FAILS and combine_conditions([HOLDS, HOLDS]) == HOLDS
    assert combine_conditions([HOLDS, CANNOT_TELL]) == CANNOT_TELL
    assert combine([HOLDS, "not applicable"]) == HOLDS  # within a condition: the configurations that apply


def test_zero_spread_is_read_as_it_is_and_left_out_of_the_correction(tmp_path):
    """Identical differences on every seed give a zero-width interval: no test, no p to correct;
    the figure is read as it is, and the reason says so."""
    recs = lr_grid_runs() + [run("dora", s, lr, peaked(1e-3, 0.87, lr)) for s in (0, 1, 2) for lr in LORA_GRID]
    ev = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path, recs)).conditions[0].evidence[0]
    assert ev.verdict == HOLDS and "zero spread over 3 seeds" in ev.decision.reason
    assert math.isnan(ev.decision.p_raw) and not ev.decision.corrected


def test_a_claim_that_still_says_rank_is_told_the_new_name():
    """The method's capacity is one column, `capacity`; a claim file written when it was `rank`
    is refused with the new name, never silently filtering nothing."""
    import pandas as pd

    from peftbench.analysis.claims.kinds import _filter_columns
    from peftbench.analysis.claims.spec import column_problems

    claim = {"id": "old", "check": "metric_ge_with_tolerance", "method": "dora", "baseline": "lora", "metric": "primary",
             "match": ["rank", "targets"], "where": {"rank": "r=8"}}
    problems = column_problems(claim, ["capacity", "targets", "primary"])
    assert any("match key 'rank' is not a run column (it is called 'capacity' now" in p for p in problems), problems
    assert any("where: unknown column 'rank' (it is called 'capacity' now" in p for p in problems), problems
    with pytest.raises(KeyError, match="it is called 'capacity' now"):
        _filter_columns(pd.DataFrame({"capacity": ["r=8"]}), {"rank": "r=8"})


def test_a_setting_filter_that_leaves_no_run_is_no_data_not_a_crash():
    """When the guards leave one side of a comparison no run, `setting_where` filters an empty
    frame: the claim is not applicable for want of runs, never invalid with a KeyError."""
    import pandas as pd

    from peftbench.analysis.claims.kinds import _filter_setting

    empty = pd.DataFrame({"method": pd.Series([], dtype=object), "model": pd.Series([], dtype=object),
                          "setting_items": pd.Series([], dtype=object)})
    out = _filter_setting(empty, {"objective.name": ["grpo"]})
    assert list(out.columns) == list(empty.columns) and out.empty


@pytest.mark.slow
def test_only_the_configurations_a_claim_reads_are_named_as_not_learned(tmp_path):
    """A full FT lr that collapsed says nothing to a claim about DoRA against LoRA: it is not named
    in that claim's reason, while a collapsed DoRA lr is, with the closest seed's test."""
    recs = lr_grid_runs()
    recs += [run("dora", s, lr, peaked(3e-3, 0.87, lr)) for s in (0, 1, 2) for lr in LORA_GRID]
    for r in recs:
        r["metrics_majority"] = {"validation": {"accuracy": 0.5}}
        r["eval_items"] = {"validation": 400, "test": 1000}
        if (r["method"] == "full_ft" and r["config"]["method"]["lr"] == 3e-5) or (r["method"] == "dora" and r["config"]["method"]["lr"] == 1e-2):
            r["metrics"]["validation"]["accuracy"] = 0.5
    note = evaluate_claim(tuned("within", 0.02), ok_frame(tmp_path, recs)).conditions[0].note
    assert "left out 1 configuration(s) none of whose 3 run(s) learned: dora r=16 all_linear lr 1e-02, 100 steps (seeds 0, 1, 2; best: validation 0.5 not above the majority class 0.5" in note
    assert "full_ft" not in note


def _floor_row(primary: str, metrics: list[dict[str, Any]], val: dict[str, float], majority: dict[str, float], n: int = 400) -> dict[str, Any]:
    from peftbench.analysis.load.rows import floor_columns
    from peftbench.analysis.meta import task_metrics

    rec = {"metric_spec": metrics, "metrics": {"validation": val}, "metrics_majority": {"validation": majority},
           "eval_items": {"validation": n}}
    return {"primary_metric": primary, "val_primary": val[primary], **floor_columns(rec, task_metrics(rec), None)}


def test_the_did_not_learn_test_uses_each_metrics_own_spread():
    """An MCC of 0.05 over 400 items is chance (z = 0.05 x sqrt(400) = 1.0), not learning; a binomial
    standard error at the majority class's MCC of 0 would have called it z = 20. A macro-F1 primary
    has no per-item test: the run is tested on its accuracy, and the reason says so."""
    from peftbench.analysis.guards import learned

    mcc = [{"name": "mcc", "direction": "max", "primary": True}, {"name": "accuracy", "direction": "max", "primary": False}]
    ok, why = learned(_floor_row("mcc", mcc, {"mcc": 0.05, "accuracy": 0.52}, {"mcc": 0.0, "accuracy": 0.5}))
    assert not ok and "(z=1.00)" in why and why.startswith("validation 0.05 not above the majority class 0")
    assert learned(_floor_row("mcc", mcc, {"mcc": 0.15, "accuracy": 0.6}, {"mcc": 0.0, "accuracy": 0.5}))[0]  # z = 3
    f1 = [{"name": "macro_f1", "direction": "max", "primary": True}, {"name": "accuracy", "direction": "max", "primary": False}]
    ok, why = learned(_floor_row("macro_f1", f1, {"macro_f1": 0.33, "accuracy": 0.51}, {"macro_f1": 0.33, "accuracy": 0.5}))
    assert not ok and why.startswith("validation accuracy 0.51 not above the majority class 0.5")
    # above its own floor on macro-F1 (the minority classes learned at no gain in accuracy): learned
    assert learned(_floor_row("macro_f1", f1, {"macro_f1": 0.45, "accuracy": 0.5}, {"macro_f1": 0.33, "accuracy": 0.5}))[0]
    # lower is better: no floor to beat here, never left out (an error rate of 0.10 against 0.5)
    err = [{"name": "error_rate", "direction": "min", "primary": True, "spread": "proportion"}]
    assert learned(_floor_row("error_rate", err, {"error_rate": 0.10}, {"error_rate": 0.5})) == (True, "")
    # no metric with a per-item test: nothing to test against, and the run counts as learned
    only_f1 = [{"name": "macro_f1", "direction": "max", "primary": True}]
    assert learned(_floor_row("macro_f1", only_f1, {"macro_f1": 0.34}, {"macro_f1": 0.33})) == (True, "")
    # a task's own metric declares its spread
    own = [{"name": "my_score", "direction": "max", "primary": True, "spread": "bounded_mean"}]
    ok, why = learned(_floor_row("my_score", own, {"my_score": 0.52}, {"my_score": 0.5}))
    assert not ok and "(z=0.80)" in why


def test_a_metric_spread_the_code_does_not_know_is_refused():
    from peftbench.experiments import metric_spec
    from peftbench.methods.errors import ConfigError

    with pytest.raises(ConfigError, match="spread 'gaussian'; use one of"):
        metric_spec.normalise([{"name": "x", "primary": True, "spread": "gaussian"}])
