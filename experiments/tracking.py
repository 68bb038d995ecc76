"""Experiment tracking: `logger=wandb` (conf/logger/wandb.yaml); `logger=none` is the default.

Per run it logs the resolved config, the loss of every step as it happens (through
experiments.progress.LISTENERS), and at the end the metrics, the cost figures, parameter counts
and timings (history and summary). mode=offline (the default) needs no network: the run is
written under WANDB_DIR (or logger.dir, or ./wandb) and can be uploaded later with `wandb sync`.
A tracking failure never fails a run: it is reported and the run goes on untracked.
"""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path
from typing import Any, Mapping

from peftbench.experiments import progress


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float, bool, str)) or value is None:
        out[prefix] = value


# Record sections logged at the end. Keys are the record's dotted paths, the names the report,
# the CSV and the claims use (experiments.fields), so one figure has one name in W&B too.
LOGGED_SECTIONS = ("metrics", "metrics_before", "cost", "params", "timing", "measurement", "method_info", "forgetting")


def final_figures(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of a finished record under their record paths: metrics.<split>.<name>,
    cost.<field>, ..."""
    out: dict[str, Any] = {"status": rec.get("status"), "lr": rec.get("lr")}
    for key in LOGGED_SECTIONS:
        _flat(key, rec.get(key) or {}, out)
    if rec.get("error"):
        out["error"] = rec["error"]
    return out


class Tracker:
    """One W&B run per benchmark run. Use start() before training and finish(record) after."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = dict(cfg)
        self.run = None
        self._listener = None

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> "Tracker | None":
        logger = config.get("logger") or {}
        return Tracker(logger) if logger.get("name") == "wandb" else None

    def start(self, run_id: str, config: Mapping[str, Any], group: str | None = None, extra_tags: list[str] | None = None) -> None:
        try:
            import wandb

            c = self.cfg
            d = c.get("dir") or os.environ.get("WANDB_DIR")
            if d:
                Path(d).mkdir(parents=True, exist_ok=True)
            tags = [str(t) for t in (c.get("tags") or [])] + [str(config["method"]["name"]), str(config["model"]["name"]), str(config["task"]["name"])]
            self.run = wandb.init(
                project=c.get("project") or "peftbench",
                entity=c.get("entity"),
                mode=c.get("mode") or "offline",
                dir=d,
                name=run_id,
                id=None,
                group=c.get("group") or group,
                tags=sorted(set(tags + (extra_tags or []))),
                config={**{k: v for k, v in config.items() if k != "logger"}, "run_id": run_id},
                reinit="finish_previous",
            )
        except Exception as e:  # noqa: BLE001 - tracking must never cost a run
            print(f"peftbench: warning: W&B init failed, run goes on untracked: {type(e).__name__}: {e}", file=sys.stderr)
            self.run = None
            return

        def on_step(step: int, loss: float, dt: float) -> None:
            if self.run is not None:
                self.run.log({"train/loss": loss, "train/step_time_ms": dt * 1e3}, step=step)

        self._listener = on_step
        progress.LISTENERS.append(on_step)

    def finish(self, rec: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
        if self._listener in progress.LISTENERS:
            progress.LISTENERS.remove(self._listener)
        if self.run is None:
            return
        try:
            figures = {**final_figures(rec), **(extra or {})}
            self.run.summary.update(figures)
            self.run.log({k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            self.run.finish(exit_code=0 if rec.get("status") == "ok" else 1)
        except Exception as e:  # noqa: BLE001
            print(f"peftbench: warning: W&B finish failed: {type(e).__name__}: {e}", file=sys.stderr)
        self.run = None


# -- reading an offline run back (tests, debugging) -------------------------------------------------

def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Parse an offline run's run-*.wandb file: {"name", "tags", "config", "history": [...],
    "summary": {...}}. The file is a leveldb-style log of protobuf records (32 KiB blocks, 7-byte
    chunk headers) after a 7-byte ':W&B' header."""
    from wandb.proto import wandb_internal_pb2 as pb
    import json

    path = next(Path(run_dir).glob("run-*.wandb"))
    data = path.read_bytes()
    block, pos, buf, chunks = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            pos += (block - pos % block) % block
            continue
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST
            chunks.append(buf)
            buf = b""
    out: dict[str, Any] = {"name": None, "tags": [], "config": {}, "history": [], "summary": {}}

    def key(item: Any) -> str:
        return item.key or "/".join(item.nested_key)

    for raw in chunks:
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["tags"] = r.run.display_name, list(r.run.tags)
            out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in r.summary.update})
    return out
