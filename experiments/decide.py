"""The phases of a study that decides (`decide:` in its YAML), and its convergence check
(`convergence:`: each line's pick again at a longer budget, at the end of this file).

A study with `decide: {seeds: N, extend: K}` runs in phases, each a sweep:

1. its grid: the study's arms over the grid's seeds;
2. every line (one configuration of a method, all but lr and seed) whose validation pick sits on the
   edge of its lr grid gets the next lr beyond that edge, for the grid's seeds; up to K rounds
   (a pick on an edge is no pick, analysis.claims.kinds.edge_reason);
3. the analysis plan (each line's pick on validation, the seeds it will add, the claims and the
   study file's hash) is written to the results folder before any further run, so that the
   second phase cannot be chosen after seeing its results;
4. N seeds in all at each line's pick.

N is fixed in the study before anything runs: each claim is then tested once, on all N seeds, and
its error control is that of one test (Holm-corrected over the report, analysis.verdicts).

`peftbench reproduce --until-decided --budget T` goes on past N, in a group-sequential design that
the plan fixes before the seeds phase (`sequential_design`): at most L looks, at N, 2N, ... L*N
seeds per pick, each look reading its verdicts at alpha / L (Bonferroni over the looks: the chance
of any false verdict read from a p-value, at any look, stays below alpha, whatever the looks show;
evidence read as it is, a noise bound or a zero spread, is outside that control). After each look
it stops when no claim is left that more seeds can decide, when the schedule's last look is done,
or when the next look's runs, timed by the records so far, would not fit the time left of T. The price of looking
again is a stricter level at every look, the first included; a study that wants one test keeps N.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from peftbench.experiments import metric_spec
from peftbench.experiments.paths import ROOT


class DecideError(ValueError):
    """A `decide:` block that cannot be used; the message names the fix."""

VARYING = ("lr", "seed")  # what a line is not: the picks' axis and the seeds


@dataclass
class Line:
    """One configuration's runs along lr and seed: {(lr, seed): record}."""

    items: dict[str, str]  # the job's overrides but lr and seed
    runs: dict[tuple[float | None, int], Mapping[str, Any]] = field(default_factory=dict)

    def lrs(self) -> list[float | None]:
        return sorted({lr for lr, _ in self.runs}, key=lambda x: -1.0 if x is None else x)

    def seeds(self) -> list[int]:
        return sorted({s for _, s in self.runs})


def _key(item: str) -> str:
    return item.split("=", 1)[0]


def _value(item: str) -> str:
    return item.split("=", 1)[1] if "=" in item else ""


def lines_of(entries: Sequence[Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]]) -> dict[tuple, Line]:
    """The sweep's ok runs grouped by line. A job's overrides name its line, less `+sweep=` (the
    preset that expanded it)."""
    lines: dict[tuple, Line] = {}
    for e in entries:
        rec = records.get(str(e.get("run_id")))
        if rec is None or rec.get("status") != "ok":
            continue
        items = {_key(x): _value(x) for x in e["overrides"] if not _key(x).lstrip("+").startswith(("sweep", "hydra"))}
        line_items = {k: v for k, v in items.items() if k not in VARYING}
        key = tuple(sorted(line_items.items()))
        lr = float(items["lr"]) if items.get("lr") not in (None, "", "null") else None
        lines.setdefault(key, Line(line_items)).runs[(lr, int(rec["seed"]))] = rec
    return lines


def _validation_score(rec: Mapping[str, Any]) -> tuple[float, float]:
    """(score, sign): the task's primary metric on validation, and +1 where higher is better."""
    primary = metric_spec.primary(metric_spec.of_record(rec))
    value = ((rec.get("metrics") or {}).get("validation") or {}).get(primary["name"])
    return (math.nan if value is None else float(value)), (1.0 if primary["direction"] == "max" else -1.0)


def beyond_edge(grid: Sequence[float], lr: float) -> float | None:
    """The next lr past the edge of a sorted grid (2 or more lrs) that `lr` sits on, one step of
    the grid's own spacing there; None when `lr` is inside it."""
    if len(grid) < 2:
        return None
    if math.isclose(lr, grid[0]):
        return grid[0] / (grid[1] / grid[0])
    if math.isclose(lr, grid[-1]):
        return grid[-1] * (grid[-1] / grid[-2])
    return None


