"""Write the README's result tables from committed records, so that no number in them is typed.

Each table in README.md sits between two markers that name the records it comes from:

    <!-- tables: results/reference/demo -->
    ... (generated: the report's main and cost-details tables for each model x task) ...
    <!-- /tables -->

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

from analysis import tables  # noqa: E402
from analysis.load import load_results  # noqa: E402
from analysis.stats import aggregate  # noqa: E402

BLOCK = re.compile(r"(<!-- tables: (?P<src>[^ ]+) -->\n)(?P<body>.*?)(<!-- /tables -->)", re.S)


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


def render(readme: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + tables_for(m.group("src")) + m.group(4), readme)


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
    print(f"readme_tables: wrote {len(BLOCK.findall(old))} table block(s) into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
