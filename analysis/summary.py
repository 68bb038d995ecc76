"""The top of the report: for each model x task, which configuration scored best on the primary
metric, which others lie inside its 95% interval, and the cheapest configuration within a stated
distance of full fine-tuning. Point estimates and intervals over seeds, said as such: the claims
section, not this one, decides anything."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from peftbench.analysis.load import setting_labels
from peftbench.analysis.meta import FULL_REFERENCE, sign
from peftbench.analysis.tables import percent_scale

# "Close to full FT": at least this many percent of the full reference's primary metric.
NEAR_FULL_FT_PERCENT = 99.0
# What "cheapest" is measured by: trainable parameters, which every method records.
COST_COLUMN, COST_WORDS = "params.trainable", "trainable parameters"


def label(row: pd.Series, differs: str = "", steps: bool = False) -> str:
    """A configuration in words: method, capacity, targets, precision, lr and, where the rows
    differ there, steps and the setting keys that differ (`batch_size=16`); never a hash."""
    parts = [str(row["method"])]
    for key in ("capacity", "targets", "precision"):
        if str(row.get(key, "-")) not in ("-", "", "nan", "None"):
            parts.append(str(row[key]))
    lr = row.get("lr")
    if isinstance(lr, float) and not math.isnan(lr):
        parts.append(f"lr {lr:.0e}")
    if steps:
        parts.append(f"{row['steps']} steps")
    if differs:
        parts.append(f"({differs})")
    return " ".join(parts)


def labeller(t: pd.DataFrame):
    """label() for the rows of one table: naming steps and setting only where they differ."""
    differs = setting_labels(t) if "setting_items" in t and t["setting"].nunique() > 1 else {}
    steps = "steps" in t and t["steps"].nunique() > 1
    return lambda row: label(row, differs.get(row.get("setting"), ""), steps)


def group_summary(t: pd.DataFrame) -> dict[str, Any]:
    """Best, those inside its interval, and the cheapest near full FT, for one model x task."""
    t = t[t["primary_mean"].notna()]
    if t.empty:
        return {"best": "no configuration has a test score", "tied": "", "cheapest": ""}
    direction = str(t["primary_direction"].iloc[0]) if "primary_direction" in t else "max"
    metric = str(t["primary_metric"].iloc[0]) if "primary_metric" in t else "primary"
    s = sign(direction)
    scale = percent_scale(t, "primary_mean")
    name = labeller(t)

    def _fmt(v: float) -> str:
        return f"{scale * v:.1f}%" if scale == 100 else f"{v:.3g}"

    best = t.loc[(s * t["primary_mean"]).idxmax()]
    ci = float(best["primary_ci95"]) if best["n"] >= 2 and not math.isnan(best["primary_ci95"]) else math.nan
    out = {"metric": metric}
    if math.isnan(ci):
        out["best"] = (f"{name(best)}: {metric} {_fmt(best['primary_mean'])} on {int(best['n'])} seed(s), no interval: "
                       f"nothing here can be said to tie with it or trail it")
        out["tied"] = ""
    else:
        lo, hi = float(best["primary_ci_low"]), float(best["primary_ci_high"])  # inside the metric's range
        inside = t[(t.index != best.name) & (t["primary_mean"] >= lo) & (t["primary_mean"] <= hi)]
        out["best"] = f"{name(best)}: {metric} {_fmt(best['primary_mean'])}, 95% interval [{_fmt(lo)}, {_fmt(hi)}] over {int(best['n'])} seeds"
        out["tied"] = (f"means inside that interval: {', '.join(name(r) for _, r in inside.iterrows())}" if not inside.empty
                       else "no other configuration's mean lies inside that interval (a reading, not a test: the claims "
                            "below test)")
    has_ref = "role" in t and (t["role"] == FULL_REFERENCE).any()
    near = t[(t["role"] != FULL_REFERENCE) & (t["pct_of_full_ft_percent"] >= NEAR_FULL_FT_PERCENT)] if has_ref else t.iloc[0:0]
    if not has_ref:
        out["cheapest"] = "no full fine-tuning run here to measure the distance from"
    elif near.empty or COST_COLUMN not in near or near[COST_COLUMN].isna().all():
        out["cheapest"] = f"no method reaches {NEAR_FULL_FT_PERCENT:g}% of full fine-tuning's {metric}"
    else:
        c = near.loc[near[COST_COLUMN].idxmin()]
        out["cheapest"] = (f"{name(c)}: {c['pct_of_full_ft_percent']:.1f}% of full fine-tuning's {metric} with "
                           f"{int(c[COST_COLUMN]):,} {COST_WORDS} (the cheapest of those at {NEAR_FULL_FT_PERCENT:g}% or more; "
                           f"point estimates)")
    return out


def summaries(agg: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    if agg.empty:
        return []
    return [(str(m), str(k), group_summary(g)) for (m, k), g in agg.groupby(["model", "task"], sort=True)]
