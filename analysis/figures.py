"""Figures, one set per model x task x precision, each saved as PNG and PDF.

Every method keeps one colour and marker in every figure (`style_of`); full fine-tuning is a
horizontal reference line, never a point among the PEFT methods. Figures are drawn at a paper's
column width (`WIDTHS_IN`: `peftbench report --figure-width single|double`) with fonts to match,
their PDFs embed TrueType fonts, and point labels are moved apart (adjustText) so that none
overlaps another.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the report runs headless
import matplotlib.pyplot as plt  # noqa: E402
from adjustText import adjust_text  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from peftbench.analysis.load import ROW_KEY, setting_labels  # noqa: E402
from peftbench.analysis.meta import FULL_REFERENCE, PALETTE, sign  # noqa: E402
from peftbench.analysis.stats import full_ft_reference, typical_row  # noqa: E402
from peftbench.analysis.tables import MIB, percent_scale  # noqa: E402
from peftbench.experiments.fields import SERVING_KS  # noqa: E402
from peftbench.experiments.record import file_safe  # noqa: E402


# A two-column paper's column and page widths, in inches (ACL, NeurIPS and ICML are within 0.1 in).
WIDTHS_IN = {"single": 3.4, "double": 7.0}
DPI = 130
# Type 42 (TrueType) instead of matplotlib's default Type 3 in PDFs: the fonts are embedded whole,
# text stays selectable, and publishers' PDF checks, which reject Type 3 fonts, pass.
PAPER_RC = {"pdf.fonttype": 42, "ps.fonttype": 42}
# Embedding TrueType subsets the fonts through fontTools, which logs every table it touches at INFO;
# a Hydra run in the same process (peftbench reproduce) sets the root logger to INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)


def paper_style(width: str) -> dict:
    """rc settings for figures `width` wide (a key of WIDTHS_IN): size and fonts to match."""
    w = WIDTHS_IN[width]
    fonts = 7 if width == "single" else 8
    return {**PAPER_RC, "figure.figsize": (w, w * (0.72 if width == "single" else 0.55)), "font.size": fonts,
            "axes.titlesize": fonts, "axes.labelsize": fonts, "xtick.labelsize": fonts - 1, "ytick.labelsize": fonts - 1,
            "legend.fontsize": fonts - 1}


def _size(height: float = 1.0) -> tuple[float, float]:
    """The style's width, and `height` x its height."""
    w, h = plt.rcParams["figure.figsize"]
    return w, h * height


MAX_POINT_LABELS = 6


def _point_label(text: str) -> str:
    """A label beside a point, wrapped to a few words a line: a long setting (what differs) would
    not fit beside a point in a paper column."""
    import textwrap

    return textwrap.fill(text, 24 if plt.rcParams["figure.figsize"][0] < 5 else 36, break_long_words=False)


def _unclutter(ax: plt.Axes, texts: list) -> None:
    """Move point labels apart until none overlaps another or a point."""
    if len(texts) > 1:
        adjust_text(texts, ax=ax, expand=(1.3, 1.6), force_text=(0.3, 0.6), iter_lim=2000,
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"})


def _name_bars(ax: plt.Axes, labels: list[str]) -> None:
    """One label a bar, at 45 degrees, in a font small enough that neighbours do not touch at the
    figure's width (7 pt at most): a paper column holds fewer bars than a screen."""
    import textwrap

    across_pt = ax.get_position().width * ax.figure.get_figwidth() * 72 / max(len(labels), 1) * math.sin(math.pi / 4)
    # with room between bars, a long setting (what differs) goes on short lines: one long line would
    # reach past the column; without room, one line in a smaller font
    wrapped = [textwrap.fill(lab, 16 if ax.figure.get_figwidth() < 5 else 26, break_long_words=False) for lab in labels]
    lines = max(lab.count("\n") + 1 for lab in wrapped)
    if across_pt / (1.05 * lines) >= 5:
        labels = wrapped
    else:
        lines = 1
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=max(3.5, min(7.0, across_pt / (1.05 * lines))))


