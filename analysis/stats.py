"""Per-configuration aggregates over seeds, 95% CIs, % of full fine-tuning, paired tests against
the baseline method, all on the task's primary metric; and the one rule that picks a reference.

Every aggregate is within one model x task x precision x configuration: nothing is ever averaged
across models, tasks or precisions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats as sps

from peftbench.analysis.cost_score import add_cost_score
from peftbench.analysis.load import (GROUP_KEY, RESUME_PARTIAL, ROW_KEY, is_copied, is_timing, measurement_records,
                                     measurement_source, resumed_note, short_hash, timings_contended)
from peftbench.analysis.meta import BASELINE, FULL_REFERENCE, sign
from peftbench.experiments.fields import FIELDS

KEY = GROUP_KEY + ROW_KEY
ALPHA = 0.05
PAIRED_TEST_NAME = "paired t-test over seeds (two-sided)"
# Measured fields, averaged over seeds as they are (costs vary little between seeds).
COST_COLUMNS = [f.path for f in FIELDS]
# Constant within a configuration (method metadata, the task's metric declaration): first run's.
FIRST_COLUMNS = ["capacity_value", "ref_setting", "setting_items", "device", "family", "order", "color", "marker",
                 "capacity_key", "role", "primary_metric", "primary_direction", "task_metrics", "forgetting_key",
                 "serving_skipped"]
SCORE_PREFIXES = ("metrics.", "metrics_before.", "lm_eval.", "forgetting.")
SCORE_COLUMNS = ("primary", "val_primary", "primary_before", "gain_over_base", "forgetting", "cost_score")


def score_columns(ok: pd.DataFrame) -> list[str]:
    """Columns that get mean, std and CI over seeds: task metrics, base scores, lm-eval scores,
    forgetting."""
    return [c for c in ok.columns if c in SCORE_COLUMNS or c.startswith(SCORE_PREFIXES)]


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


def interval_in_range(mean: float, half: float, value_range: Any) -> tuple[float, float]:
    """The t interval mean ± half, cut to the values the metric can take (an accuracy's [0, 1]):
    the t interval assumes an unbounded normal mean, and past a bound it only says "near it"."""
    lo, hi = mean - half, mean + half
    if value_range is not None and not (isinstance(value_range, float) and math.isnan(value_range)):
        lo, hi = max(lo, float(value_range[0])), min(hi, float(value_range[1]))
    return lo, hi


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


def one_per_source(runs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The runs with one observation per measurement source when any of `columns` is a copied
    figure (load.is_copied): copies of one measurement are one observation, never several seeds.
    Keeps the measuring run where it is among `runs`, else the smallest seed; all runs otherwise."""
    if runs.empty or not any(is_copied(c) for c in columns):
        return runs
    source = [measurement_source(r) for r in measurement_records(runs)]
    own = [s != rid for s, rid in zip(source, runs["run_id"])]
    order = runs.assign(_source=source, _copy=own).sort_values(["_copy", "seed", "chosen_lr"], kind="stable")
    return runs.loc[order.drop_duplicates("_source").index].sort_index()


def by_seed(runs: pd.DataFrame, column: str = "primary") -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(runs["seed"], runs[column])}


