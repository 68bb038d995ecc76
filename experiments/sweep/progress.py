"""The sweep-level progress line: done, failed and remaining runs of this sweep, and an ETA."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

MANIFEST_ENV = "PEFTBENCH_SWEEP_MANIFEST"


def sweep_counts(manifest: Path) -> dict[str, Any]:
    """Counts of this sweep's runs from their result files: ok (done, now or before), failed (in
    this sweep invocation), remaining (not yet written, or a failure from an earlier attempt)."""
    from peftbench.experiments import record

    m = json.loads(Path(manifest).read_text())
    started = float(m["started_at"])
    ok = failed = 0
    for e in m["runs"]:
        if not e.get("run_id"):
            continue
        path = record.result_path(e["results_dir"], e["run_id"])
        try:
            status = record.read(path).get("status")
            mtime = path.stat().st_mtime
        except (OSError, ValueError):
            continue
        if status == "ok":
            ok += 1
        elif status in ("failed", "diverged") and mtime >= started - 1:
            failed += 1
    total = int(m["total"])
    return {"total": total, "done": ok, "failed": failed, "remaining": max(0, total - ok - failed),
            "already_done": int(m.get("already_done", 0)), "elapsed_s": time.time() - started}


def progress_line(manifest: str | Path | None) -> str | None:
    if not manifest or not Path(manifest).exists():
        return None
    c = sweep_counts(Path(manifest))
    finished_now = c["done"] + c["failed"] - c["already_done"]
    eta = ""
    if finished_now > 0 and c["remaining"]:
        eta = f", ETA ~{_fmt_s(c['elapsed_s'] / finished_now * c['remaining'])}"
    return (f"[sweep] {c['done'] + c['failed']}/{c['total']} finished: {c['done']} done, {c['failed']} failed, "
            f"{c['remaining']} remaining ({_fmt_s(c['elapsed_s'])} elapsed{eta})")


def _fmt_s(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"
