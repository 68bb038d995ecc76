"""Tables: one per model x task, one row per method x rank x targets x precision x lr x steps x
setting, plus a cost-details table with the same row labels.

The same cell model renders Markdown, HTML, LaTeX (booktabs, best value per column within each
precision and device in bold) and CSV (raw numbers, every column, for anyone who wants to re-plot).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd

from analysis.load import DETAIL_COST_KEYS
from analysis.stats import ALPHA, PAIRED_TEST_NAME, ZERO_VARIANCE_NOTE, single_seed_only

MIB = 2**20
DAGGER = "†"
SINGLE_SEED_NOTE = "single seed: differences untested"
# Not adapters: nothing to merge, and their latency "overhead" is no adapter's cost.
NOT_ADAPTERS = frozenset({"full_ft", "linear_probe"})
# Rows compete for bold only within one precision and device: bf16 vs fp32 speed is no contest.
BOLD_SCOPE = ["precision", "device"]


@dataclass(frozen=True)
class Column:
    header: str  # with its unit
    value: Callable[[pd.Series], float]  # the number the best-value bolding compares; NaN = none
    text: Callable[[pd.Series, str], str]  # the cell, for format "md" | "tex" | "html"
    better: str | None  # "higher" | "lower" | None (not compared)
    legend: str
    # Methods never "best" in this column: full FT is the reference for "% of full FT" (100% of
    # itself), and non-adapters add no adapter latency.
    skip: frozenset[str] = frozenset()
    label: bool = False  # identifies the row (left-aligned, never bolded)


def _f(x: float, digits: int = 1, scale: float = 1.0) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:,.{digits}f}"


def _pm(fmt: str) -> str:
    return r"$\pm$" if fmt == "tex" else "±"


def _dagger(fmt: str) -> str:
    return r"$^\dagger$" if fmt == "tex" else DAGGER


def _acc_text(r: pd.Series, fmt: str) -> str:
    s = _f(r["accuracy_mean"], 1, 100)
    if r["n"] > 1:
        s += f" {_pm(fmt)} {_f(r['accuracy_std'], 1, 100)}"
    s += f" (n={int(r['n'])})"
    if r["vs_lora_n"] >= 2 and r["vs_lora_p"] < ALPHA:
        s += _dagger(fmt)
    return s


def _f1_text(r: pd.Series, fmt: str) -> str:
    s = _f(r["macro_f1_mean"], 1, 100)
    return s + (f" {_pm(fmt)} {_f(r['macro_f1_std'], 1, 100)}" if r["n"] > 1 else "")


def _ci_text(r: pd.Series, fmt: str) -> str:
    if r["n"] < 2:
        return "–"
    lo, hi = r["accuracy_mean"] - r["accuracy_ci95"], r["accuracy_mean"] + r["accuracy_ci95"]
    return f"[{_f(lo, 1, 100)}, {_f(hi, 1, 100)}]"


def _pct_ft_text(r: pd.Series, fmt: str) -> str:
    if math.isnan(r["pct_full_ft"]):
        return "–"
    return _f(r["pct_full_ft"], 1) + ("" if r["pct_full_ft_paired"] else "*")


def _vs_lora_text(r: pd.Series, fmt: str) -> str:
    if r["method"] == "lora" or r["vs_lora_n"] == 0:
        return str(r.get("vs_lora_note") or "–")  # no LoRA reference, or none of its seeds shared
    diff = f"{r['vs_lora_diff'] * 100:+.1f}"
    if r["vs_lora_n"] < 2:
        return f"{diff} (untested, 1 seed)"
    if math.isnan(r["vs_lora_p"]):
        return f"{diff} ({r.get('vs_lora_note') or 'untested'}, n={int(r['vs_lora_n'])})"
    mark = _dagger(fmt) if r["vs_lora_p"] < ALPHA else ""
    return f"{diff} (p={r['vs_lora_p']:.3f}, n={int(r['vs_lora_n'])}){mark}"


def _nan(x: float) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _latency_cell(r: pd.Series, key: str, measured: Callable[[float], str]) -> str:
    """Latency rules: non-adapters show '–' unless measured; an adapter that cannot merge has no
    merged latency; anything else missing was switched off (measure.latency=false)."""
    value = r[key]
    if r["method"] in NOT_ADAPTERS:
        return "–" if _nan(value) else measured(value)
    if key in MERGED_KEYS and r["can_merge"] is False:
        return "n/a (cannot merge)"
    return "not measured" if _nan(value) else measured(value)


MERGED_KEYS = {"lat_merged", "lat_ms_merged"}


def _lat_text(key: str) -> Callable[[pd.Series, str], str]:
    def text(r: pd.Series, fmt: str) -> str:
        noise = "" if _nan(r["lat_noise"]) else f" {_pm(fmt)} {_f(r['lat_noise'], 1, 100)}"
        return _latency_cell(r, key, lambda v: f"{v * 100:+.1f}{noise}")
    return text


def _lat_ms_text(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: _latency_cell(r, key, lambda v: _f(v, 2))


def _cuda_only(key: str, scale: float) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: _f(r[key], 1, scale) if r["device"] == "cuda" else "–"


def _merged_value(r: pd.Series) -> float:
    return r["lat_merged"] if r["can_merge"] is not False else math.nan


def _plain(key: str, digits: int = 1, scale: float = 1.0) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: _f(r[key], digits, scale)


def _int(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: "–" if math.isnan(r[key]) else f"{int(round(r[key])):,}"


def _lr_text(r: pd.Series, fmt: str) -> str:
    if r.get("protocol") == "lr_search":  # each seed chose its own lr on validation
        return "search: " + ";".join(f"{x:.0e}" for x in r.get("chosen_lrs") or ()) if r.get("chosen_lrs") else "search"
    return "–" if math.isnan(r["lr"]) else f"{r['lr']:.0e}"


def _txt(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: str(r[key])


NAN = lambda r: math.nan  # noqa: E731  (label columns are never bolded)

LABEL_COLUMNS: list[Column] = [
    Column("Method", NAN, _txt("method"), None, "PEFT method (full_ft = full fine-tuning).", label=True),
    Column("Rank", NAN, _txt("rank"), None, "LoRA-family rank r; bottleneck adapters: bottleneck size b<n> or reduction factor rf<n>; '-' when n/a.", label=True),
    Column("Targets", NAN, _txt("targets"), None, "Target-module preset or list; '-' when n/a.", label=True),
    Column("Precision", NAN, _txt("precision"), None, "Training precision of the run.", label=True),
    Column("LR", NAN, _lr_text, None, "Learning rate.", label=True),
    Column("LR protocol", NAN, _txt("protocol"), None,
           "How the lr was chosen: method_default_lr (method YAML), fixed_lr (one lr for all), lr_search (grid, selected on validation).", label=True),
    Column("Steps", NAN, _txt("steps"), None, "Optimiser steps (the training budget).", label=True),
    Column("Setting", NAN, _txt("setting"), None,
           "Short hash of the rest of the config (everything but the columns before it and the seed: batch size, max length, "
           "method alpha/dropout/..., task and model settings) and the device type that ran. Rows that differ only here are "
           "different runs; the notes list what differs from the table's most common setting.", label=True),
]

COLUMNS: list[Column] = [
    *LABEL_COLUMNS,
    Column("Accuracy (%)", lambda r: r["accuracy_mean"], _acc_text, "higher",
           f"Test accuracy, mean ± sample std over n seeds. {DAGGER}: p<{ALPHA} vs LoRA ({PAIRED_TEST_NAME})."),
    Column("Acc. 95% CI (%)", NAN, _ci_text, None, "95% t-interval of the mean test accuracy (n ≥ 2)."),
    Column("Macro-F1 (%)", lambda r: r["macro_f1_mean"], _f1_text, "higher", "Test macro-F1, mean ± std over seeds."),
    Column("% of full FT (%)", lambda r: r["pct_full_ft"], _pct_ft_text, "higher",
           "Accuracy relative to full fine-tuning of the same model, task and precision (same steps and non-method setting preferred); "
           "mean of per-seed ratios (* = seeds unmatched: ratio of means).", frozenset({"full_ft"})),
    Column("Δ acc vs LoRA (pp)", NAN, _vs_lora_text, None,
           f"Accuracy minus LoRA at the same rank, targets, steps, model, task, precision (same non-method setting preferred); "
           f"paired over shared seeds, {PAIRED_TEST_NAME}; '{ZERO_VARIANCE_NOTE}' when every seed differs by the same amount."),
    Column("Trainable params (count)", lambda r: r["trainable_params"], _int("trainable_params"), "lower", "Parameters updated by the optimiser."),
    Column("Trainable (%)", lambda r: r["trainable_pct"], _plain("trainable_pct", 3), "lower", "Trainable / total parameters."),
    Column("Peak train mem (MiB)", lambda r: r["peak_mem_bytes"], _plain("peak_mem_bytes", 1, 1 / MIB), "lower",
           "Peak memory growth during training (cost.peak_train_mem_growth_bytes); what was measured is in 'Mem kind'."),
    Column("Mem kind", NAN, _txt("memory_kind"), None, "cpu_rss_hwm: process RSS high-water mark; cuda_*: CUDA allocator peak."),
    Column("Weights (MiB)", lambda r: r["weight_bytes"], _plain("weight_bytes", 1, 1 / MIB), "lower", "Bytes of all model weights as trained (4-bit for QLoRA)."),
    Column("Train tok/s (tokens/s)", lambda r: r["tokens_per_s"], _int("tokens_per_s"), "higher", "Median training throughput after warm-up steps."),
    Column("Step time (ms)", lambda r: r["step_time_ms"], _plain("step_time_ms", 1), "lower", "Median optimiser-step wall time."),
    Column("MFU (%)", lambda r: r["mfu"], _plain("mfu", 1, 100), "higher", "Model FLOPs utilisation: achieved FLOP/s over measured peak FLOP/s of the device."),
    Column("Latency overhead unmerged (%)", lambda r: abs(r["lat_unmerged"]), _lat_text("lat_unmerged"), "lower",
           "Inference latency vs the base model with the adapter unmerged; ± is the run's measured latency noise (cost.latency_noise_rel). "
           "Bold: smallest |overhead|. 'not measured': latency was off (measure.latency=false); '–' for full_ft/linear_probe (not adapters).",
           NOT_ADAPTERS),
    Column("Latency overhead merged (%)", lambda r: abs(_merged_value(r)), _lat_text("lat_merged"), "lower",
           "Same, after merging the adapter into the weights; 'n/a (cannot merge)' when cost.can_merge is false, 'not measured' when latency was off.",
           NOT_ADAPTERS),
    Column("Adapter size (KiB)", lambda r: r["adapter_bytes"], _plain("adapter_bytes", 1, 1 / 1024), "lower", "Bytes saved per task (adapter + head; full FT: whole model)."),
]

GFLOP, TFLOP = 1e9, 1e12


def _detail(header: str, text: Callable[[pd.Series, str], str], legend: str) -> Column:
    return Column(header, NAN, text, None, legend)  # details are reference figures: no bolding


# Second table per model x task: every other cost figure of the record, same row labels.
DETAIL_COLUMNS: list[Column] = [
    *LABEL_COLUMNS,
    _detail("Est. train mem (MiB)", _plain("est_mem_bytes", 1, 1 / MIB),
            "Estimated training memory growth from the parameter count, optimiser state and activations (cost.est_train_mem_growth_bytes)."),
    _detail("Measured / est. mem (×)", _plain("mem_over_est", 2), "Peak train mem divided by the estimate (cost.mem_measured_over_estimated)."),
    _detail("Peak reserved (MiB)", _cuda_only("peak_reserved_bytes", 1 / MIB),
            "CUDA allocator peak reserved memory (cost.peak_train_reserved_bytes); '–' on CPU."),
    _detail("Train samples/s (samples/s)", _plain("samples_per_s", 1), "Median training throughput in examples (cost.train_samples_per_s_median)."),
    _detail("Step time p10 (ms)", _plain("step_time_ms_p10", 1), "10th percentile of optimiser-step wall time (cost.step_time_ms_p10)."),
    _detail("Step time p90 (ms)", _plain("step_time_ms_p90", 1), "90th percentile of optimiser-step wall time (cost.step_time_ms_p90)."),
    _detail("Train tok/s p10 (tokens/s)", _int("tokens_per_s_p10"), "10th percentile of training throughput (cost.train_tokens_per_s_p10)."),
    _detail("Train tok/s p90 (tokens/s)", _int("tokens_per_s_p90"), "90th percentile of training throughput (cost.train_tokens_per_s_p90)."),
    _detail("FLOPs/step (GFLOP)", _plain("flops_per_step", 1, 1 / GFLOP), "Model FLOPs per optimiser step (cost.flops_per_step)."),
    _detail("Peak FLOP/s (TFLOP/s)", _plain("peak_flops_per_s", 2, 1 / TFLOP),
            "Measured peak FLOP/s of the device and dtype, the denominator of MFU (cost.peak_flops_per_s)."),
    _detail("Train time (s)", _plain("train_s", 1), "Wall time of the training loop (timing.train_s)."),
    _detail("Eval time (s)", _plain("eval_s", 1), "Wall time of evaluation (timing.eval_s)."),
    _detail("Latency base (ms)", _lat_ms_text("lat_ms_base"), "Median inference latency of the base model (cost.latency_ms_base)."),
    _detail("Latency unmerged (ms)", _lat_ms_text("lat_ms_unmerged"), "Median inference latency with the adapter unmerged (cost.latency_ms_unmerged)."),
    _detail("Latency merged (ms)", _lat_ms_text("lat_ms_merged"),
            "Median inference latency after merging (cost.latency_ms_merged); 'n/a (cannot merge)' when cost.can_merge is false."),
]
N_LABELS = len(LABEL_COLUMNS)


def best_rows(table: pd.DataFrame, col: Column) -> set[int]:
    """Positions of the best value of a numeric column (all ties), direction-aware, within each
    precision and device of the table."""
    if col.better is None:
        return set()
    vals = [math.nan if r["method"] in col.skip else col.value(r) for _, r in table.iterrows()]
    scope = [tuple(r.get(k, "-") for k in BOLD_SCOPE) for _, r in table.iterrows()]
    best: set[int] = set()
    for key in set(scope):
        best |= _best_of([(i, v) for i, (v, s) in enumerate(zip(vals, scope)) if s == key], col.better)
    return best


def _best_of(vals: list[tuple[int, float]], better: str) -> set[int]:
    finite = [v for _, v in vals if not math.isnan(v)]
    if len(finite) < 2:  # one value is not "best" of anything
        return set()
    best = max(finite) if better == "higher" else min(finite)
    return {i for i, v in vals if not math.isnan(v) and math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)}


def table_groups(agg: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(model, task) -> its rows, sorted for reading: method order, then rank, targets."""
    out = []
    for (model, task), t in agg.groupby(["model", "task"], sort=True):
        t = t.assign(_order=t["method"].map(method_order)).sort_values(
            ["_order", "method", "precision", "rank_value", "rank", "targets", "lr", "protocol", "steps", "setting"]).drop(columns="_order")
        out.append(((str(model), str(task)), t.reset_index(drop=True)))
    return out


