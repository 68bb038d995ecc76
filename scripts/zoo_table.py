"""Print the README's zoo table from run records: `python scripts/zoo_table.py RESULTS_DIR`, or
the ladder's with `--ladder`.

One row per method of conf/sweep/zoo.yaml (or quant.yaml), in display order; the method's metadata from its YAML, the outcome from its record (newest record
per method).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sweep_methods(name: str) -> list[str]:
    """The methods a preset runs: named in it, or (the zoo) every one the others leave out."""
    from peftbench.experiments.sweep.methods import methods_beyond, preset_methods

    return preset_methods(name) or methods_beyond("methods", "quant").split(",")


def records(results: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in sorted(results.glob("*.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(p.read_text())
        out[r["method"]] = r
    return out


def row(name: str, rec: dict | None) -> str:
    cfg = yaml.safe_load((ROOT / "conf" / "method" / f"{name}.yaml").read_text())
    meta = cfg.get("report") or {}
    # a method built from a peft config names it; one built otherwise says so in its report block
    cls = cfg.get("peft_class") or meta.get("built_on") or "? (add report.built_on to its YAML)"
    merges = {True: "yes", False: "no", None: "n/a"}[((rec or {}).get("cost") or {}).get("can_merge")]
    if rec is None:
        outcome = "not run | | |"
    elif rec["status"] == "ok":
        acc = rec["metrics"]["test"]["accuracy"]
        outcome = f"ok | {acc:.3f} | {rec['params']['trainable']:,} | {rec['timing']['total_s']:.0f}"
    else:
        outcome = f"refused: {rec['error'].removeprefix('ConfigError: ')} | | |"
    return f"| `{name}` | {meta.get('family', 'other')} | {cls} | {merges} | {cfg['lr']:g} | {outcome} |"


def ladder(recs: dict[str, dict]) -> None:
    print("| rung | status | test acc | weight MB (`cost.weight_bytes`) | trainable | s |")
    print("|---|---|---|---|---|---|")
    for n in sweep_methods("quant"):
        r = recs.get(n)
        if r is None:
            print(f"| `{n}` | not run | | | | |")
        elif r["status"] != "ok":
            print(f"| `{n}` | {r['status']}: {r['error'].removeprefix('ConfigError: ')} | | | | |")
        else:
            print(f"| `{n}` | ok | {r['metrics']['test']['accuracy']:.3f} | {r['cost']['weight_bytes'] / 1e6:.1f} | "
                  f"{r['params']['trainable']:,} | {r['timing']['total_s']:.0f} |")


def main() -> None:
    recs = records(Path(sys.argv[1]))
    if "--ladder" in sys.argv:
        return ladder(recs)
    names = sweep_methods("zoo")
    order = {n: (yaml.safe_load((ROOT / "conf" / "method" / f"{n}.yaml").read_text()).get("report") or {}).get("order", 1000) for n in names}
    print("| method | family | peft class | merges | default lr | quick sweep | test acc | trainable | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sorted(names, key=lambda n: (order[n], n)):
        print(row(n, recs.get(n)))


if __name__ == "__main__":
    main()
