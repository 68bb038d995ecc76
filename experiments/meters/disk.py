"""Bytes a saved adapter takes on disk."""
from __future__ import annotations

from pathlib import Path


def dir_bytes(path: Path) -> int:
    """Bytes of the weights and configs in a saved folder; the model card peft writes beside them
    (README.md) is documentation, not adapter."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and f.suffix != ".md")
