"""Figures, one set per model x task x precision, each saved as PNG and PDF.

Every method keeps one colour and marker in every figure (`style_of`); full fine-tuning is a
horizontal reference line, never a point among the PEFT methods.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the report runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import MIB, method_order  # noqa: E402

FIXED_STYLES: dict[str, tuple[str, str]] = {
    "full_ft": ("#000000", "*"),
    "linear_probe": ("#7f7f7f", "x"),
    "lora": ("#1f77b4", "o"),
    "qlora": ("#17becf", "v"),
    "dora": ("#ff7f0e", "s"),
    "rslora": ("#2ca02c", "^"),
    "loraplus": ("#d62728", "D"),
    "houlsby": ("#9467bd", "P"),
    "pfeiffer": ("#8c564b", "X"),
    "loha": ("#e377c2", "h"),
}
FALLBACK_COLOURS = ["#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"]
FALLBACK_MARKERS = ["<", ">", "p", "H", "d", "8", "1", "2"]


def style_of(method: str) -> tuple[str, str]:
    """(colour, marker) for a method: fixed for known ones, a stable hash for others, so an
    unknown method looks the same in every figure and every report."""
    if method in FIXED_STYLES:
        return FIXED_STYLES[method]
    h = int(hashlib.sha256(method.encode()).hexdigest(), 16)
    return FALLBACK_COLOURS[h % len(FALLBACK_COLOURS)], FALLBACK_MARKERS[(h // 7) % len(FALLBACK_MARKERS)]


@dataclass
class Figure:
    name: str  # file stem, relative to the out folder
    title: str
    files: list[str]  # relative paths written (png, pdf); empty when skipped
    skipped: str = ""  # why, when skipped


def pareto_front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of points not dominated by any other (lower-or-equal x with higher-or-equal y,
    one of them strictly), sorted by x: cost on x is minimised, accuracy on y maximised."""
    idx = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    front, best = [], -math.inf
    for i in idx:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return front


def _label(r: pd.Series, with_setting: bool = False) -> str:
    parts = [r["method"]]
    if r["rank"] != "-":
        parts.append(f"r={r['rank']}")
    if r["targets"] != "-":
        parts.append(r["targets"])
    if with_setting:  # only where rows differ by setting, else the id is noise
        parts.append(f"[{r['setting']}]")
    return " ".join(parts)


def _labels(t: pd.DataFrame) -> list[str]:
    many = t["setting"].nunique() > 1
    return [_label(r, many) for _, r in t.iterrows()]


def _save(fig: plt.Figure, out: Path, name: str) -> list[str]:
    files = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        files.append(path.relative_to(out).as_posix())
    plt.close(fig)
    return files


def _full_ft_line(ax: plt.Axes, t: pd.DataFrame) -> None:
    """The full FT reference, chosen like the tables' (stats.pick_reference): the non-method
    setting and steps most of the figure's runs share, then the best by validation."""
    ft = t[t["method"] == "full_ft"]
    if ft.empty:
        return
    others = t[t["method"] != "full_ft"]
    for key in ("ref_setting", "steps"):
        if not others.empty:
            narrowed = ft[ft[key] == others[key].mode().iloc[0]]
            ft = narrowed if not narrowed.empty else ft
    best = ft.sort_values("val_accuracy_mean", ascending=False).iloc[0]
    colour, _ = style_of("full_ft")
    ax.axhline(best["accuracy_mean"] * 100, color=colour, ls="--", lw=1, label=f"full FT ({best['accuracy_mean'] * 100:.1f}%)")
    if best["n"] > 1 and not math.isnan(best["accuracy_std"]):
        lo, hi = (best["accuracy_mean"] - best["accuracy_std"]) * 100, (best["accuracy_mean"] + best["accuracy_std"]) * 100
        ax.axhspan(lo, hi, color=colour, alpha=0.08)


def _legend_once(ax: plt.Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, object] = {}
    for h, l in zip(handles, labels):
        seen.setdefault(l, h)
    if seen:
        ax.legend(seen.values(), seen.keys(), fontsize=7, loc="best")


