"""`peftbench compare MY_RESULTS --reference NAME`: does a user's run reproduce ours?

Per configuration (model x task x the table's row key), against the records of
`results/reference/NAME/` (or a folder given as NAME):

* bit-identical: every seed both have gives exactly the same test metrics and loss curve. That
  is expected only on the same CPU model, CPU kernels (the instruction set torch dispatched to)
  and torch build: other kernels round differently. The line says which of them differ.
* within CI: the user's mean primary metric lies inside the 95% t-interval of the reference seeds'
  mean (needs >= 2 reference seeds).
* not reproduced: neither; or "cannot tell" when the reference has one seed and the numbers differ.

Runs at another resolved precision than the reference's (precision=auto resolves per machine) are
compared with it on the CI only, and the line says that the precisions differ.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd

from peftbench.analysis.help import parser
from peftbench.analysis.load import CONFIG_KEY, GROUP_KEY, ROW_KEY, load_results, machine_label, short_hash, trained_items
from peftbench.analysis.stats import t_ci95
from peftbench.experiments.paths import REFERENCE

REFERENCE_ROOT = REFERENCE
# Configurations match on what was trained: measurement switches (latency, forgetting probe,
# scores before training) draw from their own random state and change no trained number, so a
# run with latency on reproduces a reference run with it off.
KEY = GROUP_KEY + [k if k != "setting" else "trained_setting" for k in ROW_KEY]
BIT_IDENTICAL, WITHIN_CI, NOT_REPRODUCED, CANNOT_TELL, NO_REFERENCE = (
    "bit-identical", "within CI", "not reproduced", "cannot tell (reference has 1 seed)", "no reference")


@dataclass
class Comparison:
    config: str
    verdict: str
    detail: str


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if c.startswith("metrics.test."))


def _identical(mine: pd.Series, ref: pd.Series, metrics: list[str]) -> bool:
    same = all((mine[m] == ref[m]) or (math.isnan(mine[m]) and math.isnan(ref[m])) for m in metrics)
    return same and list(mine["loss_curve"]) == list(ref["loss_curve"])


def machine_difference(mine: pd.DataFrame, ref: pd.DataFrame) -> str:
    """What of the machine that sets the numerics differs between the two sides ('' when nothing
    does): the hardware with its CPU kernels' instruction set (`load.machine_label`), the torch
    build. Records without the kernels' ISA (older ones) name the hardware alone."""
    def torch(frame: pd.DataFrame) -> set[str]:
        return {next((p.split(" ", 1)[1] for p in v.split(", ") if p.startswith("torch ")), "?") for v in frame["prov_versions"]}

    def machines(frame: pd.DataFrame) -> set[str]:
        return {machine_label(row) for row in frame.to_dict("records")}

    parts = [("machine", machines(mine), machines(ref)), ("torch", torch(mine), torch(ref))]
    return "; ".join(f"{name} {'/'.join(sorted(a))} here, {'/'.join(sorted(b))} in reference" for name, a, b in parts if a != b)


def precision_note(mine: pd.DataFrame, ref: pd.DataFrame) -> str:
    """A line saying that the two sides ran at different precisions; '' when they did not."""
    here, there = (sorted(set(f["precision"])) for f in (mine, ref))
    if here == there or not here or not there:
        return ""
    return f"precision differs: {'/'.join(here)} here, {'/'.join(there)} in reference; numbers are not comparable bit for bit"


def compare_config(label: str, mine: pd.DataFrame, ref: pd.DataFrame) -> Comparison:
    differs = precision_note(mine, ref)
    if differs:  # other kernels and rounding: only the CI can say anything
        c = _within_ci(label, mine, ref, "", "")
        return Comparison(c.config, c.verdict, f"{differs}; {c.detail}")
    metrics = _metric_columns(ref)
    moved = machine_difference(mine, ref)
    same_machine = not moved
    where = "same CPU model, CPU kernels and torch build" if same_machine else f"different {moved}"
    shared = sorted(set(mine["seed"]) & set(ref["seed"]))
    if shared and all(_identical(mine[mine["seed"] == s].iloc[0], ref[ref["seed"] == s].iloc[0], metrics) for s in shared):
        return Comparison(label, BIT_IDENTICAL, f"seeds {','.join(map(str, shared))}: test metrics and loss curve equal ({where})")
    note = " (same CPU model, CPU kernels and torch build: bit-identical was expected)" if same_machine and shared else ""
    if shared:
        note += what_moved(mine, ref, shared)
    return _within_ci(label, mine, ref, where, note)


def what_moved(mine: pd.DataFrame, ref: pd.DataFrame, shared: list[int]) -> str:
    """Where two runs of one config part: in training (the loss curves differ) or only after it
    (equal curves, other scores), and whether the code that ran differs (the records' commits)."""
    pairs = [(mine[mine["seed"] == s].iloc[0], ref[ref["seed"] == s].iloc[0]) for s in shared]
    trained_alike = all(list(a["loss_curve"]) == list(b["loss_curve"]) for a, b in pairs)
    out = "; training identical (loss curves equal), evaluation differs" if trained_alike else "; training differs (loss curves)"
    here, there = sorted(set(mine["prov_git"])), sorted(set(ref["prov_git"]))
    if here != there:
        out += f"; code differs: {', '.join(c[:10] for c in here)} here, {', '.join(c[:10] for c in there)} in reference " \
               f"(git log names what changed)"
    return out


