"""The basic vocabulary of checks: a metric against a baseline, a range or the noise, slopes and
areas under the curve; each registered by name with @check."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

from peftbench.analysis.load import GROUP_KEY, ROW_KEY
from peftbench.analysis.stats import one_per_source, paired_test
from peftbench.analysis.claims.core import Condition, ConditionResult, Evidence, INF, best_by_validation, compare_sides, configs_of, check, condition_result, diff_stats, fmt, methods_of, observed, where_text



def bound_stats(value: float, bound: float, n: int) -> dict[str, Any]:
    """A measurement with its own noise bound as the interval (value ± bound): read at face
    value, not a t interval over seeds (analysis.verdicts marks it uncorrected)."""
    return {"estimate": value, "ci_low": value - bound, "ci_high": value + bound, "p": math.nan, "n": float(n), "interval": "bound"}


@check("metric_within_noise")
def metric_within_noise(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """The metric ± its measurement noise (noise_metric, mean over the observations) lies within
    ± tolerance, for every configuration of the methods."""
    metric, noise, tol = cond["metric"], cond.get("noise_metric", "cost.latency_noise_frac"), float(cond["tolerance"])
    evidence = []
    for method in methods_of(cond):
        for key, g in configs_of(runs, method):
            g, reuse = observed(g, metric, noise)
            v, n = float(g[metric].mean()), float(g[noise].mean())
            if math.isnan(v) or math.isnan(n):
                continue
            seeds = tuple(sorted(map(int, g["seed"])))
            text = (f"{method} {metric}={fmt(v)} ± {noise} {fmt(n)}; needs within ±{fmt(tol)} "
                    f"(seeds {','.join(map(str, seeds))}{reuse})")
            evidence.append(Evidence(where_text(dict(zip(GROUP_KEY + ROW_KEY, key))), text, abs(v) <= n + tol, seeds,
                                     bound_stats(v, abs(n), len(g)), (-tol, tol)))
    return condition_result(cond["check"], evidence)


def _vs_column(cond: Mapping[str, Any], runs: pd.DataFrame, greater: bool) -> ConditionResult:
    """metric compared with another column of the same runs, e.g. latency overhead vs noise."""
    metric, other, tol = cond["metric"], cond["than_metric"], float(cond["tolerance"])
    evidence = []
    for method in methods_of(cond):
        for key, g in configs_of(runs, method):
            g, reuse = observed(g, metric, other)
            v, o = float(g[metric].mean()), float(g[other].mean())
            if math.isnan(v) or math.isnan(o):
                continue
            ok = v > o + tol if greater else v < o - tol
            seeds = tuple(sorted(map(int, g["seed"])))
            rel = ">" if greater else "<"
            text = (f"{method} {metric}={fmt(v)} ± {other} {fmt(o)}; needs {rel} {'' if greater else '-'}{fmt(tol)} beyond "
                    f"that bound (seeds {','.join(map(str, seeds))}{reuse})")
            region = (tol, INF) if greater else (-INF, -tol)
            evidence.append(Evidence(where_text(dict(zip(GROUP_KEY + ROW_KEY, key))), text, ok, seeds, bound_stats(v, abs(o), len(g)), region))
    return condition_result(cond["check"], evidence)


@check("metric_greater", needs_baseline=True)
def metric_greater(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric > baseline's metric + tolerance, or > the same runs' `than_metric` + tolerance."""
    if cond.get("than_metric"):
        return _vs_column(cond, runs, greater=True)
    return compare_sides(cond, runs, lambda a, b, t: a > b + t, "diff > {tol}", lambda t: (t, INF))


@check("metric_less", needs_baseline=True)
def metric_less(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric < baseline's metric - tolerance (or the same runs' `than_metric` - tolerance)."""
    if cond.get("than_metric"):
        return _vs_column(cond, runs, greater=False)
    return compare_sides(cond, runs, lambda a, b, t: a < b - t, "diff < -{tol}", lambda t: (-INF, -t))


@check("metric_ge_with_tolerance", needs_baseline=True)
def metric_ge_with_tolerance(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric not worse than the baseline's by more than the tolerance, in the metric's own
    direction (>= baseline - tolerance where higher is better)."""
    return compare_sides(cond, runs, lambda a, b, t: a >= b - t, "not worse by more than {tol}", lambda t: (-t, INF), oriented=True)


