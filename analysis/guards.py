"""What a claim check may look at before it decides anything.

* Regime: a claim declares where it was made (`regime:` in its YAML: batch size, device,
  precision, ...). Runs outside it cannot support or refute it: they are left out, and a claim
  with no run inside its regime is not applicable here, saying which regime and what the runs had.
* Runs that did not learn: a run whose validation score is not above both the majority-class
  predictor and the untrained base model, by a one-sided 95% test over the validation items, did
  not learn. A configuration (one lr of one method setting) none of whose seeds learned is left
  out of any claim about task scores, forgetting or convergence: a collapsed configuration's
  "best lr" or forgetting says nothing about the method. Seeds are never dropped from a
  configuration that learned on some of them: keeping only the good seeds would favour the
  method. Its seeds that did not learn are named.
* The lr grid must bracket each pick: see analysis.claims.kinds.tuned (the evidence is then not
  applicable, naming the lr to add).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd
from scipy import stats as sps

from peftbench.analysis.load import is_timing, setting_value

Z_ONE_SIDED_95 = float(sps.norm.ppf(0.95))


# ---------------------------------------------------------------- regime

def _run_value(row: Mapping[str, Any], key: str) -> Any:
    """A run column by name, else a config key of the run's setting (batch_size, task.n_train)."""
    if key in row and row[key] is not None and not _nan(row[key]):
        return row[key]
    return setting_value(row.get("setting_items") or {}, key)


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _inside(value: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return False
        return float(want.get("min", -math.inf)) <= v <= float(want.get("max", math.inf))
    return value in (want if isinstance(want, list) else [want])


def describe_regime(regime: Mapping[str, Any]) -> str:
    parts = []
    for k, want in regime.items():
        if isinstance(want, Mapping):
            lo, hi = want.get("min"), want.get("max")
            parts.append(f"{k} >= {lo}" if hi is None else f"{k} <= {hi}" if lo is None else f"{lo} <= {k} <= {hi}")
        else:
            parts.append(f"{k} in {want}" if isinstance(want, list) else f"{k} = {want}")
    return ", ".join(parts)


def regime_problems(regime: Any) -> list[str]:
    """What is wrong with a claim's `regime:` (its keys are checked with the setting keys)."""
    if regime is None:
        return []
    if not isinstance(regime, Mapping) or not regime:
        return ["regime must map run columns or config keys to a value, a list or {min, max}, e.g. {batch_size: {min: 32}}"]
    bad = [k for k, v in regime.items() if isinstance(v, Mapping) and (not set(v) <= {"min", "max"} or not v
                                                                          or not all(isinstance(x, (int, float)) for x in v.values()))]
    return [f"regime {k}: a range is {{min: N, max: N}} (numbers)" for k in bad]


def in_regime(runs: pd.DataFrame, regime: Mapping[str, Any] | None) -> tuple[pd.DataFrame, str]:
    """The runs inside the claim's regime, and (when some were outside) what they had instead."""
    if not regime or runs.empty:
        return runs, ""
    rows = runs.to_dict("records")
    keep = [all(_inside(_run_value(r, k), want) for k, want in regime.items()) for r in rows]
    if all(keep):
        return runs, ""
    seen = {k: sorted({str(_run_value(r, k)) for r, ok in zip(rows, keep) if not ok}) for k in regime}
    had = "; ".join(f"{k} {', '.join(v)}" for k, v in seen.items())
    return runs[keep], f"the claim's regime is {describe_regime(regime)}; {len(rows) - sum(keep)} run(s) outside it had {had}"


# ---------------------------------------------------------------- runs that did not learn

def learned(row: Mapping[str, Any]) -> tuple[bool, str]:
    """(learned, why not) for one run, from its validation score, the floor (the better of the
    majority-class predictor and the base model on validation) and the number of validation items."""
    v, floor, n = row.get("val_primary", math.nan), row.get("val_floor", math.nan), row.get("val_items", math.nan)
    if row.get("primary_direction", "max") != "max" or _nan(v) or _nan(floor):
        return True, ""  # no floor known: nothing to test against
    if _nan(n) or n < 2:
        ok = v > floor
        return ok, "" if ok else f"validation {v:.4g} not above {row.get('val_floor_source', 'its floor')} {floor:.4g}"
    f = min(max(floor, 1.0 / n), 1 - 1.0 / n)
    z = (v - floor) / math.sqrt(f * (1 - f) / n)
    if z > Z_ONE_SIDED_95:
        return True, ""
    return False, (f"validation {v:.4g} not above {row.get('val_floor_source', 'its floor')} {floor:.4g} "
                   f"by a one-sided 95% test over {int(n)} items (z={z:.2f})")


def is_cost(name: str) -> bool:
    """A figure a run measures whether it learned or not: memory, time, latency, sizes. The merge
    variants' test scores (`serving.primary_*`) are scores."""
    if name.startswith("serving."):
        return not name.split(".", 1)[1].startswith("primary_")
    return name.startswith(("cost.", "measurement.", "params.")) or is_timing(name)


def reads_scores(cond: Mapping[str, Any]) -> bool:
    """Whether a condition is about what training achieved (task scores, forgetting, convergence),
    rather than about costs, latency or memory."""
    names = [cond.get(r) for r in ("metric", "than_metric") if isinstance(cond.get(r), str)]
    if cond.get("check") in ("auc_compare", "best_lr_ratio", "forgetting_at_matched") or not names:
        return True
    return any(not is_cost(n) for n in names)


CONFIG = ["method", "model", "task", "precision", "capacity", "targets", "steps", "setting", "protocol", "chosen_lr"]


def learned_only(runs: pd.DataFrame, cond: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """The runs less the configurations none of whose seeds learned, and a note naming what was
    left out and which kept seeds did not learn ('' when every run learned)."""
    if runs.empty or not reads_scores(cond) or "val_floor" not in runs.columns:
        return runs, ""
    flags = [learned(r) for r in runs.to_dict("records")]
    ok = pd.Series([f for f, _ in flags], index=runs.index)
    why = dict(zip(runs["run_id"], (w for _, w in flags)))
    keys = [k for k in CONFIG if k in runs.columns]
    any_learned = ok.groupby([runs[k].astype(str) for k in keys]).transform("any")
    dropped = runs[~any_learned]
    kept_collapsed = runs[any_learned & ~ok]
    notes = []
    if len(dropped):
        shown = "; ".join(f"{r} ({why[r]})" for r in list(dropped["run_id"])[:4]) + (f"; and {len(dropped) - 4} more" if len(dropped) > 4 else "")
        n_cfg = dropped.groupby([dropped[k].astype(str) for k in keys]).ngroups
        notes.append(f"left out {n_cfg} configuration(s) none of whose {len(dropped)} run(s) learned: {shown}")
    if len(kept_collapsed):
        notes.append(f"kept {len(kept_collapsed)} run(s) that did not learn beside seeds of the same configuration that did "
                     f"(dropping them would keep only the good seeds): {', '.join(kept_collapsed['run_id'])}")
    return runs[any_learned], "; ".join(notes)
