"""Kinds of claim check that compare methods at their own tuned learning rate, along a config
axis, or at matched target performance. Each is one function, registered in
analysis.claims.core.CHECKS with @check.

Every check picks learning rates on the validation split, never on test: a method's "tuned"
configuration is the lr whose mean validation score over seeds is best (per seed for
`best_lr_ratio`). Each piece of evidence carries `stats` (estimate, 95% CI, p, n seeds), which
`peftbench reproduce` prints beside the verdict.

Condition keys shared by these checks (besides check, method(s), baseline, tolerance, metric):
  where_method / where_baseline: equality filters on run columns for one side only, e.g.
      {targets: all_linear, capacity: r=2} vs {targets: attn_qv, capacity: r=9};
  setting_where: filters on config keys that are not table columns ({task.n_train: [250, 500]});
      `a|b` in a key or an axis is one quantity that tasks set by different keys;
  setting_where_method / setting_where_baseline: the same for one side only, e.g. one method under
      {objective.name: [grpo]} against itself under {objective.name: [sft, null]} (a supervised
      run's record carries no objective: null);
  across: config groups the two sides may differ in (their keys leave the setting the sides must
      share), e.g. [objective] for RL against supervised training;
  match: run columns both sides share (default [steps]); model, task, precision and the
      non-method setting (batch size, task size, device ...) always match.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

from peftbench.analysis import bootstrap
from peftbench.analysis.claims.core import (INF, BadChoice, ConditionResult, Evidence, MissingKey, check, condition_result,
                                           direction_of, fmt, methods_of, observed, same_value, where_text)
from peftbench.analysis.claims.spec import renamed_hint
from peftbench.analysis.load import GROUP_KEY, LINE_KEY, non_method, setting_value, short_hash
from peftbench.analysis.meta import sign
from peftbench.experiments.decide import beyond_edge
from peftbench.analysis.stats import one_per_source, t_ci95



# ---------------------------------------------------------------- shared helpers

def _filter_columns(runs: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    for k, v in (where or {}).items():
        if k not in runs.columns:  # a typo must not read as "not enough data": the claim is invalid
            raise MissingKey(f"where filter: {k!r} is not a run column{renamed_hint(k)}")
        runs = runs[runs[k].isin(v if isinstance(v, list) else [v])]
    return runs


def _filter_setting(runs: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    for k, v in (where or {}).items():
        wanted = v if isinstance(v, list) else [v]
        # a boolean Series, not a list: an empty list would select no columns of an empty frame
        runs = runs[pd.Series([setting_value(items, k) in wanted for items in runs["setting_items"]], index=runs.index, dtype=bool)]
    return runs


def side(runs: pd.DataFrame, cond: Mapping[str, Any], method: str, role: str) -> pd.DataFrame:
    """Runs of one side of a comparison: the method, its own filters, the shared setting filter."""
    sel = _filter_setting(runs[runs["method"] == method], cond.get("setting_where"))
    sel = _filter_setting(sel, cond.get(f"setting_where_{role}"))
    return _filter_columns(sel, cond.get(f"where_{role}"))


def _rest_setting(items: Mapping[str, str], drop: Iterable[str]) -> str:
    """The non-method setting without the given keys, or the keys of the given groups: what two
    sides must share."""
    gone = set(drop)
    return short_hash({k: v for k, v in non_method(items).items()
                       if k not in gone and not any(k.startswith(g + ".") for g in gone)})


def with_context(runs: pd.DataFrame, drop: Iterable[str] = ()) -> pd.DataFrame:
    out = runs.copy()
    out["context"] = [_rest_setting(items, drop) for items in runs["setting_items"]]
    return out


def tuned(line: pd.DataFrame, metric: str) -> tuple[float, dict[int, float], dict[int, float]]:
    """(lr, per-seed metric, per-seed validation score) of the line's best lr by mean validation
    score over the seeds every lr has (ties: the smaller lr): a pick that extra seeds at one lr
    (a deciding study's second phase) cannot move. The metric is then read on all its seeds."""
    s = sign(str(line["primary_direction"].iloc[0]))
    by_lr = sorted(line.groupby("chosen_lr" if line["lr"].isna().all() else "lr"), key=lambda kv: kv[0])
    shared = set.intersection(*(set(g["seed"]) for _, g in by_lr)) if by_lr else set()

    def score(g: pd.DataFrame) -> float:
        on = g[g["seed"].isin(shared)] if shared else g
        v = float(on["val_primary"].astype(float).mean())
        return -math.inf if math.isnan(v) else s * v
    best = max(by_lr, key=lambda kv: (score(kv[1]), -kv[0]))
    g = best[1]
    kept = one_per_source(g, [metric])  # copies of one cost measurement are one observation
    return float(best[0]), {int(k): float(v) for k, v in zip(kept["seed"], kept[metric])}, \
        {int(k): float(v) for k, v in zip(g["seed"], g["val_primary"])}


def grid_of(line: pd.DataFrame) -> list[float]:
    return sorted(float(x) for x in line["lr"].dropna().unique())


def edge_reason(line: pd.DataFrame, lr: float, who: str) -> str:
    """Why a validation pick at `lr` is no pick: it sits on an edge of the line's lr grid (3 or
    more lrs; with 2 every pick is an edge), so the optimum may lie beyond it. '' when bracketed,
    or when the line has one lr (a fixed lr is a setting, not a pick) or searched its lr."""
    grid = grid_of(line)
    if len(grid) < 2 or math.isnan(lr) or line["lr"].isna().all():
        return ""
    add = beyond_edge(grid, lr)
    if add is None:
        return ""
    low = add < lr
    return (f"lr grid does not bracket the optimum: {who}'s validation pick lr {fmt(lr)} is the {'lowest' if low else 'highest'} "
            f"of {[float(fmt(x)) for x in grid]}; add lr={add:.2g}")


def tie_note(line: pd.DataFrame, lr: float) -> str:
    """Where several lrs share the best mean validation score: which, and the rule that chose."""
    if line["lr"].isna().all():
        return ""
    s = sign(str(line["primary_direction"].iloc[0]))
    means = {float(k): s * float(g["val_primary"].astype(float).mean()) for k, g in line.groupby("lr")}
    best = means.get(lr, math.nan)
    tied = sorted(k for k, v in means.items() if abs(v - best) <= 1e-12)
    return f"validation tie between lrs {[float(fmt(x)) for x in tied]}: the declared rule takes the smaller" if len(tied) > 1 else ""


def lines(runs: pd.DataFrame, keys: list[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    return [(dict(zip(keys, k)), g) for k, g in runs.groupby(keys, sort=True, dropna=False)]


def _matching(cfg: Mapping[str, Any], cands: list[tuple[dict[str, Any], pd.DataFrame]], keys: list[str]) -> list[pd.DataFrame]:
    return [g for c, g in cands if all(same_value(c[k], cfg[k]) for k in keys)]


def paired_stats(a: Mapping[int, float], b: Mapping[int, float] | None = None, null: float = 0.0) -> dict[str, float]:
    """Mean of a - b (or of a) over shared seeds, 95% t interval, p of a t-test against `null`."""
    seeds = sorted(set(a) & set(b)) if b is not None else sorted(a)
    x = np.array([a[s] - (b[s] if b is not None else 0.0) for s in seeds], float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "n": 0.0}
    mean, half = float(x.mean()), t_ci95(list(x))
    p = math.nan
    if len(x) >= 2 and not np.allclose(x, x[0], rtol=0, atol=1e-12):
        p = float(sps.ttest_1samp(x, null).pvalue)
    return {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half, "p": p, "n": float(len(x))}


def stats_text(st: Mapping[str, float], scale: Callable[[float], float] = lambda v: v, unit: str = "") -> str:
    ci = "" if math.isnan(st["ci_low"]) else f", 95% CI [{fmt(scale(st['ci_low']))}, {fmt(scale(st['ci_high']))}]{unit}"
    p = "untested (1 seed or zero variance)" if math.isnan(st["p"]) else f"p={st['p']:.3g}"
    return f"{fmt(scale(st['estimate']))}{unit}{ci}; {p}; n={int(st['n'])} seeds"


def _seeds(st: Mapping[int, float]) -> tuple[int, ...]:
    return tuple(sorted(st))


# ---------------------------------------------------------------- best_lr_ratio

def _learned_seeds(line: pd.DataFrame, per_seed: Mapping[int, float]) -> dict[int, float]:
    """The seeds of a line that learned at one lr or more (analysis.guards), where the records
    say what learning means; all of them otherwise."""
    from peftbench.analysis.guards import learned

    if "val_floor" not in line.columns:
        return dict(per_seed)
    ok = {int(r["seed"]) for r in line.to_dict("records") if learned(r)[0]}
    return {s: v for s, v in per_seed.items() if s in ok}


def vertex(xs: np.ndarray, ys: np.ndarray, i: int) -> float:
    """The top of the parabola through the best point and its two neighbours (x in log10 lr),
    kept between the neighbours; the best point itself where the three are not concave."""
    (x0, x1, x2), (y0, y1, y2) = xs[i - 1 : i + 2], ys[i - 1 : i + 2]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if not a < 0:
        return float(x1)
    return float(min(max(-b / (2 * a), x0), x2))


def _best_lr_per_seed(line: pd.DataFrame) -> tuple[dict[int, float], list[float], dict[int, float]]:
    """Per seed, the validation optimum in lr: the vertex of a quadratic in log10 lr around the
    grid's best point (not the grid argmax, which can only take the grid's values); and, per seed
    whose best point is an edge of the grid, that edge lr (its optimum is not bracketed)."""
    s = sign(str(line["primary_direction"].iloc[0]))
    out, edges = {}, {}
    for seed, g in line.groupby("seed"):
        g = g.sort_values("lr")
        scores = (s * g["val_primary"].astype(float)).to_numpy()
        if np.isnan(scores).all():
            continue
        xs = np.log10(g["lr"].to_numpy(float))
        i = int(np.nanargmax(scores))
        if i in (0, len(xs) - 1) or np.isnan(scores[i - 1 : i + 2]).any():
            edges[int(seed)] = float(10 ** xs[i])
            out[int(seed)] = float(10 ** xs[i])
        else:
            out[int(seed)] = float(10 ** vertex(xs, scores, i))
    return out, sorted(line["lr"].dropna().unique().tolist()), edges


@check("best_lr_ratio", needs_baseline=True)
def best_lr_ratio(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """The method's best lr over the baseline's (each picked per seed on validation) is `expected`
    within `tolerance` decades: |log10(ratio) - log10(expected)| <= tolerance. Needs >= 3 lrs per
    side; a best lr at the edge of its grid makes the ratio a bound, and the evidence says so.
    p: t-test of the per-seed log10 ratios against log10(expected)."""
    expected, tol = float(cond.get("expected", 1.0)), float(cond["tolerance"])
    match = list(cond.get("match", ["steps"]))
    runs = with_context(runs[runs["protocol"] != "lr_search"])
    base_lines = lines(side(runs, cond, cond["baseline"], "baseline"), LINE_KEY + ["context"])
    evidence = []
    for method in methods_of(cond):
        for cfg, line in lines(side(runs, cond, method, "method"), LINE_KEY + ["context"]):
            for base in _matching(cfg, base_lines, GROUP_KEY + ["precision", "context"] + match):
                mine, grid_m, edge_m = _best_lr_per_seed(line)
                theirs, grid_b, edge_b = _best_lr_per_seed(base)
                # a seed whose every lr did not learn has no best lr: its argmax is noise
                mine, theirs = _learned_seeds(line, mine), _learned_seeds(base, theirs)
                if len(grid_m) < 3 or len(grid_b) < 3:
                    continue
                logs = {s: math.log10(mine[s] / theirs[s]) for s in set(mine) & set(theirs)}
                if not logs:
                    continue
                st = paired_stats(logs, None, math.log10(expected))
                edges = [x for name, ln, edge in ((method, line, edge_m), (cond["baseline"], base, edge_b))
                         for x in dict.fromkeys(edge_reason(ln, lr, f"{name} (seed {seed})") for seed, lr in sorted(edge.items())
                                                if seed in logs) if x]
                ok = abs(st["estimate"] - math.log10(expected)) <= tol
                text = (f"best lr {method} [{cfg['capacity']} {cfg['targets']}] / {cond['baseline']} [{base['capacity'].iloc[0]} "
                        f"{base['targets'].iloc[0]}] = {stats_text(st, lambda v: 10 ** v, 'x')} (per seed: "
                        + ", ".join(f"s{s}: {fmt(mine[s])}/{fmt(theirs[s])}" for s in sorted(logs))
                        + f"; each the vertex of a quadratic in log lr around the seed's best validation point); needs "
                        f"{fmt(expected)}x within {fmt(tol)} decades")
                region = (math.log10(expected) - tol, math.log10(expected) + tol)
                evidence.append(Evidence(where_text({**cfg, "setting": cfg["setting"]}), text, ok, _seeds(logs), st, region,
                                         not_applicable="; ".join(edges), unit="decades"))
    return condition_result(cond["check"], evidence, "" if evidence else "needs >= 3 learning rates of each side at one setting")


# ---------------------------------------------------------------- tuned_compare

# relation: (holds for a difference d at tolerance t, its text, where d must lie for it to hold)
RELATIONS: dict[str, tuple[Callable[[float, float, Mapping[str, Any]], bool], str, Callable[[float], tuple[float, float]]]] = {
    "greater": (lambda d, t, c: d > t, "diff > {tol}", lambda t: (t, INF)),
    "less": (lambda d, t, c: d < -t, "diff < -{tol}", lambda t: (-INF, -t)),
    "within": (lambda d, t, c: abs(d) <= t, "|diff| <= {tol}", lambda t: (-t, t)),
    "ge": (lambda d, t, c: d >= -t, "diff >= -{tol}", lambda t: (-t, INF)),
}


def _ratio_holds(r: float, tol: float, cond: Mapping[str, Any]) -> bool:
    lo, hi = (float(x) for x in cond["range"])
    return lo - tol <= r <= hi + tol


def _at_lr(line: pd.DataFrame, lr: float) -> pd.DataFrame:
    col = "chosen_lr" if line["lr"].isna().all() else "lr"
    return line[np.isclose(line[col].astype(float), lr)]


def item_bootstrap(mine: pd.DataFrame, theirs: pd.DataFrame, metric: str, region: tuple[float, float], ratio: bool,
                   s: float) -> dict[str, Any] | None:
    """The paired bootstrap over seeds and test items (analysis.bootstrap) of the primary metric,
    where both sides keep per-item outcomes of one test set whose mean is that metric (the record
    names it)."""
    if metric != "primary" or "items.test" not in mine.columns:
        return None
    primary = str(mine["primary_metric"].iloc[0])
    a, b = bootstrap.outcomes_of(mine, primary), bootstrap.outcomes_of(theirs, primary)
    if a is None or b is None:
        return None
    return bootstrap.compare(a, b, region, ratio=ratio, sign=s)


@check("tuned_compare", needs_baseline=True)
def tuned_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Method vs baseline, each at its own best lr (mean validation score over seeds), on the test
    metric, paired over seeds. `relation`: greater | less | within | ge (differences, oriented so
    positive is better) or ratio_in (method / baseline in `range` widened by tolerance)."""
    metric, tol, relation = cond.get("metric", "primary"), float(cond["tolerance"]), cond.get("relation", "ge")
    if relation != "ratio_in" and relation not in RELATIONS:
        raise BadChoice(f"relation {relation!r} is not one of {sorted(RELATIONS) + ['ratio_in']}")
    s = sign(direction_of(metric, runs))
    match = list(cond.get("match", ["steps"]))
    runs = with_context(runs)
    base_lines = lines(side(runs, cond, cond["baseline"], "baseline"), LINE_KEY + ["context"])
    evidence = []
    for method in methods_of(cond):
        for cfg, line in lines(side(runs, cond, method, "method"), LINE_KEY + ["context"]):
            for base in _matching(cfg, base_lines, GROUP_KEY + ["precision", "context"] + match):
                lr_m, a, _ = tuned(line, metric)
                lr_b, b, _ = tuned(base, metric)
                label = (f"{method} [{cfg['capacity']} {cfg['targets']}, lr {fmt(lr_m)}] vs {cond['baseline']} "
                         f"[{base['capacity'].iloc[0]} {base['targets'].iloc[0]}, lr {fmt(lr_b)}]")
                ties = "; ".join(x for x in (tie_note(line, lr_m), tie_note(base, lr_b)) if x)
                label += f" ({ties})" if ties else ""
                edges = "; ".join(x for x in (edge_reason(line, lr_m, method), edge_reason(base, lr_b, cond["baseline"])) if x)
                if relation == "ratio_in":
                    ratios = {k: (a[k] / b[k] if s > 0 else b[k] / a[k]) for k in set(a) & set(b) if a[k] and b[k]}
                    st = paired_stats(ratios)
                    ok = not math.isnan(st["estimate"]) and _ratio_holds(st["estimate"], tol, cond)
                    region = (float(cond["range"][0]) - tol, float(cond["range"][1]) + tol)
                    lo_pct, hi_pct = 100 * float(cond["range"][0]), 100 * float(cond["range"][1])
                    need = f">= {fmt(lo_pct)}%" if math.isinf(hi_pct) else f"[{fmt(lo_pct)}%, {fmt(hi_pct)}%]"
                    text = f"{label}: {metric} ratio {stats_text(st, lambda v: 100 * v, '%')}; needs {need} ± {fmt(100 * tol)} points"
                    seeds = _seeds(ratios)
                else:
                    st = paired_stats({k: s * v for k, v in a.items()}, {k: s * v for k, v in b.items()})
                    holds, rel, where = RELATIONS[relation]
                    ok = not math.isnan(st["estimate"]) and holds(st["estimate"], tol, cond)
                    region = where(tol)
                    text = f"{label}: {metric} diff (better = positive) {stats_text(st)}; needs {rel.format(tol=fmt(tol))}"
                    seeds = tuple(sorted(set(a) & set(b)))
                if not seeds:
                    continue
                boot = item_bootstrap(_at_lr(line, lr_m), _at_lr(base, lr_b), metric, region, relation == "ratio_in", s)
                if boot is not None:  # seeds and test items both resampled: the interval that decides
                    st = boot
                    text += (f"; paired bootstrap over {int(boot['n'])} seeds x {int(boot['items'])} test items: "
                             f"{fmt(boot['estimate'])}, 95% CI [{fmt(boot['ci_low'])}, {fmt(boot['ci_high'])}]")
                evidence.append(Evidence(where_text(cfg), text, ok, seeds, st, region, not_applicable=edges,
                                         unit="(ratio)" if relation == "ratio_in" else ""))
    return condition_result(cond["check"], evidence)


# ---------------------------------------------------------------- axis_slope_compare

def _axis_curves(runs: pd.DataFrame, axis: str, metric: str, free: list[str]) -> list[tuple[dict[float, dict[int, float]], str]]:
    """One curve per method line (capacity, targets, steps unless `free`): ({axis value: {seed: metric
    at the lr that is best on validation at that value}}, why a pick along it is on a grid edge)."""
    if runs.empty:
        return []
    runs = runs.assign(axis_value=list(runs[axis]) if axis in runs.columns else
                       [setting_value(i, axis) for i in runs["setting_items"]])
    keys = [k for k in ["capacity", "targets", "steps"] if k not in free] + ["protocol"]
    curves = []
    for _, line in runs.groupby(keys, dropna=False):
        curve: dict[float, dict[int, float]] = {}
        edges = []
        for value, g in line.groupby("axis_value"):
            lr, per_seed, _ = tuned(g, metric)
            curve[float(value)] = per_seed
            edge = edge_reason(g, lr, f"{g['method'].iloc[0]} at {axis}={fmt(float(value))}")
            edges += [edge] if edge else []
        if len(curve) >= 2:
            curves.append((curve, "; ".join(edges)))
    return curves


def _slopes(curves: dict[float, dict[int, float]]) -> dict[int, float]:
    """Per seed: least-squares slope of the metric per doubling of the axis."""
    seeds = set.intersection(*(set(v) for v in curves.values())) if curves else set()
    xs = np.log2(sorted(curves))
    return {s: float(np.polyfit(xs, [curves[x][s] for x in sorted(curves)], 1)[0]) for s in sorted(seeds)}


def _axis_label(runs: pd.DataFrame, axis: str) -> str:
    """The keys of an `a|b` axis that these runs set: what the evidence names."""
    if axis in runs.columns:
        return axis
    used = [k for k in axis.split("|") if any(setting_value(i, k) is not None for i in runs["setting_items"])]
    return "|".join(used) or axis


@check("axis_slope_compare", needs_baseline=True)
def axis_slope_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Slope of the (tuned) metric per doubling of a config `axis` (batch_size, task.n_train, ...),
    method minus baseline, paired over seeds: greater (relation: greater) or smaller (less) by
    more than the tolerance. Keys in `free` (e.g. steps, when the axis is batch size at a fixed
    number of examples) may vary along the axis."""
    axis, tol, relation = str(cond["axis"]), float(cond["tolerance"]), cond.get("relation", "greater")
    metric = cond.get("metric", "primary")
    free = list(cond.get("free", []))
    s = sign(direction_of(metric, runs))
    runs = with_context(runs, drop=axis.split("|"))
    evidence = []
    group = GROUP_KEY + ["precision", "context"]
    for cfg, g in lines(runs, group):
        for base, base_edge in _axis_curves(side(g, cond, cond["baseline"], "baseline"), axis, metric, free):
            for method in methods_of(cond):
                for mine, my_edge in _axis_curves(side(g, cond, method, "method"), axis, metric, free):
                    sm, sb = _slopes(mine), _slopes(base)
                    st = paired_stats({k: s * v for k, v in sm.items()}, {k: s * v for k, v in sb.items()})
                    if st["n"] == 0:
                        continue
                    holds, rel, where = RELATIONS[relation]
                    ok = holds(st["estimate"], tol, cond)
                    name = _axis_label(g, axis)
                    text = (f"slope of {metric} per doubling of {name} (better = positive), {method} minus {cond['baseline']}: "
                            f"{stats_text(st)} ({method} at {name}={sorted(mine)}, {cond['baseline']} at {sorted(base)}, each "
                            f"at its best lr by validation); needs {rel.format(tol=fmt(tol))}")
                    evidence.append(Evidence(where_text(cfg), text, ok, tuple(sorted(set(sm) & set(sb))), st, where(tol),
                                             not_applicable="; ".join(x for x in (my_edge, base_edge) if x)))
    return condition_result(cond["check"], evidence, "" if evidence else f"needs >= 2 values of {axis.replace('|', ' or ')} for both methods at one setting")


# ---------------------------------------------------------------- forgetting_at_matched

def _closest_pairs(perf: Mapping[int, float], forg: Mapping[int, float], pool: pd.DataFrame, metric: str, forgetting: str,
                   within: float) -> tuple[dict[int, float], dict[int, float], list[str]]:
    """Per seed: the method's tuned run against the baseline run of that seed whose validation
    score (`metric`: val_primary; never test) is closest, if within `within`."""
    mine: dict[int, float] = {}
    theirs: dict[int, float] = {}
    pairs = []
    for seed, p in perf.items():
        cands = pool[pool["seed"] == seed]
        if cands.empty or seed not in forg or math.isnan(forg[seed]):
            continue
        gap = (cands[metric].astype(float) - p).abs()
        if gap.min() > within:
            continue
        partner = cands.loc[gap.idxmin()]
        mine[seed], theirs[seed] = forg[seed], float(partner[forgetting])
        pairs.append(f"s{seed}: {fmt(p)}/{fmt(mine[seed])} vs {fmt(float(partner[metric]))}/{fmt(theirs[seed])} "
                     f"(lr {fmt(float(partner['chosen_lr']))}, {int(partner['steps'])} steps)")
    return mine, theirs, pairs


def _frontier_pairs(line: pd.DataFrame, pool: pd.DataFrame, metric: str, forgetting: str, within: float,
                    better: float, min_gain: float | None) -> tuple[dict[int, float], dict[int, float], list[str]]:
    """Per seed: each of the method's runs (every lr) against the least-forgetting baseline run of
    that seed that scores at least as well (less `within`); the seed's value is the mean over its
    runs that have such a partner. This is the learning-forgetting frontier Biderman et al. plot:
    a LoRA run forgets less only if no baseline run that matches it forgets less still."""
    if min_gain is not None:
        line = line[line["gain_over_base"].astype(float) >= min_gain]
    mine: dict[int, float] = {}
    theirs: dict[int, float] = {}
    pairs = []
    for seed, own in line.groupby("seed"):
        cands = pool[(pool["seed"] == seed) & pool[forgetting].astype(float).notna()]
        ms, ts = [], []
        for _, r in own.sort_values("chosen_lr").iterrows():
            p, f = float(r[metric]), float(r[forgetting])
            if math.isnan(f) or math.isnan(p):
                continue
            ok = cands[better * (cands[metric].astype(float) - p) >= -within]
            if ok.empty:  # said, not dropped quietly: it is the run most in the method's favour
                pairs.append(f"s{seed} lr {fmt(float(r['chosen_lr']))}: {fmt(p)}/{fmt(f)} vs none as good")
                continue
            partner = ok.loc[ok[forgetting].astype(float).idxmin()]
            ms.append(f)
            ts.append(float(partner[forgetting]))
            pairs.append(f"s{seed} lr {fmt(float(r['chosen_lr']))}: {fmt(p)}/{fmt(f)} vs {fmt(float(partner[metric]))}/"
                         f"{fmt(ts[-1])} (lr {fmt(float(partner['chosen_lr']))})")
        if ms:
            mine[int(seed)], theirs[int(seed)] = float(np.mean(ms)), float(np.mean(ts))
    return mine, theirs, pairs


@check("forgetting_at_matched", needs_baseline=True)
def forgetting_at_matched(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """At matched target performance the method forgets less (relation less) than the baseline.
    `partner: closest` (default): per seed, the method's tuned configuration gives (performance,
    forgetting); the baseline run of that seed (any lr or step budget in the same setting) whose
    test performance is closest, within `match_within`, is its partner. `partner: frontier`: every
    lr of the method against the least-forgetting baseline run that does at least as well (see
    _frontier_pairs). Holds when the mean forgetting difference is below -tolerance (less) or
    above +tolerance (greater). `min_gain`: only runs that gained at least this much over the
    base model's score (needs measure.metrics_before) take part."""
    metric, tol, within = cond.get("metric", "primary"), float(cond["tolerance"]), float(cond.get("match_within", 0.02))
    forgetting = cond.get("forgetting", "forgetting")
    relation = cond.get("relation", "less")
    matched_on = "val_primary"  # partners are picked on validation, never on test
    partner = cond.get("partner", "closest")
    if partner not in ("closest", "frontier"):
        raise BadChoice(f"partner must be closest or frontier, got {partner!r}")
    frontier = partner == "frontier"
    min_gain = float(cond["min_gain"]) if cond.get("min_gain") is not None else None
    runs = with_context(runs, drop=cond.get("across") or [])
    evidence = []
    base_runs = side(runs, cond, cond["baseline"], "baseline")
    for method in methods_of(cond):
        for cfg, line in lines(side(runs, cond, method, "method"), LINE_KEY + ["context"]):
            lr, _, perf = tuned(line, metric)  # perf: validation scores, on which partners are matched
            edge = edge_reason(line, lr, method)
            chosen = line[np.isclose(line["chosen_lr"].astype(float), lr)]
            forg = {int(k): float(v) for k, v in zip(chosen["seed"], chosen[forgetting])}
            pool = base_runs[(base_runs["context"] == cfg["context"]) & (base_runs["model"] == cfg["model"])
                             & (base_runs["task"] == cfg["task"]) & (base_runs["precision"] == cfg["precision"])]
            if min_gain is not None:  # matching two runs that learned nothing says nothing about forgetting
                pool = pool[pool["gain_over_base"].astype(float) >= min_gain]
                gains = dict(zip(chosen["seed"].astype(int), chosen["gain_over_base"].astype(float)))
                perf = {k: v for k, v in perf.items() if gains.get(k, math.nan) >= min_gain}
            if frontier:
                mine, theirs, pairs = _frontier_pairs(line, pool, matched_on, forgetting, within, sign(direction_of(metric, line)), min_gain)
            else:
                mine, theirs, pairs = _closest_pairs(perf, forg, pool, matched_on, forgetting, within)
            if not mine:
                continue
            st = paired_stats(mine, theirs)
            ok = st["estimate"] < -tol if relation == "less" else st["estimate"] > tol
            against = (f"every lr] minus the least-forgetting {cond['baseline']} run of the seed with validation {metric} at least "
                       f"as good (less {fmt(within)}), mean over the seed's runs that have one" if frontier else
                       f"lr {fmt(lr)}] minus {cond['baseline']} at matched validation {metric} (within {fmt(within)})")
            text = (f"{method} [{cfg['capacity']} {cfg['targets']}, {against}: {forgetting} diff {stats_text(st)}; "
                    f"per {'run' if frontier else 'seed'} validation {metric}/{forgetting}: {'; '.join(pairs)}; "
                    f"needs diff {'<' if relation == 'less' else '>'} {'-' if relation == 'less' else ''}{fmt(tol)}")
            region = (-INF, -tol) if relation == "less" else (tol, INF)
            evidence.append(Evidence(where_text(cfg), text, ok, _seeds(mine), st, region, not_applicable=edge if not frontier else ""))
    floor = f" among runs that gained >= {fmt(min_gain)} over the base model" if min_gain is not None else ""
    near = f"at least as good as (less {fmt(within)}) any" if frontier else f"within {fmt(within)} of the tuned"
    return condition_result(cond["check"], evidence, "" if evidence else f"no baseline run {near} run of the method's {metric}{floor}")


# ---------------------------------------------------------------- metric_in_range

@check("metric_in_range", needs_range=True)
def metric_in_range(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """The metric's mean over seeds lies in `range` widened by the tolerance, per configuration."""
    metric, tol = cond["metric"], float(cond["tolerance"])
    lo, hi = (float(x) for x in cond["range"])
    evidence = []
    for method in methods_of(cond):
        for cfg, g in lines(side(with_context(runs), cond, method, "method"), LINE_KEY + ["lr"]):
            g, reuse = observed(g, metric)
            per_seed = {int(k): float(v) for k, v in zip(g["seed"], g[metric]) if not math.isnan(float(v))}
            if not per_seed:
                continue
            st = paired_stats(per_seed)
            ok = lo - tol <= st["estimate"] <= hi + tol
            text = f"{method} {metric} = {stats_text(st)}; needs [{fmt(lo)}, {fmt(hi)}] ± {fmt(tol)}{reuse}"
            evidence.append(Evidence(where_text(cfg), text, ok, _seeds(per_seed), st, (lo - tol, hi + tol)))
    return condition_result(cond["check"], evidence)