METHOD_ORDER = ["full_ft", "linear_probe", "lora", "qlora", "dora", "rslora", "loraplus", "houlsby", "pfeiffer"]


def method_order(name: str) -> int:
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def cells(table: pd.DataFrame, fmt: str, columns: list[Column] = COLUMNS) -> list[list[tuple[str, bool]]]:
    """Cell text and bold flag, row by row."""
    best = [best_rows(table, c) for c in columns]
    return [[(c.text(r, fmt), i in best[j]) for j, c in enumerate(columns)] for i, (_, r) in enumerate(table.iterrows())]


def notes(table: pd.DataFrame) -> list[str]:
    out = []
    if single_seed_only(table):
        out.append(SINGLE_SEED_NOTE + " (every configuration has one seed; no significance is implied).")
    else:
        out.append(f"{DAGGER} p < {ALPHA} vs LoRA at the same rank/targets ({PAIRED_TEST_NAME}); untested where fewer than 2 shared seeds "
                   f"or where every seed differs by the same amount ({ZERO_VARIANCE_NOTE}). Each row is tested on its own, "
                   f"with no correction for multiple comparisons: with many rows, expect some {DAGGER} by chance.")
    out.append("Bold: best value of each numeric column among rows of the same precision and device "
               "(higher accuracy/F1/throughput/MFU; lower params/memory/time/latency/size).")
    return out + setting_notes(table)


