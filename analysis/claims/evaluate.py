"""Evaluating a claim against the runs: filters, guards, each condition's check, the verdict."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from peftbench.analysis import guards
from peftbench.analysis.load import RESUME_PARTIAL, contended_for, is_copied, is_timing, resumed_note, setting_labels

from peftbench.analysis.verdicts import ALPHA, CANNOT_TELL, INVALID, decide
from peftbench.analysis.claims.core import CHECKS, CLAIMS_DIR, ClaimProblem, ClaimResult, Condition, ConditionResult, NO_DATA, methods_of
from peftbench.analysis.claims.spec import known_settings, claim_files, claim_problems, column_problems, condition_spec, conditions_of, load_claims, setting_key_problems
from peftbench.analysis.claims.kinds import side
from peftbench.analysis.claims.render import add_data_hint, name_settings


def _filter(runs: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    for k, v in (where or {}).items():
        if k in runs.columns:
            runs = runs[runs[k].isin(v if isinstance(v, list) else [v])]
    return runs


METRIC_ROLES = ("metric", "than_metric", "noise_metric")


def without_contended(runs: pd.DataFrame, cond: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """A condition on timings (latency, throughput, MFU, ...) judged without the runs whose timings
    other work on the cores distorted (measurement.contended), nor, on training or total time, the
    runs resumed from a checkpoint (they timed the steps after resuming only), and a note naming
    those left out ('' when none were)."""
    timings = [cond[r] for r in METRIC_ROLES if isinstance(cond.get(r), str) and is_timing(cond[r])]
    if not timings or runs.empty:
        return runs, ""
    recs = runs.to_dict("records")
    involved = set(methods_of(cond)) | {cond.get("baseline")}  # other methods' runs are no part of it
    bad = [r["method"] in involved and any(contended_for(r, c) for c in timings) for r in recs]
    # a run resumed from a checkpoint timed its training and total time from its last start only
    partial = [r["method"] in involved and not b and bool(resumed_note(r)) and any(c in RESUME_PARTIAL for c in timings)
               for r, b in zip(recs, bad)]
    notes = []
    if any(bad):
        why = sorted({f"{r['run_id']} ({_reason(r, timings)})" for r, b in zip(recs, bad) if b})
        notes.append(f"left out {sum(bad)} run(s) whose timings were contended (other work competed for the cores): {'; '.join(why)}")
    if any(partial):
        why = sorted({f"{r['run_id']} ({resumed_note(r)})" for r, b in zip(recs, partial) if b})
        notes.append(f"left out {sum(partial)} run(s) whose timings cover only part of their training: {'; '.join(why)}")
    if not notes:
        return runs, ""
    return runs[[not (b or q) for b, q in zip(bad, partial)]], "; ".join(notes)


def _reason(row: Mapping[str, Any], timings: list[str]) -> str:
    """Why a run's timings in these columns were contended, as its record (or its source's) says."""
    copied = any(contended_for(row, c) and is_copied(c) for c in timings)
    reason = row.get("costs_contended_reason") if copied else row.get("measurement.contended_reason")
    return str(reason or "contended")


def resolve_names(claim: Any, columns: Iterable[str]) -> Any:
    """A task metric may be named bare (`accuracy`, `exact_match`): it means the test split's,
    `metrics.test.<name>`. Every other name is a run column as it is."""
    if not isinstance(claim, dict):
        return claim
    known = set(columns)

    def fix(cond: dict[str, Any]) -> dict[str, Any]:
        out = dict(cond)
        for role in METRIC_ROLES:
            name = out.get(role)
            if isinstance(name, str) and name not in known and f"metrics.test.{name}" in known:
                out[role] = f"metrics.test.{name}"
        return out

    claim = fix(claim)
    if isinstance(claim.get("conditions"), list):
        claim["conditions"] = [fix(c) if isinstance(c, dict) else c for c in claim["conditions"]]
    return claim


def evaluate_claim(claim: Any, ok: pd.DataFrame, file: str = "") -> ClaimResult:
    claim = resolve_names(claim, ok.columns)
    problems = claim_problems(claim)
    if not problems:
        problems = column_problems(claim, ok.columns) + setting_key_problems(claim, known_settings(ok))
    if problems:
        cid = claim.get("id", "?") if isinstance(claim, dict) else "?"
        return ClaimResult(str(cid), "", "", INVALID, [ConditionResult("-", INVALID, [], "; ".join(problems))], file)
    runs, outside = guards.in_regime(_filter(ok, claim.get("where")), claim.get("regime"))
    results = []
    for cond in conditions_of(claim):
        cond_runs, contended = without_contended(_filter(runs, cond.get("where")), cond)
        cond_runs, not_learned = guards.learned_only(cond_runs, cond, _read_by(cond, cond_runs))
        try:
            result = CHECKS[cond["check"]](Condition(cond), cond_runs) if not cond_runs.empty else ConditionResult(cond["check"], NO_DATA, [], "no runs")
        except ClaimProblem as e:  # the claim asks what its check cannot do: the check's own words
            result = ConditionResult(cond["check"], INVALID, [], str(e))
        except (KeyError, ValueError, TypeError) as e:  # a claim the data cannot answer is reported, never a crashed report
            result = ConditionResult(cond["check"], INVALID, [], unanswerable(e))
        result.note = "; ".join(x for x in (result.note, outside, not_learned, contended) if x)
        result.spec = condition_spec(cond)
        results.append(result)
    verdict = INVALID if any(r.verdict == INVALID for r in results) else CANNOT_TELL
    out = ClaimResult(str(claim["id"]), _one_line(claim["statement"]), _one_line(claim["source"]), verdict, results,
                      _shown_path(file), _one_line(claim.get("if_fails")), regime=_one_line(claim.get("regime_text")))
    decide([out])  # alone; evaluate_all decides again over the whole report (Holm)
    return out


def unanswerable(e: Exception) -> str:
    """Why a check could not be computed, in words: the field it reads that these records lack, or
    the kind of value it could not use (never the exception's own text)."""
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) and not re.search(r"[\s'\"\[\]]", e.args[0]):
        return f"these records have no `{e.args[0]}` field, which this check reads"
    return f"the check cannot use these records' values (an unexpected {type(e).__name__})"


