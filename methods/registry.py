"""The only place method names are resolved.

Every module in this package is imported once on first lookup, so a new method is one new file
here (decorated with ``@register("name")``) plus one YAML in ``conf/method/``: nothing else.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, TypeVar

_REGISTRY: dict[str, type] = {}
_discovered = False
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.impl_name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in {"registry", "base"}:
            importlib.import_module(f"{__package__}.{info.name}")
    _discovered = True


def get(name: str) -> type:
    _discover()
    if name not in _REGISTRY:
        raise KeyError(name)
    return _REGISTRY[name]


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)
