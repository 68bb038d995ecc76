"""index.html: one self-contained page (inline CSS and script, figure PNGs embedded as base64 data
URIs) that opens from disk without a server or a network and survives being mailed on its own.
PDFs and downloads stay separate files, linked by relative path.

The page is explorable: every table sorts on a header click, filters by words, shows or hides its
column groups and downloads the rows shown as CSV; each model x task has a Pareto plot over any two
measured columns (analysis/report.js, inlined). The plot is drawn as SVG by that script rather
than by Plotly: a self-contained page would carry Plotly's 4.6 MB bundle, in every one of the
committed reference reports."""
from __future__ import annotations

import base64
import json
import math
from collections import Counter
from html import escape
from pathlib import Path
from typing import Iterable

import pandas as pd

from peftbench.analysis.convergence import Check, regime_line
from peftbench.analysis.convergence import notes as convergence_notes
from peftbench.analysis.claims import ClaimResult, VERDICT_RULE, claim_reason, evidence_line, family_size
from peftbench.analysis.figures import Figure
from peftbench.analysis.load import Problem
from peftbench.analysis.meta import PALETTE
from peftbench.analysis.summary import labeller, summaries
from peftbench.experiments.fields import FIELDS

SCRIPT = (Path(__file__).parent / "report.js").read_text()

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0}
td:nth-child(-n+8){text-align:left}
.scroll{overflow-x:auto}
.notes{font-size:12px;color:#555}
.fig{display:inline-block;margin:.5em;vertical-align:top;max-width:48%}
.fig img{max-width:100%;border:1px solid #eee}
.holds{color:#1a7f37;font-weight:bold}.fails{color:#cf222e;font-weight:bold}
.nodata,.invalid{color:#9a6700;font-weight:bold}
.warn{background:#fff8c5;padding:.4em .8em;border-left:4px solid #d4a72c}
code{font-size:12px}
table.data td:first-child,table.data th:first-child{position:sticky;left:0;background:#fff;z-index:1}
table.data th:first-child{background:#f2f2f2;z-index:2}
th.sortable{cursor:pointer}th[data-sort=asc]::after{content:" ▲"}th[data-sort=desc]::after{content:" ▼"}
.tools{font-size:12px;margin:.3em 0}.tools label{margin-left:.8em}.tools button{margin-left:.8em}
.tools .filter{width:22em}
.pareto{display:inline-block;vertical-align:top;margin:.5em 1em .5em 0}.pareto svg{border:1px solid #eee;max-width:100%;height:auto}
.pareto .tip{font-size:12px;white-space:pre-line;min-height:3.6em;color:#333}
.summary td,.summary th{white-space:normal;text-align:left;max-width:60em}
"""

# the stylesheet class each verdict is shown in
VERDICT_CLASS = {"holds": "holds", "fails": "fails", "not applicable": "nodata", "invalid claim": "invalid", "cannot tell": "nodata"}

PROVENANCE_COLUMNS = {
    "prov_git": "git commit", "prov_device": "device", "prov_hardware": "hardware (GPU / CPU model)",
    "prov_cpu_kernel_isa": "CPU kernels (ISA)", "prov_cpu_count": "CPUs", "prov_torch_threads": "torch threads", "prov_cuda": "CUDA", "prov_versions": "versions",
}


def _section(title: str, body: str, anchor: str) -> str:
    return f"<section id='{anchor}'><h2>{escape(title)}</h2>{body}</section>"


def _list(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _df_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def provenance_html(ok: pd.DataFrame) -> str:
    """Each distinct software/hardware setup once, with how many runs used it."""
    if ok.empty:
        return "<p>No successful runs.</p>"
    cols = list(PROVENANCE_COLUMNS)
    joined = lambda s: ", ".join(sorted(set(map(str, s))))  # noqa: E731
    # which tables and figures (model x task x precision) each setup stands behind
    setups = ok.groupby(cols, sort=True).agg(runs=("run_id", "count"), models=("model", joined), tasks=("task", joined),
                                             precisions=("precision", joined)).reset_index()
    setups = setups.rename(columns=PROVENANCE_COLUMNS)
    warn = ""
    if len(setups) > 1:
        warn = "<p class='warn'>Runs come from more than one software/hardware setup: compare costs only within one setup.</p>"
    if ok["prov_git"].str.contains("dirty|unknown").any():
        warn += "<p class='warn'>Some runs come from a dirty or unknown git tree: their code is not exactly any commit.</p>"
    return warn + _df_table(setups)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figures_html(figs: list[Figure], out: Path) -> str:
    """Each figure's PNG inline (so index.html alone shows them), its other formats as links."""
    made = [f for f in figs if f.files]
    skipped = [f for f in figs if not f.files]
    parts = []
    for f in made:
        png = next(p for p in f.files if p.endswith(".png"))
        others = [p for p in f.files if not p.endswith(".png")]
        links = " · ".join(f"<a href='{escape(p)}'>{escape(p.rsplit('.', 1)[1].upper())} (separate file)</a>" for p in others)
        parts.append(f"<figure class='fig'><img src='{data_uri(out / png)}' alt='{escape(f.title)}'>"
                     f"<figcaption>{escape(f.title)}{f' ({links})' if links else ''}</figcaption></figure>")
    if skipped:
        parts.append("<h3>Skipped figures</h3>" + _list(f"{escape(f.title)}: {escape(f.skipped)}" for f in skipped))
    return "".join(parts) or "<p>No figures.</p>"


def claims_html(results: list[ClaimResult]) -> str:
    if not results:
        return "<p>No claims declared in conf/claims/.</p>"
    rows = []
    for r in results:
        details = "".join(
            f"<li><code>{escape(c.check)}</code>" + (f" ({escape(c.spec)})" if c.spec else "")
            + f": <span class='{VERDICT_CLASS.get(c.verdict, '')}'>{escape(c.verdict)}</span>" + (f" ({escape(c.note)})" if c.note else "")
            + _list(escape(evidence_line(e).replace("**", "")) for e in c.evidence) + "</li>"
            for c in r.conditions)
        note = f"<p><b>{escape(r.disagreement())}</b></p>" if r.disagreement() else ""
        regime = f"<p>Regime of the claim: {escape(r.regime)}</p>" if r.regime else ""
        rows.append(f"<tr><td style='text-align:left'><b>{escape(r.id)}</b><br>{escape(r.statement)}</td>"
                    f"<td style='text-align:left'>{escape(r.source)}</td><td class='{VERDICT_CLASS.get(r.verdict, '')}'>{escape(r.verdict)}</td>"
                    f"<td style='text-align:left;white-space:normal'>{escape(claim_reason(r))}</td>"
                    f"<td style='text-align:left;white-space:normal'>{regime}{note}<ul>{details}</ul></td></tr>")
    return (f"<p>{escape(VERDICT_RULE.replace('**', ''))} Corrected over {family_size(results)} tested configurations.</p>"
            "<div class='scroll'><table><thead><tr><th>Claim</th><th>Source</th><th>Verdict</th><th>Why</th><th>Evidence</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def failed_html(failed: pd.DataFrame) -> str:
    if failed.empty:
        return "<p>None.</p>"
    return _df_table(failed[["run_id", "status", "method", "model", "task", "seed", "error", "file"]])


def problems_html(problems: list[Problem]) -> str:
    if not problems:
        return "<p>None.</p>"
    return _list(f"<code>{escape(p.file)}</code>: {escape(p.reason)}" for p in problems)


def _tally(claims: list[ClaimResult]) -> list[tuple[str, int]]:
    """Each verdict with how many claims have it, the commonest first."""
    return sorted(Counter(r.verdict for r in claims).items(), key=lambda kv: -kv[1])


def verdicts_here(claims: list[ClaimResult]) -> str:
    """One model x task's verdicts at a glance: each decided claim by name, the rest counted."""
    decided = [f"<span class='{VERDICT_CLASS.get(r.verdict, '')}'>{escape(r.verdict)}</span>: {escape(r.id)}"
               for r in claims if r.verdict in ("holds", "fails")]
    rest = ", ".join(f"{n} {escape(v)}" for v, n in _tally([r for r in claims if r.verdict not in ("holds", "fails")]))
    return "<br>".join(decided + ([rest] if rest else [])) or "no claims checked"


def summary_html(agg: pd.DataFrame, claims: list[ClaimResult],
                 claims_here: dict[tuple[str, str], list[ClaimResult]] | None = None) -> str:
    """What won and at what cost, first: each model x task's best configuration and those inside its
    interval, the cheapest near full FT and its claims' verdicts; then every claim's verdict."""
    pairs = summaries(agg)
    here = claims_here if claims_here is not None else {(m, t): claims for m, t, _ in pairs} if len(pairs) == 1 else {}
    rows = "".join(f"<tr><td>{escape(m)} / {escape(t)}</td><td>{escape(s['best'])}{'; ' + escape(s['tied']) if s['tied'] else ''}</td>"
                   f"<td>{escape(s['cheapest'])}</td><td>{verdicts_here(here.get((m, t), []))}</td></tr>"
                   for m, t, s in pairs)
    table = ("<table class='summary'><thead><tr><th>Model / task</th><th>Best on the primary metric (test)</th>"
             "<th>Cheapest close to full fine-tuning</th><th>Claims on this pair's runs alone (verdicts from their intervals, "
             "corrected within the pair)</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>") if rows else "<p>No successful runs.</p>"
    verdicts = "".join(f"<li><b>{escape(r.id)}</b>: <span class='{VERDICT_CLASS.get(r.verdict, '')}'>{escape(r.verdict)}</span> "
                       f"({escape(claim_reason(r))})</li>" for r in claims)
    tally = ", ".join(f"<span class='{VERDICT_CLASS.get(v, '')}'>{n} {escape(v)}</span>" for v, n in _tally(claims))
    pooled = " pooled over every model and task here" if len(here) > 1 else ""
    return table + (f"<p>Claims{pooled}, decided by their intervals: {tally}.</p><details><summary>each claim's verdict and why "
                    f"(the claims section has the evidence)</summary><ul>{verdicts}</ul></details>" if verdicts else "")


def _numeric(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def plot_columns(t: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """(column, label, direction) of every measured figure some row of `t` has."""
    metric = str(t["primary_metric"].iloc[0]) if "primary_metric" in t else "primary"
    direction = str(t["primary_direction"].iloc[0]) if "primary_direction" in t else "max"
    cols = [("primary_mean", f"{metric} (test)", direction), ("gain_over_base_mean", "gain over base", "max"),
            ("forgetting_mean", "forgetting", "min")]
    cols += [(f.path, f.label, f.direction) for f in FIELDS if f.table in ("main", "details", "serving")]
    return [c for c in cols if c[0] in t and t[c[0]].map(_numeric).notna().any()]


def pareto_html(agg: pd.DataFrame) -> str:
    """One plot per model x task; its data rides in the page as JSON for report.js."""
    parts = []
    for (model, task), t in (agg.groupby(["model", "task"], sort=True) if not agg.empty else []):
        cols = plot_columns(t)
        if len(cols) < 2:
            continue
        names, name = [c[0] for c in cols], labeller(t)
        cost = next((i for i, c in enumerate(names) if c == "params.trainable"), 1)
        data = {"columns": [{"label": lab, "direction": d} for _, lab, d in cols], "x": cost, "y": 0,
                "rows": [{"label": name(r), "color": str(r.get("color") or PALETTE[0]), "values": [_numeric(r[c]) for c in names]}
                         for _, r in t.iterrows()]}
        blob = json.dumps(data).replace("</", "<\\/")
        parts.append(f"<div class='pareto'><h3>{escape(str(model))} / {escape(str(task))}</h3>"
                     "<label>x <select class='x'></select></label> <label>y <select class='y'></select></label>"
                     "<svg viewBox='0 0 640 400' width='640' height='400' role='img'></svg><div class='tip'></div>"
                     f"<script type='application/json'>{blob}</script></div>")
    return "".join(parts) or "<p>No two measured columns to plot.</p>"


def convergence_html(c: Check | None) -> str:
    """Whether the runs had reached their plateau: each pick against itself trained longer."""
    head = f"<p>{escape(regime_line(c))}</p>" + ("".join(f"<p class='warn'>{escape(n)}</p>" for n in convergence_notes(c) if n)
                                                  if c is not None else "")
    if c is None or not c.lines:
        return head
    rows = "".join(
        f"<tr><td>{escape(ln.label)}</td><td>{escape(ln.metric)}</td><td>{ln.steps}</td><td>{ln.at_budget:.4g}</td>"
        f"<td>{ln.longer_steps}</td><td>{ln.longer:.4g}</td><td>{ln.gain:+.4g}</td><td><b>{escape(ln.verdict)}</b></td>"
        f"<td>{escape(ln.reason)} (seeds {', '.join(map(str, ln.seeds))})</td></tr>" for ln in c.lines)
    return (head + "<div class='scroll'><table><thead><tr><th>Configuration (at its validation pick)</th><th>Metric</th><th>Steps</th>"
            "<th>Validation</th><th>Longer: steps</th><th>Validation</th><th>Gain</th><th>Verdict</th><th>Why</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def render(*, tables_html: list[str], figs: list[Figure], claims: list[ClaimResult], ok: pd.DataFrame,
           failed: pd.DataFrame, problems: list[Problem], downloads: list[str], notes: list[str], sources: list[str],
           out: Path, agg: pd.DataFrame | None = None, convergence: Check | None = None,
           claims_here: dict[tuple[str, str], list[ClaimResult]] | None = None) -> str:
    """The whole page. Figures are embedded; every link is relative to the out folder."""
    agg = pd.DataFrame() if agg is None else agg
    nav = " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in [("summary", "Summary"), ("tables", "Tables"), ("pareto", "Trade-offs"),
                                                             ("figures", "Figures"), ("claims", "Claims"),
                                                             ("convergence", "Convergence"),
                                                             ("provenance", "Provenance"), ("failed", "Failed runs"), ("skipped", "Skipped files")])
    summary = (f"<p>{len(ok)} successful runs, {len(failed)} failed, {len(problems)} skipped/superseded files; "
               f"read from {escape(', '.join(sources))}.</p>" + "".join(f"<p class='warn'>{escape(n)}</p>" for n in notes)
               + "<p>Downloads: " + " · ".join(f"<a href='{escape(d)}'>{escape(d)}</a>" for d in downloads) + "</p>")
    body = "".join([
        _section("Summary", summary_html(agg, claims, claims_here), "summary"),
        _section("Tables", "".join(tables_html) or "<p>No successful runs.</p>", "tables"),
        _section("Trade-offs: any two measured columns (the dashed line is the Pareto front)", pareto_html(agg), "pareto"),
        _section("Figures", figures_html(figs, out), "figures"),
        _section("Claims check", claims_html(claims), "claims"),
        _section("Convergence check", convergence_html(convergence), "convergence"),
        _section("Provenance", provenance_html(ok), "provenance"),
        _section("Failed runs", failed_html(failed), "failed"),
        _section("Skipped or corrupt files", problems_html(problems), "skipped"),
    ])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>peftbench report</title><style>{CSS}</style></head>"
            f"<body><h1>peftbench report</h1><nav>{nav}</nav>{summary}{body}<script>{SCRIPT}</script></body></html>\n")