def _read_by(cond: Mapping[str, Any], runs: pd.DataFrame) -> pd.Series | None:
    """Which runs the condition's sides read (its methods and baseline, with their filters): the
    runs whose exclusion is worth naming. None where the condition names no side."""
    roles = [(m, "method") for m in methods_of(cond)] + ([(cond["baseline"], "baseline")] if isinstance(cond.get("baseline"), str) else [])
    if not roles or runs.empty:
        return None
    try:
        read = set().union(*(side(runs, cond, m, role).index for m, role in roles))
    except (KeyError, ValueError, TypeError):  # a filter the check itself will report
        return None
    return pd.Series(runs.index.isin(list(read)), index=runs.index)


def _one_line(text: Any) -> str:
    """A claim's prose as one line: YAML's folded blocks end in a newline, which a table cell or a
    sentence around it must not carry."""
    return " ".join(str(text or "").split())


def _shown_path(file: str) -> str:
    """A claim file as the report shows it: relative to the repository when inside it, so that a
    committed report names no machine's folders."""
    try:
        return Path(file).resolve().relative_to(CLAIMS_DIR.parents[1]).as_posix()
    except ValueError:
        return file


def evaluate_all(ok: pd.DataFrame, folder: Path = CLAIMS_DIR, ids: Iterable[str] | None = None,
                 alpha: float = ALPHA) -> list[ClaimResult]:
    """Every claim in the folder (or those with the given ids); a claim without data names the
    study that would supply it. `alpha`: the level the verdicts are read at (a sequential study's
    per-look level, analysis.verdicts)."""
    wanted = None if ids is None else set(ids)
    claims = [(f, c) for f, c in load_claims(claim_files(folder)) if wanted is None or (isinstance(c, dict) and c.get("id") in wanted)]
    results = [evaluate_claim(c, ok, f) for f, c in claims] if not ok.empty or wanted is not None else []
    decide(results, alpha)  # one family: the report's verdicts are corrected together
    labels = setting_labels(ok) if not ok.empty else {}
    for r in results:
        add_data_hint(r)
        for e in (e for c in r.conditions for e in c.evidence):
            e.where = name_settings(e.where, labels)
    return results
