"""The zoo's and the quantisation ladder's tables from run records: `python scripts/zoo_table.py
RESULTS_DIR` prints the zoo's, `--ladder` the ladder's. docs/zoo.md and docs/quantisation.md hold
them as generated blocks (`<!-- zoo: results/reference/zoo -->`, `<!-- ladder: results/reference/quant -->`), which
scripts/readme_tables.py rewrites from the committed records and tests/test_readme_tables.py checks.

One row per method of conf/sweep/zoo.yaml that has a record (every rung of quant.yaml), in display
order; the method's metadata from its YAML, the outcome from its record (the latest finished record
per method).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sweep_methods(name: str) -> list[str]:
    """The methods a preset runs: named in it, or (the zoo) every one the others leave out."""
    from peftbench.experiments.sweep.methods import methods_beyond, preset_methods

    return preset_methods(name) or methods_beyond("methods", "quant").split(",")


def records(results: Path) -> dict[str, dict]:
    """The latest finished record of each method (by `finished_at`, not file times, which a clone
    resets)."""
    out: dict[str, dict] = {}
    recs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    for r in sorted(recs, key=lambda r: str(r.get("finished_at") or "")):
        out[r["method"]] = r
    return out


def _error(rec: dict) -> str:
    return str(rec.get("error") or rec.get("failure_reason") or rec["status"]).removeprefix("ConfigError: ").replace("|", "\\|")


def row(name: str, rec: dict | None) -> str:
    cfg = yaml.safe_load((ROOT / "conf" / "method" / f"{name}.yaml").read_text())
    meta = cfg.get("report") or {}
    # a method built from a peft config names it; one built otherwise says so in its report block
    cls = cfg.get("peft_class") or meta.get("built_on") or "? (add report.built_on to its YAML)"
    info = (rec or {}).get("method_info") or {}
    can = info.get("can_merge", ((rec or {}).get("cost") or {}).get("can_merge"))  # older records kept it in cost
    merges = {True: "yes", False: "no", None: "n/a"}[can]
    if rec is None:
        outcome = "not run | | |"
    elif rec["status"] == "ok":
        acc = rec["metrics"]["test"]["accuracy"]
        outcome = f"ok | {acc:.3f} | {rec['params']['trainable']:,} | {rec['timing']['total_s']:.0f}"
    else:
        outcome = f"refused: {_error(rec)} | | |"
    return f"| `{name}` | {meta.get('family', 'other')} | {cls} | {merges} | {cfg['lr']:g} | {outcome} |"


def _where(recs: dict[str, dict]) -> str:
    """The machine and settings the records ran under, and how their outcomes add up."""
    ok = [r for r in recs.values() if r["status"] == "ok"]
    cpus = sorted({f"{(r.get('provenance') or {}).get('cpu_model', '?')}, {r.get('precision', '?')}, "
                   f"{(r.get('provenance') or {}).get('torch_threads', '?')} thread(s) a run" for r in ok})
    def majority_of(r: dict) -> float | None:
        v = ((r.get("metrics_majority") or {}).get("test") or {}).get("accuracy")
        return round(float(v), 3) if isinstance(v, (int, float)) else None

    majority = sorted({m for m in map(majority_of, ok) if m is not None})
    at_majority = sum(1 for r in ok if majority_of(r) is not None and round(r["metrics"]["test"]["accuracy"], 3) == majority_of(r))
    steps = sorted({int(r["config"]["steps"]) for r in recs.values()})
    return (f"{len(recs)} records: {len(ok)} ok, {len(recs) - len(ok)} refused; {at_majority} of the ok runs at the "
            f"majority class ({', '.join(f'{m:.3f}' for m in majority)}) after {', '.join(map(str, steps))} steps. "
            f"Ran on {'; '.join(cpus)}; s: the run's wall time (`timing.total_s`).")


def zoo_markdown(results: Path) -> str:
    """One row per zoo method with a record: a method added since the sweep ran gets its row when
    it runs, so adding a method touches no page."""
    recs = records(results)
    names = [n for n in sweep_methods("zoo") if n in recs and (ROOT / "conf" / "method" / f"{n}.yaml").exists()]
    order = {n: (yaml.safe_load((ROOT / "conf" / "method" / f"{n}.yaml").read_text()).get("report") or {}).get("order", 1000) for n in names}
    lines = ["| method | family | peft class | merges | default lr | quick sweep | test acc | trainable | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [row(n, recs.get(n)) for n in sorted(names, key=lambda n: (order[n], n))]
    return "\n".join(lines) + "\n\n" + _where({n: r for n, r in recs.items() if n in names}) + "\n"


def ladder_markdown(results: Path) -> str:
    recs = records(results)
    lines = ["| rung | status | test acc | weight MB (`cost.weight_bytes`) | trainable | s |", "|---|---|---|---|---|---|"]
    names = sweep_methods("quant")
    for n in names:
        r = recs.get(n)
        if r is None:
            lines.append(f"| `{n}` | not run | | | | |")
        elif r["status"] != "ok":
            lines.append(f"| `{n}` | {r['status']}: {_error(r)} | | | | |")
        else:
            lines.append(f"| `{n}` | ok | {r['metrics']['test']['accuracy']:.3f} | {r['cost']['weight_bytes'] / 1e6:.1f} | "
                         f"{r['params']['trainable']:,} | {r['timing']['total_s']:.0f} |")
    return "\n".join(lines) + "\n\n" + _where({n: r for n, r in recs.items() if n in names}) + "\n"


def main() -> None:
    results = Path(sys.argv[1])
    print(ladder_markdown(results) if "--ladder" in sys.argv else zoo_markdown(results), end="")


if __name__ == "__main__":
    main()