def pick(line: Line) -> tuple[float | None, float | None]:
    """(the lr with the best mean validation score over seeds, ties to the smaller lr; the lr to
    add beyond the grid's edge when the pick sits on it, else None)."""
    lrs = line.lrs()
    if len(lrs) < 2 or None in lrs:
        return lrs[0], None
    shared = set.intersection(*({s for (x, s) in line.runs if x == lr} for lr in lrs))
    means = {}
    for lr in lrs:  # on the seeds every lr has, as analysis.claims.kinds.tuned picks
        scores = [_validation_score(r) for (x, s), r in line.runs.items() if x == lr and s in shared]
        values = [v for v, _ in scores if not math.isnan(v)]
        means[lr] = scores[0][1] * sum(values) / len(values) if values else -math.inf
    best = max(lrs, key=lambda lr: (means[lr], -lr))
    return best, beyond_edge(lrs, best)


def _arm(line: Line, lr: float | None, seeds: Sequence[int]) -> dict[str, str]:
    arm = dict(line.items)
    if lr is not None:
        arm["lr"] = f"{lr:.6g}"
    arm["seed"] = ",".join(map(str, seeds))
    return arm


def extension_arms(lines: Mapping[tuple, Line]) -> list[dict[str, str]]:
    """For each line picked on an edge of its grid: the next lr beyond it, at the line's seeds."""
    out = []
    for line in lines.values():
        _, beyond = pick(line)
        if beyond is not None:
            out.append(_arm(line, beyond, line.seeds()))
    return out


def seed_arms(lines: Mapping[tuple, Line], n_seeds: int) -> list[dict[str, str]]:
    """Seeds 0..N-1 at each line's pick (the ones it has are skipped as done)."""
    out = []
    for line in lines.values():
        lr, _ = pick(line)
        have = {s for (x, s) in line.runs if x == lr}
        missing = [s for s in range(n_seeds) if s not in have]
        if missing:
            out.append(_arm(line, lr, missing))
    return out


