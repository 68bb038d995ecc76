"""YAML files through one parser that remembers: a report reads the same study, claim and method
files hundreds of times, and PyYAML's pure-Python parser spends about 10 ms on each read on a slow
core. The cache is keyed by the file's text, so an edited file is parsed again; every caller gets
its own copy, so none can change what another reads."""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

# libyaml's parser where PyYAML was built with it; the constructors (what a scalar becomes) are the
# same Python code either way
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read(path: str | Path) -> Any:
    """The parsed contents of a YAML file (yaml.safe_load semantics); OSError or yaml.YAMLError as
    reading or parsing would raise them."""
    return parse(Path(path).read_text())


def parse(text: str) -> Any:
    return copy.deepcopy(_parse(text))


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)