def _thin_numeric_ticks(fig: plt.Figure) -> None:
    """A log axis labels its minor ticks when it spans little more than a decade; at a column's
    width those labels run into each other. Keep the 2x and 5x ones, or none, until none overlap.
    (Category labels are never dropped: _name_bars sizes them.)"""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def some(formatter):
        def label(x, pos):
            mantissa = round(x / 10 ** math.floor(math.log10(x)), 6) if x > 0 else 0
            return formatter(x, pos) if mantissa in (2.0, 5.0) else ""
        return FuncFormatter(label)

    renderer = None
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() != "log":
                continue
            for thinner in (some, lambda f: NullFormatter()):
                fig.canvas.draw()
                renderer = renderer or fig.canvas.get_renderer()
                lo, hi = sorted(axis.get_view_interval())
                labels = sorted(((t.get_loc(), t.label1) for t in axis.get_major_ticks() + axis.get_minor_ticks()
                                 if t.label1.get_text() and lo <= t.get_loc() <= hi), key=lambda p: p[0])
                boxes = [lab.get_window_extent(renderer) for _, lab in labels]
                if not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])):
                    break
                axis.set_minor_formatter(thinner(axis.get_minor_formatter()))


def style_of(r: pd.Series) -> tuple[str, str]:
    """(colour, marker) of a row's method, from its YAML's report block (a stable fallback for
    methods without one, filled in by analysis.meta), so a method looks the same everywhere."""
    return str(r["color"]), str(r["marker"])


def shade(colour: str, nth: int, taken: set[str]) -> str:
    """The colour of a method's `nth` configuration in a figure (0: the method's own), `taken`
    holding (lower-case) the colours the figure's lines have so far and every method's own: a
    further configuration takes the first palette colour no line has; past the palette, the
    method's own colour is shared again, its marker keeping the line apart."""
    if nth == 0:
        return colour
    free = [c for c in PALETTE if c.lower() not in taken]
    return free[0] if free else colour


def _style_map(t: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {m: style_of(g.iloc[0]) for m, g in t.groupby("method")}


def _metric_axis(t: pd.DataFrame, col: str = "primary") -> tuple[float, str]:
    """(display scale, axis label) of the primary metric of these rows."""
    scale = percent_scale(t, f"{col}_mean")
    name = next((v for v in t["primary_metric"] if v != "-"), "primary metric")
    return scale, f"test {name}{' (%)' if scale == 100 else ''}"


@dataclass
class Figure:
    name: str  # file stem, relative to the out folder
    title: str
    files: list[str]  # relative paths written (png, pdf); empty when skipped
    skipped: str = ""  # why, when skipped


def pareto_front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of points not dominated by any other (lower-or-equal x with higher-or-equal y,
    one of them strictly), sorted by x: cost on x is minimised, the score on y maximised (pass
    a lower-is-better score negated)."""
    idx = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    front, best = [], -math.inf
    for i in idx:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


def _label(r: pd.Series, differs: str = "") -> str:
    """A configuration in words: method, capacity, targets and, where rows differ by setting, what
    differs (`batch_size=16`), never the setting's hash."""
    parts = [r["method"]]
    if r["capacity"] != "-":  # the table's capacity already names its key ("r=8")
        parts.append(str(r["capacity"]) if "=" in str(r["capacity"]) else f"r={r['capacity']}")
    if r["targets"] != "-":
        parts.append(r["targets"])
    if differs:
        parts.append(f"({differs})")
    return " ".join(parts)


def _labels(t: pd.DataFrame) -> list[str]:
    differs = setting_labels(t) if t["setting"].nunique() > 1 and "setting_items" in t else {}
    return [_label(r, differs.get(r["setting"], "")) for _, r in t.iterrows()]


def _wrap_titles(fig: plt.Figure) -> None:
    """Titles broken into lines that fit the figure's width (a column holds about 60 characters)."""
    import textwrap

    for ax in fig.axes:
        title = ax.get_title()
        if title:
            chars = int(ax.figure.get_figwidth() * 72 / (0.55 * ax.title.get_fontsize()))
            ax.set_title("\n".join(textwrap.fill(line, chars, break_long_words=False) for line in title.split("\n")))


FORMATS = ("png", "pdf")  # the PNG first: the report's pages show it


def _save(fig: plt.Figure, out: Path, name: str) -> list[str]:
    _wrap_titles(fig)
    _thin_numeric_ticks(fig)
    files = []
    for ext in FORMATS:
        path = out / f"{name}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        # a tight box keeps rotated labels and outside legends whole; the test holds the result to the column
        fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        files.append(path.relative_to(out).as_posix())
    plt.close(fig)
    return files


def reference_row(t: pd.DataFrame) -> pd.Series | None:
    """The full-reference configuration a figure's dashed line shows: what the tables'
    reference rule (stats.choose_reference) picks for the figure's typical row."""
    row = typical_row(t)
    return full_ft_reference(t, row) if row is not None else None


def _full_ft_line(ax: plt.Axes, t: pd.DataFrame, col: str = "primary") -> None:
    best = reference_row(t)
    if best is None or math.isnan(best[f"{col}_mean"]):
        return
    scale, _ = _metric_axis(t, col)
    colour, _ = style_of(best)
    mean, std = best[f"{col}_mean"] * scale, best[f"{col}_std"] * scale
    ax.axhline(mean, color=colour, ls="--", lw=1, label=f"{best['method']} ({mean:.1f})")
    if best["n"] > 1 and not math.isnan(std):
        ax.axhspan(mean - std, mean + std, color=colour, alpha=0.08)


def _legend_once(ax: plt.Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, object] = {}
    for h, l in zip(handles, labels):
        seen.setdefault(l, h)
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="best")


