"""`${methods_beyond:PRESET,...}` in a sweep preset: every method YAML of conf/method/ that the
named presets do not list, in the report's order. The zoo is written this way, so a new method's
YAML joins it with no other file touched."""
from __future__ import annotations

from functools import lru_cache

from omegaconf import OmegaConf

from peftbench.experiments import yamlfile
from peftbench.experiments.paths import CONF

RESOLVER = "methods_beyond"


def preset_methods(preset: str) -> list[str]:
    """The methods a preset lists by name (`hydra.sweeper.params.method`)."""
    doc = yamlfile.read(CONF / "sweep" / f"{preset}.yaml")
    value = str(((doc.get("hydra") or {}).get("sweeper") or {}).get("params", {}).get("method", ""))
    if "${" in value:  # a resolver (the zoo: every method the others leave out) names none itself
        return []
    return [m.strip() for m in value.split(",") if m.strip()]


@lru_cache(maxsize=None)
def methods_beyond(*presets: str) -> str:
    listed = {m for p in presets for m in preset_methods(p)}
    order = {}
    for path in (CONF / "method").glob("*.yaml"):
        if path.stem not in listed:
            report = (yamlfile.read(path) or {}).get("report") or {}
            order[path.stem] = (int(report.get("order", 1000)), path.stem)
    return ",".join(sorted(order, key=order.get))


def register() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, methods_beyond)