def plan(study_file: str, claims: Sequence[str], lines: Mapping[tuple, Line], n_seeds: int, rounds: int,
         sequential: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the second phase will run and why, fixed before it runs."""
    text = Path(study_file).read_bytes() if Path(study_file).exists() else b""
    picks = []
    for line in lines.values():
        lr, beyond = pick(line)
        picks.append({"line": line.items, "grid": [x for x in line.lrs()], "pick_lr": lr, "on_edge": beyond is not None,
                      "seeds_have": sorted(s for (x, s) in line.runs if x == lr), "seeds_total": n_seeds})
    try:  # a path inside the checkout is written relative to it: the plan is committed beside its records
        shown = Path(study_file).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = study_file
    return {"study_file": shown, "study_sha256": hashlib.sha256(text).hexdigest(), "claims": list(claims),
            "rule": "pick: best mean validation score of the task's primary metric over seeds, ties to the smaller lr",
            "extension_rounds": rounds, "picks": picks, **({"sequential": dict(sequential)} if sequential else {})}


PLAN_FILE = "analysis_plan.yaml"  # YAML beside the records: report loaders read only *.json


def sequential_design(n_seeds: int, looks: int, budget_s: float, alpha: float = 0.05) -> dict[str, Any]:
    """The group-sequential part of a plan: the seeds per pick at each look and the level of each."""
    if not isinstance(looks, int) or looks < 2:
        raise DecideError(f"--looks must be a whole number >= 2 (the first look is at the study's {n_seeds} seeds), got {looks!r}")
    return {"looks_max": looks, "seeds_per_look": [n_seeds * (k + 1) for k in range(looks)], "alpha": alpha,
            "alpha_per_look": alpha / looks, "budget_s": round(float(budget_s), 1),
            "rule": "Bonferroni over the looks: each look reads its verdicts (Holm-corrected over the report) at "
                    "alpha / looks_max; stop when no claim cannot tell, after the last look, or when the next look "
                    "would not fit the budget"}


def _read_yaml(path: Path, what: str) -> Any:
    """A file a study wrote beside its records, parsed; DecideError naming it when it cannot be."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DecideError(f"{path}: not a readable {what} ({type(e).__name__}); restore it from the study's results") from None


def read_plan(folder: Path) -> dict[str, Any] | None:
    """The analysis plan a study wrote beside its records, or None where there is none."""
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        return None
    plan = _read_yaml(path, "analysis plan")
    return plan if isinstance(plan, dict) else None


def alpha_of(plan: Mapping[str, Any] | None, default: float = 0.05) -> float:
    """The level a plan's verdicts are read at: its sequential design's per-look level, else `default`."""
    seq = (plan or {}).get("sequential")
    if not seq:
        return default
    alpha = seq.get("alpha_per_look")
    if not isinstance(alpha, (int, float)) or not 0 < alpha <= default:
        raise DecideError(f"analysis plan: sequential.alpha_per_look must be a number in (0, {default}], got {alpha!r}")
    return float(alpha)


def parse_duration(text: str) -> float:
    """Seconds from '2h', '90m', '45s', '1.5h' or a bare number of seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise DecideError(f"--budget {text!r} is not a duration; write e.g. 2h, 90m or 3600s")
    return value


def write_plan(path: Path, content: Mapping[str, Any]) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(json.loads(json.dumps(content, default=str)), sort_keys=False))
    os.replace(tmp, path)
    return path


def settings(decide: Any, file: str) -> tuple[int, int] | None:
    """(seeds, extension rounds) of a study's `decide:` block; None without one."""
    if decide is None:
        return None
    if not isinstance(decide, Mapping) or not isinstance(decide.get("seeds"), int) or decide["seeds"] < 2:
        raise DecideError(f"study {file}: decide must be a mapping with seeds: N (N >= 2), e.g. decide: {{seeds: 10, extend: 2}}")
    extend = decide.get("extend", 2)
    if not isinstance(extend, int) or extend < 0:
        raise DecideError(f"study {file}: decide.extend must be a whole number of rounds >= 0, got {extend!r}")
    unknown = sorted(set(decide) - {"seeds", "extend"})
    if unknown:
        raise DecideError(f"study {file}: decide takes seeds and extend, not {', '.join(unknown)}")
    return int(decide["seeds"]), int(extend)


# ---------------------------------------------------------------- convergence check

CONVERGENCE_DIR = "convergence"  # beside a study's records: the budget check's runs, not its evidence
CRITERION_FILE = "criterion.yaml"  # in that folder: the criterion its runs were made to test


@dataclass(frozen=True)
class Convergence:
    """A study's convergence criterion: its runs have converged when the same configuration,
    trained `steps_factor` times as long, gains no more than `tolerance` on the task's validation
    primary metric (in the metric's units, better-is-positive), read from a 95% interval over seeds."""

    steps_factor: int
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return {"steps_factor": self.steps_factor, "tolerance": self.tolerance,
                "rule": f"converged when training {self.steps_factor}x as long gains at most {self.tolerance:g} on the "
                        f"validation primary metric (95% t interval over seeds, at each line's validation pick)"}


def convergence_settings(block: Any, file: str) -> Convergence | None:
    """A study's `convergence:` block, checked; None without one."""
    if block is None:
        return None
    example = "e.g. convergence: {steps_factor: 2, tolerance: 0.01}"
    if not isinstance(block, Mapping):
        raise DecideError(f"study {file}: convergence must be a mapping, {example}")
    unknown = sorted(set(map(str, block)) - {"steps_factor", "tolerance"})
    if unknown:
        raise DecideError(f"study {file}: convergence takes steps_factor and tolerance, not {', '.join(unknown)}")
    factor, tol = block.get("steps_factor", 2), block.get("tolerance")
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise DecideError(f"study {file}: convergence.steps_factor must be a whole number >= 2, got {factor!r}; {example}")
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not 0 <= tol < math.inf:
        raise DecideError(f"study {file}: convergence.tolerance must be a number >= 0 in the validation metric's units, "
                          f"got {tol!r}; {example}")
    return Convergence(int(factor), float(tol))


def convergence_arms(lines: Mapping[tuple, Line], factor: int) -> list[dict[str, str]]:
    """At each line's validation pick: the same seeds, trained `factor` times as many steps."""
    out = []
    for line in lines.values():
        lr, _ = pick(line)
        at = {s: r for (x, s), r in line.runs.items() if x == lr}
        if any(r.get("protocol") == "lr_search" for r in at.values()):
            continue  # its longer runs would search their lr again: the gain would mix re-tuning with budget
        steps = {(r.get("config") or {}).get("steps") for r in at.values()}
        if len(steps) != 1 or not isinstance(next(iter(steps)), int):
            continue  # no single step budget to multiply
        arm = _arm(line, lr, sorted(at))
        arm["steps"] = str(factor * next(iter(steps)))
        out.append(arm)
    return out


def write_criterion(folder: Path, criterion: Convergence, study_file: str) -> Path:
    try:  # a path inside the checkout is written relative to it, as the plan's is
        shown = Path(study_file).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = study_file
    return write_plan(Path(folder) / CRITERION_FILE, {"study_file": shown, **criterion.as_dict()})


def read_criterion(folder: Path) -> Convergence | None:
    """The criterion a convergence folder's runs were made for; None where there is none."""
    path = Path(folder) / CRITERION_FILE
    if not path.is_file():
        return None
    data = _read_yaml(path, "convergence criterion") or {}
    if not isinstance(data, Mapping):
        raise DecideError(f"{path}: a convergence criterion is a mapping with steps_factor and tolerance; restore it from the study's results")
    return convergence_settings({k: data.get(k) for k in ("steps_factor", "tolerance")}, str(path))
