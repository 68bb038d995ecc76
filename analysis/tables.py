"""Tables: one per model x task, one row per method x rank x targets x precision x lr x steps.

The same cell model renders Markdown, HTML, LaTeX (booktabs, best value per column in bold) and
CSV (raw numbers, for anyone who wants to re-plot).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from analysis.stats import ALPHA, PAIRED_TEST_NAME, single_seed_only

MIB = 2**20
DAGGER = "†"
SINGLE_SEED_NOTE = "single seed: differences untested"


@dataclass(frozen=True)
class Column:
    header: str  # with its unit
    value: Callable[[pd.Series], float]  # the number the best-value bolding compares; NaN = none
    text: Callable[[pd.Series, str], str]  # the cell, for format "md" | "tex" | "html"
    better: str | None  # "higher" | "lower" | None (not compared)
    legend: str
    # Full FT is the reference for these columns (100% of itself, no adapter to add latency),
    # so it is never the "best" PEFT value.
    skip_reference: bool = False


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
        return "–"
    diff = f"{r['vs_lora_diff'] * 100:+.1f}"
    if r["vs_lora_n"] < 2:
        return f"{diff} (untested, 1 seed)"
    mark = _dagger(fmt) if r["vs_lora_p"] < ALPHA else ""
    return f"{diff} (p={r['vs_lora_p']:.3f}, n={int(r['vs_lora_n'])}){mark}"


def _lat_text(key: str) -> Callable[[pd.Series, str], str]:
    def text(r: pd.Series, fmt: str) -> str:
        if key == "lat_merged" and not r["can_merge"]:
            return "n/a (cannot merge)"
        if math.isnan(r[key]):
            return "–"
        return f"{r[key] * 100:+.1f} {_pm(fmt)} {_f(r['lat_noise'], 1, 100)}"
    return text


def _merged_value(r: pd.Series) -> float:
    return r["lat_merged"] if r["can_merge"] else math.nan


def _plain(key: str, digits: int = 1, scale: float = 1.0) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: _f(r[key], digits, scale)


def _int(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: "–" if math.isnan(r[key]) else f"{int(round(r[key])):,}"


def _lr_text(r: pd.Series, fmt: str) -> str:
    return "–" if math.isnan(r["lr"]) else f"{r['lr']:.0e}"


def _txt(key: str) -> Callable[[pd.Series, str], str]:
    return lambda r, fmt: str(r[key])


NAN = lambda r: math.nan  # noqa: E731  (label columns are never bolded)

COLUMNS: list[Column] = [
    Column("Method", NAN, _txt("method"), None, "PEFT method (full_ft = full fine-tuning)."),
    Column("Rank", NAN, _txt("rank"), None, "LoRA-family rank r; bottleneck adapters: bottleneck size b<n> or reduction factor rf<n>; '-' when n/a."),
    Column("Targets", NAN, _txt("targets"), None, "Target-module preset or list; '-' when n/a."),
    Column("Precision", NAN, _txt("precision"), None, "Training precision of the run."),
    Column("LR", NAN, _lr_text, None, "Learning rate."),
    Column("LR protocol", NAN, _txt("protocol"), None,
           "How the lr was chosen: method_default_lr (method YAML), fixed_lr (one lr for all), lr_search (grid, selected on validation)."),
    Column("Steps", NAN, _txt("steps"), None, "Optimiser steps (the training budget)."),
    Column("Accuracy (%)", lambda r: r["accuracy_mean"], _acc_text, "higher",
           f"Test accuracy, mean ± sample std over n seeds. {DAGGER}: p<{ALPHA} vs LoRA ({PAIRED_TEST_NAME})."),
    Column("Acc. 95% CI (%)", NAN, _ci_text, None, "95% t-interval of the mean test accuracy (n ≥ 2)."),
    Column("Macro-F1 (%)", lambda r: r["macro_f1_mean"], _f1_text, "higher", "Test macro-F1, mean ± std over seeds."),
    Column("% of full FT (%)", lambda r: r["pct_full_ft"], _pct_ft_text, "higher",
           "Accuracy relative to full fine-tuning of the same model, task and precision; mean of per-seed ratios (* = seeds unmatched: ratio of means).", True),
    Column("Δ acc vs LoRA (pp)", NAN, _vs_lora_text, None,
           f"Accuracy minus LoRA at the same rank, targets, steps, model, task, precision; paired over shared seeds, {PAIRED_TEST_NAME}."),
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
           "Inference latency vs the base model with the adapter unmerged; ± is the run's measured latency noise (cost.latency_noise_rel). Bold: smallest |overhead|.", True),
    Column("Latency overhead merged (%)", lambda r: abs(_merged_value(r)), _lat_text("lat_merged"), "lower",
           "Same, after merging the adapter into the weights; 'n/a (cannot merge)' when the method cannot merge.", True),
    Column("Adapter size (KiB)", lambda r: r["adapter_bytes"], _plain("adapter_bytes", 1, 1 / 1024), "lower", "Bytes saved per task (adapter + head; full FT: whole model)."),
]


def best_rows(table: pd.DataFrame, col: Column) -> set[int]:
    """Positions of the best value of a numeric column (all ties), direction-aware."""
    if col.better is None:
        return set()
    vals = [math.nan if col.skip_reference and r["method"] == "full_ft" else col.value(r) for _, r in table.iterrows()]
    finite = [v for v in vals if not math.isnan(v)]
    if len(finite) < 2:  # one value is not "best" of anything
        return set()
    best = max(finite) if col.better == "higher" else min(finite)
    return {i for i, v in enumerate(vals) if not math.isnan(v) and math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)}


def table_groups(agg: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """(model, task) -> its rows, sorted for reading: method order, then rank, targets."""
    out = []
    for (model, task), t in agg.groupby(["model", "task"], sort=True):
        t = t.assign(_order=t["method"].map(method_order)).sort_values(
            ["_order", "method", "precision", "rank_value", "rank", "targets", "lr", "protocol", "steps"]).drop(columns="_order")
        out.append(((str(model), str(task)), t.reset_index(drop=True)))
    return out


METHOD_ORDER = ["full_ft", "linear_probe", "lora", "qlora", "dora", "rslora", "loraplus", "houlsby", "pfeiffer"]


def method_order(name: str) -> int:
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def cells(table: pd.DataFrame, fmt: str) -> list[list[tuple[str, bool]]]:
    """Cell text and bold flag, row by row."""
    best = [best_rows(table, c) for c in COLUMNS]
    return [[(c.text(r, fmt), i in best[j]) for j, c in enumerate(COLUMNS)] for i, (_, r) in enumerate(table.iterrows())]


def notes(table: pd.DataFrame) -> list[str]:
    out = []
    if single_seed_only(table):
        out.append(SINGLE_SEED_NOTE + " (every configuration has one seed; no significance is implied).")
    else:
        out.append(f"{DAGGER} p < {ALPHA} vs LoRA at the same rank/targets ({PAIRED_TEST_NAME}); untested where fewer than 2 shared seeds.")
    out.append("Bold: best value of each numeric column (higher accuracy/F1/throughput/MFU; lower params/memory/time/latency/size).")
    return out


# ---------------------------------------------------------------- Markdown

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(title: str, table: pd.DataFrame) -> str:
    head = "| " + " | ".join(c.header for c in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(f"**{_md_escape(t)}**" if b else _md_escape(t) for t, b in row) + " |" for row in cells(table, "md")]
    return "\n".join([f"### {title}", "", head, rule, *body, "", *[f"- {n}" for n in notes(table)], ""])


def markdown_legend() -> str:
    return "\n".join(["## Columns", "", *[f"- **{c.header}**: {c.legend}" for c in COLUMNS], ""])


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


def to_latex(title: str, table: pd.DataFrame) -> str:
    spec = "l" * 6 + "r" * (len(COLUMNS) - 6)
    head = " & ".join(tex_escape(c.header) for c in COLUMNS) + r" \\"
    body = [" & ".join(r"\textbf{" + tex_escape(t) + "}" if b else tex_escape(t) for t, b in row) + r" \\"
            for row in cells(table, "tex")]
    return "\n".join([
        r"\begin{table}[ht]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
        r"\caption{" + tex_escape(title) + ". " + tex_escape(" ".join(notes(table))) + "}",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{" + spec + "}", r"\toprule", head, r"\midrule", *body, r"\bottomrule",
        r"\end{tabular}}", r"\end{table}", ""])


LATEX_PREAMBLE = "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage[utf8]{inputenc}",
                            r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage[margin=1cm,landscape]{geometry}",
                            r"\begin{document}", ""])


# ---------------------------------------------------------------- HTML

def to_html(title: str, table: pd.DataFrame) -> str:
    from html import escape

    head = "".join(f"<th>{escape(c.header)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td><b>{escape(t)}</b></td>" if b else f"<td>{escape(t)}</td>" for t, b in row) + "</tr>"
                   for row in cells(table, "html"))
    note = "".join(f"<li>{escape(n)}</li>" for n in notes(table))
    return (f"<h3>{escape(title)}</h3><div class='scroll'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div><ul class='notes'>{note}</ul>")


# ---------------------------------------------------------------- CSV

CSV_COLUMNS = [
    "model", "task", "method", "rank", "targets", "precision", "lr", "protocol", "steps", "n", "seeds",
    "accuracy_mean", "accuracy_std", "accuracy_ci95", "macro_f1_mean", "macro_f1_std", "pct_full_ft", "pct_full_ft_paired",
    "vs_lora_diff", "vs_lora_p", "vs_lora_n", "trainable_params", "trainable_pct", "peak_mem_bytes", "memory_kind",
    "weight_bytes", "tokens_per_s", "step_time_ms", "mfu", "lat_unmerged", "lat_merged", "lat_noise", "can_merge", "adapter_bytes",
]


def to_csv(table: pd.DataFrame) -> str:
    """Raw numbers (fractions, bytes) with units implied by the column names; seeds as 0;1;2."""
    out = table[CSV_COLUMNS].copy()
    out["seeds"] = out["seeds"].map(lambda s: ";".join(map(str, s)))
    return out.rename(columns=CSV_UNITS).to_csv(index=False)


# Units in CSV headers: fractions stay fractions (0.88 = 88%), so nobody rescales twice.
CSV_UNITS = {
    "accuracy_mean": "accuracy_mean_frac", "accuracy_std": "accuracy_std_frac", "accuracy_ci95": "accuracy_ci95_halfwidth_frac",
    "macro_f1_mean": "macro_f1_mean_frac", "macro_f1_std": "macro_f1_std_frac", "pct_full_ft": "pct_of_full_ft_percent",
    "vs_lora_diff": "acc_minus_lora_frac", "vs_lora_p": "acc_vs_lora_paired_t_p", "vs_lora_n": "acc_vs_lora_n_pairs",
    "trainable_params": "trainable_params_count", "trainable_pct": "trainable_percent", "mfu": "mfu_frac",
    "lat_unmerged": "latency_overhead_unmerged_frac", "lat_merged": "latency_overhead_merged_frac",
    "lat_noise": "latency_noise_rel_frac", "tokens_per_s": "train_tokens_per_s_median", "step_time_ms": "step_time_ms_median",
}
