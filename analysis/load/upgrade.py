"""Records of an older schema in today's names: version 1 is upgraded on load."""
from __future__ import annotations

import json
from typing import Any


from peftbench.experiments.fields import V1_RENAMES
from peftbench.experiments.record import SCHEMA_VERSION
from peftbench.experiments.paths import CONF


def upgrade_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 record in schema-2 names (experiments.fields.V1_RENAMES). Version 1 had no
    `measurement` or `method_info` section, no forgetting and no base-model score: those stay
    absent ('–' in the report). It had no method report block either: the package's YAML of the
    same method name supplies it, else the defaults apply."""
    out = json.loads(json.dumps(record))
    for old, new in V1_RENAMES.items():
        section, key = old.split(".", 1)
        src = out.get(section)
        if isinstance(src, dict) and key in src:
            value = src.pop(key)
            new_section, new_key = new.split(".", 1)
            out.setdefault(new_section, {})[new_key] = value
    method = out.get("config", {}).get("method")
    if isinstance(method, dict) and "report" not in method:
        report = shipped_report(str(method.get("name", "")))
        if report is not None:
            method["report"] = report
    task = out.get("config", {}).get("task")
    measured = [k for k, v in ((out.get("metrics") or {}).get("test") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if isinstance(task, dict) and not task.get("metrics") and measured:  # version 1 declared none
        out["metric_spec"] = [{"name": k, "direction": "max", "primary": i == 0} for i, k in enumerate(measured)]
    out["schema_version"] = SCHEMA_VERSION
    return out


METHOD_CONF = CONF / "method"


def shipped_report(method: str) -> dict[str, Any] | None:
    """The report block of the package's own YAML for a method of that name: version-1 records
    predate report blocks, and the methods they ran are the shipped ones."""
    import yaml

    path = METHOD_CONF / f"{method}.yaml"
    try:
        report = yaml.safe_load(path.read_text()).get("report") if path.is_file() else None
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return report if isinstance(report, dict) else None
