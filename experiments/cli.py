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


def search_overrides(argv: list[str]) -> list[str]:
    """The one override that gives Hydra the user's config folders: `--config-dir DIR` (or -cd)
    and any `hydra.searchpath=[...]`, combined, so that the name check sees what Hydra will."""
    entries: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            entries.append(f"file://{Path(argv[i + 1]).expanduser().resolve()}")
        elif arg.startswith("--config-dir="):
            entries.append(f"file://{Path(arg.split('=', 1)[1]).expanduser().resolve()}")
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            entries += [e.strip() for e in arg.split("=", 1)[1].strip("[]").split(",") if e.strip()]
    return [f"hydra.searchpath=[{','.join(entries)}]"] if entries else []


def visible_choices(group: str, argv: list[str]) -> list[str]:
    """The names Hydra can load for `group`: the package's conf/ plus the user's config folders
    (searchpath entries and --config-dir), asked of Hydra itself."""
    extra = search_overrides(argv)
    if not extra:
        return _choices(group)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group, config_name="config", overrides=extra))


def check_group_choices(overrides: list[str], argv: list[str] | None = None) -> str | None:
    """Unknown method/model/task names get one line here, before Hydra composes anything."""
    argv = overrides if argv is None else argv
    for ov in overrides:
        key, sep, value = ov.partition("=")
        group = key.lstrip("+~")
        if not sep or group not in GROUPS or "(" in value or "*" in value:
            continue
        names = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        known = _choices(group)
        if all(n in known for n in names):
            continue
        known = visible_choices(group, argv)
        for name in names:
            if name not in known:
                return (f"unknown {group} {name!r}; available: {', '.join(known)} (add {name}.yaml under conf/{group}/ "
                        f"or under {group}/ in your own config folder, passed with --config-dir DIR)")
    return None


def run(argv: list[str]) -> int:
    problem = check_group_choices([a for a in argv if not a.startswith("-")], argv)
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
