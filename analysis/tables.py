"""Tables: one per model x task, one row per method x capacity x targets x precision x lr x steps
x setting, plus a cost-details table with the same row labels.

Columns come from the data, never from names written here: the task's metrics (primary first)
from the record's config, lm-eval scores and forgetting where recorded, and the measured fields
from peftbench.experiments.fields. The same cell model renders Markdown, HTML, LaTeX (booktabs, best value
per column within each precision and device in bold) and CSV (raw numbers, every column, headed
by the names the record uses).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd

from peftbench.analysis.load import measurement_source, resumed_note, timings_contended
from peftbench.analysis.meta import BASELINE, FULL_REFERENCE, REFERENCE_ROLES
from peftbench.analysis.stats import ALPHA, PAIRED_TEST_NAME, ZERO_VARIANCE_NOTE, contended_cell, resumed_cell, single_seed_only
from peftbench.experiments.fields import FIELDS, Field

MIB = 2**20
DAGGER = "†"
# Marks a timing taken while other work competed for the cores (the dagger is significance's).
CONTENDED = "‡"
RESUMED = "§"  # a figure that covers only the training after a resumed run's last start
# A figure the run measured but could not trust (cost.mfu_frac above 100%): unknown, not missing.
UNKNOWN = {"cost.mfu_frac": "mfu_unknown"}
SINGLE_SEED_NOTE = "single seed: differences untested"
# Rows compete for bold only within one precision and device: bf16 vs fp32 speed is no contest.
BOLD_SCOPE = ["precision", "device"]


@dataclass(frozen=True)
class Column:
    header: str  # with its unit
    value: Callable[[pd.Series], float]  # the number the best-value bolding compares; NaN = none
    text: Callable[[pd.Series, str], str]  # the cell, for format "md" | "tex" | "html"
    better: str | None  # "higher" | "lower" | None (not compared)
    legend: str
    # Roles never "best" in this column: the full reference is 100% of itself, and methods
    # without an adapter add no adapter latency.
    skip_roles: frozenset[str] = frozenset()
    label: bool = False  # identifies the row (left-aligned, never bolded)
    group: str = "quality"  # quality | cost | serving | forgetting: the report's column groups (shown or hidden together)


def _nan(x: float) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _f(x: float, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if _nan(x) else f"{x * scale:,.{digits}f}"


def _pm(fmt: str) -> str:
    return r"$\pm$" if fmt == "tex" else "±"


def _dagger(fmt: str) -> str:
    return r"$^\dagger$" if fmt == "tex" else DAGGER


def _contended(fmt: str) -> str:
    return r"$^\ddagger$" if fmt == "tex" else CONTENDED


def _resumed(fmt: str) -> str:
    return r"$^\S$" if fmt == "tex" else RESUMED


def _better(direction: str | None) -> str | None:
    return {"max": "higher", "min": "lower"}.get(direction or "")


def percent_scale(table: pd.DataFrame, col: str) -> float:
    """Scores in [0, 1] (accuracy, F1, exact match, ROUGE) show as %; anything else as it is."""
    vals = table[col].dropna().astype(float) if col in table else pd.Series(dtype=float)
    return 100.0 if len(vals) and vals.between(0, 1).all() else 1.0


def _unit(scale: float) -> str:
    return " (%)" if scale == 100 else ""


def _nan_col(r: pd.Series) -> float:
    return math.nan


def score_column(table: pd.DataFrame, col: str, header: str, direction: str | None, legend: str, tested: bool = False,
                 scale: float | None = None, unit: str | None = None, digits: int = 1, group: str = "quality") -> Column:
    """Mean ± std over seeds (n), with a dagger where the paired test against the baseline is
    significant (`tested`, the primary metric only)."""
    scale = percent_scale(table, f"{col}_mean") if scale is None else scale

    def text(r: pd.Series, fmt: str) -> str:
        s = _f(r[f"{col}_mean"], digits, scale)
        if r["n"] > 1 and not _nan(r[f"{col}_std"]):
            s += f" {_pm(fmt)} {_f(r[f'{col}_std'], digits, scale)}"
        if tested:
            s += f" (n={int(r['n'])})"
            if r["vs_baseline_n"] >= 2 and r["vs_baseline_p"] < ALPHA:
                s += _dagger(fmt)
        return s

    return Column(header + (_unit(scale) if unit is None else unit), lambda r: r[f"{col}_mean"], text, _better(direction), legend,
                  group=group)


def _ci_column(table: pd.DataFrame) -> Column:
    scale = percent_scale(table, "primary_mean")

    def text(r: pd.Series, fmt: str) -> str:
        if r["n"] < 2:
            return "–"
        return f"[{_f(r['primary_ci_low'], 1, scale)}, {_f(r['primary_ci_high'], 1, scale)}]"

    return Column(f"{_primary_name(table)} 95% CI{_unit(scale)}", _nan_col, text, None,
                  "95% t-interval of the mean of the primary metric over seeds (n ≥ 2), cut to the values "
                  "the metric can take (its declared range, e.g. 0-100% for a fraction of items).")


def _pct_ft_text(r: pd.Series, fmt: str) -> str:
    if _nan(r["pct_of_full_ft_percent"]):
        return "–"
    return _f(r["pct_of_full_ft_percent"], 1) + ("" if r["pct_of_full_ft_paired"] else "*")


def _vs_baseline_text(scale: float) -> Callable[[pd.Series, str], str]:
    def text(r: pd.Series, fmt: str) -> str:
        if r["role"] == BASELINE or r["vs_baseline_n"] == 0:
            return str(r.get("vs_baseline_note") or "–")  # no baseline, or none of its seeds shared
        diff = f"{r['vs_baseline_diff'] * scale:+.1f}"
        if r["vs_baseline_n"] < 2:
            return f"{diff} (untested, 1 seed)"
        if math.isnan(r["vs_baseline_p"]):
            return f"{diff} ({r.get('vs_baseline_note') or 'untested'}, n={int(r['vs_baseline_n'])})"
        mark = _dagger(fmt) if r["vs_baseline_p"] < ALPHA else ""
        return f"{diff} (p={r['vs_baseline_p']:.3f}, n={int(r['vs_baseline_n'])}){mark}"
    return text


def field_column(f: Field) -> Column:
    """A measured field as a column: header, unit, direction and legend from experiments.fields;
    latency overheads carry their noise and say when the method cannot merge."""
    def value(r: pd.Series) -> float:
        v = r[f.path]
        if f.needs_merge and r["method_info.can_merge"] is False:
            return math.nan
        return abs(v) if f.noise else v

    def number(v: float, r: pd.Series, fmt: str) -> str:
        if f.noise:
            noise = r.get(f.noise, math.nan)
            return f"{v * f.scale:+.{f.digits}f}" + ("" if _nan(noise) else f" {_pm(fmt)} {_f(noise, f.digits, f.scale)}")
        if f.unit == "bytes" and f.path.endswith("reserved_bytes") and r["device"] != "cuda":
            return "–"
        return _f(v, f.digits, f.scale)

    def plain(r: pd.Series, fmt: str) -> str:
        v = r[f.path]
        if _nan(v) and r.get(UNKNOWN.get(f.path, "")):
            return "unknown"  # measured, but out of range: the notes say why
        if not f.adapters_only:
            return number(v, r, fmt)
        # no adapter: '–' unless measured; cannot merge: no merged figure; else missing = switched off
        if r["role"] in REFERENCE_ROLES:
            return "–" if _nan(v) else number(v, r, fmt)
        if f.needs_merge and r["method_info.can_merge"] is False:
            return "n/a (cannot merge)"
        return "not measured" if _nan(v) else number(v, r, fmt)

    def text(r: pd.Series, fmt: str) -> str:
        marked = not _nan(r[f.path]) and contended_cell(r, f.path)
        partial = not _nan(r[f.path]) and resumed_cell(r, f.path)
        return plain(r, fmt) + (_contended(fmt) if marked else "") + (_resumed(fmt) if partial else "")

    skip = frozenset(REFERENCE_ROLES) if f.adapters_only else frozenset()
    return Column(f.label, value, text, _better(f.direction) if f.table in BOLDED_TABLES else None, f"{f.legend} ({f.path})", skip,
                  group="serving" if f.section == "serving" else "cost")


def _lr_text(r: pd.Series, fmt: str) -> str:
    if r.get("protocol") == "lr_search":  # each seed chose its own lr on validation
        return "search: " + ";".join(f"{x:.0e}" for x in r.get("chosen_lrs") or ()) if r.get("chosen_lrs") else "search"
    return "–" if math.isnan(r["lr"]) else f"{r['lr']:.0e}"


def _txt(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: str(r[key])


LABEL_COLUMNS: list[Column] = [
    Column("Method", _nan_col, _txt("method"), None, "Method (its YAML's report.role says which is the full reference and which the baseline).", label=True),
    Column("Family", _nan_col, _txt("family"), None,
           "The method's family (report.family in its YAML); rows are grouped by family, then ordered by report.order.", label=True),
    Column("Capacity", _nan_col, _txt("capacity"), None,
           "The method's capacity (report.capacity_key in its YAML: r for the LoRA family, bottleneck size for adapters); '-' when n/a.", label=True),
    Column("Targets", _nan_col, _txt("targets"), None, "Target-module preset or list; '-' when n/a.", label=True),
    Column("Precision", _nan_col, _txt("precision"), None, "Training precision of the run.", label=True),
    Column("LR", _nan_col, _lr_text, None, "Learning rate.", label=True),
    Column("LR protocol", _nan_col, _txt("protocol"), None,
           "How the lr was chosen: method_default_lr (method YAML), fixed_lr (one lr for all), lr_search (grid, selected on validation).", label=True),
    Column("Steps", _nan_col, _txt("steps"), None, "Optimiser steps (the training budget).", label=True),
    Column("Setting", _nan_col, _txt("setting"), None,
           "Short hash of the rest of the config (everything but the columns before it and the seed: batch size, max length, "
           "method alpha/dropout/..., task and model settings) and the device type that ran. Rows that differ only here are "
           "different runs; the notes list what differs from the table's most common setting.", label=True),
]
N_LABELS = len(LABEL_COLUMNS)


def _first(table: pd.DataFrame, col: str, default: str = "-") -> str:
    vals = [v for v in table[col] if isinstance(v, str) and v != "-"] if col in table else []
    return vals[0] if vals else default


def _primary_name(table: pd.DataFrame) -> str:
    return _first(table, "primary_metric", "primary metric")


def _declared(table: pd.DataFrame) -> list[tuple[str, str, bool]]:
    specs = next((t for t in table["task_metrics"] if t), ()) if "task_metrics" in table else ()
    return [tuple(s) for s in specs]


def _present(table: pd.DataFrame, col: str) -> bool:
    return f"{col}_mean" in table and table[f"{col}_mean"].notna().any()


def metric_columns(table: pd.DataFrame) -> list[Column]:
    """The primary metric (with CI, % of the full reference and Δ vs the baseline), the task's
    other metrics, the base model's score and the gain over it, lm-eval scores, forgetting."""
    primary, direction = _primary_name(table), _first(table, "primary_direction", "max")
    baseline = _first(table[table["role"] == BASELINE], "method", "baseline") if "role" in table else "baseline"
    cols = [score_column(table, "primary", f"{primary} (primary)", direction,
                         f"Test {primary}, the task's primary metric: mean ± sample std over n seeds. "
                         f"{DAGGER}: p<{ALPHA} vs {baseline} ({PAIRED_TEST_NAME}).", tested=True),
            _ci_column(table)]
    for name, d, is_primary in _declared(table):
        if not is_primary and _present(table, f"metrics.test.{name}"):
            cols.append(score_column(table, f"metrics.test.{name}", name, d, f"Test {name} (metrics.test.{name}), mean ± std over seeds."))
    scale = percent_scale(table, "primary_mean")
    if _present(table, "primary_before"):
        cols += [score_column(table, "primary_before", f"Base {primary}", None,  # the same model for all: no contest
                              f"The base model's test {primary} before training (metrics_before.test.{primary}).", scale=scale),
                 score_column(table, "gain_over_base", "Gain over base", "max",
                              f"Test {primary} after training minus before, signed so that positive is better.", scale=scale,
                              unit=" (pp)" if scale == 100 else "")]
    cols += [Column("% of full FT (%)", lambda r: r["pct_of_full_ft_percent"], _pct_ft_text, "higher",
                    f"{primary} relative to the full reference (report.role: full_reference) of the same model, task and precision "
                    f"(same steps and non-method setting preferred); mean of per-seed ratios (* = seeds unmatched: ratio of means).",
                    frozenset({FULL_REFERENCE})),
             Column(f"Δ vs {baseline}{' (pp)' if scale == 100 else ''}", _nan_col, _vs_baseline_text(scale), None,
                    f"{primary} minus the baseline ({baseline}, report.role: baseline) at the same capacity, targets, steps, model, task, "
                    f"precision (same non-method setting preferred); paired over shared seeds, {PAIRED_TEST_NAME}; "
                    f"'{ZERO_VARIANCE_NOTE}' when every seed differs by the same amount.")]
    for col in sorted(c.removesuffix("_mean") for c in table.columns if c.startswith("lm_eval.") and c.endswith("_mean")):
        if _present(table, col):
            cols.append(score_column(table, col, col.removeprefix("lm_eval."), "max", f"lm-eval score ({col}), mean ± std over seeds."))
    if _present(table, "forgetting"):
        key = _first(table, "forgetting_key")
        cols.append(score_column(table, "forgetting", f"Forgetting {key}", "min",
                                 f"forgetting.{key}: how far the model moved outside its task, measured on a fixed probe before and "
                                 f"after training (lower is better; the unit ends its name); mean ± std over seeds.",
                                 scale=1.0, unit="", digits=3, group="forgetting"))
    if _present(table, "cost_score"):
        cols.append(score_column(table, "cost_score", "Cost-penalised score", "max",
                                 f"{primary} x (1 + trainable fraction / C_p)^-b_p x (1 + latency overhead / C_f)^-b_f x "
                                 f"(1 + train memory growth / weights / C_m)^-b_m, after PEFT-Bench's PSCP; constants in "
                                 f"conf/report/cost_score.yaml; mean ± std over seeds.", scale=scale))
    return cols