def scatter_with_pareto(t: pd.DataFrame, xcol: str, xlabel: str, scale: float, logx: bool, title: str,
                        out: Path, name: str) -> Figure:
    """The primary metric vs a cost, without the full reference (its dashed line), with the
    Pareto front in the metric's own direction."""
    pts = t[(t["role"] != FULL_REFERENCE) & t[xcol].notna() & t["primary_mean"].notna()]
    if len(pts) < 2 or pts[xcol].nunique() < 2:
        return Figure(name, title, [], f"needs at least two PEFT configurations with different {xcol}")
    fig, ax = plt.subplots(figsize=_size())
    yscale, ylabel = _metric_axis(t)
    x, y = pts[xcol].to_numpy(float) * scale, pts["primary_mean"].to_numpy(float) * yscale
    texts = []
    labels = _labels(pts)
    # rows that differ only by their lr (an lr grid) name it, or their labels would be the same
    labels = [f"{lab}, lr {r['lr']:g}" if labels.count(lab) > 1 and not math.isnan(r["lr"]) else lab
              for lab, (_, r) in zip(labels, pts.iterrows())]
    front = pareto_front(x, y * sign(str(pts["primary_direction"].iloc[0])))
    # a method's points are told apart by labels; past MAX_POINT_LABELS they would not fit a paper
    # column, and only the Pareto front's points keep theirs (the tables name every point)
    named = [i for i, (_, r) in enumerate(pts.iterrows()) if (pts["method"] == r["method"]).sum() > 1]
    if len(named) > MAX_POINT_LABELS:
        named = [i for i in named if i in front]
        title += " (labels: Pareto front)"
    for i, ((_, r), xi, yi, label) in enumerate(zip(pts.iterrows(), x, y, labels)):
        colour, marker = style_of(r)
        err = r["primary_std"] * yscale if r["n"] > 1 else None
        ax.errorbar(xi, yi, yerr=err, fmt=marker, color=colour, ms=5, capsize=2, label=r["method"])
        if i in named:
            texts.append(ax.text(xi, yi, _point_label(label.removeprefix(r["method"]).strip()), fontsize=5.5, color=colour))
    ax.step(x[front], y[front], where="post", color="0.4", lw=1, alpha=0.8, label="Pareto front")
    _full_ft_line(ax, t)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    _legend_once(ax)
    _unclutter(ax, texts)
    return Figure(name, title, _save(fig, out, name))