@check("metric_within_tolerance", needs_baseline=True)
def metric_within_tolerance(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """|metric - baseline's metric| <= tolerance."""
    return compare_sides(cond, runs, lambda a, b, t: abs(a - b) <= t, "|diff| <= {tol}", lambda t: (-t, t))


@check("auc_compare", needs_baseline=True)
def auc_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Area under the training-loss curve (mean loss per step) lower than the baseline's by more
    than the tolerance: converges faster at the same step budget."""
    return compare_sides(Condition({**cond, "metric": "loss_auc"}), runs, lambda a, b, t: a < b - t, "diff < -{tol}", lambda t: (-INF, -t))


def _slope(g: pd.DataFrame, metric: str) -> tuple[dict[int, float], list[str]]:
    """Per seed, the least-squares slope of the metric per doubling of rank over the seed's ranks
    (seeds with fewer than 2 ranks have none), and which seeds each rank has."""
    g = one_per_source(g, [metric])  # a line is one lr: ranks never share a measurement
    if g["capacity_value"].nunique() < 2:
        return {}, []
    per_seed = {}
    for seed, s in g.groupby("seed"):
        s = s.dropna(subset=[metric])
        if s["capacity_value"].nunique() >= 2:
            per_seed[int(seed)] = float(np.polyfit(np.log2(s["capacity_value"].to_numpy(float)), s[metric].to_numpy(float), 1)[0])
    seeds = [f"r{int(r)}: seeds {','.join(map(str, sorted(g[g['capacity_value'] == r]['seed'])))}" for r in sorted(g["capacity_value"].unique())]
    return per_seed, seeds


def _lr_lines(g: pd.DataFrame) -> list[pd.DataFrame]:
    """One rank line per lr (and lr protocol) of a method: a slope never mixes learning rates."""
    return [line for _, line in g.groupby(["lr", "protocol"], sort=True, dropna=False)]


@check("slope_compare", needs_baseline=True)
def slope_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Slope of metric vs log2(rank) over ranks in [min_rank, max_rank]: method's slope greater
    than the baseline's by more than the tolerance (keeps improving where the baseline stalls).
    Each method is fitted along its own lr (methods' default lrs differ); where the baseline has
    several lr lines, the same lr is preferred, else the best by validation."""
    metric, tol = cond.get("metric", "primary"), float(cond["tolerance"])
    lo, hi = float(cond.get("min_rank", 0)), float(cond.get("max_rank", math.inf))
    sel = runs[runs["capacity_value"].between(lo, hi)]
    # ref_setting: never fit one slope through runs of different batch size, task size or device
    match = GROUP_KEY + ["precision", "ref_setting"] + list(cond.get("match", ["targets", "steps"]))
    evidence = []
    for key, g in sel.groupby(match, sort=True, dropna=False):
        cfg = dict(zip(match, key))
        base_lines = [ln for ln in _lr_lines(g[g["method"] == cond["baseline"]]) if ln["capacity_value"].nunique() >= 2]
        for method in methods_of(cond):
            for line in _lr_lines(g[g["method"] == method]):
                per_m, seeds_m = _slope(line, metric)
                pick = best_by_validation([((), b) for b in base_lines], cfg["ref_setting"], float(line["lr"].iloc[0]))
                if pick is None or not per_m:
                    continue
                per_b, seeds_b = _slope(pick[1], metric)
                test = paired_test(per_m, per_b)
                if not test.seeds:
                    continue
                st = diff_stats(per_m, per_b, test)
                sm = float(np.mean([per_m[k] for k in test.seeds]))
                sb = float(np.mean([per_b[k] for k in test.seeds]))
                text = (f"slope of {metric} per doubling of rank (r in [{fmt(lo)}, {fmt(hi)}]), per seed: {method} {fmt(sm)} "
                        f"(lr {fmt(float(line['lr'].iloc[0]))}; {'; '.join(seeds_m)}) vs {cond['baseline']} {fmt(sb)} "
                        f"(lr {fmt(float(pick[1]['lr'].iloc[0]))}; {'; '.join(seeds_b)}); needs diff > {fmt(tol)}")
                evidence.append(Evidence(where_text({"method": method, **cfg}), text, sm - sb > tol, test.seeds, st, (tol, INF)))
    return condition_result(cond["check"], evidence, "" if evidence else f"needs >= 2 ranks in [{fmt(lo)}, {fmt(hi)}] for both methods at one setting")


@check("range_within_noise", needs_range=True)
def range_within_noise(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """A figure the literature states as a range (e.g. "adds 15-20% latency"): the mean over seeds
    of every configuration of the methods, with its noise bound b, against [low, high] widened by
    the tolerance. b is the larger of the 95% t-interval over seeds and the runs' own measurement
    noise (`noise_metric`, mean over seeds, in the metric's unit). Holds when mean ± b lies inside
    the range, fails when it lies wholly outside, cannot tell when it reaches across an end. A
    configuration whose b exceeds `max_noise` (default: the larger |end| of the range, i.e. noise
    as large as the claimed effect itself) cannot judge the claim and is left out of the verdict."""
    from peftbench.analysis.stats import t_ci95

    metric, noise, tol = cond["metric"], cond.get("noise_metric"), float(cond["tolerance"])
    low, high = float(cond["range"][0]) - tol, float(cond["range"][1]) + tol
    max_noise = float(cond.get("max_noise", max(abs(float(x)) for x in cond["range"])))
    evidence, too_noisy = [], []
    for method in methods_of(cond):
        for key, g in configs_of(runs, method):
            g, reuse = observed(g, metric, noise)
            values = g[metric].astype(float).dropna()
            if values.empty:
                continue
            mean, seeds = float(values.mean()), tuple(sorted(map(int, g.loc[values.index, "seed"])))
            ci = t_ci95(values.tolist())
            measured = float(g[noise].astype(float).mean()) if noise else math.nan
            bound = max(0.0 if math.isnan(ci) else ci, 0.0 if math.isnan(measured) else abs(measured))
            lo, hi = mean - bound, mean + bound
            where = "inside" if low <= mean <= high else "reaches" if lo <= high and hi >= low else "outside"
            parts = [f"t-CI95 over seeds ±{fmt(ci)}" if not math.isnan(ci) else "single seed: no spread over seeds"]
            if noise:
                parts.append(f"{noise}={fmt(measured)}")
            text = (f"{method} {metric}={fmt(mean)} ± {fmt(bound)} ({'; '.join(parts)}) vs claimed "
                    f"[{fmt(low)}, {fmt(high)}] (tolerance {fmt(tol)} included): {where} (seeds {','.join(map(str, seeds))}{reuse})")
            if bound > max_noise:
                too_noisy.append(f"{where_text(dict(zip(GROUP_KEY + ROW_KEY, key)))}: {text}")
                continue
            evidence.append(Evidence(where_text(dict(zip(GROUP_KEY + ROW_KEY, key))), text, low <= mean <= high, seeds,
                                     bound_stats(mean, bound, len(values)), (low, high)))
    note = f"left out, noise bound above max_noise {fmt(max_noise)}: " + " | ".join(too_noisy) if too_noisy else ""
    return condition_result(cond["check"], evidence, note)
