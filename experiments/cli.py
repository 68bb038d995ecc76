"""`peftbench run | report | bench`."""
from __future__ import annotations

import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("method", "model", "task", "logger", "sweep", "launcher")
USAGE = """usage: peftbench run [-m] [OVERRIDES...]     one run, or a sweep with -m (Hydra)
       peftbench report [RESULTS...] [--out DIR]  tables, figures, index.html from result files
       peftbench bench harness|trainer [OVERRIDES...]  side-by-side overhead benchmarks
       peftbench sweep-size NAME[,NAME] [--list]  how many runs a sweep preset makes, without running"""


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def check_group_choices(overrides: list[str]) -> str | None:
    """Unknown method/model/task names get one line here, before Hydra composes anything."""
    for ov in overrides:
        key, sep, value = ov.partition("=")
        group = key.lstrip("+~")
        if not sep or group not in GROUPS or "(" in value or "*" in value:
            continue
        known = _choices(group)
        for name in (v.strip() for v in value.strip("[]").split(",")):
            if name and name not in known:
                return f"unknown {group} {name!r}; available: {', '.join(known)} (add conf/{group}/{name}.yaml to define it)"
    return None


def run(argv: list[str]) -> int:
    problem = check_group_choices([a for a in argv if not a.startswith("-")])
    if problem:
        print(f"peftbench: error: {problem}", file=sys.stderr)
        return 2
    from experiments.app import main as hydra_main

    sys.argv = ["peftbench run", *argv]
    hydra_main()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    from experiments.quiet import quiet

    quiet()
    if command == "run":
        return run(rest)
    if command == "report":
        from analysis.report import main as report_main

        return report_main(rest)
    if command == "sweep-size":
        from experiments.sweep import main as sweep_main

        return sweep_main(rest)
    if command == "bench":
        from experiments.bench import main as bench_main

        return bench_main(rest)
    print(f"peftbench: error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
