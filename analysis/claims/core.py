"""What a claim check returns (evidence, condition and claim results), the helpers every check
shares, and the registry of checks (one function per kind, registered with @check)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from peftbench.analysis.load import GROUP_KEY, ROW_KEY
from peftbench.analysis.meta import sign
from peftbench.analysis.stats import choose_reference, one_per_source, paired_test, t_ci95
from peftbench.experiments.fields import BY_PATH

from peftbench.analysis.verdicts import CANNOT_TELL, FAILS, NOT_APPLICABLE, Decision
from peftbench.experiments.paths import CONF

NO_DATA = NOT_APPLICABLE  # no runs of the claim's kind here: not applicable, and the note says which study supplies them
INF = math.inf
DEFAULT_MATCH = ["capacity", "targets", "steps"]
CLAIMS_DIR = CONF / "claims"
DERIVED_METRICS = {"loss_auc"}  # computed from a run's curve, not a column of the records


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



def fmt(v: float) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:.4g}"


def where_text(cfg: Mapping[str, Any]) -> str:
    parts = [str(cfg.get(k)) for k in ("model", "task", "precision")]
    for k in ("capacity", "targets", "steps", "setting"):
        if k in cfg:
            parts.append(f"{k}={cfg[k]}")
    return " ".join(parts)


def configs_of(runs: pd.DataFrame, method: str) -> list[tuple[tuple, pd.DataFrame]]:
    keys = GROUP_KEY + ROW_KEY
    return [(k, g) for k, g in runs[runs["method"] == method].groupby(keys, sort=True, dropna=False)]


def best_by_validation(groups: list[tuple[tuple, pd.DataFrame]], ref_setting: str, lr: float = math.nan) -> tuple[tuple, pd.DataFrame] | None:
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
    for method in methods_of(cond):
        for key, mine in configs_of(runs, method):
            cfg = dict(zip(keys, key))
            cands = [(k, g) for k, g in configs_of(runs, cond["baseline"]) if all(same_value(dict(zip(keys, k))[m], cfg[m]) for m in match)]
            best = best_by_validation(cands, mine["ref_setting"].iloc[0], float(mine["lr"].iloc[0]))
            if best is not None:
                yield {"method": method, **{m: cfg[m] for m in match}, "setting": cfg["setting"]}, mine, best[1]


def same_value(a: Any, b: Any) -> bool:
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


def compare_sides(cond: Mapping[str, Any], runs: pd.DataFrame, holds: Callable[[float, float, float], bool],
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
        text = (f"{cfg['method']} {metric}={fmt(ma)} vs {cond['baseline']} {fmt(mb)} "
                f"(diff {fmt(ma - mb)}; needs {relation.format(tol=fmt(tol))}; seeds {','.join(map(str, seeds))}"
                f"{'' if test.seeds else ', unpaired'}; {stat}{reuse})")
        lo, hi = region(tol)
        evidence.append(Evidence(where_text(cfg), text, ok, seeds, diff_stats(a, b, test), (lo, hi) if s > 0 else (-hi, -lo)))
    return condition_result(cond["check"], evidence)


def diff_stats(a: Mapping[int, float], b: Mapping[int, float], test: Any) -> dict[str, float]:
    """Mean paired difference a - b with its 95% t interval, p and n (shared seeds)."""
    diffs = [a[s] - b[s] for s in test.seeds]
    half = t_ci95(diffs)
    mean = float(np.mean(diffs)) if diffs else math.nan
    return {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half, "p": test.p_value, "n": float(len(diffs))}


def condition_result(check: str, evidence: list[Evidence], note: str = "") -> ConditionResult:
    """The condition before the verdicts are read (analysis.verdicts.decide sets `verdict`)."""
    if not evidence:
        return ConditionResult(check, NO_DATA, [], note or "no matching runs")
    return ConditionResult(check, CANNOT_TELL, evidence, note)



def methods_of(cond: Mapping[str, Any]) -> list[str]:
    m = cond.get("methods", cond.get("method"))
    return [m] if isinstance(m, str) else list(m or [])


class ClaimProblem(Exception):
    """A claim asks its check for what it cannot do (an unknown column, relation or partner): the
    message says so in words, and the report shows it as the claim's reason."""


class MissingKey(ClaimProblem, KeyError):
    """A key the claim gives none of, or a column it names that the runs do not have."""

    def __str__(self) -> str:  # a KeyError would show its message quoted
        return str(self.args[0])


class BadChoice(ClaimProblem, ValueError):
    pass


class Condition(dict):
    """A claim's condition as its check reads it: a key the claim does not give is the claim's
    gap, said as such (never mistaken for a column the records lack)."""

    def __missing__(self, key: str):
        raise MissingKey(f"the claim gives no `{key}`, which check {self.get('check', '?')} needs")


# ---------------------------------------------------------------- the registry of checks

Check = Callable[[Mapping[str, Any], pd.DataFrame], ConditionResult]
CHECKS: dict[str, Check] = {}
NEEDS_BASELINE: set[str] = set()  # a condition of this check names a baseline (or than_metric)
NEEDS_RANGE: set[str] = set()  # ... or a [low, high] range


def check(name: str, *, needs_baseline: bool = False, needs_range: bool = False) -> Callable[[Check], Check]:
    """Register a kind of check under `name`: a claim's condition names it as `check: name`."""
    def register(fn: Check) -> Check:
        if name in CHECKS and CHECKS[name] is not fn:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = fn
        if needs_baseline:
            NEEDS_BASELINE.add(name)
        if needs_range:
            NEEDS_RANGE.add(name)
        return fn
    return register