def aggregate(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per model x task x configuration: mean/std/CI/n over seeds of every score, and
    mean costs."""
    rows = []
    ok = add_cost_score(ok)  # a per-run score like the metrics: mean, std and CI over seeds
    scores = score_columns(ok)
    # every numeric column as floats once (a column at a time per group is most of the time here),
    # each group's values then taken by position; row labels made positions (a concatenated frame
    # can repeat them)
    ok = ok.reset_index(drop=True)
    numeric = {c: ok[c].astype(float).to_numpy() for c in dict.fromkeys(scores + COST_COLUMNS)}
    for key, runs in ok.groupby(KEY, sort=True, dropna=False):
        at = runs.index.to_numpy()
        row = dict(zip(KEY, key))
        row["config_id"] = short_hash({k: repr(v) for k, v in row.items()})
        row["n"] = len(runs)
        row["seeds"] = tuple(sorted(int(s) for s in runs["seed"]))
        for metric in scores:
            vals = numeric[metric][at]
            row[f"{metric}_mean"] = _nanmean(vals)
            row[f"{metric}_std"] = _nanstd(vals) if (~np.isnan(vals)).sum() > 1 else math.nan
            row[f"{metric}_ci95"] = t_ci95(vals.tolist())
        if "primary" in scores:
            row["primary_ci_low"], row["primary_ci_high"] = interval_in_range(
                row["primary_mean"], row["primary_ci95"], runs.iloc[0].get("primary_range"))
        for col in COST_COLUMNS:
            row[col] = _nanmean(numeric[col][at])
        first = runs.iloc[0]  # constant within a row: setting is in the key
        for col in FIRST_COLUMNS:
            row[col] = first[col]
        row["measurement.memory_kind"] = "/".join(sorted(set(runs["measurement.memory_kind"])))
        row["chosen_lrs"] = tuple(sorted({float(x) for x in runs["chosen_lr"] if not math.isnan(x)}))
        row["method_info.can_merge"] = _all_can_merge(runs["method_info.can_merge"])
        row.update(measurement_facts(runs))
        rows.append(row)
    agg = pd.DataFrame(rows)
    if agg.empty:
        return agg
    add_full_ft_relative(agg, ok)
    add_baseline_comparison(agg, ok)
    return agg


def _nanmean(x: np.ndarray) -> float:
    """pandas' Series.mean() (missing values skipped; NaN when none is left), bit for bit,
    without a Series."""
    missing = np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.where(missing, 0.0, x).sum(dtype=np.float64) / (len(x) - missing.sum()))


def _nanstd(x: np.ndarray) -> float:
    """pandas' Series.std(ddof=1), bit for bit: the same two passes over the values present."""
    missing = np.isnan(x)
    count = len(x) - missing.sum()
    values = np.where(missing, 0.0, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        sqr = (values.sum(dtype=np.float64) / count - values) ** 2
        return float(np.sqrt(np.where(missing, 0.0, sqr).sum(dtype=np.float64) / (count - 1)))


def measurement_facts(runs: pd.DataFrame) -> dict[str, tuple]:
    """How a row's runs were measured, for the tables' markers and notes: (run, source) of runs
    whose copied figures come from another run, (run, reason) of runs whose own or copied timings
    were contended, (run, reason) of runs whose MFU is unknown. Empty tuples for older records."""
    recs = measurement_records(runs)

    def contended(copied: bool, reason: str) -> tuple:
        return tuple((r["run_id"], r.get(reason) or "") for r in recs if timings_contended(r, copied))
    return {"costs_copied": tuple((r["run_id"], measurement_source(r)) for r in recs if measurement_source(r) != r["run_id"]),
            "contended_runs": contended(False, "measurement.contended_reason"),
            "contended_costs": contended(True, "costs_contended_reason"),
            "mfu_unknown": tuple((r["run_id"], r["measurement.mfu_unknown_reason"]) for r in recs
                                 if r.get("measurement.mfu_unknown_reason")),
            "resumed_runs": tuple((r["run_id"], resumed_note(r)) for r in recs if resumed_note(r))}


def resumed_cell(row: Mapping, column: str) -> bool:
    """Whether an aggregated row's figure in `column` covers only part of a resumed run's training."""
    return column in RESUME_PARTIAL and bool(row.get("resumed_runs"))


def contended_cell(row: Mapping, column: str) -> bool:
    """Whether an aggregated row's figure in `column` includes a timing taken under contention."""
    if not is_timing(column):
        return False
    return bool(row.get("contended_costs" if is_copied(column) else "contended_runs"))


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


def runs_index(ok: pd.DataFrame, columns: list[str] | None = None):
    """runs_of for many rows of one frame, its groups found once: row -> the runs behind row
    (only `columns` of them, where given: taking every column of a wide frame costs)."""
    groups = {_key(k): idx for k, idx in ok.groupby(KEY, sort=False, dropna=False).indices.items()}
    frame = ok if columns is None else ok[columns]

    def of(row: Mapping) -> pd.DataFrame:
        idx = groups.get(_key(tuple(row[k] for k in KEY)))
        return frame.iloc[idx] if idx is not None else frame.iloc[0:0]
    return of


def _key(values: tuple) -> tuple:
    """A configuration's key with every missing value alike, so that it can be looked up."""
    return tuple(None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v for v in values)


def choose_reference(cand: pd.DataFrame, row: Mapping) -> Mapping | None:
    """The reference rule, the only one: among candidate configurations (already matched on
    model, task, precision and whatever the comparison fixes), preferably the same non-method
    setting (batch size, task, model dtype, device: `ref_setting`), then the same lr, else the
    best by validation score (never by test score, which would tune on the test set). Tables,
    figures and claims all call it."""
    if cand.empty:
        return None
    label = _reference_label(cand[REFERENCE_RULE_COLUMNS], row)
    return None if label is None else cand.loc[label]


# What the reference rule reads: it picks among these few columns, and only the chosen row of the
# wide frame is taken (a take of every column per candidate set is most of a report's time).
REFERENCE_RULE_COLUMNS = ["ref_setting", "lr", "val_primary_mean", "primary_direction"]


def _reference_label(rule: pd.DataFrame, row: Mapping):
    """choose_reference's pick, as the index label of the chosen candidate (None: no candidate)."""
    if rule.empty:
        return None
    same_setting = rule[rule["ref_setting"] == row["ref_setting"]]
    if not same_setting.empty:
        rule = same_setting
    same_lr = rule[np.isclose(rule["lr"].astype(float), float(row["lr"]), equal_nan=True)]
    if not same_lr.empty:
        rule = same_lr
    score = rule["val_primary_mean"].astype(float) * rule["primary_direction"].map(sign)
    return score.sort_values(ascending=False, na_position="last").index[0]


def pick_reference(agg: pd.DataFrame, row: Mapping, match: list[str], role: str | None = None,
                   method: str | None = None) -> Mapping | None:
    """The configuration of the method with `role` (or named `method`) that `row` is compared
    with: same model, task, precision and `match` keys, then `choose_reference`."""
    mask = (agg["role"] == role) if role is not None else (agg["method"] == method)
    for k in GROUP_KEY + ["precision"] + match:
        mask &= agg[k] == row[k]
    label = _reference_label(agg.loc[mask.to_numpy(dtype=bool, na_value=False), REFERENCE_RULE_COLUMNS], row)
    return None if label is None else agg.loc[label]


def _ratio(mine: float, ref: float, direction: str) -> float:
    """% of the reference, oriented so that 100 is parity and above is better either way."""
    if direction == "min":
        return 100 * ref / mine if mine else math.nan
    return 100 * mine / ref if ref else math.nan


def add_full_ft_relative(agg: pd.DataFrame, ok: pd.DataFrame) -> None:
    """`pct_of_full_ft_percent`: the primary metric as % of the full reference (same model,
    task, precision; same steps when available; see choose_reference). Paired per seed (mean of
    per-seed ratios) when the seeds match. `full_ft_ref` names the reference configuration."""
    pct, paired, ref_ids = [], [], []
    runs_of_row = runs_index(ok, ["seed", "primary"])
    for _, row in agg.iterrows():
        ref = full_ft_reference(agg, row)
        ref_ids.append(ref["config_id"] if ref is not None else "-")
        if ref is None or not ref["primary_mean"]:
            pct.append(math.nan)
            paired.append(False)
            continue
        mine, theirs = by_seed(runs_of_row(row)), by_seed(runs_of_row(ref))
        common = sorted(set(mine) & set(theirs))
        direction = row["primary_direction"]
        if common and all(theirs[s] and mine[s] for s in common):
            pct.append(float(np.mean([_ratio(mine[s], theirs[s], direction) for s in common])))
            paired.append(True)
        else:
            pct.append(_ratio(row["primary_mean"], ref["primary_mean"], direction))
            paired.append(False)
    agg["pct_of_full_ft_percent"] = pct
    agg["pct_of_full_ft_paired"] = paired
    agg["full_ft_ref"] = ref_ids


def add_baseline_comparison(agg: pd.DataFrame, ok: pd.DataFrame) -> None:
    """`vs_baseline_*`: paired test of the primary metric against the baseline-role method at the
    same capacity, targets, steps, model, task and precision (see choose_reference)."""
    cols: dict[str, list] = {"vs_baseline_diff": [], "vs_baseline_p": [], "vs_baseline_n": [], "vs_baseline_note": [],
                             "vs_baseline_method": []}
    runs_of_row = runs_index(ok, ["seed", "primary"])
    for _, row in agg.iterrows():
        ref = None if row["role"] == BASELINE else pick_reference(agg, row, ["capacity", "targets", "steps"], role=BASELINE)
        if ref is None:
            res = Paired(0, math.nan, math.nan, ())
        else:
            res = paired_test(by_seed(runs_of_row(row)), by_seed(runs_of_row(ref)))
            if res.n == 0:
                res = Paired(0, math.nan, math.nan, (), NO_SHARED_SEEDS_NOTE)
        cols["vs_baseline_diff"].append(res.mean_diff)
        cols["vs_baseline_p"].append(res.p_value)
        cols["vs_baseline_n"].append(res.n)
        cols["vs_baseline_note"].append(res.note)
        cols["vs_baseline_method"].append(ref["method"] if ref is not None else "-")
    for k, v in cols.items():
        agg[k] = v


NO_SHARED_SEEDS_NOTE = "no shared seeds with the baseline"


def single_seed_only(agg: pd.DataFrame) -> bool:
    """True when no configuration has two seeds: nothing can be tested."""
    return agg.empty or int(agg["n"].max()) < 2


def full_ft_reference(agg: pd.DataFrame, row: Mapping) -> Mapping | None:
    """The full-reference row `row` is measured against: same steps where there is one."""
    ref = pick_reference(agg, row, ["steps"], role=FULL_REFERENCE)
    return ref if ref is not None else pick_reference(agg, row, [], role=FULL_REFERENCE)


def typical_row(t: pd.DataFrame) -> Mapping | None:
    """The non-reference row with the setting and steps most rows of `t` share: what a figure,
    which draws one reference line for many rows, asks the reference rule about."""
    others = t[t["role"] != FULL_REFERENCE]
    if others.empty:
        return None
    setting, steps = others.groupby(["ref_setting", "steps"]).size().sort_values(ascending=False, kind="stable").index[0]
    pick = others[(others["ref_setting"] == setting) & (others["steps"] == steps)]
    return pick.iloc[0]


# How each run's figures were taken (analysis.load.measurement_columns): the runs listing says it.
MEASUREMENT_COLUMNS = ["measurement.costs_from", "measurement.contended", "measurement.contended_reason", "costs_contended",
                       "checkpoint.resumed_from_step", "checkpoint.train_s_before_resume",
                       "costs_contended_reason", "measurement.mfu_unknown_reason"]


def per_run(ok: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """One row per run, with its primary metric relative to the full-reference run of the same
    model, task and seed (the reference configuration chosen as for the aggregated tables)."""
    rows = []
    extra = [c for c in ok.columns if c.startswith(("metrics.test.", "lm_eval."))] + [
        "primary", "primary_metric", "primary_direction", "primary_before", "gain_over_base", "forgetting", "forgetting_key",
        "params.trainable", "params.trainable_pct", "order", "status", *MEASUREMENT_COLUMNS]
    runs_of_row = runs_index(ok)
    for _, row in agg.iterrows():
        ref = full_ft_reference(agg, row)
        ft = by_seed(runs_of_row(ref)) if ref is not None else {}
        for _, run in runs_of_row(row).sort_values("seed").iterrows():
            base = ft.get(int(run["seed"]))
            rows.append({**{k: run[k] for k in ("model", "task", "method", "capacity", "targets", "precision", "lr", "chosen_lr",
                                                 "protocol", "steps", "setting", "device", "seed", "run_id")},
                         **{k: run.get(k, math.nan) for k in extra},
                         "pct_of_full_ft_same_seed_percent": _ratio(run["primary"], base, run["primary_direction"]) if base else math.nan})
    return pd.DataFrame(rows)
