"""The identity of a configuration, defined once: which keys make a table row, an lr line or a
run, and the `setting` hash of everything else in the config."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import pandas as pd

from peftbench.analysis.meta import method_report
from peftbench.experiments.record import semantic_config


# Row identity in every table: what distinguishes two configurations within one model x task.
# `setting` is a hash of everything else in the config (batch size, alpha, task size, dtype,
# device type, ...), so runs that differ only there are separate rows, never merged as seeds.
ROW_KEY = ["method", "capacity", "targets", "precision", "lr", "protocol", "steps", "setting"]
GROUP_KEY = ["model", "task"]
# One "lr line": a configuration less its lr (the axis an lr search or a tuned pick moves along).
LINE_KEY = GROUP_KEY + [k for k in ROW_KEY if k not in ("method", "lr")]  # within one method
# One run: a configuration and its seed.
RUN_KEY = GROUP_KEY + ROW_KEY + ["seed"]
# A configuration's own columns besides its method: what a label names where two configurations of
# one method differ (the setting hash stands for keys that `trained_items` names one by one).
CONFIG_KEY = [k for k in ROW_KEY if k not in ("method", "setting")]
# One trained configuration: a row at the lr its runs trained at (under an lr search, each seed's
# own pick), over its seeds: what "did this configuration learn" asks about.
TRAINED_KEY = GROUP_KEY + ["chosen_lr" if k == "lr" else k for k in ROW_KEY]


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as {dotted.key: value}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def device_type(prov: Mapping[str, Any]) -> str:
    """'cuda:0' -> 'cuda': which kind of device ran, not which card."""
    return str(prov.get("device") or "-").split(":")[0]


def _column_keys(mcfg: Mapping[str, Any]) -> set[str]:
    """Config keys that table columns already show (method, capacity, targets, lr, steps,
    precision), plus seed; only the key each column actually read, so nothing distinguishing is
    lost."""
    keys = {"seed", "method.name", "method.lr", "lr", "steps", "precision"}
    keys.add("method.target_modules" if "target_modules" in mcfg else "method.peft_kwargs.target_modules")
    capacity = method_report(str(mcfg.get("name", "")), mcfg)["capacity_key"]
    return keys | ({f"method.{capacity}"} if capacity else set())


def setting_items(record: Mapping[str, Any]) -> dict[str, str]:
    """The config beyond the table's label columns, as {dotted key: JSON value}, plus the device
    type (and on CPU the torch thread count that ran): what makes two otherwise identical rows
    different runs."""
    cfg = semantic_config(record.get("config") or {})
    shown = _column_keys(cfg.get("method") or {})
    # the method's report block is display metadata, not a setting
    items = {k: json.dumps(v, sort_keys=True, default=str) for k, v in flat_config(cfg).items()
             if k not in shown and not k.startswith("method.report.")}
    prov = record.get("provenance") or {}
    items["device"] = json.dumps(device_type(prov))
    if device_type(prov) == "cpu" and isinstance(prov.get("torch_threads"), int):
        # the thread count that ran (torch_threads=auto resolves by launcher) sets the order of
        # CPU reductions, so the numbers: runs on different counts are never pooled as seeds
        items["torch_threads"] = json.dumps(prov["torch_threads"])
    return items


def setting_value(items: Mapping[str, str], key: str) -> Any:
    """A config key's value in a run's setting. `a|b` names one quantity that tasks set by
    different keys (the training-set size: task.n_train on generated tasks,
    task.max_train_samples on file datasets): the first of them the run sets."""
    for name in key.split("|"):
        raw = items.get(name)
        value = json.loads(raw) if isinstance(raw, str) else raw
        if value is not None:
            return value
    return None


def short_hash(items: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(items.items()))).encode()).hexdigest()[:6]


# What a run measures besides training never changes what it trains (measurement runs on its own
# random state), so a reference need not share it: full FT with latency off is LoRA's reference.
MEASUREMENT_ONLY = ("measure.", "forgetting.", "lm_eval.")


def trained_items(items: Mapping[str, str]) -> dict[str, str]:
    """The part of a setting that sets what is trained: measurement switches change no trained
    number."""
    return {k: v for k, v in items.items() if not k.startswith(MEASUREMENT_ONLY)}


def non_method(items: Mapping[str, str]) -> dict[str, str]:
    """The part of a setting that references must share: what is trained, less method.*, which
    differs by design between a method and its reference (full FT has no r or alpha)."""
    return {k: v for k, v in trained_items(items).items() if not k.startswith("method.")}


def setting_labels(ok: pd.DataFrame) -> dict[str, str]:
    """Per setting hash, the trained-setting keys whose values differ between these runs'
    settings (batch size, training-set size, ...): what a reader needs instead of the hash.
    "" where nothing but the method's own parameters or measurement switches differ."""
    items = {s: non_method(it) for s, it in zip(ok["setting"], ok["setting_items"])}
    keys = sorted({k for it in items.values() for k in it})
    vary = [k for k in keys if len({it.get(k) for it in items.values()}) > 1]
    # a config group chosen differently (objective: grpo or sft) is named by its choice; the
    # group's own keys that come with it would only repeat that
    chosen = {k.rsplit(".", 1)[0] for k in vary if k.endswith(".name")}
    vary = [k for k in vary if k.rsplit(".", 1)[0] not in chosen or k.endswith(".name")]

    def shown(k: str, it: Mapping[str, Any]) -> str:
        group = k.rsplit(".", 1)[0]
        if k.endswith(".name") and group in chosen:
            value = it.get(k)
            if isinstance(value, str) and value.startswith('"'):
                value = json.loads(value)
            return f"{group}={value or 'default'}"  # absent: the config's default choice (objective: sft)
        return f"{k}={it.get(k, '-')}"
    return {s: ", ".join(shown(k, it) for k in vary) for s, it in items.items()}