def detail_notes(table: pd.DataFrame) -> list[str]:
    return ["Cost details of the rows above (same row labels; no bolding). '–': not recorded "
            "(peak reserved is CUDA-only); 'not measured': latency was off; 'n/a (cannot merge)': the method cannot merge."]


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
        methods = sorted(set(table[table["setting"] == s]["method"]), key=method_order)
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


def to_markdown(title: str, table: pd.DataFrame, details: bool = False) -> str:
    """The main table, or with details=True the cost-details table of the same rows."""
    columns, note = (DETAIL_COLUMNS, detail_notes(table)) if details else (COLUMNS, notes(table))
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(f"**{_md_escape(t)}**" if b else _md_escape(t) for t, b in row) + " |" for row in cells(table, "md", columns)]
    return "\n".join([f"### {title}", "", head, rule, *body, "", *[f"- {n}" for n in note], ""])


def markdown_legend() -> str:
    details = DETAIL_COLUMNS[N_LABELS:]
    return "\n".join(["## Columns", "", *[f"- **{c.header}**: {c.legend}" for c in COLUMNS], "",
                      "## Cost-details columns", "", *[f"- **{c.header}**: {c.legend}" for c in details], ""])


# ---------------------------------------------------------------- LaTeX

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    """Escape LaTeX specials in plain text; our own math ($\\pm$, $^\\dagger$) is kept."""
    keep = {r"$\pm$": "\x00PM\x00", r"$^\dagger$": "\x00DAG\x00"}
    for k, v in keep.items():
        s = s.replace(k, v)
    s = "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)
    s = s.replace("–", "--").replace("Δ", r"$\Delta$").replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("≥", r"$\geq$")
    for k, v in keep.items():
        s = s.replace(v, k)
    return s


