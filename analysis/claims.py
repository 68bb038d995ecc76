"""Check published claims, declared as data in conf/claims/*.yaml, against the results.

A claim is a YAML mapping (a file may hold one mapping or a list of them):

    id: dora_ge_lora
    statement: DoRA matches or beats LoRA at the same rank.
    source: Liu et al. 2024, DoRA
    where: {precision: bf16}        # optional equality filters on run columns
    conditions:                     # all must hold (or put one condition's keys at top level)
      - check: metric_ge_with_tolerance
        method: dora                # or methods: [a, b]
        baseline: lora
        metric: primary             # the task's primary metric, or any run column by its record name
        tolerance: 0.01             # required: stated before looking at results

Metric names are the report's column names, which are the record's own: `primary` (the task's
primary metric, whatever it is), `metrics.test.<name>`, `cost.weight_bytes`, ... (see
experiments.fields). The checks are the fixed vocabulary in CHECKS; a new claim is a new YAML
entry, not new code.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import yaml

from analysis import guards
from analysis.load import GROUP_KEY, ROW_KEY, contended_for, is_copied, is_timing, setting_labels
from analysis.meta import sign
from analysis.stats import choose_reference, one_per_source, paired_test, t_ci95
from experiments.fields import BY_PATH

from analysis.verdicts import CANNOT_TELL, FAILS, HOLDS, INVALID, NOT_APPLICABLE, Decision, decide

NO_DATA = NOT_APPLICABLE  # no runs of the claim's kind here: not applicable, and the note says which study supplies them
INF = math.inf
DEFAULT_MATCH = ["rank", "targets", "steps"]
CLAIMS_DIR = Path(__file__).resolve().parents[1] / "conf" / "claims"


@dataclass
class Evidence:
    """One configuration's comparison. `holds` is the point estimate's reading, shown but never
    deciding: the verdict is `decision` (analysis.verdicts), read from the interval."""

    where: str
    text: str
    holds: bool
    seeds: tuple[int, ...] = ()
    # estimate, ci_low, ci_high (95%), p, n: what `peftbench reproduce` prints per verdict
    stats: dict[str, float] | None = None
    # (low, high): where the estimate must lie for the claim to hold, in the estimate's units
    holds_if: tuple[float, float] | None = None
    not_applicable: str = ""  # why a guard leaves this evidence out of the verdict
    unit: str = ""  # of the estimate, where it is not the metric's own (decades, ratio)
    decision: Decision | None = None

    @property
    def verdict(self) -> str:
        return self.decision.verdict if self.decision else CANNOT_TELL


@dataclass
class ConditionResult:
    check: str
    verdict: str
    evidence: list[Evidence] = field(default_factory=list)
    note: str = ""
    spec: str = ""  # what is compared and the tolerance fixed before looking


@dataclass
class ClaimResult:
    id: str
    statement: str
    source: str
    verdict: str
    conditions: list[ConditionResult] = field(default_factory=list)
    file: str = ""
    # the claim's `if_fails`: why runs like ours may disagree with the source (model size, steps,
    # task), written beside the claim and shown only when the verdict is "fails"
    if_fails: str = ""
    regime: str = ""  # where the source made the claim, in words (`regime_text`)

    def disagreement(self) -> str:
        return f"Our runs disagree with {self.source.rstrip('.')}. Likely reason: {self.if_fails}" if self.verdict == FAILS and self.if_fails else ""


# ---------------------------------------------------------------- loading

def load_claims(paths: Iterable[Path]) -> list[tuple[str, Any]]:
    """(file, raw claim) for every claim in the given YAML files; unparseable files yield an
    entry whose claim is the error string, so that it is reported rather than raised."""
    out: list[tuple[str, Any]] = []
    for path in sorted(paths):
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            out.append((str(path), f"cannot read: {e}"))
            continue
        for claim in data if isinstance(data, list) else [data]:
            out.append((str(path), claim))
    return out


def claim_files(folder: Path = CLAIMS_DIR) -> list[Path]:
    return sorted(Path(folder).glob("*.yaml")) + sorted(Path(folder).glob("*.yml"))


def claim_problems(claim: Any) -> list[str]:
    if not isinstance(claim, dict):
        return [str(claim) if isinstance(claim, str) else "claim is not a mapping"]
    problems = [f"missing {k}" for k in ("id", "statement", "source") if not claim.get(k)]
    for i, cond in enumerate(conditions_of(claim)):
        if cond.get("check") not in CHECKS:
            problems.append(f"condition {i}: check {cond.get('check')!r} is not one of {sorted(CHECKS)}")
        if not isinstance(cond.get("tolerance"), (int, float)):
            problems.append(f"condition {i}: tolerance (a number) is required")
        if not _methods(cond):
            problems.append(f"condition {i}: method or methods is required")
        if cond.get("check") in NEEDS_BASELINE and not cond.get("baseline") and not cond.get("than_metric"):
            problems.append(f"condition {i}: {cond.get('check')} needs a baseline method")
        if cond.get("check") in NEEDS_RANGE and not _is_range(cond.get("range")):
            problems.append(f"condition {i}: {cond.get('check')} needs range: [low, high] (numbers, low <= high)")
    if not conditions_of(claim):
        problems.append("no conditions")
    return problems + guards.regime_problems(claim.get("regime"))


DERIVED_METRICS = {"loss_auc"}
CONF_DIR = CLAIMS_DIR.parent


def _dotted(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, Mapping):
        return set()
    keys = set()
    for k, v in data.items():
        name = f"{prefix}{k}"
        keys |= {name} | _dotted(v, f"{name}.")
    return keys


@functools.lru_cache(maxsize=4)
def config_keys(conf: Path = CONF_DIR) -> frozenset[str]:
    """Every dotted key a run's config can hold: the top-level config's and, under each config
    group of its defaults (task, model, method, ...), any of that group's files'. A claim's
    setting key outside them is a typo, which would otherwise read as "not enough data"."""
    top = yaml.safe_load((conf / "config.yaml").read_text()) or {}
    keys = _dotted({k: v for k, v in top.items() if k not in ("defaults", "hydra")})
    groups = [next(iter(d)) for d in top.get("defaults", []) if isinstance(d, Mapping)]
    for group in groups:
        for path in sorted((conf / group).glob("*.yaml")):
            keys |= {group} | _dotted(yaml.safe_load(path.read_text()), f"{group}.")
    return frozenset(keys)


def setting_key_problems(claim: Mapping[str, Any], known: Iterable[str] | None = None) -> list[str]:
    """Keys a claim's conditions name as settings (`axis`, `setting_where`, `free`; each side of
    an `a|b` key) that are not in `known`: by default the shipped configs' keys. evaluate_claim adds
    the run columns (`free: [rank]`) and every key the runs set, so a user's own config files
    and `+key=` overrides pass."""
    known = config_keys() if known is None else set(known)
    problems = []
    for i, cond in enumerate(conditions_of(claim)):
        free = cond.get("free") or []
        named = [("axis", cond.get("axis"))] + [("setting_where", k) for k in (cond.get("setting_where") or {})]
        named += [("free", k) for k in ([free] if isinstance(free, str) else free)]
        if i == 0 and isinstance(claim.get("regime"), Mapping):
            named += [("regime", k) for k in claim["regime"]]
        for role, key in named:
            for part in str(key).split("|") if key is not None else []:
                if part not in known:
                    problems.append(f"condition {i}: {role} key {part!r} is no config key and no run sets it; "
                                    f"fix its spelling")
    return problems


def _known_settings(ok: pd.DataFrame) -> set[str]:
    run_keys = {k for items in ok.get("setting_items", pd.Series(dtype=object)) if isinstance(items, Mapping) for k in items}
    return set(config_keys()) | set(ok.columns) | run_keys


def column_problems(claim: Mapping[str, Any], columns: Iterable[str]) -> list[str]:
    """Names in a claim that are no run column: a typo would otherwise crash the report, or (in
    `where`) silently filter nothing and let the claim run on every run."""
    known = set(columns) | DERIVED_METRICS
    problems = [f"where: unknown column {k!r}" for k in (claim.get("where") or {}) if k not in known]
    for i, cond in enumerate(conditions_of(claim)):
        names = {"metric": cond.get("metric", "primary" if cond.get("check") == "slope_compare" else None),
                 "than_metric": cond.get("than_metric"), "noise_metric": cond.get("noise_metric")}
        if cond.get("check") == "auc_compare":
            names.pop("metric")
        for role, name in names.items():
            if role == "metric" and name is None:
                problems.append(f"condition {i}: metric is required")
            elif name is not None and name not in known:
                problems.append(f"condition {i}: {role} {name!r} is not a run column")
        problems += [f"condition {i}: match key {k!r} is not a run column" for k in cond.get("match", []) if k not in known]
        problems += [f"condition {i}: where: unknown column {k!r}" for k in (cond.get("where") or {}) if k not in known]
    return problems


def _is_range(r: Any) -> bool:
    return (isinstance(r, list) and len(r) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
            and r[0] <= r[1])


def condition_spec(cond: Mapping[str, Any]) -> str:
    metric = "loss_auc" if cond.get("check") == "auc_compare" else cond.get("metric", "primary")

    def only(role: str) -> str:  # one side's own filters (analysis.claim_kinds)
        where = cond.get(f"where_{role}") or {}
        return f" [{', '.join(f'{k}={v}' for k, v in where.items())}]" if where else ""
    versus = f" vs {cond['baseline']}{only('baseline')}" if cond.get("baseline") else f" vs {cond['than_metric']}" if cond.get("than_metric") else ""
    if cond.get("range") is not None:
        versus += f" in {cond['range']}"
    return f"{', '.join(_methods(cond))}{only('method')}{versus}: {metric}, tolerance {cond.get('tolerance')}"


def conditions_of(claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    if isinstance(claim.get("conditions"), list):
        return [c for c in claim["conditions"] if isinstance(c, dict)]
    return [dict(claim)] if "check" in claim else []


def _methods(cond: Mapping[str, Any]) -> list[str]:
    m = cond.get("methods", cond.get("method"))
    return [m] if isinstance(m, str) else list(m or [])


# ---------------------------------------------------------------- helpers

def _fmt(v: float) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:.4g}"


def _where(cfg: Mapping[str, Any]) -> str:
    parts = [str(cfg.get(k)) for k in ("model", "task", "precision")]
    for k in ("rank", "targets", "steps", "setting"):
        if k in cfg:
            parts.append(f"{k}={cfg[k]}")
    return " ".join(parts)


def _configs(runs: pd.DataFrame, method: str) -> list[tuple[tuple, pd.DataFrame]]:
    keys = GROUP_KEY + ROW_KEY
    return [(k, g) for k, g in runs[runs["method"] == method].groupby(keys, sort=True, dropna=False)]


def _best_by_validation(groups: list[tuple[tuple, pd.DataFrame]], ref_setting: str, lr: float = math.nan) -> tuple[tuple, pd.DataFrame] | None:
    """Among several matching baseline configurations, the one the tables' reference rule
    (analysis.stats.choose_reference) picks."""
    if not groups:
        return None
    summary = pd.DataFrame([{"ref_setting": g["ref_setting"].iloc[0], "lr": float(g["lr"].iloc[0]),
                             "val_primary_mean": float(g["val_primary"].astype(float).mean()),
                             "primary_direction": g["primary_direction"].iloc[0]} for _, g in groups])
    ref = choose_reference(summary, {"ref_setting": ref_setting, "lr": lr})
    return groups[int(ref.name)] if ref is not None else None


def direction_of(metric: str, runs: pd.DataFrame) -> str:
    """Which way `metric` is better: the task's declaration for its metrics, the field schema
    for measured fields, lower for forgetting and loss, higher otherwise."""
    if metric == "primary" and not runs.empty:
        return str(runs["primary_direction"].iloc[0])
    if metric.startswith("metrics.") and not runs.empty:
        name = metric.split(".", 2)[-1]
        return next((d for n, d, _ in runs["task_metrics"].iloc[0] if n == name), "max")
    if metric in BY_PATH:
        return BY_PATH[metric].direction or "max"
    return "min" if metric in DERIVED_METRICS or metric.startswith("forgetting") else "max"


def _pairs(runs: pd.DataFrame, cond: Mapping[str, Any]) -> Iterable[tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """(config, method runs, baseline runs) for every configuration of every method in `cond`
    that has a baseline configuration matching on model, task, precision and `match` keys."""
    match = GROUP_KEY + ["precision"] + list(cond.get("match", DEFAULT_MATCH))
    keys = GROUP_KEY + ROW_KEY
    for method in _methods(cond):
        for key, mine in _configs(runs, method):
            cfg = dict(zip(keys, key))
            cands = [(k, g) for k, g in _configs(runs, cond["baseline"]) if all(_same(dict(zip(keys, k))[m], cfg[m]) for m in match)]
            best = _best_by_validation(cands, mine["ref_setting"].iloc[0], float(mine["lr"].iloc[0]))
            if best is not None:
                yield {"method": method, **{m: cfg[m] for m in match}, "setting": cfg["setting"]}, mine, best[1]


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN (an lr-searched row's lr) equals NaN."""
    return bool(a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _per_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    if metric == "loss_auc":
        return {int(s): loss_auc(c) for s, c in zip(runs["seed"], runs["loss_curve"])}
    runs = one_per_source(runs, [metric])
    return {int(s): float(v) for s, v in zip(runs["seed"], runs[metric])}


def observed(runs: pd.DataFrame, *columns: str | None) -> tuple[pd.DataFrame, str]:
    """The runs that are separate observations of `columns` (stats.one_per_source), and what an
    evidence text says about the others ('' when there are none)."""
    kept = one_per_source(runs, [c for c in columns if c])
    gone = len(runs) - len(kept)
    return kept, (f"; {gone} of {len(runs)} runs reuse another run's measurement: counted once" if gone else "")


def loss_auc(curve: list[float], n: int | None = None) -> float:
    """Area under the loss curve per step (mean loss over the first n steps): lower = faster."""
    y = np.asarray(curve[: n or len(curve)], float)
    if len(y) < 2:
        return math.nan
    return float(np.trapezoid(y) / (len(y) - 1)) if hasattr(np, "trapezoid") else float(np.trapz(y) / (len(y) - 1))


def _compare(cond: Mapping[str, Any], runs: pd.DataFrame, holds: Callable[[float, float, float], bool],
             relation: str, region: Callable[[float], tuple[float, float]], oriented: bool = False) -> ConditionResult:
    """Method vs baseline on `metric`, paired over shared seeds (means over all seeds when none
    are shared); `holds(mine, theirs, tolerance)` decides each configuration, `region(tolerance)`
    is where the difference mine - theirs must lie for it (read against the CI). `oriented`: the
    values are multiplied by the metric's sign first, so "not worse" reads the same for a
    lower-is-better metric."""
    metric, tol = cond["metric"], float(cond["tolerance"])
    s = sign(direction_of(metric, runs)) if oriented else 1.0
    evidence = []
    for cfg, mine, theirs in _pairs(runs, cond):
        a, b = _per_seed(mine, metric), _per_seed(theirs, metric)
        reuse = observed(pd.concat([mine, theirs]), metric)[1]
        test = paired_test(a, b)
        seeds = test.seeds or tuple(sorted(set(a) | set(b)))
        ma = float(np.nanmean([a[s] for s in test.seeds])) if test.seeds else float(np.nanmean(list(a.values())))
        mb = float(np.nanmean([b[s] for s in test.seeds])) if test.seeds else float(np.nanmean(list(b.values())))
        if math.isnan(ma) or math.isnan(mb):
            continue
        ok = holds(s * ma, s * mb, tol)
        stat = f"paired t-test p={test.p_value:.3g}" if test.tested else test.note or "single seed: differences untested"
        text = (f"{cfg['method']} {metric}={_fmt(ma)} vs {cond['baseline']} {_fmt(mb)} "
                f"(diff {_fmt(ma - mb)}; needs {relation.format(tol=_fmt(tol))}; seeds {','.join(map(str, seeds))}"
                f"{'' if test.seeds else ', unpaired'}; {stat}{reuse})")
        lo, hi = region(tol)
        evidence.append(Evidence(_where(cfg), text, ok, seeds, diff_stats(a, b, test), (lo, hi) if s > 0 else (-hi, -lo)))
    return _result(cond["check"], evidence)


def diff_stats(a: Mapping[int, float], b: Mapping[int, float], test: Any) -> dict[str, float]:
    """Mean paired difference a - b with its 95% t interval, p and n (shared seeds)."""
    diffs = [a[s] - b[s] for s in test.seeds]
    half = t_ci95(diffs)
    mean = float(np.mean(diffs)) if diffs else math.nan
    return {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half, "p": test.p_value, "n": float(len(diffs))}


def _result(check: str, evidence: list[Evidence], note: str = "") -> ConditionResult:
    """The condition before the verdicts are read (analysis.verdicts.decide sets `verdict`)."""
    if not evidence:
        return ConditionResult(check, NO_DATA, [], note or "no matching runs")
    return ConditionResult(check, CANNOT_TELL, evidence, note)


# ---------------------------------------------------------------- the vocabulary

def bound_stats(value: float, bound: float, n: int) -> dict[str, Any]:
    """A measurement with its own noise bound as the interval (value ± bound): read at face
    value, not a t interval over seeds (analysis.verdicts marks it uncorrected)."""
    return {"estimate": value, "ci_low": value - bound, "ci_high": value + bound, "p": math.nan, "n": float(n), "interval": "bound"}


def metric_within_noise(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """The metric ± its measurement noise (noise_metric, mean over the observations) lies within
    ± tolerance, for every configuration of the methods."""
    metric, noise, tol = cond["metric"], cond.get("noise_metric", "cost.latency_noise_frac"), float(cond["tolerance"])
    evidence = []
    for method in _methods(cond):
        for key, g in _configs(runs, method):
            g, reuse = observed(g, metric, noise)
            v, n = float(g[metric].mean()), float(g[noise].mean())
            if math.isnan(v) or math.isnan(n):
                continue
            seeds = tuple(sorted(map(int, g["seed"])))
            text = (f"{method} {metric}={_fmt(v)} ± {noise} {_fmt(n)}; needs within ±{_fmt(tol)} "
                    f"(seeds {','.join(map(str, seeds))}{reuse})")
            evidence.append(Evidence(_where(dict(zip(GROUP_KEY + ROW_KEY, key))), text, abs(v) <= n + tol, seeds,
                                     bound_stats(v, abs(n), len(g)), (-tol, tol)))
    return _result(cond["check"], evidence)


def _vs_column(cond: Mapping[str, Any], runs: pd.DataFrame, greater: bool) -> ConditionResult:
    """metric compared with another column of the same runs, e.g. latency overhead vs noise."""
    metric, other, tol = cond["metric"], cond["than_metric"], float(cond["tolerance"])
    evidence = []
    for method in _methods(cond):
        for key, g in _configs(runs, method):
            g, reuse = observed(g, metric, other)
            v, o = float(g[metric].mean()), float(g[other].mean())
            if math.isnan(v) or math.isnan(o):
                continue
            ok = v > o + tol if greater else v < o - tol
            seeds = tuple(sorted(map(int, g["seed"])))
            rel = ">" if greater else "<"
            text = (f"{method} {metric}={_fmt(v)} ± {other} {_fmt(o)}; needs {rel} {'' if greater else '-'}{_fmt(tol)} beyond "
                    f"that bound (seeds {','.join(map(str, seeds))}{reuse})")
            region = (tol, INF) if greater else (-INF, -tol)
            evidence.append(Evidence(_where(dict(zip(GROUP_KEY + ROW_KEY, key))), text, ok, seeds, bound_stats(v, abs(o), len(g)), region))
    return _result(cond["check"], evidence)


def metric_greater(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric > baseline's metric + tolerance, or > the same runs' `than_metric` + tolerance."""
    if cond.get("than_metric"):
        return _vs_column(cond, runs, greater=True)
    return _compare(cond, runs, lambda a, b, t: a > b + t, "diff > {tol}", lambda t: (t, INF))


def metric_less(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric < baseline's metric - tolerance (or the same runs' `than_metric` - tolerance)."""
    if cond.get("than_metric"):
        return _vs_column(cond, runs, greater=False)
    return _compare(cond, runs, lambda a, b, t: a < b - t, "diff < -{tol}", lambda t: (-INF, -t))


def metric_ge_with_tolerance(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """metric not worse than the baseline's by more than the tolerance, in the metric's own
    direction (>= baseline - tolerance where higher is better)."""
    return _compare(cond, runs, lambda a, b, t: a >= b - t, "not worse by more than {tol}", lambda t: (-t, INF), oriented=True)


def metric_within_tolerance(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """|metric - baseline's metric| <= tolerance."""
    return _compare(cond, runs, lambda a, b, t: abs(a - b) <= t, "|diff| <= {tol}", lambda t: (-t, t))


def auc_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Area under the training-loss curve (mean loss per step) lower than the baseline's by more
    than the tolerance: converges faster at the same step budget."""
    return _compare({**cond, "metric": "loss_auc"}, runs, lambda a, b, t: a < b - t, "diff < -{tol}", lambda t: (-INF, -t))


def _slope(g: pd.DataFrame, metric: str) -> tuple[dict[int, float], list[str]]:
    """Per seed, the least-squares slope of the metric per doubling of rank over the seed's ranks
    (seeds with fewer than 2 ranks have none), and which seeds each rank has."""
    g = one_per_source(g, [metric])  # a line is one lr: ranks never share a measurement
    if g["rank_value"].nunique() < 2:
        return {}, []
    per_seed = {}
    for seed, s in g.groupby("seed"):
        s = s.dropna(subset=[metric])
        if s["rank_value"].nunique() >= 2:
            per_seed[int(seed)] = float(np.polyfit(np.log2(s["rank_value"].to_numpy(float)), s[metric].to_numpy(float), 1)[0])
    seeds = [f"r{int(r)}: seeds {','.join(map(str, sorted(g[g['rank_value'] == r]['seed'])))}" for r in sorted(g["rank_value"].unique())]
    return per_seed, seeds


def _lr_lines(g: pd.DataFrame) -> list[pd.DataFrame]:
    """One rank line per lr (and lr protocol) of a method: a slope never mixes learning rates."""
    return [line for _, line in g.groupby(["lr", "protocol"], sort=True, dropna=False)]


def slope_compare(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """Slope of metric vs log2(rank) over ranks in [min_rank, max_rank]: method's slope greater
    than the baseline's by more than the tolerance (keeps improving where the baseline stalls).
    Each method is fitted along its own lr (methods' default lrs differ); where the baseline has
    several lr lines, the same lr is preferred, else the best by validation."""
    metric, tol = cond.get("metric", "primary"), float(cond["tolerance"])
    lo, hi = float(cond.get("min_rank", 0)), float(cond.get("max_rank", math.inf))
    sel = runs[runs["rank_value"].between(lo, hi)]
    # ref_setting: never fit one slope through runs of different batch size, task size or device
    match = GROUP_KEY + ["precision", "ref_setting"] + list(cond.get("match", ["targets", "steps"]))
    evidence = []
    for key, g in sel.groupby(match, sort=True, dropna=False):
        cfg = dict(zip(match, key))
        base_lines = [ln for ln in _lr_lines(g[g["method"] == cond["baseline"]]) if ln["rank_value"].nunique() >= 2]
        for method in _methods(cond):
            for line in _lr_lines(g[g["method"] == method]):
                per_m, seeds_m = _slope(line, metric)
                pick = _best_by_validation([((), b) for b in base_lines], cfg["ref_setting"], float(line["lr"].iloc[0]))
                if pick is None or not per_m:
                    continue
                per_b, seeds_b = _slope(pick[1], metric)
                test = paired_test(per_m, per_b)
                if not test.seeds:
                    continue
                st = diff_stats(per_m, per_b, test)
                sm = float(np.mean([per_m[k] for k in test.seeds]))
                sb = float(np.mean([per_b[k] for k in test.seeds]))
                text = (f"slope of {metric} per doubling of rank (r in [{_fmt(lo)}, {_fmt(hi)}]), per seed: {method} {_fmt(sm)} "
                        f"(lr {_fmt(float(line['lr'].iloc[0]))}; {'; '.join(seeds_m)}) vs {cond['baseline']} {_fmt(sb)} "
                        f"(lr {_fmt(float(pick[1]['lr'].iloc[0]))}; {'; '.join(seeds_b)}); needs diff > {_fmt(tol)}")
                evidence.append(Evidence(_where({"method": method, **cfg}), text, sm - sb > tol, test.seeds, st, (tol, INF)))
    return _result(cond["check"], evidence, "" if evidence else f"needs >= 2 ranks in [{_fmt(lo)}, {_fmt(hi)}] for both methods at one setting")


def range_within_noise(cond: Mapping[str, Any], runs: pd.DataFrame) -> ConditionResult:
    """A figure the literature states as a range (e.g. "adds 15-20% latency"): the mean over seeds
    of every configuration of the methods, with its noise bound b, against [low, high] widened by
    the tolerance. b is the larger of the 95% t-interval over seeds and the runs' own measurement
    noise (`noise_metric`, mean over seeds, in the metric's unit). Holds when mean ± b lies inside
    the range, fails when it lies wholly outside, cannot tell when it reaches across an end. A
    configuration whose b exceeds `max_noise` (default: the larger |end| of the range, i.e. noise
    as large as the claimed effect itself) cannot judge the claim and is left out of the verdict."""
    from analysis.stats import t_ci95

    metric, noise, tol = cond["metric"], cond.get("noise_metric"), float(cond["tolerance"])
    low, high = float(cond["range"][0]) - tol, float(cond["range"][1]) + tol
    max_noise = float(cond.get("max_noise", max(abs(float(x)) for x in cond["range"])))
    evidence, too_noisy = [], []
    for method in _methods(cond):
        for key, g in _configs(runs, method):
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
            parts = [f"t-CI95 over seeds ±{_fmt(ci)}" if not math.isnan(ci) else "single seed: no spread over seeds"]
            if noise:
                parts.append(f"{noise}={_fmt(measured)}")
            text = (f"{method} {metric}={_fmt(mean)} ± {_fmt(bound)} ({'; '.join(parts)}) vs claimed "
                    f"[{_fmt(low)}, {_fmt(high)}] (tolerance {_fmt(tol)} included): {where} (seeds {','.join(map(str, seeds))}{reuse})")
            if bound > max_noise:
                too_noisy.append(f"{_where(dict(zip(GROUP_KEY + ROW_KEY, key)))}: {text}")
                continue
            evidence.append(Evidence(_where(dict(zip(GROUP_KEY + ROW_KEY, key))), text, low <= mean <= high, seeds,
                                     bound_stats(mean, bound, len(values)), (low, high)))
    note = f"left out, noise bound above max_noise {_fmt(max_noise)}: " + " | ".join(too_noisy) if too_noisy else ""
    return _result(cond["check"], evidence, note)


CHECKS: dict[str, Callable[[Mapping[str, Any], pd.DataFrame], ConditionResult]] = {
    "range_within_noise": range_within_noise,
    "metric_within_noise": metric_within_noise,
    "metric_greater": metric_greater,
    "metric_less": metric_less,
    "metric_ge_with_tolerance": metric_ge_with_tolerance,
    "metric_within_tolerance": metric_within_tolerance,
    "slope_compare": slope_compare,
    "auc_compare": auc_compare,
}
NEEDS_RANGE = {"range_within_noise", "metric_in_range"}
NEEDS_BASELINE = {"metric_ge_with_tolerance", "metric_within_tolerance", "slope_compare", "auc_compare",
                  "metric_greater", "metric_less"}


# ---------------------------------------------------------------- evaluation

def _filter(runs: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    for k, v in (where or {}).items():
        if k in runs.columns:
            runs = runs[runs[k].isin(v if isinstance(v, list) else [v])]
    return runs


METRIC_ROLES = ("metric", "than_metric", "noise_metric")


def without_contended(runs: pd.DataFrame, cond: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """A condition on timings (latency, throughput, MFU, ...) judged without the runs whose timings
    other work on the cores distorted (measurement.contended), and a note naming those left out
    ('' when none were)."""
    timings = [cond[r] for r in METRIC_ROLES if isinstance(cond.get(r), str) and is_timing(cond[r])]
    if not timings or runs.empty:
        return runs, ""
    recs = runs.to_dict("records")
    involved = set(_methods(cond)) | {cond.get("baseline")}  # other methods' runs are no part of it
    bad = [r["method"] in involved and any(contended_for(r, c) for c in timings) for r in recs]
    if not any(bad):
        return runs, ""
    why = sorted({f"{r['run_id']} ({_reason(r, timings)})" for r, b in zip(recs, bad) if b})
    note = f"left out {sum(bad)} run(s) whose timings were contended (other work competed for the cores): {'; '.join(why)}"
    return runs[[not b for b in bad]], note


def _reason(row: Mapping[str, Any], timings: list[str]) -> str:
    """Why a run's timings in these columns were contended, as its record (or its source's) says."""
    copied = any(contended_for(row, c) and is_copied(c) for c in timings)
    reason = row.get("costs_contended_reason") if copied else row.get("measurement.contended_reason")
    return str(reason or "contended")


def resolve_names(claim: Any, columns: Iterable[str]) -> Any:
    """A task metric may be named bare (`accuracy`, `exact_match`): it means the test split's,
    `metrics.test.<name>`. Every other name is a run column as it is."""
    if not isinstance(claim, dict):
        return claim
    known = set(columns)

    def fix(cond: dict[str, Any]) -> dict[str, Any]:
        out = dict(cond)
        for role in METRIC_ROLES:
            name = out.get(role)
            if isinstance(name, str) and name not in known and f"metrics.test.{name}" in known:
                out[role] = f"metrics.test.{name}"
        return out

    claim = fix(claim)
    if isinstance(claim.get("conditions"), list):
        claim["conditions"] = [fix(c) if isinstance(c, dict) else c for c in claim["conditions"]]
    return claim


def evaluate_claim(claim: Any, ok: pd.DataFrame, file: str = "") -> ClaimResult:
    claim = resolve_names(claim, ok.columns)
    problems = claim_problems(claim)
    if not problems:
        problems = column_problems(claim, ok.columns) + setting_key_problems(claim, _known_settings(ok))
    if problems:
        cid = claim.get("id", "?") if isinstance(claim, dict) else "?"
        return ClaimResult(str(cid), "", "", INVALID, [ConditionResult("-", INVALID, [], "; ".join(problems))], file)
    runs, outside = guards.in_regime(_filter(ok, claim.get("where")), claim.get("regime"))
    results = []
    for cond in conditions_of(claim):
        cond_runs, contended = without_contended(_filter(runs, cond.get("where")), cond)
        cond_runs, not_learned = guards.learned_only(cond_runs, cond)
        try:
            result = CHECKS[cond["check"]](cond, cond_runs) if not cond_runs.empty else ConditionResult(cond["check"], NO_DATA, [], "no runs")
        except (KeyError, ValueError, TypeError) as e:  # a claim the data cannot answer is reported, never a crashed report
            result = ConditionResult(cond["check"], INVALID, [], f"{type(e).__name__}: {e}")
        result.note = "; ".join(x for x in (result.note, outside, not_learned, contended) if x)
        result.spec = condition_spec(cond)
        results.append(result)
    verdict = INVALID if any(r.verdict == INVALID for r in results) else CANNOT_TELL
    out = ClaimResult(str(claim["id"]), _one_line(claim["statement"]), _one_line(claim["source"]), verdict, results,
                      _shown_path(file), _one_line(claim.get("if_fails")), regime=_one_line(claim.get("regime_text")))
    decide([out])  # alone; evaluate_all decides again over the whole report (Holm)
    return out


def _one_line(text: Any) -> str:
    """A claim's prose as one line: YAML's folded blocks end in a newline, which a table cell or a
    sentence around it must not carry."""
    return " ".join(str(text or "").split())


def _shown_path(file: str) -> str:
    """A claim file as the report shows it: relative to the repository when inside it, so that a
    committed report names no machine's folders."""
    try:
        return Path(file).resolve().relative_to(CLAIMS_DIR.parents[1]).as_posix()
    except ValueError:
        return file


def evaluate_all(ok: pd.DataFrame, folder: Path = CLAIMS_DIR, ids: Iterable[str] | None = None) -> list[ClaimResult]:
    """Every claim in the folder (or those with the given ids); a claim without data names the
    study that would supply it."""
    wanted = None if ids is None else set(ids)
    claims = [(f, c) for f, c in load_claims(claim_files(folder)) if wanted is None or (isinstance(c, dict) and c.get("id") in wanted)]
    results = [evaluate_claim(c, ok, f) for f, c in claims] if not ok.empty or wanted is not None else []
    decide(results)  # one family: the report's verdicts are corrected together
    labels = setting_labels(ok) if not ok.empty else {}
    for r in results:
        add_data_hint(r)
        for e in (e for c in r.conditions for e in c.evidence):
            e.where = name_settings(e.where, labels)
    return results


def name_settings(text: str, labels: Mapping[str, str]) -> str:
    """`setting=5fc21d` -> `setting=5fc21d (task.n_train=250)`: the keys that set it apart."""
    return re.sub(r"setting=([0-9a-f]{6})\b", lambda m: m.group(0) + (f" ({labels[m.group(1)]})" if labels.get(m.group(1)) else ""), text)


def add_data_hint(result: ClaimResult) -> None:
    """'not enough data' names the studies (conf/study/*.yaml) whose sweeps supply the claim."""
    from analysis.studies import studies_for_claim

    names = studies_for_claim(result.id)
    hint = f"data: peftbench reproduce {' or '.join(names)}" if names else "no study in conf/study/ lists this claim"
    for c in result.conditions:
        if c.verdict == NO_DATA:
            c.note = f"{c.note}; {hint}" if c.note else hint


def stats_suffix(evidence: Evidence) -> str:
    """Estimate, 95% CI, p and n where the evidence text does not already say them."""
    st = evidence.stats
    if not st or "95% CI" in evidence.text:
        return ""
    ci = "–" if math.isnan(st["ci_low"]) else f"[{st['ci_low']:.4g}, {st['ci_high']:.4g}]"
    p = "untested" if math.isnan(st["p"]) else f"{st['p']:.3g}"
    return f" [diff {st['estimate']:.4g}, 95% CI {ci}, p {p}, n={int(st['n'])} seeds]"


def point_text(evidence: Evidence) -> str:
    """What the point estimate alone would say: shown, never deciding."""
    return f"point estimate {'inside' if evidence.holds else 'outside'} the claim's region"


def evidence_line(e: Evidence) -> str:
    """One configuration: where, the data, and its verdict with the reason."""
    d = e.decision
    why = d.reason if d else ""
    return f"{e.where}: {e.text}{stats_suffix(e)} → **{e.verdict}**: {why}" + ("" if e.not_applicable else f" ({point_text(e)})")


def condition_line(c: ConditionResult) -> str:
    return f"`{c.check}`" + (f" ({c.spec})" if c.spec else "") + f": **{c.verdict}**" + (f" ({c.note})" if c.note else "")


def claim_reason(r: ClaimResult) -> str:
    """The claim's verdict in words, in one line: the evidence that decided it."""
    if r.verdict == INVALID:
        return "; ".join(c.note for c in r.conditions if c.note)
    evidence = [e for c in r.conditions for e in c.evidence]
    if r.verdict == HOLDS:
        held = [e for e in evidence if e.verdict == HOLDS]
        worst = max((e.decision.p_holm for e in held if e.decision and not math.isnan(e.decision.p_holm)), default=math.nan)
        p = f", largest Holm-corrected p {worst:.3g}" if not math.isnan(worst) else ""
        return f"every interval that applies lies where the claim holds ({len(held)} configuration(s){p})"
    for want in (FAILS, CANNOT_TELL):
        hit = next((e for e in evidence if e.verdict == want), None)
        if hit is not None:
            return f"{hit.where}: {hit.decision.reason}"
    notes = [c.note for c in r.conditions if c.note] + [e.not_applicable for e in evidence if e.not_applicable]
    return "; ".join(dict.fromkeys(notes)) or "no runs"


VERDICT_RULE = ("Verdicts are read from the 95% intervals, never from the point estimate: **holds** (every interval lies where "
                "the claim holds), **fails** (an interval lies wholly outside it), **cannot tell** (an interval reaches across a bound, "
                "or there is none: one seed, or one measurement copied between seeds) or **not applicable** (no runs inside the "
                "claim's regime, runs that did not learn, an lr pick on the edge of its grid, or no runs at all; the reason is "
                "given). p-values are Holm-corrected over every configuration this report judges; each verdict gives its minimum "
                "detectable effect (80% power) and, for a cannot tell, the seeds that would decide it at the observed spread. "
                "Tolerances are the claims' own, fixed in conf/claims/*.yaml before looking.")


def family_size(results: list[ClaimResult]) -> int:
    return sum(1 for r in results for c in r.conditions for e in c.evidence
               if e.decision is not None and not math.isnan(e.decision.p_raw))


def to_markdown(results: list[ClaimResult]) -> str:
    lines = ["# Claims check", "",
             "Each claim from the literature, declared in conf/claims/*.yaml, checked against these runs.",
             f"{VERDICT_RULE} Corrected over {family_size(results)} tested configurations.", "",
             "| Claim | Source | Verdict | Why |", "|---|---|---|---|"]
    lines += [f"| {r.id}: {r.statement} | {r.source} | **{r.verdict}** | {_cell(claim_reason(r))} |" for r in results]
    for r in results:
        lines += ["", f"## {r.id}: {r.verdict}", "", f"*{r.statement}* ({r.source}; {r.file})", ""]
        if r.regime:
            lines += [f"Regime of the claim: {r.regime}", ""]
        if r.disagreement():
            lines += [f"**{r.disagreement()}**", ""]
        for c in r.conditions:
            lines.append(f"- {condition_line(c)}")
            lines += [f"  - {evidence_line(e)}" for e in c.evidence]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# New kinds of check live in their own module, which registers them in CHECKS on import.
from analysis import claim_kinds  # noqa: E402,F401
