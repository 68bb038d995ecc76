"""Write the README's and the docs' result tables from committed records, so that no number in them is typed.

Each table sits between two markers that name the records it comes from:

    <!-- tables: results/reference/demo -->
    ... (generated: the report's main and cost-details tables for each model x task) ...
    <!-- /tables -->

A block `<!-- timing: results/reference/llm -->` ... `<!-- /timing -->` gets where a sweep's wall time
went, from the same records: first start to last finish, and the sum of each phase over the runs.

A block `<!-- grid: results/reference/studies/NAME -->` ... `<!-- /grid -->` gets each
configuration's test score along its learning-rate grid; `<!-- grid: SRC forgetting -->` gets the
records' headline forgetting figure instead.

A block `<!-- claims: results/reference/studies/NAME -->` ... `<!-- /claims -->` gets the verdict
of each claim that study NAME (`conf/study/NAME.yaml`; a folder `NAME_VARIANT` is that study's
variant) tests, checked against those records, with the estimates, CIs and seeds behind it and,
where a verdict disagrees with the literature, the claim's stated likely reason.

A block `<!-- zoo: results/reference/zoo -->` ... `<!-- /zoo -->` (or `ladder:` ... `/ladder`) gets
the method zoo's (the quantisation ladder's) table from that quick sweep's records
(scripts/zoo_table.py).

A block `<!-- headline: results/reference/demo -->` ... `<!-- /headline -->` gets a narrow table of
what each method scores and costs; `<!-- verdicts: results/reference/studies -->` ...
`<!-- /verdicts -->` gets every committed study's verdicts, a column per task, each study linked to
its page docs/studies/NAME.md (a README block); `<!-- verdicts: results/reference/studies NAME -->`
gets study NAME's alone, for the top of its page.

A block `<!-- fields -->` ... `<!-- /fields -->` gets every key a record's measured sections can
hold, from experiments/fields.py: the figures (unit, which way is better, which table shows them)
and the other keys (facts, per-step series, per-part breakdowns); the schema page's list.

`python scripts/readme_tables.py` rewrites every such block in README.md and in every page of the
docs site (docs/*.md) from its records (the same tables `peftbench report` writes to
report/tables.md); `--check` changes nothing and exits 1 when a page differs from what the records
give. `--readme PATH` renders that one file instead.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peftbench.analysis import claims, convergence, tables  # noqa: E402
from peftbench.analysis.load import Loaded, find_json_files, load_results, read_record, setting_labels  # noqa: E402
from peftbench.analysis.stats import aggregate  # noqa: E402
from peftbench.analysis.tables import percent_scale  # noqa: E402
from peftbench.analysis.report import verdict_level  # noqa: E402
from peftbench.analysis.studies import study_claims, study_of_folder  # noqa: E402
from peftbench.experiments.decide import DecideError  # noqa: E402
from peftbench.experiments.fields import FIELDS, KEYS, TIMING_FIELDS  # noqa: E402

BLOCK = re.compile(r"(<!-- tables: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /tables -->)", re.S)
GRID = re.compile(r"(<!-- grid: (?P<src>[^ ]+)(?: (?P<score>forgetting))? -->\n)(?P<body>.*?)(<!-- /grid -->)", re.S)
CLAIMS = re.compile(r"(<!-- claims: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /claims -->)", re.S)
HEADLINES = re.compile(r"(<!-- headline: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /headline -->)", re.S)
VERDICTS = re.compile(r"(<!-- verdicts: (?P<src>[^ ]+)(?: (?P<study>[a-z0-9_]+))? -->\n)(?P<body>.*?)(<!-- /verdicts -->)", re.S)
ZOO = re.compile(r"(<!-- (?P<kind>zoo|ladder): (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /(?P=kind) -->)", re.S)
SCHEMA = re.compile(r"(<!-- fields -->\n)(?P<body>.*?)(<!-- /fields -->)", re.S)
TIMING = re.compile(r"(<!-- timing: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /timing -->)", re.S)
# record timing keys in the order a run goes through them (the whole run's total is the table's sum)
PHASES = [(f.key, f.legend) for f in TIMING_FIELDS if f.key != "total_s"]


@functools.lru_cache(maxsize=None)
def _loaded(source: str) -> Loaded:
    return load_results([str(ROOT / source)])


def loaded_of(source: str) -> Loaded:
    """The records under `source`, read once per folder; each caller gets its own frames."""
    got = _loaded(source)
    return Loaded(got.ok.copy(), got.failed.copy(), list(got.problems))


@functools.lru_cache(maxsize=None)
def _aggregated(source: str):
    return aggregate(loaded_of(source).ok)


def aggregated(source: str):
    """stats.aggregate of the records under `source`, computed once per folder."""
    return _aggregated(source).copy()


def tables_for(source: str) -> str:
    """The main and cost-details tables of the records under `source` (relative to the repo)."""
    loaded = loaded_of(source)
    if loaded.ok.empty:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    out = []
    for (model, task), t in tables.table_groups(aggregated(source)):
        out += [tables.to_markdown(f"{model} / {task}", t), tables.to_markdown(f"{model} / {task}: cost details", t, details=True)]
    # the README's own headings sit above the block: one level below them
    return "\n".join(out).replace("\n### ", "\n#### ").replace("### ", "#### ", 1)


HEADLINE = [("primary_mean", "{primary} (%)", lambda v: f"{100 * v:.1f}"),
            ("pct_of_full_ft_percent", "% of full FT", lambda v: f"{v:.1f}"),
            ("params.trainable", "trainable params", lambda v: f"{v:,.0f}"),
            ("cost.peak_train_mem_growth_bytes", "train memory growth (MiB)", lambda v: f"{v / 2**20:.0f}"),
            ("cost.train_tokens_per_s_median", "train tokens/s", lambda v: f"{v:,.0f}"),
            ("cost.latency_overhead_unmerged_frac", "latency unmerged (%)", lambda v: f"{100 * v:+.0f}"),
            ("cost.latency_overhead_merged_frac", "latency merged (%)", lambda v: f"{100 * v:+.0f}"),
            ("cost.adapter_bytes", "adapter (KiB)", lambda v: f"{v / 1024:,.0f}")]


def headline_for(source: str) -> str:
    """A narrow table per model x task: what each method scores and what it costs (the full
    tables are on the docs page of the benchmark)."""
    import math

    agg = aggregated(source)
    out = []
    for (model, task, precision), t in agg.groupby(["model", "task", "precision"], sort=True):
        primary = str(t["primary_metric"].iloc[0])
        out += [f"{model} / {task}, {precision}, n={int(t['n'].max())} seed(s) a row:", "",
                "| method | capacity | targets | " + " | ".join(h.format(primary=primary) for _, h, _ in HEADLINE) + " |",
                "|---|---|---|" + "---|" * len(HEADLINE)]
        for _, row in t.sort_values("primary_mean", ascending=False).iterrows():
            cells = ["–" if row.get(c) is None or (isinstance(row.get(c), float) and math.isnan(row[c])) else fmt(float(row[c]))
                     for c, _, fmt in HEADLINE]
            out.append(f"| {row['method']} | {row['capacity']} | {row['targets']} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def timing_for(source: str) -> str:
    """Wall time of the ok runs under `source`, first start to last finish, and each phase's sum."""
    from datetime import datetime

    files, _ = find_json_files([str(ROOT / source)])
    recs = [r for r in (read_record(f)[0] for f in files) if r is not None and r.get("status") == "ok"]
    if not recs:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    start = min(datetime.fromisoformat(r["started_at"]) for r in recs)
    end = max(datetime.fromisoformat(r["finished_at"]) for r in recs)
    total = sum(float(r["timing"]["total_s"]) for r in recs)
    wall = (end - start).total_seconds()
    rest = ("the rest is process start-up between runs" if total <= wall else
            f"more than the wall time: runs overlapped, {total / wall:.1f} at a time on average (parallel jobs)")
    cpus = sorted({f"{(r.get('provenance') or {}).get('cpu_model', '?')}, {r['precision']}, "
                   f"{(r.get('provenance') or {}).get('torch_threads', '?')} thread(s) a run" for r in recs})
    copied = sum(1 for r in recs if (r.get("measurement") or {}).get("costs_from"))
    lines = [f"{len(recs)} runs on {'; '.join(cpus)}; wall time {wall / 60:.1f} min from the first run's start to "
             f"the last one's finish (`started_at`, `finished_at`); the runs' own `timing.total_s` sum to {total / 60:.1f} min, "
             f"{rest}." + (f" {copied} runs copied their latency and serving figures from an earlier run of their "
                           f"configuration (`measurement.costs_from`)." if copied else ""),
             "", "| phase | sum over runs (min) | share of run time |", "|---|---|---|"]
    for key, label in PHASES:
        v = sum(float(r["timing"].get(key) or 0.0) for r in recs)
        lines.append(f"| {label} | {v / 60:.1f} | {100 * v / total:.0f}% |")
    lines += study_invocations(source)
    serving_parts = sorted({k for r in recs for k in ((r.get("serving") or {}).get("measure_s") or {})})
    head = ("| method | runs | steps | batch | run (s, mean) | training (s, mean) | median step (s) |"
            + "".join(f" serving: {k} (s) |" for k in serving_parts))
    lines += ["", head, "|---" * (7 + len(serving_parts)) + "|"]
    groups: dict[tuple, list] = {}
    for r in recs:
        groups.setdefault((r["method"], int(r["config"]["steps"]), int(r["config"]["batch_size"])), []).append(r)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)
    for (method, steps, batch), rs in sorted(groups.items(), key=lambda kv: -mean([float(r["timing"]["total_s"]) for r in kv[1]])):
        spent = [(r.get("serving") or {}).get("measure_s") or {} for r in rs]
        lines.append(f"| {method} | {len(rs)} | {steps} | {batch} | {mean([float(r['timing']['total_s']) for r in rs]):.0f} | "
                     f"{mean([float(r['timing']['train_s']) for r in rs]):.0f} | "
                     f"{mean([float(r['cost']['step_time_ms_median']) for r in rs]) / 1e3:.2f} |"
                     + "".join(f" {mean([x[k] for x in spent if k in x]):.1f} |" if any(k in x for x in spent) else " – |"
                               for k in serving_parts))
    return "\n".join(lines) + "\n"