def main_columns(table: pd.DataFrame) -> list[Column]:
    fields = [field_column(f) for f in FIELDS if f.table == "main"]
    mem_kind = Column("Mem kind", _nan_col, _txt("measurement.memory_kind"), None,
                      "measurement.memory_kind: cpu_rss_hwm = process RSS high-water mark; cuda_* = CUDA allocator peak.", group="cost")
    return [*LABEL_COLUMNS, *metric_columns(table), *fields, mem_kind]


def detail_columns(table: pd.DataFrame | None = None) -> list[Column]:
    return [*LABEL_COLUMNS, *(field_column(f) for f in FIELDS if f.table == "details")]


BOLDED_TABLES = ("main", "serving")


def serving_columns(table: pd.DataFrame | None = None) -> list[Column]:
    """The serving table: measured serving fields, only those some row of `table` has."""
    fields = [f for f in FIELDS if f.table == "serving" and (table is None or (f.path in table and table[f.path].notna().any()))]
    return [*LABEL_COLUMNS, *(field_column(f) for f in fields)]


def has_serving(table: pd.DataFrame) -> bool:
    return len(serving_columns(table)) > N_LABELS


def serving_notes(table: pd.DataFrame) -> list[str]:
    """Why a method has no figure for a part of the serving measurement, as its record says."""
    out = ["Serving costs of the rows above, measured interleaved with the base model like the latency columns; "
           "± is the widest relative 95% CI of the medians behind a figure. Bold: best among rows of the same precision and device."]
    seen: dict[str, list[str]] = {}
    for _, r in table.iterrows():
        for why in str(r.get("serving_skipped") or "").split("; "):
            if why:
                seen.setdefault(why, []).append(str(r["method"]))
    out += [f"{', '.join(dict.fromkeys(methods))}: {why}." for why, methods in seen.items()]
    return out + measurement_notes(table)


