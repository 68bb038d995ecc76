"""Write the README's result tables from committed records, so that no number in them is typed.

Each table in README.md sits between two markers that name the records it comes from:

    <!-- tables: results/reference/demo -->
    ... (generated: the report's main and cost-details tables for each model x task) ...
    <!-- /tables -->

A block `<!-- timing: results/reference/llm -->` ... `<!-- /timing -->` gets where a sweep's wall time
went, from the same records: first start to last finish, and the sum of each phase over the runs.

A block `<!-- claims: results/reference/studies/NAME -->` ... `<!-- /claims -->` gets the verdict
of each claim that study NAME (`conf/study/NAME.yaml`; a folder `NAME_VARIANT` is that study's
variant) tests, checked against those records, with the estimates, CIs and seeds behind it and,
where a verdict disagrees with the literature, the claim's stated likely reason.

`python scripts/readme_tables.py` rewrites every such block from its records (the same tables
`peftbench report` writes to report/tables.md); `--check` changes nothing and exits 1 when the
README differs from what the records give.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import claims, tables  # noqa: E402
from analysis.load import find_json_files, load_results, read_record  # noqa: E402
from analysis.stats import aggregate  # noqa: E402
from analysis.studies import study_claims  # noqa: E402

BLOCK = re.compile(r"(<!-- tables: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /tables -->)", re.S)
CLAIMS = re.compile(r"(<!-- claims: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /claims -->)", re.S)
TIMING = re.compile(r"(<!-- timing: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /timing -->)", re.S)
# record timing keys in the order a run goes through them
PHASES = [("load_s", "load (weights, tokenizer, data)"), ("measure_base_s", "base model: scores, forgetting probe, latency copy"),
          ("prepare_data_s", "adapting"), ("train_s", "training"), ("eval_s", "evaluation (task metrics, forgetting, lm-eval)"),
          ("measure_s", "costs, latency, merge")]


def tables_for(source: str) -> str:
    """The main and cost-details tables of the records under `source` (relative to the repo)."""
    loaded = load_results([str(ROOT / source)])
    if loaded.ok.empty:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    out = []
    for (model, task), t in tables.table_groups(aggregate(loaded.ok)):
        out += [tables.to_markdown(f"{model} / {task}", t), tables.to_markdown(f"{model} / {task}: cost details", t, details=True)]
    # the README's own headings sit above the block: one level below them
    return "\n".join(out).replace("\n### ", "\n#### ").replace("### ", "#### ", 1)


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
    lines = [f"{len(recs)} runs; wall time {(end - start).total_seconds() / 60:.1f} min from the first run's start to "
             f"the last one's finish (`started_at`, `finished_at`); the runs' own `timing.total_s` sum to {total / 60:.1f} min, "
             f"the rest is process start-up between runs.", "", "| phase | sum over runs (min) | share of run time |", "|---|---|---|"]
    for key, label in PHASES:
        v = sum(float(r["timing"].get(key) or 0.0) for r in recs)
        lines.append(f"| {label} | {v / 60:.1f} | {100 * v / total:.0f}% |")
    serving_parts = sorted({k for r in recs for k in ((r.get("serving") or {}).get("measure_s") or {})})
    head = "| method | run (s) | training (s) | steps | median step (s) |" + "".join(f" serving: {k} (s) |" for k in serving_parts)
    lines += ["", head, "|---" * (5 + len(serving_parts)) + "|"]
    for r in sorted(recs, key=lambda r: -float(r["timing"]["total_s"])):
        spent = (r.get("serving") or {}).get("measure_s") or {}
        lines.append(f"| {r['method']} | {float(r['timing']['total_s']):.0f} | {float(r['timing']['train_s']):.0f} | "
                     f"{r['config']['steps']} | {float(r['cost']['step_time_ms_median']) / 1e3:.2f} |"
                     + "".join(f" {spent[k]:.1f} |" if k in spent else " – |" for k in serving_parts))
    return "\n".join(lines) + "\n"


def study_claim_ids(source: str) -> list[str]:
    """The claims of the study a records folder is named after (`practice_guides_sst2` is
    practice_guides' sst2 variant)."""
    ids = study_claims(Path(source).name)
    if ids is None:
        raise SystemExit(f"readme_tables: {source} is not named after a study in conf/study/")
    return ids


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_for(source: str) -> str:
    """Each claim of the study behind `source`: verdict, and per condition the evidence with its
    estimate, 95% CI, p and seeds; then the stated reasons where a verdict disagrees."""
    loaded = load_results([str(ROOT / source)])
    if loaded.ok.empty:
        raise SystemExit(f"readme_tables: no ok records under {source}")
    results = claims.evaluate_all(loaded.ok, claims.CLAIMS_DIR, study_claim_ids(source))
    lines = ["| claim | verdict | evidence (per condition: the data, estimate, 95% CI, p, seeds) |", "|---|---|---|"]
    for r in results:
        evidence = "<br>".join(
            f"`{c.check}`: {c.verdict}" + (f" ({c.note})" if c.note else "")
            + "".join(f"<br>· {e.where}: {e.text}{claims.stats_suffix(e)}" for e in c.evidence) for c in r.conditions)
        lines.append(f"| **{r.id}**: {_cell(r.statement)} | **{r.verdict}** | {_cell(evidence)} |")
    disagree = [f"- **{r.id}**: {r.disagreement()}" for r in results if r.disagreement()]
    return "\n".join(lines + ([""] + disagree if disagree else [])) + "\n"


def render(readme: str) -> str:
    readme = BLOCK.sub(lambda m: m.group(1) + tables_for(m.group("src")) + m.group(4), readme)
    readme = CLAIMS.sub(lambda m: m.group(1) + claims_for(m.group("src")) + m.group(4), readme)
    return TIMING.sub(lambda m: m.group(1) + timing_for(m.group("src")) + m.group(4), readme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md differs from its records")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"readme_tables: {path} differs from its records; run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        print(f"readme_tables: {path} matches its records")
        return 0
    path.write_text(new)
    print(f"readme_tables: wrote {len(BLOCK.findall(old))} table block(s), {len(CLAIMS.findall(old))} claims block(s) and "
          f"{len(TIMING.findall(old))} timing block(s) into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