def _natural(text: str) -> list[tuple[int, Any]]:
    """Sort key that puts task.n_train=250 before task.n_train=1000."""
    return [(0, float(t)) if re.fullmatch(r"\d+(\.\d+)?", t) else (1, t) for t in re.split(r"(\d+(?:\.\d+)?)", text) if t]


def grid_for(source: str, score: str = "primary") -> str:
    """Each configuration of the records under `source` along its learning-rate grid: the test
    primary metric's (or, with score="forgetting", the record's headline forgetting figure's) mean
    ± 95% CI over seeds, the lr that validation picks in bold."""
    loaded = loaded_of(source)
    if loaded.ok.empty:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    agg = aggregated(source)
    label = {k: v or "-" for k, v in setting_labels(loaded.ok).items()}
    lrs = sorted(agg["lr"].astype(float).unique())
    metric = str(loaded.ok["primary_metric"].iloc[0])
    scale = percent_scale(agg, "primary_mean") if score == "primary" else 1.0
    lines = ["| method | capacity | targets | steps | setting | " + " | ".join(f"lr {lr:.0e}" for lr in lrs) + " |",
             "|---" * (5 + len(lrs)) + "|"]
    keys = ["model", "task", "order", "method", "capacity", "targets", "steps", "setting"]
    groups = sorted(agg.groupby(keys, sort=True, dropna=False), key=lambda kv: (kv[0][:-1], _natural(label.get(kv[0][-1], "-"))))
    for (model, task, _, method, capacity, targets, steps, setting), g in groups:
        sign = 1.0 if str(g["primary_direction"].iloc[0]) in ("max", "higher") else -1.0
        best = float(g.loc[(g["val_primary_mean"].astype(float) * sign).idxmax(), "lr"])
        cells = []
        for lr in lrs:
            row = g[g["lr"].astype(float) == lr]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            digits = 1 if score == "primary" else 3
            ci = "" if int(r["n"]) < 2 else f" ± {scale * float(r[f'{score}_ci95']):.{digits}f}"
            lo, hi, half = (float(r[k]) for k in ("primary_ci_low", "primary_ci_high", "primary_ci95"))
            if score == "primary" and int(r["n"]) >= 2 and min(hi - r["primary_mean"], r["primary_mean"] - lo) < half - 1e-12:
                ci = f" [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"  # the interval cut at the metric's range
            text = f"{scale * float(r[f'{score}_mean']):.{digits}f}{ci}" + ("" if int(r["n"]) == 3 else f" (n={int(r['n'])})")
            cells.append(f"**{text}**" if float(lr) == best else text)
        lines.append(f"| {method} | {capacity} | {targets} | {steps} | {label.get(setting, '-')} | " + " | ".join(cells) + " |")
    models = sorted(set(agg["model"])) + sorted(set(agg["task"]))
    unit = "%, " if scale == 100 else ""
    if score == "forgetting":
        what = "/".join(sorted({str(k) for k in loaded.ok["forgetting_key"].dropna()}))
        return ("\n".join(lines) + f"\n\nforgetting ({what}, the forgetting probe after training; lower is less forgetting; "
                f"{', '.join(models)}), mean ± 95% CI over seeds (n=3 unless marked); bold: the lr with the best validation "
                f"{metric} in that row.\n")
    return ("\n".join(lines) + f"\n\n{metric} on the test split ({unit}{', '.join(models)}), mean ± 95% CI over seeds (n=3 unless "
            "marked; an interval that would pass the metric's range is cut there and shown as [low, high]); bold: the lr "
            "with the best validation mean in that row.\n")


