"""`peftbench reproduce NAME`: run a study's sweep (experiments/study.py turns the study into a
preset), then its decide phases, report on exactly its runs and print each claim's verdict. It sits
above experiments/ and analysis/: it runs the one and reads with the other. Its command line is
peftbench.reproduce_cli."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from peftbench.analysis import claims as claims_mod
from peftbench.analysis.claims import claim_reason, condition_line, evidence_line
from peftbench.analysis.load import load_results
from peftbench.analysis.report import build, plan_level
from peftbench.analysis.verdicts import ALPHA, CANNOT_TELL
from peftbench.experiments import decide as decide_phases
from peftbench.experiments import record
from peftbench.experiments.estimate import (estimate_left, estimate_study, fmt_duration, jobs_to_launch, runs_text,
                                            searchpath)
from peftbench.experiments.study import STUDY_DIR, Study, StudyError, load_study, preset_text, study_jobs
from peftbench.hydra_run import run as hydra_run

def write_preset(study: Study, root: Path, variant: str | None) -> tuple[Path, str]:
    """The generated preset in its own config folder (passed as a Hydra searchpath)."""
    name = f"study_{study.name}" + (f"_{variant}" if variant else "")
    path = root / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preset_text(study, variant))
    return root, name


def manifest_files(sweep_dir: Path) -> list[Path]:
    """The result files of the runs of this sweep (from its manifest), those that exist."""
    m = json.loads((sweep_dir / ".sweep.json").read_text())
    paths = [record.result_path(e["results_dir"], e["run_id"]) for e in m["runs"] if e.get("run_id") and e.get("results_dir")]
    return [p for p in paths if p.exists()]


def keep_records(files: Sequence[Path], dest: Path) -> list[Path]:
    """Copy a study's records into `dest` (each written atomically); records of runs no longer
    in the study are removed, so the folder holds exactly this sweep's runs."""
    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for f in files:
        target = dest / Path(f).name
        record.write_atomic(target, json.loads(Path(f).read_text()))
        kept.append(target)
    for stale in set(dest.glob("*.json")) - set(kept):
        stale.unlink()
    return kept


def write_study_note(dest: Path, study: Study, variant: str | None, overrides: Sequence[str], est: Mapping[str, Any],
                     sweep_s: float, n_records: int) -> None:
    """`dest/study.yaml`: per invocation, the command, the estimates printed before its sweep
    started (all runs; the runs it was left to launch) and how long that sweep took (the records'
    own start and finish times say how long each run took). Earlier invocations stay."""
    path = dest / "study.yaml"
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        old = {}
    runs = [i for i in old.get("invocations") or [] if isinstance(i, dict)]
    runs.append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": list(overrides),
                 "estimate_s": round(float(est["seconds"]), 1), "estimate_bases": list(est["bases"]),
                 "runs_left": est.get("runs_left"), "estimate_left_s": round(float(est.get("seconds_left", est["seconds"])), 1),
                 "sweep_s": round(sweep_s, 1), "records_after": n_records})
    note = {"study": study.name, "variant": variant, "records": n_records, "invocations": runs}
    tmp = dest / ".study.yaml.tmp"
    tmp.write_text(yaml.safe_dump(note, sort_keys=False))
    tmp.replace(path)


def verdict_lines(results: Sequence[Any]) -> list[str]:
    """Each claim's verdict with its reason and, per condition, each configuration's estimate,
    CI, corrected p, minimum detectable effect and seeds."""
    lines = []
    for r in results:
        lines.append(f"{r.id}: {r.verdict.upper()}  ({r.source})")
        why = claim_reason(r)
        lines.append(f"  why: {why}")
        if r.disagreement():
            lines.append(f"  {r.disagreement()}")
        for c in r.conditions:
            lines.append(f"  {condition_line(c, why).replace('**', '')}")
            lines += [f"    {evidence_line(e).replace('**', '')}" for e in c.evidence]
    return lines


