"""Whether a study's runs had converged at their step budget: its convergence check.

A study that declares `convergence: {steps_factor: F, tolerance: T}` runs each line's validation
pick again at its seeds, trained F times as long (experiments/decide.py); those records sit in a
`convergence/` folder beside the study's, with the criterion they test, and are never the claims'
evidence. Here each longer run is paired with the run of the same configuration and seed at the
study's budget, and the gain on the task's validation primary metric (better-is-positive) is read
from its 95% t interval over seeds:

* converged: the interval lies at or below T (training longer gains at most T);
* still learning: the interval lies wholly above T;
* cannot tell: it reaches across T, or there is one seed.

It is a check of the design, stated beside the verdicts, so it is read at 95% on its own and is
not part of the claims' Holm family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from peftbench.analysis.load import GROUP_KEY, ROW_KEY, load_results, machine_label, skipped_below
from peftbench.analysis.meta import sign
from peftbench.analysis.stats import t_ci95
from peftbench.experiments import decide

CONVERGED, STILL_LEARNING, CANNOT_TELL = "converged", "still learning", "cannot tell"
PAIR_KEY = GROUP_KEY + [k for k in ROW_KEY if k != "steps"] + ["seed"]  # a run less its budget


@dataclass
class Line:
    """One configuration at its pick: its validation score at the study's budget and at F times it."""

    label: str
    steps: int
    longer_steps: int
    metric: str
    seeds: tuple[int, ...]
    at_budget: float  # mean over the paired seeds
    longer: float
    gain: float  # longer - at budget, better-is-positive
    ci: tuple[float, float]
    verdict: str
    reason: str
    tolerance: float


@dataclass
class Check:
    """A report's convergence check: the criterion and one line a configuration it ran."""

    steps_factor: int | None  # None: several studies' checks with different criteria (`merged`)
    tolerance: float | None
    lines: list[Line] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)  # longer runs with no run at the budget to pair
    missing: list[str] = field(default_factory=list)  # longer runs that failed or left no validation score

    def verdict(self) -> str:
        """The study's runs as a whole: converged only when every checked line is."""
        verdicts = {ln.verdict for ln in self.lines}
        if not verdicts:
            return CANNOT_TELL
        if verdicts == {CONVERGED}:
            return CANNOT_TELL if self.missing or self.unpaired else CONVERGED
        return STILL_LEARNING if STILL_LEARNING in verdicts else CANNOT_TELL

    def summary(self) -> str:
        counts = {v: sum(ln.verdict == v for ln in self.lines) for v in (CONVERGED, STILL_LEARNING, CANNOT_TELL)}
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "none checked"
        gaining = sum(ln.verdict == CANNOT_TELL and ln.ci[0] > 0 for ln in self.lines)
        parts += f", {gaining} of them still gaining, their interval above 0" if gaining else ""
        parts += f"; {len(self.missing)} longer run(s) failed or left no score" if self.missing else ""
        parts += f"; {len(self.unpaired)} longer run(s) unpaired" if self.unpaired else ""
        rule = (f"{self.steps_factor}x the steps gains at most {self.tolerance:g} on validation" if self.tolerance is not None
                else "each line against its own study's criterion")
        return f"{self.verdict()}: of {len(self.lines)} line(s) at their validation pick, {parts} (converged: {rule})"


def _label(row: pd.Series) -> str:
    parts = [str(row["method"])]
    parts += [str(row[k]) for k in ("capacity", "targets") if str(row.get(k, "-")) not in ("-", "", "nan")]
    lr = row.get("lr")
    parts += [f"lr {float(lr):.0e}"] if isinstance(lr, (int, float)) and not math.isnan(lr) else []
    return f"{row['model']}/{row['task']} " + " ".join(parts) + f" [{row['setting']}]"


