"""Temp files that a killed write left in a results folder."""
from __future__ import annotations

import time
from pathlib import Path

STALE_TMP_AGE_S = 3600.0


def clean_stale_tmp(results_dir: str | Path, alone: bool, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove `.NAME.*.tmp` files that record.write_atomic left behind when it was killed.

    Safe against live writers: every peftbench process holds a shared lock on the results dir
    while it runs (results_lock). With `alone` (we got the lock exclusively) no writer is alive,
    so every temp file is stale. Otherwise only temp files older than max_age_s go: a record is
    written in milliseconds, so a live writer never has a temp file that old."""
    removed = []
    now = time.time()
    for tmp in Path(results_dir).rglob(".*.json.*.tmp"):
        try:
            if alone or now - tmp.stat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass
    if removed:
        print(f"[sweep] removed {len(removed)} stale temp file(s) from killed writes in {results_dir}", flush=True)
    return removed
