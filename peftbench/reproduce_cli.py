"""`peftbench reproduce`'s command line: its options, `--list` (the studies and what each would
take here, from experiments/ alone, without loading the report's libraries), and a study's run
(peftbench.reproduce, imported only then)."""
from __future__ import annotations

import sys
from pathlib import Path

from peftbench.experiments import decide as decide_phases
from peftbench.experiments.estimate import list_studies
from peftbench.experiments.study import STUDY_DIR, StudyError

USAGE = """usage: peftbench reproduce NAME [--variant V] [--out DIR] [--keep DIR] [--config-dir DIR]
                           [--until-decided --budget T [--looks L]] [OVERRIDES...]
       peftbench reproduce --list [--config-dir DIR]"""
HELP = USAGE + """

Run a published comparison (a study: conf/study/NAME.yaml) and check its claims: its grid, the
phases its `decide:` block asks for, the budget check its `convergence:` block asks for, a report on
exactly its runs, and each claim's verdict.

options:
  NAME              the study; --list names them all, with an estimate of each on this machine
  --variant V       run the study on one of its variants (another task or model)
  --out DIR         where the report goes (default: report/studies/NAME[_V])
  --keep DIR        also copy the study's records into DIR and write the report to DIR/report
  --config-dir DIR  your own config folder, as for `peftbench run`: studies in DIR/study/, claims in
                    DIR/claims/, and its method/, model/ and task/ YAMLs found by every run
  --until-decided   after the seeds its decide: block declares, add as many again at each look until
                    no claim cannot tell (a sequential design: at most L looks, each decided at
                    0.05 / L, fixed in the analysis plan before the seeds phase)
  --budget T        with --until-decided: the time the added looks may take (2h, 90m, 3600s)
  --looks L         with --until-decided: the most looks, the first included (default 3)
  --list            every study, its runs and its estimated time here
  OVERRIDES         key=value for every run, as for `peftbench run` (e.g. results_dir=DIR)"""


def _option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    if flag in argv:
        i = argv.index(flag)
        if i + 1 >= len(argv):
            raise StudyError(f"{flag} needs a value")
        return argv[i + 1], argv[:i] + argv[i + 2:]
    return None, argv


def main(argv: list[str]) -> int:
    if set(argv) & {"-h", "--help"}:
        print(HELP)
        return 0
    try:
        config_dir, argv = _option(list(argv), "--config-dir")
        # the folders one by one: the spelling before --config-dir, still read
        studies, argv = _option(argv, "--studies")
        claims, argv = _option(argv, "--claims")
        variant, argv = _option(argv, "--variant")
        out, argv = _option(argv, "--out")
        keep, argv = _option(argv, "--keep")
        budget, argv = _option(argv, "--budget")
        looks, argv = _option(argv, "--looks")
        until = None
        if "--until-decided" in argv:
            argv = [a for a in argv if a != "--until-decided"]
            if budget is None:
                raise StudyError("--until-decided needs --budget T, the time the added looks may take (e.g. --budget 2h)")
            if looks is not None and not looks.isdigit():
                raise StudyError(f"--looks {looks!r} is not a whole number; write e.g. --looks 3")
            until = (decide_phases.parse_duration(budget), int(looks) if looks is not None else 3)
        elif budget is not None or looks is not None:
            raise StudyError("--budget and --looks go with --until-decided; add it, or leave them out")
        user = Path(config_dir).expanduser().resolve() if config_dir else None
        if user is not None and not user.is_dir():
            raise StudyError(f"--config-dir {config_dir} is not a folder; give the folder that holds your study/, claims/ "
                             f"or method/ YAMLs")
        folder = Path(studies) if studies else user / "study" if user and (user / "study").is_dir() else STUDY_DIR
        claims_dir = Path(claims) if claims else user / "claims" if user and (user / "claims").is_dir() else None
        if "--list" in argv:
            print("\n".join(list_studies(folder, claims_dir)))
            return 0
        names = [a for a in argv if "=" not in a and not a.startswith("-")]
        if len(names) != 1:
            print(USAGE, file=sys.stderr)
            return 2
        overrides = [a for a in argv if a != names[0]]
        from peftbench.reproduce import reproduce

        return reproduce(names[0], overrides, variant=variant, folder=folder, claims_dir=claims_dir,
                         out=Path(out) if out else None, keep=Path(keep) if keep else None, config_dir=user, until=until)
    except (StudyError, decide_phases.DecideError) as e:
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2
