"""A verdict is what the interval says, corrected for the number of verdicts a report gives.

Every piece of evidence a claim check produces carries an estimate with its 95% interval (`stats`:
estimate, ci_low, ci_high, p, n) and the region where the estimate must lie for the claim to hold
(`holds_if`). From these alone, never from the point estimate:

* holds: the interval lies inside the region;
* fails: the interval lies wholly outside it;
* cannot tell: the interval reaches across a bound of the region (or there is no interval: one
  seed, or one measurement copied between seeds);
* not applicable: a guard left the evidence out (runs that did not learn, an lr pick on the edge
  of its grid, runs outside the claim's regime), with the reason.

For intervals from the t distribution over seeds the rule is a test: the evidence holds when the
p-value of "the estimate is outside the region" is below 0.05 (for a two-sided region, the larger
of the two one-sided p-values, doubled: the two one-sided tests of an equivalence claim), fails
when the p-value of "the estimate is inside it" is. Uncorrected, that is exactly reading the 95%
interval. A report decides many claims at once, so the p-values are Holm-corrected over every
piece of evidence in the report (`decide`), and each verdict prints its corrected p, the minimum
detectable effect of its design (80% power) and, for a "cannot tell", how many seeds would decide
it at the observed spread. Intervals that are not t intervals (a measurement's own noise bound)
are read at 95% and marked uncorrected.

A study that adds seeds until its claims decide (`peftbench reproduce --until-decided`) looks at
its data more than once. Each look then decides at the level its plan declared, alpha / L for at
most L looks fixed before the first (Bonferroni over the looks), so that the chance of any false
verdict over all looks stays below alpha; `decide(results, alpha)` reads every p at that level and
each reason names it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from scipy import stats as sps

HOLDS, FAILS, CANNOT_TELL, NOT_APPLICABLE = "holds", "fails", "cannot tell", "not applicable"
INVALID = "invalid claim"  # a claim file the checks cannot read: not a verdict about the data
ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 200  # beyond this the spread, not the seed count, is the problem: say so


@dataclass
class Decision:
    verdict: str
    reason: str
    p_raw: float = math.nan  # of the hypothesis that would decide it (holds or fails)
    p_holm: float = math.nan
    mde: float = math.nan  # in the estimate's units: the smallest distance from a bound 80% power finds
    seeds_needed: int | None = None  # for a "cannot tell": seeds that would decide at this spread
    corrected: bool = True
    alpha: float = ALPHA  # the level this verdict was read at (below 0.05 in a sequential study)
    uncorrected: str = ""  # what the interval alone says (holds or fails) when the correction undid it
    family: int = 0  # how many p-values the correction was over


def _t_parts(st: Mapping[str, float]) -> tuple[float, float] | None:
    """(standard error, degrees of freedom) of a t interval over n seeds; None when there is none."""
    n = int(st.get("n") or 0)
    lo, hi = st.get("ci_low", math.nan), st.get("ci_high", math.nan)
    if n < 2 or any(map(math.isnan, (lo, hi))) or st.get("interval") in ("bound", "bootstrap"):
        return None
    df = n - 1
    half = (hi - lo) / 2
    return half / sps.t.ppf(1 - ALPHA / 2, df), float(df)


def _two_sided(dist: float, se: float, df: float) -> float:
    """2 x P(T > dist / se): below 0.05 exactly when the 95% interval clears a bound `dist` away."""
    if se == 0:
        return 0.0 if dist > 0 else 1.0
    return min(1.0, 2 * float(sps.t.sf(dist / se, df)))


def decision_p(st: Mapping[str, float], region: tuple[float, float]) -> tuple[float, float]:
    """(p that the claim holds, p that it fails): each below 0.05 exactly when the 95% interval
    lies inside, or wholly outside, the region (a bootstrap's replicates give them directly)."""
    if st.get("interval") == "bootstrap":
        return float(st["p_holds"]), float(st["p_fails"])
    parts = _t_parts(st)
    if parts is None:
        return math.nan, math.nan
    se, df = parts
    m, (lo, hi) = st["estimate"], region
    inside = [_two_sided(m - lo, se, df)] if math.isfinite(lo) else []
    inside += [_two_sided(hi - m, se, df)] if math.isfinite(hi) else []
    p_holds = max(inside) if inside else 0.0
    outside = [_two_sided(lo - m, se, df)] if math.isfinite(lo) else []
    outside += [_two_sided(m - hi, se, df)] if math.isfinite(hi) else []
    p_fails = min(outside) if outside else 1.0
    return p_holds, p_fails


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment (NaN stays NaN and is not counted)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    m, out, running = len(idx), [math.nan] * len(ps), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def mde(st: Mapping[str, float], alpha: float = ALPHA) -> float:
    """Minimum detectable effect: how far from a bound the true value must be for this design
    (n seeds at this spread) to decide with 80% power at level `alpha`."""
    if st.get("interval") == "bootstrap":
        return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(POWER)) * st["se"])
    parts = _t_parts(st)
    if parts is None:
        return math.nan
    se, df = parts
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(POWER, df)) * se)