def study_claim_ids(source: str) -> list[str]:
    """The claims of the study a records folder is named after (`practice_guides_sst2` is
    practice_guides' sst2 variant)."""
    ids = study_claims(Path(source).name)
    if ids is None:
        raise SystemExit(f"readme_tables: {source} is not named after a study in conf/study/")
    return ids


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@functools.lru_cache(maxsize=None)
def study_results(source: str) -> tuple:
    """The claim results of the study behind a records folder (one evaluation per folder and run)."""
    loaded = loaded_of(source)
    if loaded.ok.empty:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    alpha, _ = verdict_level([str(ROOT / source)])  # a sequential study's per-look level, as its report reads it
    return tuple(claims.evaluate_all(loaded.ok, claims.CLAIMS_DIR, study_claim_ids(source), alpha))


VARIANTS = (("", "generated task, MiniLM"), ("_sst2", "SST-2, MiniLM"), ("_llm", "procedural, SmolLM2-135M"))
# the column a study's own folder (no variant suffix) goes in, by what its records ran: a study
# written for SST-2 from the start (sst2_headline) is an SST-2 column entry
COLUMN_OF_RUN = {("synth", "minilm"): "", ("sst2", "minilm"): "_sst2", ("procedural", "smollm2-135m"): "_llm"}


