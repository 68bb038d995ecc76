"""Per-item test outcomes, kept compactly in every record so that an analysis can resample test
items as well as seeds (a paired bootstrap over both), and pair two runs item by item.

`{"digest": <hash of the split's inputs and labels>, "n": N, "metric": <the task metric that is
their mean>, "bits": <base64 of the packed correctness bits>}` when every outcome is 0 or 1 (accuracy, exact match): 1,000 items take 168
characters. Other per-item scores (ROUGE-L) are kept as `"scores": [...]`, rounded to 4 digits.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

import numpy as np


def encode(values: Sequence[float], digest: str, metric: str) -> dict[str, Any]:
    """`metric`: the task metric that is the mean of these outcomes (a task declares it)."""
    x = np.asarray(values, dtype=float)
    out: dict[str, Any] = {"digest": digest, "n": int(len(x)), "metric": metric}
    if np.isin(x, (0.0, 1.0)).all():
        out["bits"] = base64.b64encode(np.packbits(x.astype(np.uint8)).tobytes()).decode()
    else:
        out["scores"] = [round(float(v), 4) for v in x]
    return out


def decode(entry: Mapping[str, Any]) -> np.ndarray:
    """The per-item outcomes as floats, in the split's order."""
    n = int(entry["n"])
    if "bits" in entry:
        raw = np.frombuffer(base64.b64decode(entry["bits"]), dtype=np.uint8)
        return np.unpackbits(raw)[:n].astype(float)
    return np.asarray(entry["scores"], dtype=float)[:n]


def of_task(task: Any, splits: Sequence[str] = ("test",)) -> dict[str, Any] | None:
    """The outcomes a task kept from its latest evaluation of each split, or None when it keeps none."""
    kept = getattr(task, "outcomes", None) or {}
    out = {s: encode(kept[s], task.item_digest(s), task.outcome_metric) for s in splits
           if kept.get(s) is not None and hasattr(task, "item_digest")}
    return out or None