def best_rows(table: pd.DataFrame, col: Column) -> set[int]:
    """Positions of the best value of a numeric column (all ties), direction-aware, within each
    precision and device of the table."""
    if col.better is None:
        return set()
    vals = [math.nan if r["role"] in col.skip_roles else col.value(r) for _, r in table.iterrows()]
    scope = [tuple(r.get(k, "-") for k in BOLD_SCOPE) for _, r in table.iterrows()]
    best: set[int] = set()
    for key in set(scope):
        best |= _best_of([(i, v) for i, (v, s) in enumerate(zip(vals, scope)) if s == key], col.better)
    return best


def _best_of(vals: list[tuple[int, float]], better: str) -> set[int]:
    finite = [v for _, v in vals if not _nan(v)]
    if len(finite) < 2:  # one value is not "best" of anything
        return set()
    best = max(finite) if better == "higher" else min(finite)
    return {i for i, v in vals if not _nan(v) and math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)}


SORT_KEY = ["order", "method", "precision", "capacity_value", "capacity", "targets", "lr", "protocol", "steps", "setting"]


def table_groups(agg: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(model, task) -> its rows, sorted for reading: the methods' report.order, then capacity,
    targets."""
    return [((str(model), str(task)), t.sort_values(SORT_KEY).reset_index(drop=True))
            for (model, task), t in agg.groupby(["model", "task"], sort=True)]


def cells(table: pd.DataFrame, fmt: str, columns: list[Column]) -> list[list[tuple[str, bool]]]:
    """Cell text and bold flag, row by row."""
    best = [best_rows(table, c) for c in columns]
    return [[(c.text(r, fmt), i in best[j]) for j, c in enumerate(columns)] for i, (_, r) in enumerate(table.iterrows())]


def notes(table: pd.DataFrame) -> list[str]:
    out = []
    baseline = _first(table[table["role"] == BASELINE], "method", "the baseline")
    if single_seed_only(table):
        out.append(SINGLE_SEED_NOTE + " (every configuration has one seed; no significance is implied).")
    else:
        out.append(f"{DAGGER} p < {ALPHA} vs {baseline} at the same capacity/targets ({PAIRED_TEST_NAME}); untested where fewer than 2 "
                   f"shared seeds or where every seed differs by the same amount ({ZERO_VARIANCE_NOTE}). Each row is tested on its own, "
                   f"with no correction for multiple comparisons: with many rows, expect some {DAGGER} by chance.")
    out.append("Bold: best value of each numeric column among rows of the same precision and device "
               "(in each metric's own direction; lower params/memory/time/latency/size/forgetting).")
    return out + setting_notes(table) + measurement_notes(table)


def detail_notes(table: pd.DataFrame) -> list[str]:
    return ["Cost details of the rows above (same row labels; no bolding). '–': not recorded "
            "(peak reserved is CUDA-only); 'not measured': latency was off; 'n/a (cannot merge)': the method cannot merge.",
            *measurement_notes(table)]


def _pairs(table: pd.DataFrame, col: str) -> list[tuple[str, str]]:
    """Every (run, text) pair a column of aggregated rows holds, once, in order."""
    pairs = [p for v in (table[col] if col in table else []) if isinstance(v, tuple) for p in v]
    return list(dict.fromkeys(pairs))


def measurement_notes(table: pd.DataFrame) -> list[str]:
    """Which runs' timings were contended and why, which runs' MFU is unknown and why, and which
    runs copied their seed- and lr-independent costs from another: nothing for older records."""
    out = []
    contended = list(dict.fromkeys(_pairs(table, "contended_runs") + _pairs(table, "contended_costs")))
    if contended:
        out.append(f"{CONTENDED} timing figures (throughput, step time, latency, MFU, serving times) of rows with runs timed while "
                   f"other work competed for the cores (measurement.contended): "
                   + "; ".join(f"{run}: {why or 'no reason recorded'}" for run, why in contended) + ".")
    resumed = _pairs(table, "resumed_runs")
    if resumed:
        out.append(f"{RESUMED} training and total time of rows with runs resumed from a checkpoint (checkpoint.resumed_from_step): "
                   + "; ".join(f"{run}: {why}" for run, why in resumed) + ".")
    unknown = _pairs(table, "mfu_unknown")
    if unknown:
        out.append("MFU 'unknown' (or a mean over fewer runs): " + "; ".join(f"{run}: {why}" for run, why in unknown) + ".")
    copied: dict[str, list[str]] = {}
    for run, source in _pairs(table, "costs_copied"):
        copied.setdefault(source, []).append(run)
    if copied:
        out.append("Latency, serving and adapter-size figures copied from an earlier run of the same cost configuration (same config "
                   "but seed and lr), not measured again; they enter these means as they are, and claims count each measurement once: "
                   + "; ".join(f"{', '.join(runs)} from {source}" for source, runs in copied.items()) + ".")
    return out


def columns_and_notes(table: pd.DataFrame, details: bool | str) -> tuple[list[Column], list[str]]:
    """details: False for the main table, True for cost details, "serving" for serving costs."""
    if details == "serving":
        return serving_columns(table), serving_notes(table)
    return (detail_columns(table), detail_notes(table)) if details else (main_columns(table), notes(table))


# ---------------------------------------------------------------- setting notes

def _show(value: str | None) -> str:
    """A JSON value as a reader wants it: strings unquoted, long lists cut."""
    if value is None:
        return "absent"
    v = json.loads(value)
    s = v if isinstance(v, str) else json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _usual(table: pd.DataFrame, prefer: str = "") -> str:
    """The most common setting among these rows (ties: `prefer`, then the smallest hash, so the
    output is stable and a method's odd run is compared with the table's usual setting)."""
    counts = table["setting"].value_counts()
    return min(counts.index, key=lambda s: (-counts[s], s != prefer, s))


def setting_diff(mine: Mapping[str, str], usual: Mapping[str, str], method_usual: Mapping[str, str]) -> list[str]:
    """'key=value (vs other)' for each differing key; method.* keys are compared with the usual
    setting of the same method (another method's own parameters are no difference)."""
    out = []
    for key in sorted(set(mine) | set(usual) | set(method_usual)):
        ref = method_usual if key.startswith("method.") else usual
        if mine.get(key) != ref.get(key) and (key in mine or key in ref):
            out.append(f"{key}={_show(mine.get(key))} (vs {_show(ref.get(key))})")
    return out


def setting_notes(table: pd.DataFrame) -> list[str]:
    """For every setting but the table's most common one, the config keys that differ from it."""
    if table.empty or table["setting"].nunique() < 2:
        return []
    usual = _usual(table)
    items = {s: table[table["setting"] == s].iloc[0]["setting_items"] for s in table["setting"].unique()}
    out, method_only = [], False
    for s in sorted(items, key=lambda s: (s != usual, s)):
        if s == usual:
            continue
        rows = table[table["setting"] == s].sort_values(["order", "method"])
        methods = list(dict.fromkeys(rows["method"]))
        method_usual = _usual(table[table["method"] == methods[0]], prefer=usual)
        diffs = setting_diff(items[s], items[usual], items[method_usual])
        if diffs:
            out.append(f"Setting {s} ({', '.join(methods)}) differs from {usual} (most common): " + "; ".join(diffs) + ".")
        else:
            method_only = True
    if method_only:
        out.append(f"Other settings differ from {usual} only in their method's own parameters (method.*).")
    return out


# ---------------------------------------------------------------- Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(title: str, table: pd.DataFrame, details: bool | str = False) -> str:
    """The main table, or with details=True the cost-details table of the same rows."""
    columns, note = columns_and_notes(table, details)
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(f"**{_md_escape(t)}**" if b else _md_escape(t) for t, b in row) + " |" for row in cells(table, "md", columns)]
    return "\n".join([f"### {title}", "", head, rule, *body, "", *[f"- {n}" for n in note], ""])


def markdown_legend(tables: list[pd.DataFrame]) -> str:
    """Every column of these tables once, with its legend."""
    main: dict[str, str] = {}
    for t in tables:
        main.update({c.header: c.legend for c in main_columns(t)})
    details = {c.header: c.legend for c in detail_columns()[N_LABELS:]}
    serving = {c.header: c.legend for c in serving_columns()[N_LABELS:]}
    return "\n".join(["## Columns", "", *[f"- **{h}**: {l}" for h, l in main.items()], "",
                      "## Cost-details columns", "", *[f"- **{h}**: {l}" for h, l in details.items()], "",
                      "## Serving columns", "", *[f"- **{h}**: {l}" for h, l in serving.items()], ""])


# ---------------------------------------------------------------- LaTeX

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    """Escape LaTeX specials in plain text; our own math ($\\pm$, $^\\dagger$) is kept."""
    keep = {r"$\pm$": "\x00PM\x00", r"$^\dagger$": "\x00DAG\x00", r"$^\ddagger$": "\x00DDAG\x00"}
    for k, v in keep.items():
        s = s.replace(k, v)
    s = "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)
    s = s.replace("–", "--").replace("Δ", r"$\Delta$").replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("≥", r"$\geq$")
    s = s.replace("‡", r"$^\ddagger$")
    for k, v in keep.items():
        s = s.replace(v, k)
    return s


def to_latex(title: str, table: pd.DataFrame, details: bool | str = False) -> str:
    columns, note = columns_and_notes(table, details)
    spec = "l" * N_LABELS + "r" * (len(columns) - N_LABELS)
    head = " & ".join(tex_escape(c.header) for c in columns) + r" \\"
    body = [" & ".join(r"\textbf{" + tex_escape(t) + "}" if b else tex_escape(t) for t, b in row) + r" \\"
            for row in cells(table, "tex", columns)]
    return "\n".join([
        r"\begin{table}[ht]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
        r"\caption{" + tex_escape(title) + ". " + tex_escape(" ".join(note)) + "}",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{" + spec + "}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}}", r"\end{table}", ""])


LATEX_PREAMBLE = "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
                            r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage[margin=1cm,landscape]{geometry}",
                            r"\begin{document}", ""])