def column_of(folder: Path) -> str:
    rec = json.loads(next(folder.glob("*.json")).read_text())
    return COLUMN_OF_RUN.get((rec.get("task"), rec.get("model")), "")


def verdicts_for(source: str, only: str | None = None) -> str:
    """Every committed study's claims (or study `only`'s, on its own page), one row per study and
    claim, a column per task: the verdict each folder's records give. In the README each study
    links to its docs page, which has the reasons and numbers."""
    root = ROOT / source
    folders = {p.name for p in root.iterdir() if p.is_dir() and list(p.glob("*.json"))}
    studies = sorted({n for n in folders if study_claims(n) is not None and not any(n.endswith(v) for v, _ in VARIANTS[1:])})
    if only is not None:
        if only not in studies:
            raise SystemExit(f"readme_tables: no reference records of study {only} under {source}")
        studies = [only]
    lines = [("| claim | " if only else "| study: claim | ") + " | ".join(label for _, label in VARIANTS) + " |",
             "|---|" + "---|" * len(VARIANTS)]
    counts: dict[str, int] = {}
    for study in studies:
        got = {v: {r.id: r.verdict for r in study_results(f"{source}/{study}{v}")} for v, _ in VARIANTS[1:] if f"{study}{v}" in folders}
        got[column_of(root / study)] = {r.id: r.verdict for r in study_results(f"{source}/{study}")}
        for cid in study_claim_ids(f"{source}/{study}"):
            cells = []
            for v, _ in VARIANTS:
                verdict = got.get(v, {}).get(cid)
                cells.append(verdict or "–")
                if verdict:
                    counts[verdict] = counts.get(verdict, 0) + 1
            lines.append(f"| {cid} | " + " | ".join(cells) + " |" if only else
                         f"| [`{study}`](docs/studies/{study_of_folder(study).stem}.md): {cid} | " + " | ".join(cells) + " |")
    total = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    tail = ""
    if only is not None:  # the study's page says, per task, whether the runs behind its verdicts had converged
        labels = dict(VARIANTS)
        cols = {column_of(root / only): only, **{v: f"{only}{v}" for v, _ in VARIANTS[1:] if f"{only}{v}" in folders}}
        tail = "".join(f"\n- {labels[v]}: {convergence_line(f'{source}/{folder}')}" for v, folder in sorted(cols.items()))
        tail = "\nWhether the runs behind these verdicts had converged (each study's convergence check):\n" + tail + "\n"
    return "\n".join(lines) + f"\n\n{sum(counts.values())} verdicts: {total}. –: no reference records for that task.\n" + tail


