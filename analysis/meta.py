"""What the report knows about methods and tasks, read from each record's resolved config.

A method's display metadata is its YAML's `report:` block (family, order, colour, marker,
capacity key, role), as the record kept it, except a shipped method's colour, which is its YAML's
today (the palette is the report's, not the run's); a task's metrics are what the run recorded it
scored by (`metric_spec`, read by experiments.metric_spec). Both travel in the record, so nothing
here names a method or a metric.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import yaml

from peftbench.experiments import metric_spec, yamlfile
from peftbench.experiments.paths import CONF
from peftbench.experiments.fields import get_path
from peftbench.methods.errors import ConfigError

from peftbench.methods.roles import BASELINE, FULL_REFERENCE, LOWER_REFERENCE, REFERENCE_ROLES  # noqa: F401

METHOD_DIR = CONF / "method"
DEFAULT_ORDER = 1000
# Okabe & Ito's colour-blind-safe palette, and a grey: every shipped method's colour is one of these
# (the core nine each their own), and a figure's further configurations of one method take the others.
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
# Methods without a colour or marker of their own get one from these, by a stable hash of their
# name, so an unknown method looks the same in every figure and every report.
FALLBACK_COLOURS = PALETTE[1:-1]
FALLBACK_MARKERS = ("<", ">", "p", "H", "d", "8", "1", "2")


@lru_cache(maxsize=None)
def shipped_colour(name: str) -> str | None:
    """The colour conf/method/NAME.yaml gives today. A record keeps the report block of the day it
    ran; a method of a shipped name is drawn in today's palette, a user's own method (a name
    conf/method does not have) in the colour it chose."""
    if not name or "/" in name or name.startswith("."):
        return None
    try:
        data = yamlfile.read(METHOD_DIR / f"{name}.yaml")
    except (OSError, ValueError, yaml.YAMLError):
        return None
    rep = data.get("report") if isinstance(data, Mapping) else None
    return str(rep["color"]) if isinstance(rep, Mapping) and rep.get("color") else None


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
        "color": shipped_colour(name) or str(rep.get("color") or _stable_pick(name, FALLBACK_COLOURS)),
        "marker": str(rep.get("marker") or _stable_pick(name, FALLBACK_MARKERS, 7)),
        "capacity_key": capacity if isinstance(capacity, str) and capacity else None,
        "role": str(rep["role"]) if rep.get("role") else "-",
    }


def capacity_of(method_cfg: Mapping[str, Any], capacity_key: str | None) -> tuple[str, float]:
    """('<key>=<value>', value) for the method's capacity (rank, bottleneck size, ...), or
    ('-', NaN) when it has none or leaves it unset."""
    if not capacity_key:
        return "-", math.nan
    v = get_path(method_cfg, capacity_key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-", math.nan
    shown = str(int(v)) if float(v).is_integer() else str(v)
    return f"{capacity_key.split('.')[-1]}={shown}", float(v)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    direction: str  # "max" | "min"
    primary: bool
    range: tuple[float, float] | None = None  # the values the metric can take; None: unbounded or unknown
    spread: str | None = None  # how it spreads over items (experiments.metric_spec.SPREADS); None: no per-item test


def task_metrics(record: Mapping[str, Any]) -> tuple[MetricSpec, ...]:
    """What the run scored by (experiments.metric_spec): its own `metric_spec`, else its config's
    declaration; none when neither is usable (analysis.load then skips the record as a problem,
    naming why)."""
    try:
        spec = metric_spec.of_record(record)
    except ConfigError:
        return ()
    return tuple(MetricSpec(str(m["name"]), str(m["direction"]), bool(m["primary"]),
                            tuple(map(float, m["range"])) if m.get("range") else None, m.get("spread")) for m in spec)


def primary_of(specs: tuple[MetricSpec, ...]) -> MetricSpec | None:
    return next((s for s in specs if s.primary), None)


def sign(direction: str) -> float:
    """+1 where higher is better, -1 where lower is: multiply before taking a max."""
    return -1.0 if direction == "min" else 1.0