def _within_ci(label: str, mine: pd.DataFrame, ref: pd.DataFrame, where: str, note: str) -> Comparison:
    """The user's mean primary metric against the 95% t-interval of the reference seeds' mean."""
    m, r = float(mine["primary"].mean()), float(ref["primary"].mean())
    half = t_ci95(list(ref["primary"].astype(float)))
    seeds = f"yours n={len(mine)}, reference n={len(ref)}"
    if math.isnan(half):
        return Comparison(label, CANNOT_TELL, f"primary {m:.4g} vs {r:.4g}; {seeds}{note}")
    ok = abs(m - r) <= half
    return Comparison(label, WITHIN_CI if ok else NOT_REPRODUCED,
                      f"primary {m:.4g} vs reference {r:.4g}, its 95% CI [{r - half:.4g}, {r + half:.4g}]; {seeds}"
                      f"{'; ' + where if where else ''}{note}")


def _label(key: tuple, runs: pd.DataFrame) -> str:
    d = dict(zip(KEY, key))
    setting = ",".join(sorted(set(runs["setting"])))
    return f"{d['model']}/{d['task']} {d['method']} {d['capacity']} {d['targets']} {d['precision']} lr={d['lr']:.3g} steps={d['steps']} setting={setting}"


def with_trained_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """The setting hash without measurement switches; one run per seed of each configuration
    (runs that differ only in what they measured trained the same numbers)."""
    trained = [short_hash(trained_items(items)) for items in frame["setting_items"]]
    return frame.assign(trained_setting=trained).drop_duplicates(KEY + ["seed"])


def _match(ref_groups: dict[tuple, pd.DataFrame], key: tuple, keys: list[str]) -> pd.DataFrame | None:
    """The reference group equal to `key` on `keys` (NaN equals NaN: an lr-searched row's lr)."""
    at = [KEY.index(k) for k in keys]
    return next((r for k, r in ref_groups.items() if all(k[i] == key[i] or (k[i] != k[i] and key[i] != key[i]) for i in at)), None)


# A configuration the reference has only at another precision is still compared (precision=auto
# resolves per machine), and the line says so.
ANY_PRECISION = [k for k in KEY if k != "precision"]


def compare(mine: pd.DataFrame, ref: pd.DataFrame) -> list[Comparison]:
    mine, ref = with_trained_setting(mine), with_trained_setting(ref)
    ref_groups = {k: g for k, g in ref.groupby(KEY, dropna=False)}
    out = []
    for key, g in mine.groupby(KEY, dropna=False):
        label = _label(key, g)
        match = _match(ref_groups, key, KEY)
        if match is None:
            match = _match(ref_groups, key, ANY_PRECISION)
        if match is None:
            out.append(Comparison(label, NO_REFERENCE, "the reference has no run of this configuration" + nearest(g, ref)))
        else:
            out.append(compare_config(label, g, match))
    return out


def _items(row: Mapping) -> dict[str, str]:
    """What a run trained: its label columns and the trained part of its setting."""
    return {**{k: str(row[k]) for k in CONFIG_KEY if k in row}, **trained_items(row["setting_items"])}


def nearest(mine: pd.DataFrame, ref: pd.DataFrame) -> str:
    """'; nearest reference: ...' naming what moved between this configuration and the reference
    run of the same model, task and method that differs from it in the fewest keys; '' if none."""
    head = mine.iloc[0]
    same = ref[(ref["model"] == head["model"]) & (ref["task"] == head["task"]) & (ref["method"] == head["method"])]
    if same.empty:
        return ""
    here = _items(head)
    best = min((_items(r) for _, r in same.iterrows()), key=lambda there: sum(here.get(k) != there.get(k) for k in set(here) | set(there)))
    moved = [f"{k} {here.get(k, '-')} here, {best.get(k, '-')} there" for k in sorted(set(here) | set(best)) if here.get(k) != best.get(k)]
    return "; nearest reference of this method differs in " + "; ".join(moved) if moved else ""


def reference_folder(name: str) -> Path | None:
    for p in (Path(name), REFERENCE_ROOT / name):
        if p.is_dir():
            return p
    return None


def main(argv: list[str]) -> int:
    p, o = parser("peftbench compare", "peftbench compare RESULTS... --reference NAME",
                  "Does a user's run reproduce ours? Per configuration: bit-identical, within the reference seeds' 95%\n"
                  "CI, or not reproduced, saying which CPU, kernels, torch build or precision differ (docs/report.md).")
    o.add_argument("results", nargs="+", metavar="RESULTS", help="your result files or folders")
    o.add_argument("--reference", required=True, metavar="NAME", help="a folder under results/reference/ (e.g. demo) or a path")
    args = p.parse_args(argv)
    folder = reference_folder(args.reference)
    if folder is None:
        names = sorted(d.name for d in REFERENCE_ROOT.iterdir() if d.is_dir()) if REFERENCE_ROOT.is_dir() else []
        print(f"peftbench: error: no reference {args.reference!r}; available: {', '.join(names) or '(none)'} "
              f"(or give a folder of records)", file=sys.stderr)
        return 2
    mine, ref = load_results(args.results).ok, load_results([folder]).ok
    if mine.empty:
        print(f"peftbench: error: no ok result records in {', '.join(args.results)}; give the folder your runs wrote", file=sys.stderr)
        return 2
    results = compare(mine, ref)
    for c in results:
        print(f"{c.verdict:>14}  {c.config}: {c.detail}")
    counts = {v: sum(c.verdict == v for c in results) for v in dict.fromkeys(c.verdict for c in results)}
    print("summary: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 1 if any(c.verdict == NOT_REPRODUCED for c in results) else 0