# ---------------------------------------------------------------- HTML

def to_html(title: str, table: pd.DataFrame, details: bool | str = False) -> str:
    from html import escape

    columns, notes_ = columns_and_notes(table, details)
    # the legend rides along as a tooltip: the page has no separate legend section
    # data-group: the page's toggles show or hide a group of columns together (analysis/report.js)
    head = "".join(f"<th title='{escape(c.legend)}' data-group='{'label' if c.label else c.group}'>{escape(c.header)}</th>"
                   for c in columns)
    body = "".join("<tr>" + "".join(f"<td><b>{escape(t)}</b></td>" if b else f"<td>{escape(t)}</td>" for t, b in row) + "</tr>"
                   for row in cells(table, "html", columns))
    note = "".join(f"<li>{escape(n)}</li>" for n in notes_)
    return (f"<h3>{escape(title)}</h3><div class='scroll'><table class='data'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div><ul class='notes'>{note}</ul>")


# ---------------------------------------------------------------- CSV

LABEL_CSV = ["model", "task", "method", "capacity", "targets", "precision", "lr", "chosen_lrs", "protocol", "steps", "setting", "device",
             "n", "seeds", "primary_metric", "primary_direction"]
COMPARISON_CSV = ["pct_of_full_ft_percent", "pct_of_full_ft_paired", "vs_baseline_method", "vs_baseline_diff", "vs_baseline_p",
                  "vs_baseline_n", "vs_baseline_note", "forgetting_key"]