def convergence_line(source: str) -> str:
    """The convergence check of a study's records folder, in one line (or that there is none)."""
    folders = convergence.folders([ROOT / source])
    if not folders:
        study = study_of_folder(Path(source).name)
        declared = study is not None and "convergence" in (yaml.safe_load(study.read_text()) or {})
        return ("not checked: the study declares a convergence check, not run on these records" if declared else
                "not checked (the study declares no convergence check)")
    ok = loaded_of(source).ok
    try:
        check = convergence.merged([c for f in folders if (c := convergence.from_folder(ok, f)) is not None])
    except DecideError as e:
        raise SystemExit(f"readme_tables: {e}") from None
    return check.summary() if check is not None else "not checked"


def claims_for(source: str) -> str:
    """Each claim of the study behind `source`: verdict, and per condition the evidence with its
    estimate, 95% CI, p and seeds; then the stated reasons where a verdict disagrees."""
    results = study_results(source)
    lines = ["| claim | verdict | why | evidence (per condition: the data, estimate, 95% CI, corrected p, verdict) |", "|---|---|---|---|"]
    for r in results:
        why = claims.claim_reason(r)
        evidence = "<br>".join(claims.condition_line(c, why) + "".join(f"<br>· {claims.evidence_line(e)}" for e in c.evidence)
                               for c in r.conditions)
        lines.append(f"| **{r.id}**: {_cell(r.statement)} | **{r.verdict}** | {_cell(why)} | {_cell(evidence)} |")
    disagree = [f"- **{r.id}**: {r.disagreement()}" for r in results if r.disagreement()]
    return "\n".join(lines + ([""] + disagree if disagree else [])) + "\n"