def reproduce(name: str, overrides: Sequence[str], *, variant: str | None = None, folder: Path = STUDY_DIR,
              claims_dir: Path | None = None, out: Path | None = None, keep: Path | None = None,
              config_dir: Path | None = None, until: tuple[float, int] | None = None) -> int:
    """Run the study's sweep, report on exactly its runs, print each verdict. `keep`: also copy
    the runs' records there and write the report to `keep/report` (how results/reference/studies/
    is made). `until`: (budget in seconds, most looks): add seeds until the claims decide, in the
    sequential design experiments/decide.py describes."""
    study = load_study(name, folder, claims_dir)
    if variant and variant not in study.variants:
        raise StudyError(f"study {name} has no variant {variant!r}; available: {', '.join(study.variants) or '(none)'}")
    sequential = None
    if until is not None:
        if study.decide is None:
            raise StudyError(f"study {name} has no decide: block; --until-decided adds seeds after the seeds it declares: "
                             f"add e.g. decide: {{seeds: 5}} to {study.file}")
        sequential = decide_phases.sequential_design(study.decide[0], until[1], until[0], ALPHA)
    results_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("results_dir=")), "results")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    tag = name + (f"_{variant}" if variant else "")
    work = Path(results_dir) / ".studies" / tag
    conf_root, preset = write_preset(study, work / "conf", variant)
    sweep_dir = work / stamp
    est = estimate_study(study, overrides, variant)
    roots = [conf_root] + ([config_dir] if config_dir else [])  # the user's own methods, models and tasks too
    est.update(estimate_left(est, jobs_to_launch(study_jobs(study, overrides, variant), roots, preset)))
    left = ("if none is done yet" if est["runs_left"] is None else
            f"for all; {est['runs_left']} to run, est. {fmt_duration(est['seconds_left'])}")
    print(f"[study] {name}{f' ({variant})' if variant else ''}: {study.title} ({study.source}); {runs_text(est, 'jobs')}, "
          f"est. {fmt_duration(est['seconds'])} {left}", flush=True)
    started = time.time()
    rc = hydra_run(["-m", searchpath(roots), f"+sweep={preset}", f"hydra.sweep.dir={sweep_dir}", *overrides])
    if rc != 0:
        return rc
    if not (sweep_dir / ".sweep.json").exists():
        print("[study] nothing ran (hydra.sweeper.dry_run=true): no report", flush=True)
        return 0
    files, grid_dirs = manifest_files(sweep_dir), [sweep_dir]
    level = (ALPHA, "")
    if study.decide is not None:
        files, rc, grid_dirs = run_decide_phases(study, variant, overrides, work, stamp, sweep_dir, keep, config_dir, sequential,
                                                 Path(claims_dir or claims_mod.CLAIMS_DIR))
        if rc != 0:
            return rc
        if sequential:
            level = plan_level({"sequential": sequential}, f"the analysis plan ({decide_phases.PLAN_FILE})")
    convergence = None
    if study.convergence is not None:
        rc, convergence = run_convergence_phase(study, grid_dirs, overrides, work, stamp, config_dir,
                                                Path(results_dir) / decide_phases.CONVERGENCE_DIR / tag, keep)
        if rc != 0:
            return rc
    if keep is not None:
        files = keep_records(files, keep)
        write_study_note(keep, study, variant, overrides, est, time.time() - started, len(files))
    out = out or (keep / "report" if keep is not None else Path("report") / "studies" / tag)
    made = build([str(f) for f in files], out, Path(claims_dir or claims_mod.CLAIMS_DIR), claim_ids=study.claims, level=level,
                 convergence=convergence)
    if sequential:
        print(f"[study] {level[1]}")
    print(f"[study] sweep took {time.time() - started:.0f} s; report of its {len(files)} result files -> {out / 'index.html'}")
    for line in verdict_lines(made["claims"]):
        print(line)
    if made.get("convergence") is not None:
        print(f"[study] convergence: {made['convergence'].summary()}")
    return 0


def run_convergence_phase(study: Study, grid_dirs: Sequence[Path], overrides: Sequence[str], work: Path, stamp: str,
                          config_dir: Path | None, runs_dir: Path, keep: Path | None) -> tuple[int, Path]:
    """Each line's validation pick (on the grid and its extensions: the picks the analysis plan
    names) again at its seeds, trained `steps_factor` times as long. Their records go to `runs_dir`
    (and with `keep`, are copied to `keep/convergence`), each folder holding the criterion the runs
    test, written before any record: report loaders never read such a folder as evidence. Returns
    the folder the report reads."""
    crit = study.convergence
    assert crit is not None
    arms = decide_phases.convergence_arms(decide_phases.lines_of(*_entries_and_records(grid_dirs)), crit.steps_factor)
    for arm in arms:
        arm["results_dir"] = str(runs_dir)
    print(f"[study] convergence check: {len(arms)} pick(s) again at {crit.steps_factor}x their steps "
          f"({_n_runs(arms)} runs, into {runs_dir}); converged where that gains at most {crit.tolerance:g} on validation",
          flush=True)
    decide_phases.write_criterion(runs_dir, crit, study.file)
    d = None
    if arms:
        rc, d = _phase(study, work, f"{stamp}_convergence", arms, overrides, config_dir)
        if rc != 0:
            return rc, runs_dir
    if keep is None:
        return 0, runs_dir
    dest = keep / decide_phases.CONVERGENCE_DIR
    decide_phases.write_criterion(dest, crit, study.file)
    keep_records(manifest_files(d) if d is not None else [], dest)
    return 0, dest