def csv_columns(table: pd.DataFrame) -> list[str]:
    """Every column a reader may want to re-plot, under the names the record and the report use:
    scores as <name>_mean/_std/_ci95 (fractions stay fractions: 0.88 = 88%), measured fields
    by their record path (units in the name), then measurement and method facts."""
    scores = [c for c in table.columns if c.endswith(("_mean", "_std", "_ci95")) and table[c].notna().any()]
    return [*LABEL_CSV, *scores, *COMPARISON_CSV, *(f.path for f in FIELDS), "measurement.memory_kind", "method_info.can_merge"]


def to_csv(table: pd.DataFrame) -> str:
    """Raw numbers (fractions, bytes); seeds as 0;1;2."""
    out = table[csv_columns(table)].copy()
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    out["chosen_lrs"] = out["chosen_lrs"].map(lambda s: ";".join(f"{x:g}" for x in s))  # lr_search rows: each seed's pick
    return out.to_csv(index=False)


# ---------------------------------------------------------------- one row per run

def _score(v: float) -> str:
    return "–" if _nan(v) else (f"{100 * v:.1f}%" if 0 <= v <= 1 else f"{v:.4g}")


def _others(r: pd.Series) -> str:
    names = [c for c in r.index if c.startswith(("metrics.test.", "lm_eval.")) and c != f"metrics.test.{r['primary_metric']}"]
    return "; ".join(f"{c.removeprefix('metrics.test.')}={_score(r[c])}" for c in names if not _nan(r[c])) or "–"


