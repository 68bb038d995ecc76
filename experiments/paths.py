"""Where the configs and the reference records are: beside the layers, in a checkout (the
repository root) and installed (site-packages/peftbench) alike."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REFERENCE = ROOT / "results" / "reference"