def _read(gains: np.ndarray, tolerance: float, bound: float = math.inf) -> tuple[tuple[float, float], str, str]:
    """The gain's 95% t interval (kept within ±`bound`, the widest a gain on the metric can be)
    read against the tolerance."""
    n = len(gains)
    mean = float(gains.mean())
    if n < 2:
        return (math.nan, math.nan), CANNOT_TELL, "one seed: no interval to read"
    if np.allclose(gains, gains[0], rtol=0.0, atol=1e-12):
        verdict = CONVERGED if mean <= tolerance else STILL_LEARNING
        return (mean, mean), verdict, f"the same gain {mean:+.4g} on all {n} seeds, read as it is"
    half = t_ci95(gains)
    lo, hi = max(mean - half, -bound), min(mean + half, bound)
    ci = f"95% CI [{lo:+.4g}, {hi:+.4g}] over {n} seeds"
    if hi <= tolerance:
        return (lo, hi), CONVERGED, f"{ci} at or below the tolerance {tolerance:g}"
    if lo > tolerance:
        return (lo, hi), STILL_LEARNING, f"{ci} wholly above the tolerance {tolerance:g}: training longer still pays"
    if lo > 0:
        return (lo, hi), CANNOT_TELL, (f"{ci} reaches across the tolerance {tolerance:g}; it lies above 0, so training "
                                       f"longer still gains, by an amount the check cannot size against the tolerance")
    return (lo, hi), CANNOT_TELL, f"{ci} reaches across the tolerance {tolerance:g}"