RUN_COLUMNS: list[tuple[str, Callable[[pd.Series], str]]] = [
    *[(h, (lambda c: lambda r: str(r[c]))(c)) for h, c in (("Model", "model"), ("Task", "task"), ("Method", "method"),
                                                            ("Capacity", "capacity"), ("Targets", "targets"), ("Precision", "precision"))],
    ("LR", lambda r: f"{r['chosen_lr']:.0e}"), ("Steps", lambda r: str(r["steps"])), ("Setting", lambda r: str(r["setting"])),
    ("Seed", lambda r: str(r["seed"])),
    ("Trainable params (count)", lambda r: "–" if _nan(r["params.trainable"]) else f"{int(r['params.trainable']):,}"),
    ("Trainable (%)", lambda r: _f(r["params.trainable_pct"], 3)),
    ("Primary metric", lambda r: str(r["primary_metric"])), ("Score", lambda r: _score(r["primary"])),
    ("Base score", lambda r: _score(r["primary_before"])), ("Other scores", _others),
    ("Forgetting", lambda r: "–" if _nan(r["forgetting"]) else f"{r['forgetting_key']}={r['forgetting']:.4g}"),
    ("% of full FT, same seed (%)", lambda r: _f(r["pct_of_full_ft_same_seed_percent"], 1)),
]


