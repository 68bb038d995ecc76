"""Reading and checking claim files: every problem a claim has, before any is evaluated."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from peftbench.analysis import guards
from peftbench.experiments import yamlfile
from peftbench.analysis.claims.core import CHECKS, CLAIMS_DIR, DERIVED_METRICS, NEEDS_BASELINE, NEEDS_RANGE, methods_of



def load_claims(paths: Iterable[Path]) -> list[tuple[str, Any]]:
    """(file, raw claim) for every claim in the given YAML files; unparseable files yield an
    entry whose claim is the error string, so that it is reported rather than raised."""
    out: list[tuple[str, Any]] = []
    for path in sorted(paths):
        try:
            data = yamlfile.read(path)
        except (OSError, yaml.YAMLError) as e:
            out.append((str(path), f"cannot read: {e}"))
            continue
        for claim in data if isinstance(data, list) else [data]:
            out.append((str(path), claim))
    return out


def claim_files(folder: Path = CLAIMS_DIR) -> list[Path]:
    return sorted(Path(folder).glob("*.yaml")) + sorted(Path(folder).glob("*.yml"))


def claim_problems(claim: Any) -> list[str]:
    if not isinstance(claim, dict):
        return [str(claim) if isinstance(claim, str) else "claim is not a mapping"]
    problems = [f"missing {k}" for k in ("id", "statement", "source") if not claim.get(k)]
    for i, cond in enumerate(conditions_of(claim)):
        if cond.get("check") not in CHECKS:
            problems.append(f"condition {i}: check {cond.get('check')!r} is not one of {sorted(CHECKS)}")
        if not isinstance(cond.get("tolerance"), (int, float)):
            problems.append(f"condition {i}: tolerance (a number) is required")
        if not methods_of(cond):
            problems.append(f"condition {i}: method or methods is required")
        if cond.get("check") in NEEDS_BASELINE and not cond.get("baseline") and not cond.get("than_metric"):
            problems.append(f"condition {i}: {cond.get('check')} needs a baseline method")
        if cond.get("check") in NEEDS_RANGE and not _is_range(cond.get("range")):
            problems.append(f"condition {i}: {cond.get('check')} needs range: [low, high] (numbers, low <= high)")
    if not conditions_of(claim):
        problems.append("no conditions")
    return problems + guards.regime_problems(claim.get("regime"))


CONF_DIR = CLAIMS_DIR.parent


def _dotted(data: Any, prefix: str = "") -> set[str]:
    if not isinstance(data, Mapping):
        return set()
    keys = set()
    for k, v in data.items():
        name = f"{prefix}{k}"
        keys |= {name} | _dotted(v, f"{name}.")
    return keys


@functools.lru_cache(maxsize=4)
def config_keys(conf: Path = CONF_DIR) -> frozenset[str]:
    """Every dotted key a run's config can hold: the top-level config's and, under each config
    group of its defaults (task, model, method, ...), any of that group's files'. A claim's
    setting key outside them is a typo, which would otherwise read as "not enough data"."""
    top = yamlfile.read(conf / "config.yaml") or {}
    keys = _dotted({k: v for k, v in top.items() if k not in ("defaults", "hydra")})
    groups = [next(iter(d)) for d in top.get("defaults", []) if isinstance(d, Mapping)]
    for group in groups:
        for path in sorted((conf / group).glob("*.yaml")):
            keys |= {group} | _dotted(yamlfile.read(path), f"{group}.")
    return frozenset(keys)


def setting_key_problems(claim: Mapping[str, Any], known: Iterable[str] | None = None) -> list[str]:
    """Keys a claim's conditions name as settings (`axis`, `setting_where`, `free`; each side of
    an `a|b` key) that are not in `known`: by default the shipped configs' keys. evaluate_claim adds
    the run columns (`free: [capacity]`) and every key the runs set, so a user's own config files
    and `+key=` overrides pass."""
    known = config_keys() if known is None else set(known)
    problems = []
    for i, cond in enumerate(conditions_of(claim)):
        free = cond.get("free") or []
        named = [("axis", cond.get("axis"))] + [(where, k) for where in ("setting_where", "setting_where_method", "setting_where_baseline")
                                                for k in (cond.get(where) or {})]
        named += [("free", k) for k in ([free] if isinstance(free, str) else free)]
        if i == 0 and isinstance(claim.get("regime"), Mapping):
            named += [("regime", k) for k in claim["regime"]]
        for role, key in named:
            for part in str(key).split("|") if key is not None else []:
                if part not in known:
                    problems.append(f"condition {i}: {role} key {part!r} is no config key and no run sets it; "
                                    f"fix its spelling{renamed_hint(part)}")
    return problems


def known_settings(ok: pd.DataFrame) -> set[str]:
    run_keys = {k for items in ok.get("setting_items", pd.Series(dtype=object)) if isinstance(items, Mapping) for k in items}
    return set(config_keys()) | set(ok.columns) | run_keys


# run columns that had another name in claim files written before
RENAMED_COLUMNS = {"rank": "capacity"}


def renamed_hint(key: str) -> str:
    new = RENAMED_COLUMNS.get(key)
    return f" (it is called {new!r} now, e.g. {new}: r=16)" if new else ""


def column_problems(claim: Mapping[str, Any], columns: Iterable[str]) -> list[str]:
    """Names in a claim that are no run column: a typo would otherwise crash the report, or (in
    `where`) silently filter nothing and let the claim run on every run."""
    known = set(columns) | DERIVED_METRICS
    problems = [f"where: unknown column {k!r}{renamed_hint(k)}" for k in (claim.get("where") or {}) if k not in known]
    for i, cond in enumerate(conditions_of(claim)):
        names = {"metric": cond.get("metric", "primary" if cond.get("check") == "slope_compare" else None),
                 "than_metric": cond.get("than_metric"), "noise_metric": cond.get("noise_metric")}
        if cond.get("check") == "auc_compare":
            names.pop("metric")
        for role, name in names.items():
            if role == "metric" and name is None:
                problems.append(f"condition {i}: metric is required")
            elif name is not None and name not in known:
                problems.append(f"condition {i}: {role} {name!r} is not a run column")
        problems += [f"condition {i}: match key {k!r} is not a run column{renamed_hint(k)}" for k in cond.get("match", []) if k not in known]
        problems += [f"condition {i}: where: unknown column {k!r}{renamed_hint(k)}" for k in (cond.get("where") or {}) if k not in known]
    return problems


def _is_range(r: Any) -> bool:
    return (isinstance(r, list) and len(r) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in r)
            and r[0] <= r[1])


def condition_spec(cond: Mapping[str, Any]) -> str:
    metric = "loss_auc" if cond.get("check") == "auc_compare" else cond.get("metric", "primary")

    def only(role: str) -> str:  # one side's own filters (analysis.claims.kinds)
        where = cond.get(f"where_{role}") or {}
        return f" [{', '.join(f'{k}={v}' for k, v in where.items())}]" if where else ""
    versus = f" vs {cond['baseline']}{only('baseline')}" if cond.get("baseline") else f" vs {cond['than_metric']}" if cond.get("than_metric") else ""
    if cond.get("range") is not None:
        versus += f" in {cond['range']}"
    return f"{', '.join(methods_of(cond))}{only('method')}{versus}: {metric}, tolerance {cond.get('tolerance')}"


def conditions_of(claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    if isinstance(claim.get("conditions"), list):
        return [c for c in claim["conditions"] if isinstance(c, dict)]
    return [dict(claim)] if "check" in claim else []