def _series(t: pd.DataFrame, keys: list[str], along: str) -> list[tuple[tuple, pd.DataFrame]]:
    """Rows that form one line along `along` (rank, or target set): same `keys` and non-method
    setting (so alpha = 2r sweeps still make one line); where that leaves two rows at one point
    (e.g. two alphas at one rank), the line splits by full setting instead of zig-zagging."""
    out: list[tuple[tuple, pd.DataFrame]] = []
    for k, g in t.groupby(keys + ["ref_setting"], sort=True, dropna=False):
        if g[along].duplicated().any():
            out += [((*k, s), gs) for s, gs in g.groupby("setting", sort=True)]
        else:
            out.append((k, g))
    return out


def metric_vs_rank(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    lines = [(k, g) for k, g in _series(t[t["capacity_value"].notna()], ["method", "targets", "lr", "protocol", "steps"], "capacity_value")
             if g["capacity_value"].nunique() >= 2]
    if not lines:
        return Figure(name, title, [], "no method was run at two or more ranks")
    fig, ax = plt.subplots(figsize=_size())
    yscale, ylabel = _metric_axis(t)
    keys = sorted({str(k) for k in t.loc[t["capacity_value"].notna(), "capacity_key"] if k})
    for (method, targets, *_), g in sorted(lines, key=lambda kg: (kg[1]["order"].iloc[0], kg[0][0])):
        g = g.sort_values("capacity_value")
        colour, marker = style_of(g.iloc[0])
        yerr = _yerr(g, yscale)
        ax.errorbar(g["capacity_value"], g["primary_mean"] * yscale, yerr=yerr, color=colour, marker=marker,
                    capsize=3, label=f"{method} ({targets})")
    _full_ft_line(ax, t)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=f"capacity: {', '.join(keys)} (log2)", ylabel=ylabel, title=title + "\n(error bars: 95% CI over seeds)")
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def _yerr(g: pd.DataFrame, yscale: float) -> np.ndarray:
    """Error bars of the primary metric's 95% interval, below and above the mean, kept inside the
    metric's range (analysis.stats.interval_in_range); none with one seed."""
    one = g["n"] <= 1
    below = ((g["primary_mean"] - g["primary_ci_low"]) * yscale).mask(one).fillna(0)
    above = ((g["primary_ci_high"] - g["primary_mean"]) * yscale).mask(one).fillna(0)
    return np.vstack([below.to_numpy(dtype=float), above.to_numpy(dtype=float)])


