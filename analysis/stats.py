"""Per-configuration aggregates over seeds, 95% CIs, % of full fine-tuning, paired tests vs LoRA.

Every aggregate is within one model x task x precision x configuration: nothing is ever averaged
across models, tasks or precisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.load import DETAIL_COST_KEYS, GROUP_KEY, ROW_KEY

KEY = GROUP_KEY + ROW_KEY
ALPHA = 0.05
PAIRED_TEST_NAME = "paired t-test over seeds (two-sided)"
# Columns averaged over seeds as they are (costs vary little between seeds; the mean is reported).
COST_COLUMNS = [
    "trainable_params", "trainable_pct", "total_params", "peak_mem_bytes", "weight_bytes",
    "tokens_per_s", "step_time_ms", "mfu", "lat_unmerged", "lat_merged", "lat_noise", "adapter_bytes",
    *DETAIL_COST_KEYS, "train_s", "eval_s",
]
ZERO_VARIANCE_NOTE = "zero-variance differences: untested"


@dataclass
class Paired:
    """A paired comparison of two configurations over the seeds they share."""

    n: int
    mean_diff: float  # a - b
    p_value: float  # NaN when n < 2 or the differences have zero variance: untested
    seeds: tuple[int, ...]
    note: str = ""  # why it is untested, when it is

    @property
    def tested(self) -> bool:
        return self.n >= 2 and not math.isnan(self.p_value)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_value < ALPHA


def t_ci95(values: np.ndarray | list[float]) -> float:
    """Half-width of the 95% t confidence interval of the mean; NaN with fewer than 2 values."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return math.nan
    return float(sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def paired_test(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Paired t-test of a - b over the seeds both have."""
    seeds = tuple(sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s]))))
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=float)
    if len(diffs) == 0:
        return Paired(0, math.nan, math.nan, seeds)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return Paired(1, mean, math.nan, seeds, "single seed: differences untested")
    if np.allclose(diffs, diffs[0], rtol=0.0, atol=1e-9):
        # Identical differences on every seed (up to float noise): the t statistic is 0/0, and
        # scipy's answer from rounding residue would be an arbitrary p. Say so instead.
        return Paired(len(diffs), mean, math.nan, seeds, ZERO_VARIANCE_NOTE)
    return Paired(len(diffs), mean, float(sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue), seeds)


def by_seed(runs: pd.DataFrame, column: str = "accuracy") -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(runs["seed"], runs[column])}


def aggregate(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per model x task x configuration: mean/std/CI/n over seeds, and mean costs."""
    rows = []
    for key, runs in ok.groupby(KEY, sort=True, dropna=False):
        row = dict(zip(KEY, key))
        row["n"] = len(runs)
        row["seeds"] = tuple(sorted(int(s) for s in runs["seed"]))
        for metric in ("accuracy", "macro_f1", "val_accuracy"):
            vals = runs[metric].astype(float)
            row[f"{metric}_mean"] = float(vals.mean())
            row[f"{metric}_std"] = float(vals.std(ddof=1)) if vals.notna().sum() > 1 else math.nan
            row[f"{metric}_ci95"] = t_ci95(list(vals))
        for col in COST_COLUMNS:
            row[col] = float(runs[col].astype(float).mean())
        first = runs.iloc[0]  # constant within a row: setting is in the key
        for col in ("rank_value", "ref_setting", "setting_items", "device"):
            row[col] = first[col]
        row["memory_kind"] = "/".join(sorted(set(runs["memory_kind"])))
        row["chosen_lrs"] = tuple(sorted({float(x) for x in runs["chosen_lr"] if not math.isnan(x)}))
        row["can_merge"] = _all_can_merge(runs["can_merge"])
        rows.append(row)
    agg = pd.DataFrame(rows)
    if agg.empty:
        return agg
    add_full_ft_relative(agg, ok)
    add_lora_comparison(agg, ok)
    return agg


def _all_can_merge(flags: pd.Series) -> bool | None:
    """False if any run cannot merge, True if all can, None when unknown (old records)."""
    values = [v for v in flags if isinstance(v, (bool, np.bool_))]
    if any(not v for v in values):
        return False
    return True if values and len(values) == len(flags) else None


def runs_of(ok: pd.DataFrame, row: Mapping) -> pd.DataFrame:
    """The runs (seeds) behind one aggregated row."""
    mask = np.ones(len(ok), dtype=bool)
    for k in KEY:
        mask &= (ok[k] == row[k]).to_numpy() | (pd.isna(ok[k]) & pd.isna(row[k])).to_numpy()
    return ok[mask]


def pick_reference(agg: pd.DataFrame, row: Mapping, method: str, match: list[str]) -> Mapping | None:
    """The `method` configuration to compare `row` with: same model, task, precision and `match`
    keys; among several, preferably the same non-method setting (batch size, task, model dtype,
    device: `ref_setting`), then the same lr, else the best by validation accuracy (never by test
    accuracy, which would tune on the test set)."""
    cand = agg[(agg["method"] == method)]
    for k in GROUP_KEY + ["precision"] + match:
        cand = cand[cand[k] == row[k]]
    if cand.empty:
        return None
    same_setting = cand[cand["ref_setting"] == row["ref_setting"]]
    if not same_setting.empty:
        cand = same_setting
    same_lr = cand[np.isclose(cand["lr"].astype(float), float(row["lr"]), equal_nan=True)]
    if not same_lr.empty:
        cand = same_lr
    return cand.sort_values("val_accuracy_mean", ascending=False, na_position="last").iloc[0]


def add_full_ft_relative(agg: pd.DataFrame, ok: pd.DataFrame) -> None:
    """`pct_full_ft`: accuracy as % of full fine-tuning (same model, task, precision; same steps
    when available; same non-method setting preferred, see pick_reference). Paired per seed (mean
    of per-seed ratios) when the seeds match."""
    pct, paired = [], []
    for _, row in agg.iterrows():
        ref = full_ft_reference(agg, row)
        if ref is None or not ref["accuracy_mean"]:
            pct.append(math.nan)
            paired.append(False)
            continue
        mine, theirs = by_seed(runs_of(ok, row)), by_seed(runs_of(ok, ref))
        common = sorted(set(mine) & set(theirs))
        if common and all(theirs[s] for s in common):
            pct.append(float(np.mean([100 * mine[s] / theirs[s] for s in common])))
            paired.append(True)
        else:
            pct.append(100 * row["accuracy_mean"] / ref["accuracy_mean"])
            paired.append(False)
    agg["pct_full_ft"] = pct
    agg["pct_full_ft_paired"] = paired


def add_lora_comparison(agg: pd.DataFrame, ok: pd.DataFrame) -> None:
    """`vs_lora_*`: paired test of accuracy against LoRA at the same rank, targets, steps,
    model, task and precision (same non-method setting preferred)."""
    cols: dict[str, list] = {"vs_lora_diff": [], "vs_lora_p": [], "vs_lora_n": [], "vs_lora_note": []}
    for _, row in agg.iterrows():
        ref = None if row["method"] == "lora" else pick_reference(agg, row, "lora", ["rank", "targets", "steps"])
        if ref is None:
            res = Paired(0, math.nan, math.nan, ())
        else:
            res = paired_test(by_seed(runs_of(ok, row)), by_seed(runs_of(ok, ref)))
            if res.n == 0:
                res = Paired(0, math.nan, math.nan, (), NO_SHARED_SEEDS_NOTE)
        cols["vs_lora_diff"].append(res.mean_diff)
        cols["vs_lora_p"].append(res.p_value)
        cols["vs_lora_n"].append(res.n)
        cols["vs_lora_note"].append(res.note)
    for k, v in cols.items():
        agg[k] = v


NO_SHARED_SEEDS_NOTE = "no shared seeds with LoRA"


def single_seed_only(agg: pd.DataFrame) -> bool:
    """True when no configuration has two seeds: nothing can be tested."""
    return agg.empty or int(agg["n"].max()) < 2


def full_ft_reference(agg: pd.DataFrame, row: Mapping) -> Mapping | None:
    """The full fine-tuning row `row` is measured against: same steps where there is one."""
    ref = pick_reference(agg, row, "full_ft", ["steps"])
    return ref if ref is not None else pick_reference(agg, row, "full_ft", [])


def per_run(ok: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """One row per run, with its accuracy relative to the full fine-tuning run of the same model,
    task and seed (the reference configuration chosen as for the aggregated tables)."""
    rows = []
    for _, row in agg.iterrows():
        ref = full_ft_reference(agg, row)
        ft = by_seed(runs_of(ok, ref)) if ref is not None else {}
        for _, run in runs_of(ok, row).sort_values("seed").iterrows():
            base = ft.get(int(run["seed"]))
            rows.append({**{k: run[k] for k in ("model", "task", "method", "rank", "targets", "precision", "lr", "chosen_lr",
                                                 "protocol", "steps", "setting", "device", "seed", "run_id")},
                         "trainable_params": run["trainable_params"], "trainable_pct": run["trainable_pct"],
                         "accuracy": run["accuracy"], "macro_f1": run["macro_f1"],
                         "pct_full_ft_same_seed": 100 * run["accuracy"] / base if base else math.nan})
    return pd.DataFrame(rows)
