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

from peftbench.analysis.load import TRAINED_KEY, is_timing, setting_labels, setting_value

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

def floor_se(spread: str, floor: float, n: float) -> float:
    """The standard error of a metric at its floor over n items (experiments.metric_spec.SPREADS)."""
    if spread == "correlation":
        f = min(abs(floor), 1 - 1.0 / n)
        return (1 - f * f) / math.sqrt(n)
    f = min(max(floor, 1.0 / n), 1 - 1.0 / n)  # a floor of 0 or 1 would claim no noise at all
    return math.sqrt(f * (1 - f) / n)


def learned(row: Mapping[str, Any]) -> tuple[bool, str]:
    """(learned, why not) for one run: its validation score on the tested metric (the primary, or
    one with a per-item test where the primary has none: analysis.load.rows.floor_columns) against
    the floor (the better of the majority-class predictor and the base model), by a one-sided 95%
    test over the validation items with the metric's own spread. A run tested on another metric
    than its primary learned when either its primary is above its own floor or the test passes.
    A primary where lower is better has no floor here: such runs count as learned."""
    floor, n = row.get("val_floor", math.nan), row.get("val_items", math.nan)
    metric = str(row.get("val_tested_metric") or "-")
    v = row.get("val_tested", math.nan) if metric != "-" else math.nan
    if metric == "-" or _nan(v) or _nan(floor):
        return True, ""  # no floor known, or no metric with a test: nothing to test against
    what = f"validation {metric}" if metric != row.get("primary_metric") else "validation"
    if metric != row.get("primary_metric"):
        # a primary with no per-item test (macro-F1): a run above its floor on it may have learned
        # the minority classes at no gain in accuracy; only a run at neither is left out
        own, own_floor = row.get("val_primary", math.nan), row.get("val_primary_floor", math.nan)
        if not _nan(own) and not _nan(own_floor) and own > own_floor:
            return True, ""
    source = row.get("val_floor_source", "its floor")
    if _nan(n) or n < 2:
        ok = v > floor
        return ok, "" if ok else f"{what} {v:.4g} not above {source} {floor:.4g}"
    z = (v - floor) / floor_se(str(row.get("val_spread") or "proportion"), floor, n)
    if z > Z_ONE_SIDED_95:
        return True, ""
    return False, f"{what} {v:.4g} not above {source} {floor:.4g} by a one-sided 95% test over {int(n)} items (z={z:.2f})"


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


def config_words(row: Mapping[str, Any], setting_label: str = "") -> str:
    """A configuration as a reader names it: `lora r=2 all_linear lr 1e-03, 100 steps, batch_size=16`."""
    parts = [str(row["method"])]
    parts += [str(row[k]) for k in ("capacity", "targets") if str(row.get(k, "-")) not in ("-", "", "nan", "None")]
    lr = row.get("chosen_lr")
    if isinstance(lr, (int, float)) and not _nan(lr):
        parts.append(f"lr {float(lr):.0e}")
    tail = [f"{int(row['steps'])} steps"] if isinstance(row.get("steps"), (int, float)) and not _nan(row["steps"]) else []
    return ", ".join([" ".join(parts), *tail, *([setting_label] if setting_label else [])])


def _seeds(rows: list[Mapping[str, Any]]) -> str:
    seeds = sorted(int(r["seed"]) for r in rows if isinstance(r.get("seed"), (int, float)) and not _nan(r["seed"]))
    return f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}" if seeds else f"{len(rows)} run(s)"


SHOWN_CONFIGS = 4


def learned_only(runs: pd.DataFrame, cond: Mapping[str, Any], named: pd.Series | None = None) -> tuple[pd.DataFrame, str]:
    """The runs less the configurations none of whose seeds learned, and a note naming, in words,
    the configurations left out (with the test that left them out) and the kept seeds that did not
    learn ('' when none of them did). `named`: the runs the claim's sides read (default: all); only
    those are named, since a baseline's collapsed lr says nothing to a claim about two LoRA ranks.
    Run ids are in the report's run table, not in the note."""
    if runs.empty or not reads_scores(cond) or "val_floor" not in runs.columns:
        return runs, ""
    rows = runs.to_dict("records")
    flags = [learned(r) for r in rows]
    ok = pd.Series([f for f, _ in flags], index=runs.index)
    keys = [k for k in TRAINED_KEY if k in runs.columns]
    any_learned = ok.groupby([runs[k].astype(str) for k in keys]).transform("any")
    labels = setting_labels(runs) if {"setting", "setting_items"} <= set(runs.columns) else {}

    def by_config(mask: pd.Series) -> list[tuple[str, list[tuple[dict, str]]]]:
        groups: dict[tuple, list[tuple[dict, str]]] = {}
        for r, (_, why), m in zip(rows, flags, mask):
            if m:
                groups.setdefault(tuple(str(r[k]) for k in keys), []).append((r, why))
        return [(config_words(g[0][0], labels.get(g[0][0].get("setting"), "")), g) for g in groups.values()]

    notes = []
    named = pd.Series(True, index=runs.index) if named is None else named
    dropped = by_config(~any_learned & named)
    if dropped:
        shown = []
        for words, group in dropped[:SHOWN_CONFIGS]:
            # the seed that came closest to learning says how far the configuration was from it
            closest = max(group, key=lambda rw: float(rw[0].get("val_tested", math.nan)) if not _nan(rw[0].get("val_tested", math.nan)) else -math.inf)
            shown.append(f"{words} ({_seeds([r for r, _ in group])}; best: {closest[1]})")
        more = f"; and {len(dropped) - SHOWN_CONFIGS} more configuration(s)" if len(dropped) > SHOWN_CONFIGS else ""
        n_runs = sum(len(g) for _, g in dropped)
        notes.append(f"left out {len(dropped)} configuration(s) none of whose {n_runs} run(s) learned: {'; '.join(shown)}{more}")
    kept = by_config(any_learned & ~ok & named)
    if kept:
        n_runs = sum(len(g) for _, g in kept)
        shown = "; ".join(f"{words} ({_seeds([r for r, _ in group])})" for words, group in kept[:SHOWN_CONFIGS])
        more = f"; and {len(kept) - SHOWN_CONFIGS} more configuration(s)" if len(kept) > SHOWN_CONFIGS else ""
        notes.append(f"kept {n_runs} run(s) that did not learn beside seeds of the same configuration that did "
                     f"(dropping them would keep only the good seeds): {shown}{more}")
    return runs[any_learned], "; ".join(notes)