def scatter_with_pareto(t: pd.DataFrame, xcol: str, xlabel: str, scale: float, logx: bool, title: str,
                        out: Path, name: str) -> Figure:
    """Accuracy vs a cost, PEFT points only, with their Pareto front and the full-FT line."""
    pts = t[(t["method"] != "full_ft") & t[xcol].notna() & t["accuracy_mean"].notna()]
    if len(pts) < 2 or pts[xcol].nunique() < 2:
        return Figure(name, title, [], f"needs at least two PEFT configurations with different {xcol}")
    fig, ax = plt.subplots(figsize=(6, 4))
    x, y = pts[xcol].to_numpy(float) * scale, pts["accuracy_mean"].to_numpy(float) * 100
    for (_, r), xi, yi in zip(pts.iterrows(), x, y):
        colour, marker = style_of(r["method"])
        err = r["accuracy_std"] * 100 if r["n"] > 1 else None
        ax.errorbar(xi, yi, yerr=err, fmt=marker, color=colour, ms=7, capsize=3, label=r["method"])
        if (pts["method"] == r["method"]).sum() > 1:  # tell a method's points (ranks, targets) apart
            ax.annotate(_label(r).removeprefix(r["method"]).strip(), (xi, yi), textcoords="offset points",
                        xytext=(4, 3), fontsize=6, color=colour)
    front = pareto_front(x, y)
    ax.step(x[front], y[front], where="post", color="0.4", lw=1, alpha=0.8, label="Pareto front")
    _full_ft_line(ax, t)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    _legend_once(ax)
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


def accuracy_vs_rank(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    lines = [(k, g) for k, g in _series(t[t["rank_value"].notna()], ["method", "targets", "lr", "protocol", "steps"], "rank_value")
             if g["rank_value"].nunique() >= 2]
    if not lines:
        return Figure(name, title, [], "no method was run at two or more ranks")
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, targets, *_), g in sorted(lines, key=lambda kg: method_order(kg[0][0])):
        g = g.sort_values("rank_value")
        colour, marker = style_of(method)
        yerr = (g["accuracy_ci95"] * 100).where(g["n"] > 1)
        ax.errorbar(g["rank_value"], g["accuracy_mean"] * 100, yerr=yerr.fillna(0), color=colour, marker=marker,
                    capsize=3, label=f"{method} ({targets})")
    _full_ft_line(ax, t)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="rank r (log2)", ylabel="test accuracy (%)", title=title + "\n(error bars: 95% CI over seeds)")
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def target_sets(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    groups = [(k, g) for k, g in _series(t[t["targets"] != "-"], ["method", "rank", "lr", "protocol", "steps"], "targets")
              if g["targets"].nunique() >= 2]
    if not groups:
        return Figure(name, title, [], "no method was run with two or more target-module sets at one rank")
    all_targets = sorted({tg for _, g in groups for tg in g["targets"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * len(all_targets) / 2), 4))
    width = 0.8 / len(all_targets)
    hatches = ["", "//", "..", "xx", "\\\\", "oo"]
    for gi, ((method, rank, *_), g) in enumerate(sorted(groups, key=lambda kg: method_order(kg[0][0]))):
        colour, _ = style_of(method)
        for ti, tg in enumerate(all_targets):
            row = g[g["targets"] == tg]
            if row.empty:
                continue
            r = row.iloc[0]
            ax.bar(gi + (ti - (len(all_targets) - 1) / 2) * width, r["accuracy_mean"] * 100, width, color=colour,
                   hatch=hatches[ti % len(hatches)], edgecolor="white", yerr=(r["accuracy_std"] * 100 if r["n"] > 1 else None),
                   capsize=2)
    for ti, tg in enumerate(all_targets):  # legend keys in a neutral colour: the hatch is the target set
        ax.bar(0, 0, 0, color="0.8", hatch=hatches[ti % len(hatches)], edgecolor="0.3", label=tg)
    ax.set_xticks(range(len(groups)), [f"{m}\nr={rk}" for (m, rk, *_), _ in sorted(groups, key=lambda kg: method_order(kg[0][0]))])
    _full_ft_line(ax, t)
    ax.set(ylabel="test accuracy (%)", title=title + "\n(hatch = target set; error bars: std over seeds)")
    ax.grid(alpha=0.3, axis="y")
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def throughput_bars(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    pts = t[t["tokens_per_s"].notna()]
    if len(pts) < 2:
        return Figure(name, title, [], "needs throughput of at least two configurations")
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(pts)), 4))
    for i, (_, r) in enumerate(pts.iterrows()):
        ax.bar(i, r["tokens_per_s"], color=style_of(r["method"])[0])
    ax.set_xticks(range(len(pts)), _labels(pts), rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="train tokens/s (median)", title=title)
    ax.grid(alpha=0.3, axis="y")
    return Figure(name, title, _save(fig, out, name))