def to_latex(title: str, table: pd.DataFrame, details: bool = False) -> str:
    columns, note = (DETAIL_COLUMNS, detail_notes(table)) if details else (COLUMNS, notes(table))
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

def to_html(title: str, table: pd.DataFrame, details: bool = False) -> str:
    from html import escape

    columns, notes_ = (DETAIL_COLUMNS, detail_notes(table)) if details else (COLUMNS, notes(table))
    # the legend rides along as a tooltip: the page has no separate legend section
    head = "".join(f"<th title='{escape(c.legend)}'>{escape(c.header)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td><b>{escape(t)}</b></td>" if b else f"<td>{escape(t)}</td>" for t, b in row) + "</tr>"
                   for row in cells(table, "html", columns))
    note = "".join(f"<li>{escape(n)}</li>" for n in notes_)
    return (f"<h3>{escape(title)}</h3><div class='scroll'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div><ul class='notes'>{note}</ul>")


# ---------------------------------------------------------------- CSV

CSV_COLUMNS = [
    "model", "task", "method", "rank", "targets", "precision", "lr", "chosen_lrs", "protocol", "steps", "setting", "device", "n", "seeds",
    "accuracy_mean", "accuracy_std", "accuracy_ci95", "macro_f1_mean", "macro_f1_std", "pct_full_ft", "pct_full_ft_paired",
    "vs_lora_diff", "vs_lora_p", "vs_lora_n", "vs_lora_note", "trainable_params", "trainable_pct", "peak_mem_bytes", "memory_kind",
    "weight_bytes", "tokens_per_s", "step_time_ms", "mfu", "lat_unmerged", "lat_merged", "lat_noise", "can_merge", "adapter_bytes",
    *DETAIL_COST_KEYS, "train_s", "eval_s",
]