def metric_vs_lr(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    """Each configuration's test metric along its learning-rate grid (LoRA Without Regret's
    figure): one line per method x capacity x targets x steps x non-method setting, full FT
    included, so where each curve peaks shows the ratio of best learning rates."""
    lines = [(k, g) for k, g in _series(t[t["lr"].notna()], ["method", "capacity", "targets", "protocol", "steps"], "lr")
             if g["lr"].nunique() >= 2]
    if not lines:
        return Figure(name, title, [], "no configuration was run at two or more learning rates")
    fig, ax = plt.subplots(figsize=_size(1.05))
    yscale, ylabel = _metric_axis(t)
    settings = {str(g["ref_setting"].iloc[0]) for _, g in lines}
    differs = setting_labels(t) if len(settings) > 1 and "setting_items" in t else {}
    per_method: dict[str, int] = {}
    taken = {style_of(g.iloc[0])[0].lower() for _, g in lines}
    for _, g in sorted(lines, key=lambda kg: (kg[1]["order"].iloc[0], str(kg[0]))):
        g = g.sort_values("lr")
        row = g.iloc[0]
        colour, marker = style_of(row)
        nth = per_method[row["method"]] = per_method.get(row["method"], -1) + 1
        marker = marker if nth == 0 else "sDv^<>p*"[nth % 8]  # a method's configurations stay apart
        colour = shade(colour, nth, taken)
        taken.add(colour.lower())
        yerr = _yerr(g, yscale)
        label = f"{_label(row, differs.get(row['setting'], ''))}, {row['steps']} steps"
        ax.errorbar(g["lr"].astype(float), g["primary_mean"] * yscale, yerr=yerr, color=colour, marker=marker,
                    capsize=3, label=label, ls="-" if len(settings) == 1 or row["ref_setting"] == min(settings) else ":")
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (log)", ylabel=ylabel, title=title + "\n(error bars: 95% CI over seeds)")
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def target_sets(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    groups = [(k, g) for k, g in _series(t[t["targets"] != "-"], ["method", "capacity", "lr", "protocol", "steps"], "targets")
              if g["targets"].nunique() >= 2]
    if not groups:
        return Figure(name, title, [], "no method was run with two or more target-module sets at one rank")
    all_targets = sorted({tg for _, g in groups for tg in g["targets"]})
    fig, ax = plt.subplots(figsize=_size())
    width = 0.8 / len(all_targets)
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    yscale, ylabel = _metric_axis(t)
    groups = sorted(groups, key=lambda kg: (kg[1]["order"].iloc[0], kg[0][0]))
    for gi, ((method, capacity, *_), g) in enumerate(groups):
        colour, _ = style_of(g.iloc[0])
        for ti, tg in enumerate(all_targets):
            row = g[g["targets"] == tg]
            if row.empty:
                continue
            r = row.iloc[0]
            ax.bar(gi + (ti - (len(all_targets) - 1) / 2) * width, r["primary_mean"] * yscale, width, color=colour,
                   hatch=hatches[ti % len(hatches)], edgecolor="white", yerr=(r["primary_std"] * yscale if r["n"] > 1 else None),
                   capsize=2)
    for ti, tg in enumerate(all_targets):  # legend keys in a neutral colour: the hatch is the target set
        ax.bar(0, 0, 0, color="0.8", hatch=hatches[ti % len(hatches)], edgecolor="0.3", label=tg)
    _name_bars(ax, [f"{m} {rk}" for (m, rk, *_), _ in groups])
    _full_ft_line(ax, t)
    ax.set(ylabel=ylabel, title=title + "\n(hatch = target set; error bars: std over seeds)")
    ax.grid(alpha=0.3, axis="y")
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def throughput_bars(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    pts = t[t["cost.train_tokens_per_s_median"].notna()]
    if len(pts) < 2:
        return Figure(name, title, [], "needs throughput of at least two configurations")
    fig, ax = plt.subplots(figsize=_size())
    for i, (_, r) in enumerate(pts.iterrows()):
        ax.bar(i, r["cost.train_tokens_per_s_median"], color=style_of(r)[0])
    _name_bars(ax, _labels(pts))
    ax.set(ylabel="train tokens/s (median)", title=title)
    ax.grid(alpha=0.3, axis="y")
    return Figure(name, title, _save(fig, out, name))


def latency_bars(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    pts = t[t["cost.latency_overhead_unmerged_frac"].notna() & (t["role"] != FULL_REFERENCE)]
    if pts.empty:
        return Figure(name, title, [], "no latency measurements")
    fig, ax = plt.subplots(figsize=_size())
    for i, (_, r) in enumerate(pts.iterrows()):
        colour = style_of(r)[0]
        noise = r["cost.latency_noise_frac"] * 100 if not math.isnan(r["cost.latency_noise_frac"]) else None
        ax.bar(i - 0.2, r["cost.latency_overhead_unmerged_frac"] * 100, 0.4, color=colour, yerr=noise, capsize=2, label="unmerged")
        if r["method_info.can_merge"] is not False and not math.isnan(r["cost.latency_overhead_merged_frac"]):
            ax.bar(i + 0.2, r["cost.latency_overhead_merged_frac"] * 100, 0.4, color=colour, alpha=0.45, hatch="//", yerr=noise, capsize=2, label="merged")
        else:
            ax.text(i + 0.2, 0, "n/a", ha="center", va="bottom", fontsize=6)
    ax.axhline(0, color="k", lw=0.8)
    _name_bars(ax, _labels(pts))
    ax.set(ylabel="latency overhead vs base (%)", title=title + "\n(solid: unmerged, hatched: merged; bars: noise)")
    ax.grid(alpha=0.3, axis="y")
    return Figure(name, title, _save(fig, out, name))


def _has(t: pd.DataFrame, col: str) -> pd.Series:
    return t[col].notna() if col in t else pd.Series(False, index=t.index)


def _b1_overhead_panel(ax: plt.Axes, pts: pd.DataFrame) -> None:
    for i, (_, r) in enumerate(pts.iterrows()):
        colour = style_of(r)[0]
        noise = r["serving.latency_b1_noise_frac"] * 100 if not math.isnan(r["serving.latency_b1_noise_frac"]) else None
        ax.bar(i - 0.2, r["serving.latency_b1_overhead_unmerged_frac"] * 100, 0.4, color=colour, yerr=noise, capsize=2)
        if not math.isnan(r["serving.latency_b1_overhead_merged_frac"]):
            ax.bar(i + 0.2, r["serving.latency_b1_overhead_merged_frac"] * 100, 0.4, color=colour, alpha=0.45, hatch="//", yerr=noise, capsize=2)
        else:
            ax.text(i + 0.2, 0, "n/a", ha="center", va="bottom", fontsize=6, clip_on=True)
    ax.axhline(0, color="k", lw=0.8)
    _name_bars(ax, _labels(pts))
    ax.set(ylabel="batch-1 latency overhead vs base (%)")
    ax.set_title("batch 1 (solid: unmerged, hatched: merged; bars: noise)")
    ax.grid(alpha=0.3, axis="y")


def _adapters_panel(ax: plt.Axes, pts: pd.DataFrame) -> None:
    """Latency of one batch mixing K adapters (solid) and served adapter by adapter (dashed),
    with the merged model's latency on the same batch as a dotted line."""
    for _, r in pts.iterrows():
        colour, marker = style_of(r)
        for kind, ls in (("mixed", "-"), ("naive", "--")):
            ks = [k for k in SERVING_KS if not math.isnan(r.get(f"serving.{kind}_ms_k{k}", math.nan))]
            ax.plot(ks, [r[f"serving.{kind}_ms_k{k}"] for k in ks], ls, color=colour, marker=marker, ms=4,
                    label=f"{_label(r)} {kind}")
        if not math.isnan(r.get("serving.merged_ms_mixed_batch", math.nan)):
            ax.axhline(r["serving.merged_ms_mixed_batch"], color=colour, ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="adapters in the batch (K)", ylabel="batch latency (ms, median)")
    ax.set_title("K adapters on one base\n(solid: mixed batch, dashed: one by one, dotted: merged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5, ncols=2)


def _load_swap_panel(ax: plt.Axes, pts: pd.DataFrame) -> None:
    keys = [("serving.load_ms", "load"), ("serving.load_another_ms", "add adapter"), ("serving.swap_ms", "swap")]
    for i, (_, r) in enumerate(pts.iterrows()):
        for j, (col, _) in enumerate(keys):
            if not math.isnan(r[col]):
                ax.bar(i + (j - 1) * 0.27, r[col], 0.27, color=style_of(r)[0], alpha=(1.0, 0.65, 0.35)[j])
    ax.set_yscale("log")
    _name_bars(ax, _labels(pts))
    ax.set(ylabel="ms (median, log)")
    ax.set_title("adapter load / add another / hot-swap (left to right, fading)")
    ax.grid(alpha=0.3, axis="y")


def serving_costs(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    """Batch-1 overhead, K adapters on one base, and adapter load / swap times, side by side."""
    b1 = t[_has(t, "serving.latency_b1_overhead_unmerged_frac") & (t["role"] != FULL_REFERENCE)]
    mixed = t[_has(t, "serving.mixed_ms_k1") | _has(t, "serving.mixed_ms_k2")]
    loads = t[_has(t, "serving.load_ms") | _has(t, "serving.swap_ms")]
    panels = [(p, d) for p, d in ((_b1_overhead_panel, b1), (_adapters_panel, mixed), (_load_swap_panel, loads)) if not d.empty]
    if not panels:
        return Figure(name, title, [], "no serving measurements")
    # one panel a row, each the column's width: side by side they would not fit a paper column
    w, h = plt.rcParams["figure.figsize"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(w, min(0.8 * h * len(panels), 8.5)), squeeze=False,
                             layout="constrained")  # within a page's text height
    for ax, (panel, data) in zip(axes[:, 0], panels):
        panel(ax, data)
    fig.suptitle(title)
    return Figure(name, title, _save(fig, out, name))


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window shrinks at the start), so step k uses steps <= k only."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


# a configuration across precisions and lrs: one path on the learning-forgetting plane
FORGETTING_CONFIG = [k for k in ROW_KEY if k not in ("precision", "lr")]


def lr_paths(pts: pd.DataFrame) -> list[pd.DataFrame]:
    """Each configuration's rows along its lr grid, in lr order (two or more fixed lrs): the path
    shows what the lr trades. An lr search's row has no one lr to sit on it."""
    paths = []
    for _, g in pts.groupby(FORGETTING_CONFIG, sort=False, dropna=False):
        lr = pd.to_numeric(g["lr"], errors="coerce")
        g = g[lr.notna()].assign(_lr=lr[lr.notna()]).sort_values("_lr").drop(columns="_lr")
        if len(g) > 1:
            paths.append(g)
    return paths


def forgetting_point_label(r: pd.Series, pts: pd.DataFrame) -> str:
    """What tells a point apart from its method's others: the configuration where the method has
    several, the step budget where it has several, the lr where that configuration was run at
    several (or that the lr was searched)."""
    mine = pts[pts["method"] == r["method"]]
    parts = []
    if len(mine[["capacity", "targets", "setting"]].drop_duplicates()) > 1:
        parts.append(_label(r).removeprefix(r["method"]).strip())
    if mine["steps"].nunique() > 1:
        parts.append(f"{r['steps']} steps")
    same = mine[(mine[FORGETTING_CONFIG[1:]] == r[FORGETTING_CONFIG[1:]]).all(axis=1)]
    lr = pd.to_numeric(r["lr"], errors="coerce")
    if r["protocol"] == "lr_search" or pd.isna(lr):
        parts.append("lr searched")
    elif same["lr"].nunique() > 1:
        parts.append(f"lr {lr:g}")
    return " ".join(p for p in parts if p)


def learning_vs_forgetting(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    """Target metric against forgetting, one point per configuration, as in Biderman et al.
    2024 ("LoRA learns less and forgets less"): up is learning more, right is forgetting more."""
    pts = t[t["primary_mean"].notna() & t["forgetting_mean"].notna()] if "forgetting_mean" in t else t.iloc[0:0]
    if len(pts) < 2:
        return Figure(name, title, [], "needs forgetting measured for at least two configurations")
    yscale, ylabel = _metric_axis(t)
    key = next((k for k in pts["forgetting_key"] if k != "-"), "forgetting")
    fig, ax = plt.subplots(figsize=_size())
    texts = []
    for g in lr_paths(pts):
        ax.plot(g["forgetting_mean"], g["primary_mean"] * yscale, "-", lw=0.8, alpha=0.5, color=style_of(g.iloc[0])[0])
    for _, r in pts.iterrows():
        colour, marker = style_of(r)
        ax.errorbar(r["forgetting_mean"], r["primary_mean"] * yscale,
                    xerr=r["forgetting_std"] if r["n"] > 1 else None, yerr=r["primary_std"] * yscale if r["n"] > 1 else None,
                    fmt=marker, color=colour, ms=7, capsize=3, label=r["method"])
        text = forgetting_point_label(r, pts)
        if text:
            texts.append(ax.text(r["forgetting_mean"], r["primary_mean"] * yscale, _point_label(text), fontsize=5.5, color=colour))
    ax.set(xlabel=f"forgetting: {key} (lower is better)", ylabel=ylabel, title=title + "\n(error bars: std over seeds)")
    ax.grid(alpha=0.3)
    _legend_once(ax)
    _unclutter(ax, texts)
    return Figure(name, title, _save(fig, out, name))


def _per_step_means(ok: pd.DataFrame, columns: list[str]):
    """Per configuration (every seed of one lr and setting): (colour, legend label, the mean over
    seeds of each per-step column, cut to the shortest run). Runs whose curves are missing or
    of unequal lengths across the columns are left out."""
    styles = _style_map(ok)
    for key, runs in ok.groupby(["method", "capacity", "targets", "lr", "protocol", "steps", "setting"], sort=False, dropna=False):
        per_run = [[np.asarray(c, float) for c in cs] for cs in zip(*(runs[col] for col in columns))
                   if len(cs[0]) > 1 and all(len(c) == len(cs[0]) for c in cs)]
        if not per_run:
            continue
        n = min(len(cs[0]) for cs in per_run)
        means = [np.mean([cs[i][:n] for cs in per_run], axis=0) for i in range(len(columns))]
        label = f"{_label(pd.Series(dict(zip(['method', 'capacity', 'targets'], key[:3]))))} (n={len(per_run)})"
        yield styles[key[0]][0], label, means


def loss_curves(ok: pd.DataFrame, t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    if ok.empty or not any(len(c) > 1 for c in ok["loss_curve"]):
        return Figure(name, title, [], "no loss curves in the records")
    fig, ax = plt.subplots(figsize=_size())
    for colour, label, (mean,) in _per_step_means(ok, ["loss_curve"]):
        n = len(mean)
        ax.plot(np.arange(1, n + 1), smooth(mean, max(1, n // 20)), color=colour, lw=1.2, label=label)
    ax.set(xlabel="step", ylabel="training loss (moving avg, mean over seeds)", title=title)
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def reward_curves(ok: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    """Runs trained by reward (objective=grpo): each configuration's mean reward per step, mean
    over seeds, with the band of the completions' spread around it (the group signal GRPO uses)."""
    fig, ax = plt.subplots(figsize=_size())
    for colour, label, (mean, spread) in _per_step_means(ok, ["reward_curve", "reward_std_curve"]):
        n = len(mean)
        steps = np.arange(1, n + 1)
        ax.plot(steps, smooth(mean, max(1, n // 20)), color=colour, lw=1.2, label=label)
        ax.fill_between(steps, mean - spread, mean + spread, color=colour, alpha=0.12, lw=0)
    ax.set(xlabel="step", ylabel="mean reward of the step's completions", title=title + "\n(band: their spread, mean over seeds)")
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def figures_for(ok: pd.DataFrame, agg: pd.DataFrame, out: Path, width: str = "double") -> list[Figure]:
    """All figures for every model x task x precision x device type, `width` wide (a key of
    WIDTHS_IN): precisions and devices are never pooled (CPU RSS and CUDA allocator bytes, or CPU
    and GPU tokens/s, share no axis)."""
    with plt.rc_context(paper_style(width)):
        return _figures_for(ok, agg, out)


def _figures_for(ok: pd.DataFrame, agg: pd.DataFrame, out: Path) -> list[Figure]:
    figs: list[Figure] = []
    for (model, task, prec, dev), t in agg.groupby(["model", "task", "precision", "device"], sort=True):
        t = t.sort_values(["order", "method", "capacity_value", "targets"])
        runs = ok[(ok["model"] == model) & (ok["task"] == task) & (ok["precision"] == prec) & (ok["device"] == dev)]
        stem, title = f"figures/{file_safe(model)}__{task}__{prec}__{dev}", f"{model} / {task} / {prec} / {dev}"
        figs += [
            scatter_with_pareto(t, "params.trainable", "trainable parameters (log)", 1.0, True, f"{title}: metric vs trainable params", out, f"{stem}__metric_vs_params"),
            scatter_with_pareto(t, "cost.peak_train_mem_growth_bytes", "peak train memory growth (MiB)", 1 / MIB, False,
                                f"{title}: metric vs train memory growth", out, f"{stem}__metric_vs_memory"),
            metric_vs_rank(t, f"{title}: metric vs capacity", out, f"{stem}__metric_vs_rank"),
            metric_vs_lr(t, f"{title}: metric vs learning rate", out, f"{stem}__metric_vs_lr"),
            target_sets(t, f"{title}: target-module sets", out, f"{stem}__target_sets"),
            learning_vs_forgetting(t, f"{title}: learning vs forgetting", out, f"{stem}__learning_vs_forgetting"),
            throughput_bars(t, f"{title}: training throughput", out, f"{stem}__throughput"),
            latency_bars(t, f"{title}: inference latency overhead", out, f"{stem}__latency"),
            serving_costs(t, f"{title}: serving costs", out, f"{stem}__serving"),
            loss_curves(runs, t, f"{title}: training loss", out, f"{stem}__loss"),
        ]
        if "reward_curve" in runs and any(len(c) > 1 for c in runs["reward_curve"]):  # drawn only for runs trained by reward
            figs.append(reward_curves(runs, f"{title}: reward during training", out, f"{stem}__reward"))
    return figs
