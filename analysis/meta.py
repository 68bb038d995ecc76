"""What the report knows about methods and tasks, read from each record's resolved config.

A method's display metadata is its YAML's `report:` block (family, order, colour, marker,
capacity key, role); a task's metrics are its YAML's `metrics:` list (name, direction, primary).
Both travel in the record's `config`, so nothing here names a method or a metric.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping

# The role a method plays in comparisons (conf/method/<name>.yaml, report.role).
FULL_REFERENCE = "full_reference"  # "% of full FT" is relative to it
LOWER_REFERENCE = "lower_reference"  # a floor (e.g. a linear probe)
BASELINE = "baseline"  # "Δ vs baseline" is against it
REFERENCE_ROLES = (FULL_REFERENCE, LOWER_REFERENCE)  # no adapter: nothing to merge, no adapter latency

DEFAULT_ORDER = 1000
# Methods without a colour or marker of their own get one from these, by a stable hash of their
# name, so an unknown method looks the same in every figure and every report.
FALLBACK_COLOURS = ("#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")
FALLBACK_MARKERS = ("<", ">", "p", "H", "d", "8", "1", "2")


def _stable_pick(name: str, options: tuple[str, ...], salt: int = 1) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return options[(h // salt) % len(options)]


def method_report(name: str, method_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The method's `report:` block with the documented defaults filled in."""
    rep = dict(method_cfg.get("report") or {})
    capacity = rep.get("capacity_key", "r" if "r" in method_cfg else None)
    order = rep.get("order")
    return {
        "family": str(rep.get("family") or "other"),
        "order": float(order) if isinstance(order, (int, float)) and not isinstance(order, bool) else float(DEFAULT_ORDER),
        "color": str(rep.get("color") or _stable_pick(name, FALLBACK_COLOURS)),
        "marker": str(rep.get("marker") or _stable_pick(name, FALLBACK_MARKERS, 7)),
        "capacity_key": capacity if isinstance(capacity, str) and capacity else None,
        "role": str(rep["role"]) if rep.get("role") else "-",
    }


def dotted(cfg: Mapping[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def capacity_of(method_cfg: Mapping[str, Any], capacity_key: str | None) -> tuple[str, float]:
    """('<key>=<value>', value) for the method's capacity (rank, bottleneck size, ...), or
    ('-', NaN) when it has none or leaves it unset."""
    if not capacity_key:
        return "-", math.nan
    v = dotted(method_cfg, capacity_key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-", math.nan
    shown = str(int(v)) if float(v).is_integer() else str(v)
    return f"{capacity_key.split('.')[-1]}={shown}", float(v)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: str  # "max" | "min"
    primary: bool


def task_metrics(task_cfg: Mapping[str, Any] | None, measured: Mapping[str, Any]) -> tuple[MetricSpec, ...]:
    """The task's declared metrics. Reads the dict form ({name, direction, primary}) and the
    older list of names (first is primary, all higher-is-better); a record whose config
    declares none falls back to the metrics it measured, in the order it recorded them."""
    declared = (task_cfg or {}).get("metrics")
    if not isinstance(declared, list) or not declared:
        declared = [k for k, v in measured.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    specs = []
    for i, m in enumerate(declared):
        if isinstance(m, Mapping):
            specs.append(MetricSpec(str(m.get("name")), "min" if m.get("direction") == "min" else "max", bool(m.get("primary"))))
        else:
            specs.append(MetricSpec(str(m), "max", i == 0))
    if specs and not any(s.primary for s in specs):
        specs[0] = MetricSpec(specs[0].name, specs[0].direction, True)
    return tuple(specs)


def primary_of(specs: tuple[MetricSpec, ...]) -> MetricSpec | None:
    return next((s for s in specs if s.primary), None)


def sign(direction: str) -> float:
    """+1 where higher is better, -1 where lower is: multiply before taking a max."""
    return -1.0 if direction == "min" else 1.0