def study_invocations(source: str) -> list[str]:
    """What `peftbench reproduce` estimated before each sweep of a study and how long the sweep
    took (`study.yaml`, written by `--keep`)."""
    import yaml

    path = ROOT / source / "study.yaml"
    if not path.exists():
        return []
    runs = (yaml.safe_load(path.read_text()) or {}).get("invocations") or []
    out = ["", "| `peftbench reproduce` invocation (finished) | estimate printed before the sweep (min) | sweep took (min) | records after |",
           "|---|---|---|---|"]
    for i in runs:
        # a resumed sweep is measured against the estimate for the runs it had left
        left = (f"; for the {i['runs_left']} left: {i['estimate_left_s'] / 60:.0f}"
                if i.get("runs_left") is not None and i.get("estimate_left_s") is not None and i["runs_left"] < i["records_after"] else "")
        out.append(f"| {i['finished_at'][:16].replace('T', ' ')} UTC{' ' + ' '.join(i['overrides']) if i.get('overrides') else ''} | "
                   f"{i['estimate_s'] / 60:.0f} ({'; '.join(i.get('estimate_bases') or [])}){left} | {i['sweep_s'] / 60:.1f} | {i['records_after']} |")
    return out


SHOWN_IN = {"main": "main table", "details": "cost details", "serving": "serving table", "none": "CSV"}


def schema_for() -> str:
    """Every figure (experiments.fields.FIELDS) and every other key (KEYS) a record can hold."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    better = {"min": "lower", "max": "higher", None: ""}
    lines = ["| Key | Unit | Better | Shown in | What |", "|---|---|---|---|---|"]
    lines += [f"| `{f.path}` | {f.unit} | {better[f.direction]} | {SHOWN_IN[f.table]} | {cell(f.legend)} |" for f in FIELDS]
    lines += ["", "| Key | Unit | What |", "|---|---|---|"]
    lines += [f"| `{k.path}` | {k.unit} | {cell(k.what)} |" for k in KEYS]
    return "\n".join(lines) + "\n"


def render(readme: str) -> str:
    readme = BLOCK.sub(lambda m: m.group(1) + tables_for(m.group("src")) + m.group(4), readme)
    readme = GRID.sub(lambda m: m.group(1) + grid_for(m.group("src"), m.group("score") or "primary") + m.group(5), readme)
    readme = CLAIMS.sub(lambda m: m.group(1) + claims_for(m.group("src")) + m.group(4), readme)
    readme = HEADLINES.sub(lambda m: m.group(1) + headline_for(m.group("src")) + m.group(4), readme)
    readme = VERDICTS.sub(lambda m: m.group(1) + verdicts_for(m.group("src"), m.group("study")) + m.group(5), readme)
    readme = ZOO.sub(lambda m: m.group(1) + zoo_for(m.group("kind"), m.group("src")) + m.group(5), readme)
    readme = SCHEMA.sub(lambda m: m.group(1) + schema_for() + m.group(3), readme)
    return TIMING.sub(lambda m: m.group(1) + timing_for(m.group("src")) + m.group(4), readme)


def zoo_for(kind: str, source: str) -> str:
    """The zoo's (or the quantisation ladder's) table from the records under `source`
    (scripts/zoo_table.py)."""
    from zoo_table import ladder_markdown, zoo_markdown

    folder = ROOT / source
    if not list(folder.glob("*.json")):
        raise SystemExit(f"readme_tables: no records under {source}")
    return ladder_markdown(folder) if kind == "ladder" else zoo_markdown(folder)


def pages(readme: Path) -> list[Path]:
    """README.md and, beside the repository's own README, every page of the docs site."""
    docs = sorted((ROOT / "docs").rglob("*.md")) if readme.resolve() == (ROOT / "README.md").resolve() else []
    return [readme, *docs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md or a docs page differs from its records")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args(argv)
    stale = []
    for path in pages(Path(args.readme)):
        old = path.read_text()
        new = render(old)
        if args.check:
            if new != old:
                stale.append(path)
            continue
        if new != old:
            path.write_text(new)
        print(f"readme_tables: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(BLOCK.findall(old))} table, "
              f"{len(CLAIMS.findall(old))} claims, {len(VERDICTS.findall(old))} verdicts, {len(GRID.findall(old))} grid and "
              f"{len(TIMING.findall(old))} timing and {len(ZOO.findall(old))} zoo block(s)")
    if stale:
        for path in stale:
            print(f"readme_tables: {path} differs from its records; run python scripts/readme_tables.py", file=sys.stderr)
        return 1
    if args.check:
        print("readme_tables: README.md and docs/ match their records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