def latency_bars(t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    pts = t[t["lat_unmerged"].notna() & (t["method"] != "full_ft")]
    if pts.empty:
        return Figure(name, title, [], "no latency measurements")
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(pts)), 4))
    for i, (_, r) in enumerate(pts.iterrows()):
        colour = style_of(r["method"])[0]
        noise = r["lat_noise"] * 100 if not math.isnan(r["lat_noise"]) else None
        ax.bar(i - 0.2, r["lat_unmerged"] * 100, 0.4, color=colour, yerr=noise, capsize=2, label="unmerged")
        if r["can_merge"] is not False and not math.isnan(r["lat_merged"]):
            ax.bar(i + 0.2, r["lat_merged"] * 100, 0.4, color=colour, alpha=0.45, hatch="//", yerr=noise, capsize=2, label="merged")
        else:
            ax.text(i + 0.2, 0, "n/a", ha="center", va="bottom", fontsize=6)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(pts)), _labels(pts), rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="latency overhead vs base (%)", title=title + "\n(solid: unmerged, hatched: merged; bars: noise)")
    ax.grid(alpha=0.3, axis="y")
    return Figure(name, title, _save(fig, out, name))


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (window shrinks at the start), so step k uses steps <= k only."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_curves(ok: pd.DataFrame, t: pd.DataFrame, title: str, out: Path, name: str) -> Figure:
    if ok.empty or not any(len(c) > 1 for c in ok["loss_curve"]):
        return Figure(name, title, [], "no loss curves in the records")
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, runs in ok.groupby(["method", "rank", "targets", "lr", "protocol", "steps", "setting"], sort=False, dropna=False):
        curves = [np.asarray(c, float) for c in runs["loss_curve"] if len(c) > 1]
        if not curves:
            continue
        n = min(map(len, curves))
        mean = np.mean([c[:n] for c in curves], axis=0)
        colour, _ = style_of(key[0])
        ax.plot(np.arange(1, n + 1), smooth(mean, max(1, n // 20)), color=colour, lw=1.2,
                label=f"{_label(pd.Series(dict(zip(['method', 'rank', 'targets'], key[:3]))))} (n={len(curves)})")
    ax.set(xlabel="step", ylabel="training loss (moving avg, mean over seeds)", title=title)
    ax.grid(alpha=0.3)
    _legend_once(ax)
    return Figure(name, title, _save(fig, out, name))


def figures_for(ok: pd.DataFrame, agg: pd.DataFrame, out: Path) -> list[Figure]:
    """All figures for every model x task x precision x device type: precisions and devices are
    never pooled (CPU RSS and CUDA allocator bytes, or CPU and GPU tokens/s, share no axis)."""
    figs: list[Figure] = []
    for (model, task, prec, dev), t in agg.groupby(["model", "task", "precision", "device"], sort=True):
        t = t.assign(_o=t["method"].map(method_order)).sort_values(["_o", "rank_value", "targets"]).drop(columns="_o")
        runs = ok[(ok["model"] == model) & (ok["task"] == task) & (ok["precision"] == prec) & (ok["device"] == dev)]
        stem, title = f"figures/{model}__{task}__{prec}__{dev}", f"{model} / {task} / {prec} / {dev}"
        figs += [
            scatter_with_pareto(t, "trainable_params", "trainable parameters (log)", 1.0, True, f"{title}: accuracy vs trainable params", out, f"{stem}__acc_vs_params"),
            scatter_with_pareto(t, "peak_mem_bytes", "peak train memory growth (MiB)", 1 / MIB, False, f"{title}: accuracy vs peak memory", out, f"{stem}__acc_vs_memory"),
            accuracy_vs_rank(t, f"{title}: accuracy vs rank", out, f"{stem}__acc_vs_rank"),
            target_sets(t, f"{title}: target-module sets", out, f"{stem}__target_sets"),
            throughput_bars(t, f"{title}: training throughput", out, f"{stem}__throughput"),
            latency_bars(t, f"{title}: inference latency overhead", out, f"{stem}__latency"),
            loss_curves(runs, t, f"{title}: training loss", out, f"{stem}__loss"),
        ]
    return figs
