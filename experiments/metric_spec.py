"""A task's metric declaration, the one parser of it: the task YAML's `metrics:` as
[{name, direction, primary, range}]. A run writes the result into its record (`metric_spec`), so
the report reads what the run scored by, not what today's YAML says. No torch here: the report
uses it.

`range` is the interval a metric's value can take ([0, 1] for a fraction of items, [-1, 1] for a
correlation); the report keeps every interval it draws inside it. A task YAML may declare it for a
metric of its own (`range: [lo, hi]`); the metrics the built-in tasks compute have theirs below,
and a record written before runs kept the range gets it from there by name.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from peftbench.methods.errors import ConfigError

DIRECTIONS = ("max", "min")
# The value ranges of the metrics experiments/data computes, for a task YAML that declares none
# (tests/test_analysis_load_stats.py checks that every shipped task's metrics have a range, declared
# in its YAML or known here).
KNOWN_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "f1": (0.0, 1.0), "mcc": (-1.0, 1.0),
    "exact_match": (0.0, 1.0), "exact_match_flexible": (0.0, 1.0), "rouge_l": (0.0, 1.0),
}

# How a metric's value spreads over a set of n items, which is what a one-sided test of a run against
# its floor (analysis.guards) needs: `proportion` (a fraction of items: binomial), `bounded_mean` (a
# mean of per-item scores in [0, 1]: the binomial variance is its upper bound), `correlation`
# (standard error (1 - r^2)/sqrt(n); at r = 0 the phi test). Metrics that are none of these (F1,
# macro-F1: a ratio of counts) have no such test; the guard then tests the run on a metric that has
# one, and says so. A task YAML may declare `spread:` for a metric of its own.
SPREADS = ("proportion", "bounded_mean", "correlation")
KNOWN_SPREADS: dict[str, str] = {
    "accuracy": "proportion", "exact_match": "proportion", "exact_match_flexible": "proportion",
    "rouge_l": "bounded_mean", "mcc": "correlation",
}


def normalise(given: Any, where: str = "task metrics") -> list[dict[str, Any]]:
    """[{name, direction, primary}] with exactly one primary. The old form, a list of names, reads
    as: first primary, all max."""
    return check_primary(parse(given, where), where)


def parse(given: Any, where: str = "task metrics") -> list[dict[str, Any]]:
    """Each entry as {name, direction, primary}; how many are primary is check_primary's."""
    if not given or not isinstance(given, (list, tuple)):
        raise ConfigError(f"{where}: declare a list, e.g. [{{name: accuracy, direction: max, primary: true}}]")
    if all(isinstance(m, str) for m in given):
        given = [{"name": m, "direction": "max", "primary": i == 0} for i, m in enumerate(given)]
    out = []
    for m in given:
        if not isinstance(m, Mapping) or not m.get("name"):
            raise ConfigError(f"{where}: each entry needs a name, e.g. {{name: accuracy, direction: max}}; got {m!r}")
        if m.get("direction", "max") not in DIRECTIONS:
            raise ConfigError(f"{where}: {m['name']} has direction {m.get('direction')!r}; use max or min")
        entry = {"name": str(m["name"]), "direction": str(m.get("direction", "max")), "primary": bool(m.get("primary", False))}
        if m.get("range") is not None:
            entry["range"] = _range(m["range"], f"{where}: {m['name']}")
        if m.get("spread") is not None:
            if m["spread"] not in SPREADS:
                raise ConfigError(f"{where}: {m['name']} has spread {m['spread']!r}; use one of {list(SPREADS)} or leave it out")
            entry["spread"] = str(m["spread"])
        out.append(entry)
    return out


def _range(given: Any, where: str) -> list[float]:
    ok = (isinstance(given, (list, tuple)) and len(given) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in given) and given[0] < given[1])
    if not ok:
        raise ConfigError(f"{where} has range {given!r}; write [low, high] with low < high, e.g. range: [0, 1]")
    return [float(given[0]), float(given[1])]


def with_ranges(spec: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each entry with its value range and spread: declared, else those known for a metric of that
    name, else None (an unbounded metric, or one this code does not know)."""
    out = []
    for m in spec:
        entry = dict(m)
        known = KNOWN_RANGES.get(str(m["name"]))
        entry["range"] = list(m["range"]) if m.get("range") is not None else (list(known) if known else None)
        entry["spread"] = m.get("spread") or KNOWN_SPREADS.get(str(m["name"]))
        out.append(entry)
    return out


def check_primary(out: list[dict[str, Any]], where: str = "task metrics") -> list[dict[str, Any]]:
    primary = [m["name"] for m in out if m["primary"]]
    if len(primary) != 1:
        raise ConfigError(f"{where}: {len(primary)} metrics are marked primary ({primary}); mark exactly one of "
                          f"{[m['name'] for m in out]} with primary: true")
    return out


def where_of(task_cfg: Mapping[str, Any]) -> str:
    name = task_cfg.get("name")
    return f"task {name} (conf/task/{name}.yaml) metrics"


def of_task(task_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    return normalise(task_cfg.get("metrics"), where_of(task_cfg))


def primary(spec: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return dict(next(m for m in spec if m["primary"]))


def direction(spec: Sequence[Mapping[str, Any]], name: str) -> str:
    return next((str(m["direction"]) for m in spec if m["name"] == name), "max")


def of_record(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What a run scored by: its own `metric_spec`, or for records written before runs kept it,
    the declaration in its config."""
    if record.get("metric_spec"):
        return with_ranges(record["metric_spec"])
    return with_ranges(of_task((record.get("config") or {}).get("task") or {}))
