"""The cost-penalised score column (`cost_score`), after PEFT-Bench's PSCP: the primary metric
discounted by trainable parameters, inference overhead and training memory. Formula, costs and
constants: conf/report/cost_score.yaml (stated there, read here; nothing is typed twice)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from peftbench.experiments import yamlfile
from peftbench.experiments.paths import CONF

CONFIG = CONF / "report" / "cost_score.yaml"
COLUMN = "cost_score"


def load_params(path: Path = CONFIG) -> dict[str, Any]:
    return yamlfile.read(path)


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def costs(run: Mapping[str, Any]) -> dict[str, float]:
    """The three relative costs of one run (NaN where not measured)."""
    merged = run.get("method_info.can_merge") is True
    overhead = _f(run.get("cost.latency_overhead_merged_frac" if merged else "cost.latency_overhead_unmerged_frac"))
    weights = _f(run.get("cost.weight_bytes"))
    return {"params": _f(run.get("params.trainable_pct")) / 100.0,
            "inference": max(overhead, 0.0) if not math.isnan(overhead) else math.nan,
            "memory": _f(run.get("cost.peak_train_mem_growth_bytes")) / weights if weights else math.nan}


def cost_score(run: Mapping[str, Any], params: Mapping[str, Any]) -> float:
    if run.get("primary_direction") != "max":
        return math.nan
    p = _f(run.get("primary"))
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        return math.nan
    score = p
    for name, m in costs(run).items():
        c = params[name]
        score *= (1.0 + m / float(c["scale"])) ** -float(c["beta"])
    return score


def add_cost_score(ok: pd.DataFrame, path: Path = CONFIG) -> pd.DataFrame:
    """The runs with a `cost_score` column (per run; the tables average it over seeds)."""
    params = load_params(path)
    out = ok.copy()
    out[COLUMN] = [cost_score(r, params) for r in ok.to_dict("records")] if not ok.empty else []
    return out