def _phase(study: Study, work: Path, name: str, arms: list[dict[str, str]], overrides: Sequence[str],
           config_dir: Path | None = None) -> tuple[int, Path]:
    """One more sweep of the study: `arms` alone (each a whole job's overrides), as a preset of its own."""
    root = work / "conf"
    path = root / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# @package _global_\n# {study.file}: {name}\n" + yaml.safe_dump(
        {"hydra": {"sweeper": {"params": {}, "arms": arms}}}, sort_keys=False))
    sweep_dir = work / name
    hydra_only = [o for o in overrides if _key_of(o).lstrip("+").startswith("hydra")]
    roots = [root] + ([config_dir] if config_dir else [])
    rc = hydra_run(["-m", searchpath(roots), f"+sweep={name}", f"hydra.sweep.dir={sweep_dir}", *hydra_only])
    return rc, sweep_dir


def _key_of(item: str) -> str:
    return item.split("=", 1)[0]


def _entries_and_records(sweep_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    entries, records = [], {}
    for d in sweep_dirs:
        m = json.loads((d / ".sweep.json").read_text())
        for e in m["runs"]:
            path = record.result_path(e["results_dir"], e["run_id"]) if e.get("run_id") and e.get("results_dir") else None
            if path is not None and path.exists():
                entries.append(e)
                records[e["run_id"]] = json.loads(path.read_text())
    return entries, records


def run_decide_phases(study: Study, variant: str | None, overrides: Sequence[str], work: Path, stamp: str,
                      first: Path, keep: Path | None, config_dir: Path | None = None,
                      sequential: Mapping[str, Any] | None = None, claims_dir: Path | None = None
                      ) -> tuple[list[Path], int, list[Path]]:
    """After the grid: extend the lr grid of any line picked on its edge, write the analysis plan,
    then run N seeds at each line's pick (experiments/decide.py); with a sequential design, more
    looks after that. The result files of every phase, and the folders of the grid and its
    extensions (the picks' own phases)."""
    n_seeds, rounds = study.decide  # type: ignore[misc]
    dirs = [first]
    for r in range(rounds):
        lines = decide_phases.lines_of(*_entries_and_records(dirs))
        arms = decide_phases.extension_arms(lines)
        if not arms:
            break
        print(f"[study] {len(arms)} line(s) picked on the edge of their lr grid: extending (round {r + 1} of {rounds})", flush=True)
        rc, d = _phase(study, work, f"{stamp}_extend{r + 1}", arms, overrides, config_dir)
        if rc != 0:
            return [], rc, []
        dirs.append(d)
    grid_dirs = list(dirs)
    lines = decide_phases.lines_of(*_entries_and_records(dirs))
    content = decide_phases.plan(study.file, study.claims, lines, n_seeds, rounds, sequential)
    for dest in [work / f"{stamp}_{decide_phases.PLAN_FILE}"] + ([keep / decide_phases.PLAN_FILE] if keep is not None else []):
        decide_phases.write_plan(dest, content)
    edges = sum(p["on_edge"] for p in content["picks"])
    print(f"[study] analysis plan written before the seeds phase ({work / f'{stamp}_{decide_phases.PLAN_FILE}'}): "
          f"{len(content['picks'])} line(s), {edges} still on a grid edge; {n_seeds} seeds at each pick", flush=True)
    arms = decide_phases.seed_arms(lines, n_seeds)
    if arms:
        rc, d = _phase(study, work, f"{stamp}_seeds", arms, overrides, config_dir)
        if rc != 0:
            return [], rc, []
        dirs.append(d)
    if sequential:
        rc = more_looks(study, sequential, dirs, work, stamp, overrides, config_dir, keep,
                        Path(claims_dir or claims_mod.CLAIMS_DIR))
        if rc != 0:
            return [], rc, []
    files = sorted({p for d in dirs for p in manifest_files(d)})
    return files, 0, grid_dirs


def _n_runs(arms: Sequence[Mapping[str, str]]) -> int:
    return sum(len(str(a.get("seed", "0")).split(",")) for a in arms)


def undecided(files: Sequence[Path], claims_dir: Path, ids: Sequence[str], alpha: float) -> list[str]:
    """The study's claims that cannot tell on these records, read at `alpha`, and that more seeds
    can move: some evidence of theirs cannot tell and has a spread over seeds to shrink (a t or
    bootstrap interval). One whose estimate sits on a bound, or that reads a measurement's own
    noise bound, stays open at every look and is not waited for."""
    ok = load_results([str(f) for f in files]).ok
    return [r.id for r in claims_mod.evaluate_all(ok, claims_dir, ids, alpha)
            if r.verdict == CANNOT_TELL and any(_seeds_can_move(e) for c in r.conditions for e in c.evidence)]


def _seeds_can_move(evidence: Any) -> bool:
    d = evidence.decision
    return (d is not None and d.verdict == CANNOT_TELL
            and (d.seeds_needed is not None or (evidence.stats or {}).get("interval") == "bootstrap"))


def _seconds_per_run(records: Mapping[str, Mapping[str, Any]]) -> float | None:
    walls = [float((r.get("timing") or {}).get("total_s") or 0) for r in records.values()]
    walls = [w for w in walls if w > 0]
    return sum(walls) / len(walls) if walls else None


def more_looks(study: Study, seq: Mapping[str, Any], dirs: list[Path], work: Path, stamp: str, overrides: Sequence[str],
               config_dir: Path | None, keep: Path | None, claims_dir: Path) -> int:
    """Look at the claims after each step of the plan's seed schedule; stop when none cannot tell,
    after the last look, or when the next look would not fit what is left of the budget. Appends
    each look's sweep folder to `dirs` and writes what each look saw to `sequential_looks.yaml`."""
    alpha, schedule, budget = float(seq["alpha_per_look"]), list(seq["seeds_per_look"]), float(seq["budget_s"])
    started, looks = time.time(), []
    for k, n in enumerate(schedule):
        files = sorted({p for d in dirs for p in manifest_files(d)})
        open_claims = undecided(files, claims_dir, study.claims, alpha)
        look = {"look": k + 1, "seeds_per_pick": n, "records": len(files), "cannot_tell": open_claims}
        looks.append(look)
        print(f"[study] look {k + 1} of {len(schedule)} ({n} seeds per pick, level {alpha:.3g}): "
              f"{len(open_claims)} claim(s) cannot tell{': ' + ', '.join(open_claims) if open_claims else ''}", flush=True)
        if not open_claims:
            look["stop"] = "every claim decided"
            break
        if k + 1 == len(schedule):
            look["stop"] = f"the plan's last look ({len(schedule)}) is done"
            break
        entries, records = _entries_and_records(dirs)
        arms = decide_phases.seed_arms(decide_phases.lines_of(entries, records), schedule[k + 1])
        if not arms:  # the next look's seeds are there already (an earlier invocation ran them)
            continue
        runs = _n_runs(arms)
        # the runs' own measured times (a resumed phase that skipped its runs took no wall time);
        # one job at a time, so an upper bound under a parallel launcher
        each = _seconds_per_run(records) or 0.0
        left = budget - (time.time() - started)
        if runs * each > left:
            look["stop"] = (f"the next look ({runs} runs, about {fmt_duration(runs * each)}) does not fit the "
                            f"{fmt_duration(max(left, 0))} left of the {fmt_duration(budget)} budget")
            break
        rc, d = _phase(study, work, f"{stamp}_look{k + 2}", arms, overrides, config_dir)
        if rc != 0:
            return rc
        dirs.append(d)
    print(f"[study] stopped adding seeds: {looks[-1].get('stop')}", flush=True)
    content = {"alpha_per_look": alpha, "seeds_per_look": schedule, "budget_s": budget,
               "spent_s": round(time.time() - started, 1), "looks": looks}
    for dest in [work / f"{stamp}_sequential_looks.yaml"] + ([keep / "sequential_looks.yaml"] if keep is not None else []):
        decide_phases.write_plan(dest, content)
    return 0


# ---------------------------------------------------------------- command line