def _measured(r: pd.Series) -> str:
    """How a run's figures were taken, where that is not simply 'all measured by itself, alone'."""
    parts = []
    if measurement_source(r) != r["run_id"]:
        parts.append(f"latency/serving/adapter size copied from {measurement_source(r)}")
    if timings_contended(r, copied=False):
        parts.append(f"timings contended{CONTENDED}: {r.get('measurement.contended_reason') or 'no reason recorded'}")
    elif timings_contended(r, copied=True):
        parts.append(f"copied timings contended{CONTENDED}: {r.get('costs_contended_reason') or 'no reason recorded'}")
    why = r.get("measurement.mfu_unknown_reason")
    if isinstance(why, str) and why:
        parts.append(f"MFU unknown: {why}")
    if resumed_note(r):
        parts.append(f"{resumed_note(r)}{RESUMED}")
    return "; ".join(parts) or "–"


def _has_measurement_notes(runs: pd.DataFrame) -> bool:
    return any(_measured(r) != "–" for _, r in runs.iterrows())


MEASURED_COLUMN = ("Measurement", _measured)
MEASURED_NOTE = (f"Measurement: where a run's seed- and lr-independent figures (latency, serving, adapter size) were copied from an "
                 f"earlier run of the same cost configuration instead of measured, and {CONTENDED} where its timings (throughput, "
                 f"step time, latency, MFU) were taken while other work competed for the cores, with the record's reason.")