def _span(value_range: object) -> float:
    """How far apart two scores on the metric can be (inf when it has no declared range)."""
    try:
        lo, hi = (float(x) for x in value_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return math.inf
    return hi - lo if math.isfinite(hi - lo) else math.inf


def _key(run: pd.Series) -> tuple:
    """A run less its budget, NaN (an lr search's row lr) spelled out so that it matches itself."""
    return tuple("nan" if isinstance(run[k], float) and math.isnan(run[k]) else run[k] for k in PAIR_KEY)


def check(main: pd.DataFrame, longer: pd.DataFrame, criterion: decide.Convergence,
          failed: Iterable[str] = ()) -> Check:
    """Pair each longer run with the run of its configuration and seed at the study's budget.
    `failed`: longer runs that left no score (failed records), named and never dropped quietly."""
    out = Check(criterion.steps_factor, criterion.tolerance, missing=list(failed))
    if longer.empty:
        return out
    budget: dict[tuple, list[pd.Series]] = {}
    for _, run in main.iterrows():
        budget.setdefault(_key(run), []).append(run)
    by_line: dict[tuple, list[tuple[int, float, float, pd.Series, str]]] = {}  # seed, budget, longer, run, its CPU
    for _, run in longer.iterrows():
        key = _key(run)
        cands = [r for r in budget.get(key, []) if int(r["steps"]) * criterion.steps_factor == int(run["steps"])]
        if len(cands) != 1:  # none, or several runs of one configuration and seed (two studies' records): no pair
            why = "no run" if not cands else f"{len(cands)} runs"
            out.unpaired.append(f"{_label(run)} seed {int(run['seed'])} at {int(run['steps'])} steps ({why} at "
                                f"{int(run['steps']) // criterion.steps_factor} steps to pair with)")
            continue
        short = cands[0]
        s = sign(run["primary_direction"])  # better-is-positive, whichever way the metric points
        by_line.setdefault(key[:-1] + (int(short["steps"]),), []).append(
            (int(run["seed"]), s * float(short["val_primary"]), s * float(run["val_primary"]), run,
             machine_label(short)))
    for key, pairs in sorted(by_line.items(), key=lambda kv: str(kv[0])):
        scored = [p for p in sorted(pairs, key=lambda p: p[0]) if not (math.isnan(p[1]) or math.isnan(p[2]))]
        lost = [f"{_label(p[3])} seed {p[0]}: no validation score" for p in pairs if math.isnan(p[1]) or math.isnan(p[2])]
        out.missing += lost
        if not scored:
            continue
        pairs = scored
        row = pairs[0][3]
        s = sign(row["primary_direction"])
        gains = np.array([p[2] - p[1] for p in pairs])
        ci, verdict, reason = _read(gains, criterion.tolerance, _span(row.get("primary_range")))
        if lost and verdict == CONVERGED:  # a seed that diverged is no evidence of a plateau
            verdict, reason = CANNOT_TELL, f"{reason}; but {len(lost)} seed(s) left no validation score"
        here = {machine_label(p[3]) for p in pairs}
        there = {p[4] for p in pairs}
        if here != there:  # the same precision and threads, other kernels: their rounding differs a little
            reason += f"; the budget's runs ran on {', '.join(sorted(there))}, the longer ones on {', '.join(sorted(here))}"
        out.lines.append(Line(label=_label(row), steps=int(key[-1]), longer_steps=int(row["steps"]),
                              metric=str(row["primary_metric"]), seeds=tuple(p[0] for p in pairs),
                              at_budget=s * float(np.mean([p[1] for p in pairs])),
                              longer=s * float(np.mean([p[2] for p in pairs])),
                              gain=float(gains.mean()), ci=ci, verdict=verdict, reason=reason,
                              tolerance=criterion.tolerance))
    return out


def folders(results: Iterable[str | Path]) -> list[Path]:
    """The convergence folders (a criterion beside records) under the report's result folders."""
    found = set()
    for r in map(Path, results):
        if r.is_dir():  # under the loader's rules: never inside a dot-folder or reference/ unless named
            found |= {p.parent for p in r.rglob(decide.CRITERION_FILE) if not skipped_below(r, p.parent)}
    return sorted(found)


def from_folder(main: pd.DataFrame, folder: Path) -> Check | None:
    """The check in `folder`, paired with the study's own records: those beside it (in its parent
    folder), or all of `main` where none of them is there (the check's runs kept apart)."""
    criterion = decide.read_criterion(folder)
    if criterion is None:
        return None
    home = str(Path(folder).parent.resolve())
    own = main[[str(Path(f).resolve()).startswith(home + "/") for f in main["file"]]] if not main.empty else main
    longer = load_results([folder])
    failed = [f"{r['method']} seed {r['seed']} ({r['status']})" for _, r in longer.failed.iterrows()]
    return check(own if not own.empty else main, longer.ok, criterion, failed)


def merged(checks: list[Check]) -> Check | None:
    """Several studies' checks as one: their lines, and the criterion where they share one."""
    if not checks:
        return None
    same = len({(c.steps_factor, c.tolerance) for c in checks}) == 1
    return Check(checks[0].steps_factor if same else None, checks[0].tolerance if same else None,
                 [ln for c in checks for ln in c.lines], [u for c in checks for u in c.unpaired],
                 [m for c in checks for m in c.missing])


def regime_line(c: Check | None) -> str:
    """One sentence for the claims: whether the runs they read had converged."""
    if c is None:
        return ("Convergence: not checked. Whether these runs had reached their plateau is unknown "
                "(a study's `convergence:` block runs each pick again at a longer budget).")
    return f"Convergence of the runs these verdicts read: {c.summary()}."


def to_markdown(c: Check | None) -> str:
    lines = ["# Convergence check", "", regime_line(c), ""]
    if c is None:
        return "\n".join(lines)
    lines += [ln for ln in notes(c)]
    if not c.lines:
        return "\n".join(lines + ["No pair of runs to compare."]) + "\n"
    lines += ["| Configuration (at its validation pick) | Metric | Steps | Validation | Longer: steps | Validation | Gain, 95% CI | Verdict | Why |",
              "|---|---|---|---|---|---|---|---|---|"]
    for ln in c.lines:
        ci = "–" if math.isnan(ln.ci[0]) else f"[{ln.ci[0]:+.4g}, {ln.ci[1]:+.4g}]"
        lines.append(f"| {ln.label} | {ln.metric} | {ln.steps} | {ln.at_budget:.4g} | {ln.longer_steps} | {ln.longer:.4g} | "
                     f"{ln.gain:+.4g} {ci} | **{ln.verdict}** | {ln.reason} (seeds {', '.join(map(str, ln.seeds))}) |")
    return "\n".join(lines) + "\n"


def notes(c: Check) -> list[str]:
    """What the check could not use, in words (each a paragraph)."""
    out = []
    if c.unpaired:
        out += ["Longer runs with no single run at the study's budget to pair with: " + "; ".join(c.unpaired) + ".", ""]
    if c.missing:
        out += ["Longer runs that failed or left no validation score: " + "; ".join(c.missing) + ".", ""]
    return out


def to_csv(c: Check) -> str:
    rows = [{"configuration": ln.label, "metric": ln.metric, "steps": ln.steps, "val_primary": ln.at_budget,
             "longer_steps": ln.longer_steps, "val_primary_longer": ln.longer, "gain": ln.gain,
             "gain_ci_low": ln.ci[0], "gain_ci_high": ln.ci[1], "seeds": ";".join(map(str, ln.seeds)),
             "tolerance": ln.tolerance, "verdict": ln.verdict} for ln in c.lines]
    return pd.DataFrame(rows).to_csv(index=False)