def seeds_to_decide(st: Mapping[str, float], region: tuple[float, float], alpha: float = ALPHA) -> int | None:
    """Seeds at which the interval around this estimate, at this spread over seeds and at the level
    the correction gave it (`alpha`), would clear the nearest bound: None when the estimate sits
    on it or no spread over seeds is known (a bootstrap's spread mixes seeds and items)."""
    n = int(st.get("n") or 0)
    parts = _t_parts(st)
    if parts is None:
        return None
    se, _ = parts
    sd = se * math.sqrt(n)
    bounds = [b for b in region if math.isfinite(b)]
    if not bounds or sd == 0:
        return None
    dist = min(abs(st["estimate"] - b) for b in bounds)
    if dist == 0:
        return None
    for k in range(n + 1, MAX_SEEDS + 1):
        if sps.t.ppf(1 - alpha / 2, k - 1) * sd / math.sqrt(k) < dist:
            return k
    return MAX_SEEDS + 1


def _g(x: float) -> str:
    return f"{x + 0.0:.4g}"  # + 0.0: no "-0"


def _interval(st: Mapping[str, float]) -> str:
    return f"[{_g(st['ci_low'])}, {_g(st['ci_high'])}]"


def _region(region: tuple[float, float]) -> str:
    lo, hi = region
    if not math.isfinite(lo):
        return f"below {_g(hi)}"
    if not math.isfinite(hi):
        return f"above {_g(lo)}"
    return f"[{_g(lo)}, {_g(hi)}]"


def raw_decision(evidence: Any, alpha: float = ALPHA) -> tuple[Decision, float]:
    """The evidence's verdict before correction, and the p-value the correction adjusts (NaN when
    none: no interval, or an interval that is not a t interval)."""
    if getattr(evidence, "not_applicable", ""):
        return Decision(NOT_APPLICABLE, evidence.not_applicable), math.nan
    st, region = evidence.stats, evidence.holds_if
    if not st or region is None:
        return Decision(CANNOT_TELL, "this check gives no interval, only a point estimate"), math.nan
    lo, hi = st.get("ci_low", math.nan), st.get("ci_high", math.nan)
    if (math.isnan(lo) or math.isnan(hi)) or (st.get("interval") != "bound" and int(st.get("n") or 0) < 2):
        n = int(st.get("n") or 0)
        why = "one observation" if n <= 1 else "no interval"
        return Decision(CANNOT_TELL, f"{why}: no interval to read (more seeds, or measurements not copied between them)"), math.nan
    parts = _t_parts(st)
    if parts is not None and parts[0] == 0:  # every seed gave the same value: nothing to test, read as it is
        inside = region[0] < lo and hi < region[1]
        outside = hi < region[0] or lo > region[1]
        verdict = HOLDS if inside else FAILS if outside else CANNOT_TELL
        return Decision(verdict, f"zero spread over {int(st['n'])} seeds: the figure does not vary with the seed; "
                                 f"value {_g(st['estimate'])} against {_region(region)}, read as it is (uncorrected)",
                        corrected=False), math.nan
    p_holds, p_fails = decision_p(st, region)
    if st.get("interval") == "bootstrap":
        p = min(p_holds, p_fails)
        return Decision(HOLDS if p_holds <= p_fails else FAILS, "", p_raw=p, mde=mde(st, alpha), alpha=alpha), p
    if math.isnan(p_holds):  # an interval of another kind (a measurement's noise bound): read as it is
        inside = region[0] <= lo and hi <= region[1]
        outside = hi < region[0] or lo > region[1]
        verdict = HOLDS if inside else FAILS if outside else CANNOT_TELL
        return Decision(verdict, "", corrected=False), math.nan
    p = min(p_holds, p_fails)
    return Decision(HOLDS if p_holds <= p_fails else FAILS, "", p_raw=p, mde=mde(st, alpha), alpha=alpha), p