def runs_markdown(runs: pd.DataFrame, not_averaged: pd.DataFrame | None = None) -> str:
    """Every run on its own row: its primary metric, against the full-reference run of the same
    model, task and seed ('–' where there is none); then the runs left out of every mean. A
    Measurement column appears only where some run copied its costs or was timed under contention."""
    columns = RUN_COLUMNS + ([MEASURED_COLUMN] if _has_measurement_notes(runs) else [])
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    lines = ["# Runs", "", "One row per run (seeds not aggregated; the tables in tables.md aggregate them).", "",
             head, "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_escape(fmt(r)) for _, fmt in columns) + " |" for _, r in runs.iterrows()]
    if len(columns) > len(RUN_COLUMNS):
        lines += ["", f"- {MEASURED_NOTE}"]
    if not_averaged is not None and not not_averaged.empty:
        lines += ["", "## Runs without results in any mean", "", "| Status | Model | Task | Method | Seed | Why |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['status']} | {r['model']} | {r['task']} | {r['method']} | {r['seed']} | {_md_escape(str(r['error']))} |"
                  for _, r in not_averaged.iterrows()]
    return "\n".join(lines) + "\n"


RUN_CSV = ["model", "task", "method", "capacity", "targets", "precision", "lr", "protocol", "steps", "setting", "device", "seed",
           "run_id", "params.trainable", "params.trainable_pct", "primary_metric", "primary", "primary_before", "gain_over_base",
           "forgetting_key", "forgetting", "pct_of_full_ft_same_seed_percent"]


RUN_MEASUREMENT_CSV = ["measurement.costs_from", "measurement.contended", "measurement.contended_reason",
                       "measurement.mfu_unknown_reason", "checkpoint.resumed_from_step", "checkpoint.train_s_before_resume"]


def runs_csv(runs: pd.DataFrame) -> str:
    extra = sorted(c for c in runs.columns if c.startswith(("metrics.test.", "lm_eval.")))
    # older records have nothing to say here: their CSV keeps its columns
    measured = RUN_MEASUREMENT_CSV if _has_measurement_notes(runs) else []
    # one name per quantity: a run's lr is the one it trained at (the frame's `lr` is its row's,
    # none under an lr search, where each seed picks its own)
    runs = runs.drop(columns="lr").rename(columns={"chosen_lr": "lr"})
    return runs[RUN_CSV + extra + measured].to_csv(index=False)