def to_csv(table: pd.DataFrame) -> str:
    """Raw numbers (fractions, bytes) with units implied by the column names; seeds as 0;1;2."""
    out = table[CSV_COLUMNS].copy()
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    out["chosen_lrs"] = out["chosen_lrs"].map(lambda s: ";".join(f"{x:g}" for x in s))  # lr_search rows: each seed's pick
    return out.rename(columns=CSV_UNITS).to_csv(index=False)


# Units in CSV headers: fractions stay fractions (0.88 = 88%), so nobody rescales twice.
CSV_UNITS = {
    "accuracy_mean": "accuracy_mean_frac", "accuracy_std": "accuracy_std_frac", "accuracy_ci95": "accuracy_ci95_halfwidth_frac",
    "macro_f1_mean": "macro_f1_mean_frac", "macro_f1_std": "macro_f1_std_frac", "pct_full_ft": "pct_of_full_ft_percent",
    "vs_lora_diff": "acc_minus_lora_frac", "vs_lora_p": "acc_vs_lora_paired_t_p", "vs_lora_n": "acc_vs_lora_n_pairs",
    "trainable_params": "trainable_params_count", "trainable_pct": "trainable_percent", "mfu": "mfu_frac",
    "lat_unmerged": "latency_overhead_unmerged_frac", "lat_merged": "latency_overhead_merged_frac",
    "lat_noise": "latency_noise_rel_frac", "tokens_per_s": "train_tokens_per_s_median", "step_time_ms": "step_time_ms_median",
    "est_mem_bytes": "est_train_mem_growth_bytes", "mem_over_est": "mem_measured_over_estimated_ratio",
    "peak_reserved_bytes": "peak_train_reserved_bytes", "samples_per_s": "train_samples_per_s_median",
    "tokens_per_s_p10": "train_tokens_per_s_p10", "tokens_per_s_p90": "train_tokens_per_s_p90",
    "flops_per_step": "flops_per_step_flop", "peak_flops_per_s": "peak_flops_per_s_flop_per_s",
    "lat_ms_base": "latency_ms_base", "lat_ms_unmerged": "latency_ms_unmerged", "lat_ms_merged": "latency_ms_merged",
}