def _reason(d: Decision, evidence: Any) -> str:
    st, region = evidence.stats, evidence.holds_if
    unit = f" {evidence.unit}" if getattr(evidence, "unit", "") else ""
    ci = f"95% CI {_interval(st)}{unit}"
    where = f"where the claim holds, {_region(region)}{unit}"
    level = "" if d.alpha == ALPHA else f" against a level of {d.alpha:.3g} (sequential design)"
    corr = f"Holm-corrected p={d.p_holm:.3g}{level}" if d.corrected else "a measurement's noise bound, uncorrected"
    design = f"n={int(st['n'])}" + (f" seeds x {int(st['items'])} test items, paired bootstrap" if st.get("interval") == "bootstrap" else "")
    power = f"; minimum detectable effect {d.mde:.3g}{unit} at {design}" if not math.isnan(d.mde) else ""
    if d.verdict == HOLDS:
        return f"{ci} inside {where} ({corr}{power})"
    if d.verdict == FAILS:
        return f"{ci} wholly outside {where} ({corr}{power})"
    more = ""
    if d.seeds_needed is not None:
        more = (f"; at this spread about {d.seeds_needed} seeds would decide" if d.seeds_needed <= MAX_SEEDS else
                f"; more than {MAX_SEEDS} seeds at this spread: reduce the spread (more test items, longer runs)")
    elif _t_parts(st) is not None or st.get("interval") == "bootstrap":
        more = "; the estimate sits on a bound: no number of seeds decides it"
    if d.uncorrected:  # the 95% interval alone decides; the correction for the report's tests does not
        side = "inside" if d.uncorrected == HOLDS else "wholly outside"
        why = [f"the report's {d.family} tests"] if d.family > 1 else []
        why += ["the sequential design's looks"] if d.alpha < ALPHA else []
        return (f"{ci} lies {side} {where}, but does not decide once corrected for {' and '.join(why) or 'multiplicity'} "
                f"({corr}{', not below 0.05' if d.alpha == ALPHA else ''}{power}{more})")
    return f"{ci} reaches across {where} ({corr}{power}{more})"


def decide(results: Iterable[Any], alpha: float = ALPHA) -> None:
    """Give every evidence, condition and claim of a report its verdict, Holm-correcting over all
    the report's evidence at level `alpha`. Idempotent: called on one claim, then on the whole report."""
    if not 0 < alpha <= ALPHA:
        raise ValueError(f"alpha must be in (0, {ALPHA}], got {alpha}")
    results = list(results)
    evidence = [e for r in results for c in r.conditions for e in c.evidence]
    raw = [raw_decision(e, alpha) for e in evidence]
    ps = [p for _, p in raw]
    adjusted = holm(ps)
    levels = holm_levels(ps, alpha)
    for e, (d, p_raw), p_adj, level in zip(evidence, raw, adjusted, levels):
        if not math.isnan(p_adj):
            d.p_holm = p_adj
            d.family = sum(1 for p in ps if not math.isnan(p))
            decided = p_adj < alpha
            if not decided:
                d.uncorrected = d.verdict if p_raw < ALPHA else ""  # its 95% interval clears the bound
                d.verdict = CANNOT_TELL
                d.seeds_needed = seeds_to_decide(e.stats, e.holds_if, level)
        if not d.reason:
            d.reason = _reason(d, e)
        e.decision = d
    for r in results:
        for c in r.conditions:
            if c.verdict != INVALID:
                c.verdict = combine([e.decision.verdict for e in c.evidence])
        if r.verdict != INVALID:
            r.verdict = combine_conditions([c.verdict for c in r.conditions])


def holm_levels(ps: list[float], alpha: float = ALPHA) -> list[float]:
    """The level each p-value faces in Holm's step-down order (alpha / (m - rank)); NaN: none."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out = [math.nan] * len(ps)
    for rank, i in enumerate(idx):
        out[i] = alpha / (len(idx) - rank)
    return out


def combine(verdicts: list[str]) -> str:
    """A condition over configurations: one that fails fails it; all that apply holding make it
    hold; nothing that applies makes it not applicable; anything else cannot tell."""
    applicable = [v for v in verdicts if v != NOT_APPLICABLE]
    if not applicable:
        return NOT_APPLICABLE
    if FAILS in applicable:
        return FAILS
    return HOLDS if all(v == HOLDS for v in applicable) else CANNOT_TELL


def combine_conditions(verdicts: list[str]) -> str:
    """A claim holds only when every one of its conditions holds: one that fails fails it, and one
    that cannot be judged here leaves the claim not applicable (never holding on the rest)."""
    if FAILS in verdicts:
        return FAILS
    if NOT_APPLICABLE in verdicts:
        return NOT_APPLICABLE
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else CANNOT_TELL
