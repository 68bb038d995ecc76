"""A task's metric declaration, the one parser of it: the task YAML's `metrics:` as
[{name, direction, primary}]. A run writes the result into its record (`metric_spec`), so the
report reads what the run scored by, not what today's YAML says. No torch here: the report uses it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from peftbench.methods.errors import ConfigError

DIRECTIONS = ("max", "min")


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
        out.append({"name": str(m["name"]), "direction": str(m.get("direction", "max")), "primary": bool(m.get("primary", False))})
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
        return [dict(m) for m in record["metric_spec"]]
    return of_task((record.get("config") or {}).get("task") or {})
