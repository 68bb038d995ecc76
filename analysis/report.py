"""`peftbench report [RESULTS...] [--out DIR] [--claims DIR]`: tables, figures, claims, index.html.

Reads JSON records only; retrains nothing; takes seconds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from peftbench.analysis import claims as claims_mod
from peftbench.analysis import convergence as convergence_mod
from peftbench.analysis import tables
from peftbench.analysis.figures import WIDTHS_IN, figures_for
from peftbench.analysis.help import parser
from peftbench.analysis.load import GROUP_KEY
from peftbench.analysis.html import render
from peftbench.analysis.load import Loaded, load_results
from peftbench.analysis.stats import aggregate, per_run, single_seed_only
from peftbench.analysis.studies import study_claims
from peftbench.analysis.verdicts import ALPHA
from peftbench.experiments import decide
from peftbench.experiments.record import file_safe


def parse_args(argv: list[str]) -> argparse.Namespace:
    p, o = parser("peftbench report",
                  "peftbench report [RESULTS...] [--out DIR] [--claims DIR] [--config-dir DIR] [--figure-width single|double]\n"
                  "                        [--study NAME]",
                  "Tables, figures, the claims check and index.html, from result records alone: retrains nothing and\n"
                  "takes seconds (docs/report.md).")
    o.add_argument("results", nargs="*", default=["results"], metavar="RESULTS", help="result files or folders of *.json (default: results/)")
    o.add_argument("--out", default="report", metavar="DIR", help="output folder (default: report/)")
    o.add_argument("--claims", metavar="DIR", help="folder of claim YAML files (default: conf/claims/, or DIR/claims/ of --config-dir)")
    o.add_argument("--config-dir", metavar="DIR", help="your own config folder, as for `peftbench run` and `reproduce`: its claims/ "
                                                       "replaces conf/claims/")
    o.add_argument("--figure-width", choices=sorted(WIDTHS_IN), default="double", metavar="single|double",
                   help="draw the figures one column (3.4 in) or a page (7 in) wide, fonts to match (default: double)")
    o.add_argument("--study", metavar="NAME", help="check only the claims of this study (conf/study/NAME.yaml; NAME_VARIANT for a variant)")
    return p.parse_args(argv)


def write_tables(agg, out: Path) -> tuple[list[str], list[str]]:
    """tables.md, tables.tex (+ a compilable tables_standalone.tex) and one CSV per model x task;
    each model x task has a main table and a cost-details table. Returns (HTML fragments, files)."""
    groups = tables.table_groups(agg) if not agg.empty else []
    md, tex, html, files = [tables.markdown_legend([t for _, t in groups])], [], [], []
    for (model, task), t in groups:
        title, details = f"{model} / {task}", f"{model} / {task}: cost details"
        md += [tables.to_markdown(title, t), tables.to_markdown(details, t, details=True)]
        tex += [tables.to_latex(title, t), tables.to_latex(details, t, details=True)]
        html += [tables.to_html(title, t), tables.to_html(details, t, details=True)]
        if tables.has_serving(t):
            serving = f"{model} / {task}: serving costs"
            md.append(tables.to_markdown(serving, t, details="serving"))
            tex.append(tables.to_latex(serving, t, details="serving"))
            html.append(tables.to_html(serving, t, details="serving"))
        csv = out / "tables" / f"{file_safe(model)}__{task}.csv"  # a hub id or a folder as the model (model=hf)
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text(tables.to_csv(t))
        files.append(csv.relative_to(out).as_posix())
    (out / "tables.md").write_text("# Results\n\n" + "\n".join(md[1:] + md[:1]))
    (out / "tables.tex").write_text("% \\usepackage{booktabs,graphicx}\n" + "\n".join(tex))
    (out / "tables_standalone.tex").write_text(tables.LATEX_PREAMBLE + "\n".join(tex) + "\n\\end{document}\n")
    return html, ["tables.md", "tables.tex", "tables_standalone.tex", *files]


def report_problems(loaded: Loaded) -> None:
    for p in loaded.problems:
        print(f"peftbench report: skipped {p.file}: {p.reason}", file=sys.stderr)
    for _, f in loaded.failed.iterrows():
        print(f"peftbench report: {f['status']} run {f['run_id']} (not in any mean): {f['error']}", file=sys.stderr)


def build(results: list[str], out: Path, claims_dir: Path, claim_ids: list[str] | None = None,
          level: tuple[float, str] | None = None, figure_width: str = "double", convergence: Path | None = None) -> dict:
    """Everything the report writes; returns what it made, for tests and the summary line.
    `claim_ids`: check only these claims (a study's), else every claim in `claims_dir`.
    `level`: (alpha, why) the verdicts are read at; None: a sequential study's per-look level where
    a results folder holds its analysis plan (`verdict_level`), else 0.05.
    `convergence`: the folder of a study's convergence check; None: the one under the result
    folders, where there is one (analysis.convergence)."""
    alpha, level_note = verdict_level(results) if level is None else level
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_results(results)
    report_problems(loaded)
    agg = aggregate(loaded.ok) if not loaded.ok.empty else loaded.ok
    html_tables, files = write_tables(agg, out)
    if not agg.empty:
        runs = per_run(loaded.ok, agg)
        runs = runs.sort_values(["model", "task", "order", "method", "capacity", "targets", "lr", "steps", "setting", "seed"])
        (out / "runs.md").write_text(tables.runs_markdown(runs, loaded.failed))
        (out / "runs.csv").write_text(tables.runs_csv(runs))
        files += ["runs.md", "runs.csv"]
    figs = figures_for(loaded.ok, agg, out, figure_width) if not agg.empty else []
    claim_results = claims_mod.evaluate_all(loaded.ok, claims_dir, claim_ids, alpha)
    claims_here = claims_per_group(loaded.ok, claim_results, claims_dir, claim_ids, alpha)
    conv = convergence_check(results, loaded.ok, convergence)
    regime = f"\n{convergence_mod.regime_line(conv)}\n"
    (out / "claims.md").write_text(claims_mod.to_markdown(claim_results) + (f"\n{level_note}\n" if level_note else "") + regime)
    (out / "convergence.md").write_text(convergence_mod.to_markdown(conv))
    files.append("convergence.md")
    if conv is not None and conv.lines:
        (out / "convergence.csv").write_text(convergence_mod.to_csv(conv))
        files.append("convergence.csv")
    notes = [tables.SINGLE_SEED_NOTE + "."] if not agg.empty and single_seed_only(agg) else []
    notes += [level_note] if level_note else []
    page = render(tables_html=html_tables, figs=figs, claims=claim_results, ok=loaded.ok, failed=loaded.failed,
                  problems=loaded.problems, downloads=files + ["claims.md"], notes=notes, sources=[str(r) for r in results], out=out,
                  agg=agg, convergence=conv, claims_here=claims_here)
    (out / "index.html").write_text(page)
    return {"loaded": loaded, "agg": agg, "figures": figs, "claims": claim_results, "files": files, "convergence": conv}


def claims_per_group(ok: pd.DataFrame, every: list, claims_dir: Path, claim_ids: list[str] | None,
                     alpha: float) -> dict[tuple[str, str], list]:
    """Each model x task's own verdicts: the claims checked on that pair's runs alone (corrected
    together within it), as the README's verdict columns are. With one pair they are the report's."""
    if ok.empty:
        return {}
    groups = ok.groupby(GROUP_KEY, sort=True)
    if groups.ngroups == 1:
        return {tuple(map(str, next(iter(groups.groups)))): every}
    return {(str(m), str(t)): claims_mod.evaluate_all(runs, claims_dir, claim_ids, alpha) for (m, t), runs in groups}


def convergence_check(results: list[str], ok: pd.DataFrame, folder: Path | None) -> convergence_mod.Check | None:
    """The convergence check of the given folder, else of every one under the results (several
    studies' checks read together, each line against its own study's criterion)."""
    folders = [Path(folder)] if folder is not None else convergence_mod.folders(results)
    return convergence_mod.merged([c for f in folders if (c := convergence_mod.from_folder(ok, f)) is not None])


def verdict_level(results: list[str]) -> tuple[float, str]:
    """(alpha, a note saying why) from the analysis plan of a sequential study among the results
    folders, or their subfolders as the records are read: its verdicts are read at the per-look
    level it declared before its seeds phase."""
    folders = sorted({plan.parent for r in results if Path(r).is_dir() for plan in Path(r).rglob(decide.PLAN_FILE)})
    plans = [(folder, decide.read_plan(folder)) for folder in folders]
    seq = [(folder, p) for folder, p in plans if p and p.get("sequential")]
    if not seq:
        return ALPHA, ""
    levels = {decide.alpha_of(p) for _, p in seq}
    if len(levels) > 1:
        raise decide.DecideError(f"the results folders hold sequential studies at different levels ({sorted(levels)}); "
                                 f"report each study on its own")
    folder, p = seq[0]
    return plan_level(p, folder / decide.PLAN_FILE)


def plan_level(plan: dict, where: Path | str) -> tuple[float, str]:
    """(alpha, the sentence that says why) for an analysis plan with a sequential design."""
    s = plan.get("sequential")
    if not s:
        return ALPHA, ""
    return decide.alpha_of(plan), (f"Verdicts are read at level {decide.alpha_of(plan):.3g}, not 0.05: {where} "
                                   f"declares a sequential design of at most {s['looks_max']} looks at "
                                   f"{', '.join(map(str, s['seeds_per_look']))} seeds per pick, each at 0.05 / "
                                   f"{s['looks_max']} (Bonferroni over the looks).")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    user = Path(args.config_dir).expanduser() if args.config_dir else None
    if user is not None and not user.is_dir():
        print(f"peftbench: error: --config-dir {args.config_dir} is not a folder; give the folder that holds your "
              f"claims/ and study/ YAMLs", file=sys.stderr)
        return 2
    claim_ids = None
    if args.study:
        studies = user / "study" if user is not None and (user / "study").is_dir() else None
        claim_ids = study_claims(args.study, studies) if studies else study_claims(args.study)
        if claim_ids is None:
            where = f"{studies}/" if studies else "conf/study/"
            print(f"peftbench: error: --study {args.study}: no such study in {where} (see peftbench reproduce --list)", file=sys.stderr)
            return 2
    missing = [r for r in args.results if not Path(r).exists()]
    if missing:  # before anything is written: a report of nothing would overwrite the last one
        print(f"peftbench: error: no such file or folder: {', '.join(missing)}; name a results folder or record files "
              f"(e.g. peftbench report results/)", file=sys.stderr)
        return 2
    # an explicit --claims wins; else the user's claims/, else the package's
    claims_dir = (Path(args.claims) if args.claims else user / "claims" if user is not None and (user / "claims").is_dir()
                  else claims_mod.CLAIMS_DIR)
    try:
        made = build(args.results, out, claims_dir, claim_ids=claim_ids, figure_width=args.figure_width)
    except decide.DecideError as e:
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2
    n_figs = sum(1 for f in made["figures"] if f.files)
    print(f"peftbench report: {len(made['loaded'].ok)} runs, {len(made['agg'])} table rows, {n_figs} figures, "
          f"{len(made['claims'])} claims -> {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