# ---------------------------------------------------------------- one row per run

RUN_COLUMNS = [  # (header, column, format)
    ("Model", "model", str), ("Task", "task", str), ("Method", "method", str), ("Rank", "rank", str),
    ("Targets", "targets", str), ("Precision", "precision", str), ("LR", "chosen_lr", lambda v: f"{v:.0e}"),
    ("Steps", "steps", str), ("Setting", "setting", str), ("Seed", "seed", str),
    ("Trainable params (count)", "trainable_params", lambda v: f"{int(v):,}"), ("Trainable (%)", "trainable_pct", lambda v: f"{v:.3f}"),
    ("Accuracy (%)", "accuracy", lambda v: f"{100 * v:.1f}"), ("Macro-F1 (%)", "macro_f1", lambda v: f"{100 * v:.1f}"),
    ("% of full FT, same seed (%)", "pct_full_ft_same_seed", lambda v: f"{v:.1f}"),
]


def runs_markdown(runs: pd.DataFrame) -> str:
    """Every run on its own row: accuracy against the full fine-tuning run of the same model,
    task and seed ('–' where there is none)."""
    head = "| " + " | ".join(h for h, _, _ in RUN_COLUMNS) + " |"
    lines = ["# Runs", "", "One row per run (seeds not aggregated; the tables in tables.md aggregate them).", "",
             head, "|" + "---|" * len(RUN_COLUMNS)]
    for _, r in runs.iterrows():
        cells = ["–" if isinstance(r[c], float) and math.isnan(r[c]) else _md_escape(fmt(r[c])) for _, c, fmt in RUN_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def runs_csv(runs: pd.DataFrame) -> str:
    cols = [c for _, c, _ in RUN_COLUMNS] + ["protocol", "device", "run_id"]
    out = runs[cols].rename(columns={"chosen_lr": "lr", "accuracy": "accuracy_frac", "macro_f1": "macro_f1_frac",
                                     "trainable_params": "trainable_params_count", "trainable_pct": "trainable_percent",
                                     "pct_full_ft_same_seed": "pct_of_full_ft_same_seed_percent"})
    return out.to_csv(index=False)
