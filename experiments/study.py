"""Published comparisons as runnable studies: `peftbench reproduce NAME | --list`.

A study is data, `conf/study/<name>.yaml`:

    name: lora_without_regret
    title: LoRA Without Regret
    source: Schulman et al., Thinking Machines Lab, 2025
    about: what the study measures and how it is sized
    claims: [lwr_best_lr_ratio, ...]      # ids of claims in conf/claims/ that it tests
    settings: {model: minilm, steps: 100}  # one value each, shared by every run
    grid: {seed: "0,1,2"}                  # crossed with every arm
    arms:                                  # a union of small grids (hydra.sweeper.arms)
      - {method: full_ft, lr: "1e-4,3e-4"}
    variants:                              # other settings the same study runs on
      sst2: {task: sst2, ...}
      llm: {model: smollm2-135m, arms: [...]}  # a variant's own arms replace the study's

`reproduce` turns it into a sweep preset (settings and grid as `hydra.sweeper.params`, arms as
`hydra.sweeper.arms`), runs it through the ordinary `peftbench run -m` path (skip-done, resume,
launchers, SLURM), reports on exactly the runs of that sweep, and prints each claim's verdict.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from experiments import decide as decide_phases

CONF = Path(__file__).resolve().parents[1] / "conf"
STUDY_DIR = CONF / "study"
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"
PEAK_CACHE = "peak_flops.json"
STUDY_KEYS = {"name", "title", "source", "about", "claims", "settings", "grid", "arms", "variants", "sizing", "decide"}
REQUIRED = ("name", "title", "source", "claims", "arms")
# Where no record measured a step, the analytic estimate divides FLOPs by the measured peak at
# this fraction of it: the MFU the reference records reach on this CPU is 0.5-0.6.
ASSUMED_MFU = 0.5
# Outside the runs, per sweep: process start, imports, Hydra composing every job (README, "Launchers").
SWEEP_OVERHEAD_S = 7.0


class StudyError(ValueError):
    """A study file or name that cannot be used; the message names it and the fix."""


@dataclass
class Study:
    name: str
    title: str
    source: str
    claims: list[str]
    settings: dict[str, Any]
    grid: dict[str, Any]
    arms: list[dict[str, Any]]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant_arms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    about: str = ""
    file: str = ""
    decide: tuple[int, int] | None = None  # (seeds at each pick, edge-extension rounds): experiments/decide.py

    def arms_for(self, variant: str | None = None) -> list[dict[str, Any]]:
        """The variant's own arms where it gives them (a model whose step budget or layer
        sizes call for other steps, batches or ranks), the study's otherwise."""
        return self.variant_arms.get(variant or "", self.arms)

    def params(self, variant: str | None = None) -> dict[str, Any]:
        """settings + grid (+ a variant's settings) as sweeper params: one override each. A
        variant's `key: null` drops a setting or grid axis the variant's task or model does not
        have, and a variant's value replaces the study's, grid axes included (a task that sizes
        its training set by another key sweeps that key instead)."""
        extra = self.variants[variant] if variant else {}
        merged = {**self.settings, **extra, **self.grid}
        merged.update({k: v for k, v in extra.items() if k in self.grid})
        return {k: v for k, v in merged.items() if v is not None}


# ---------------------------------------------------------------- loading and validation

def study_files(folder: Path = STUDY_DIR) -> list[Path]:
    return sorted(Path(folder).glob("*.yaml"))


def study_names(folder: Path = STUDY_DIR) -> list[str]:
    return [p.stem for p in study_files(folder)]


def _scalar_map(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StudyError(f"{where} must be a mapping of key: value, got {type(value).__name__}")
    for k, v in value.items():
        if isinstance(v, (Mapping, list)):
            raise StudyError(f"{where}.{k} must be one value or a comma list in a string (e.g. \"1e-4,3e-4\"), got {v!r}")
    return {str(k): v for k, v in value.items()}


def parse_study(data: Any, file: str, known_claims: Iterable[str] | None = None) -> Study:
    """A validated study; StudyError naming the file, the key and the fix otherwise."""
    if not isinstance(data, Mapping):
        raise StudyError(f"study {file}: not a mapping of keys")
    unknown = sorted(set(map(str, data)) - STUDY_KEYS)
    if unknown:
        raise StudyError(f"study {file}: unknown key(s) {', '.join(unknown)}; a study has {', '.join(sorted(STUDY_KEYS))}")
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise StudyError(f"study {file}: missing {', '.join(missing)}; see conf/study/README.md")
    if data["name"] != Path(file).stem:
        raise StudyError(f"study {file}: name {data['name']!r} differs from the file name {Path(file).stem!r}; make them equal")
    claims = data["claims"]
    if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
        raise StudyError(f"study {file}: claims must be a list of claim ids")
    if known_claims is not None:
        unknown_claims = sorted(set(claims) - set(known_claims))
        if unknown_claims:
            raise StudyError(f"study {file}: claim(s) {', '.join(unknown_claims)} not found in the claims folder; "
                             f"add conf/claims/<id>.yaml or fix the id")
    arms = data["arms"]
    parsed_arms = _parse_arms(arms, file, "arms")
    variants = data.get("variants") or {}
    if not isinstance(variants, Mapping):
        raise StudyError(f"study {file}: variants must map a variant name to its settings")
    settings, variant_arms = {}, {}
    for k, v in variants.items():
        v = dict(v) if isinstance(v, Mapping) else v
        if isinstance(v, dict) and "arms" in v:
            variant_arms[str(k)] = _parse_arms(v.pop("arms"), file, f"variants.{k}.arms")
        settings[str(k)] = _scalar_map(v, f"variants.{k}")
    try:
        decide = decide_phases.settings(data.get("decide"), file)
    except decide_phases.DecideError as e:
        raise StudyError(str(e)) from None
    return Study(name=str(data["name"]), title=str(data["title"]), source=str(data["source"]), claims=list(claims),
                 settings=_scalar_map(data.get("settings"), "settings"), grid=_scalar_map(data.get("grid"), "grid"),
                 arms=parsed_arms, variants=settings, variant_arms=variant_arms,
                 about=str(data.get("about") or "").strip(), file=str(file), decide=decide)


def _parse_arms(arms: Any, file: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(arms, list) or not arms:
        raise StudyError(f"study {file}: {where} must be a non-empty list of mappings")
    parsed = [_scalar_map(a, f"{where}[{i}]") for i, a in enumerate(arms)]
    for i, arm in enumerate(parsed):
        if "method" not in arm:
            raise StudyError(f"study {file}: {where}[{i}] names no method; add method: NAME")
    return parsed


def load_study(name: str, folder: Path = STUDY_DIR, claims_dir: Path | None = None) -> Study:
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        names = study_names(folder)
        raise StudyError(f"unknown study {name!r}; available: {', '.join(names) or '(none)'} "
                         f"(add {name}.yaml under {folder}, or see peftbench reproduce --list)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"study {path}: not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from None
    return parse_study(data, str(path), known_claim_ids(claims_dir))


def known_claim_ids(claims_dir: Path | None = None) -> set[str]:
    return set(_claim_ids(claims_dir))


@lru_cache(maxsize=4)
def _claim_ids(claims_dir: Path | None) -> frozenset[str]:
    """The ids of the claims in conf/claims (or `claims_dir`): each file holds a claim or a list
    of them. Read once per process, with the C YAML parser: --list checks every study."""
    folder = Path(claims_dir or CONF / "claims")
    ids = set()
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        data = _parsed_yaml(path)
        ids |= {str(c.get("id")) for c in (data if isinstance(data, list) else [data]) if isinstance(c, dict)}
    return frozenset(ids)


# ---------------------------------------------------------------- jobs

def study_jobs(study: Study, overrides: Sequence[str] = (), variant: str | None = None) -> list[list[str]]:
    """The jobs the sweep launches (before merging jobs that compose to one run id), exactly as
    the sweeper expands them."""
    from experiments.sweep import expand_jobs

    return expand_jobs(study.params(variant), study.arms_for(variant), list(overrides))


def preset_text(study: Study, variant: str | None = None) -> str:
    """The study as a sweep preset (conf/sweep/*.yaml form) that `peftbench run -m` composes."""
    body = {"hydra": {"sweeper": {"params": {k: str(v) for k, v in study.params(variant).items()},
                                  "arms": [{k: str(v) for k, v in a.items()} for a in study.arms_for(variant)]}}}
    return f"# @package _global_\n# generated from {study.file}\n" + yaml.safe_dump(body, sort_keys=False)


# ---------------------------------------------------------------- estimates

def _yaml(path: Path) -> dict[str, Any]:
    """A config file's contents; each file is parsed once per process (--list reads the same
    few files for hundreds of jobs), and callers get their own copy."""
    return copy.deepcopy(_parsed_yaml(path))


@lru_cache(maxsize=None)
def _parsed_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _resolved_precision(requested: str, device: str, model_cfg: Mapping[str, Any]) -> str:
    """What `precision` resolves to on this machine (auto: experiments.precision)."""
    return requested if requested != "auto" else _auto_precision(device, str(model_cfg.get("dtype", "fp32")))


@lru_cache(maxsize=16)
def _auto_precision(device: str, weights: str) -> str:
    from experiments.precision import resolve

    return resolve("auto", device, weights).precision


def job_settings(job: Sequence[str]) -> dict[str, Any]:
    """What a job's time depends on, from its overrides and the shipped YAML defaults (no Hydra
    composition: --list must be fast)."""
    ov = {}
    for item in job:
        k, _, v = item.partition("=")
        ov[k.lstrip("+~")] = yaml.safe_load(v) if v else v
    top = _yaml(CONF / "config.yaml")
    defaults = {k: v for d in top.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}
    model, method, task = (str(ov.get(g, defaults.get(g))) for g in ("model", "method", "task"))
    mcfg, tcfg, meth = _yaml(CONF / "model" / f"{model}.yaml"), _yaml(CONF / "task" / f"{task}.yaml"), _yaml(CONF / "method" / f"{method}.yaml")
    steps = ov.get("steps", mcfg.get("default_steps", 200))
    measure = top.get("measure") or {}
    task_cfg = dict(tcfg, data_files=dict(tcfg.get("data_files") or {}))
    for k, v in ov.items():
        if k.startswith("task.data_files."):
            task_cfg["data_files"][k.rsplit(".", 1)[-1]] = v
        elif k.startswith("task."):
            task_cfg[k[len("task."):]] = v
    n_eval = eval_examples(task_cfg)
    return {"model": model, "method": method, "task": task, "steps": int(steps),
            "batch_size": int(ov.get("batch_size", top.get("batch_size", 16))),
            "max_length": int(ov.get("max_length", top.get("max_length", 32))),
            "precision": _resolved_precision(str(ov.get("precision", top.get("precision", "auto"))),
                                             str(ov.get("device", top.get("device", "auto"))), mcfg),
            "targets": str(ov.get("method.target_modules", meth.get("target_modules", "-"))),
            "latency": bool(ov.get("measure.latency", measure.get("latency", True))),
            "metrics_before": bool(ov.get("measure.metrics_before", measure.get("metrics_before", True))),
            "serving": _serving_on(ov, measure),
            "n_eval": n_eval}


def _serving_on(ov: Mapping[str, Any], measure: Mapping[str, Any]) -> bool:
    """Whether a job measures serving costs: `measure.serving.enabled` (the shipped config makes
    it follow `measure.latency`), never without the base copy `latency_keep_base` keeps."""
    from experiments.meters.serving import DEFAULTS

    latency = bool(ov.get("measure.latency", measure.get("latency", True)))
    value = ov.get("measure.serving.enabled", (measure.get("serving") or {}).get("enabled", DEFAULTS["enabled"]))
    on = latency if value == "${measure.latency}" else bool(value)
    return on and bool(ov.get("measure.latency_keep_base", measure.get("latency_keep_base", True)))


def _measures(measure: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    """What a record's load-and-measurement time paid for; records from before the serving
    meter have no serving block."""
    return (bool(measure.get("latency", True)), bool(measure.get("metrics_before", True)),
            bool((measure.get("serving") or {}).get("enabled", False)))


def eval_examples(task: Mapping[str, Any]) -> int:
    """Examples one evaluation pass scores, validation and test together: a generated task's
    n_validation + n_test; for local files (GLUE's layout), the validation split carved from the
    train file by validation_split_percentage plus the validation file as test, each capped by
    max_eval_samples; otherwise (hub data, files absent) 2 x max_eval_samples, or 2 x 1000."""
    n = int(task.get("n_validation") or 0) + int(task.get("n_test") or 0)
    if n:
        return n
    raw = task.get("max_eval_samples")
    cap = 32 if raw == "auto" else int(raw or 0)  # auto: 32 a split without CUDA, as on this machine
    files = {k: _examples_in(str(v)) for k, v in (task.get("data_files") or {}).items() if v}
    if files.get("train") and files.get("validation"):
        parts = (files["train"] * float(task.get("validation_split_percentage") or 0) / 100, files["validation"])
        return int(sum(min(x, cap) if cap else x for x in parts))
    return 2 * (cap or 1000)


@lru_cache(maxsize=None)
def _examples_in(path: str) -> int:
    """Lines after the header of a data file (0 when it is not there); relative paths are the
    repository's, as a run from its root reads them."""
    p = Path(path) if Path(path).is_absolute() else CONF.parent / path
    try:
        with p.open("rb") as f:
            return max(sum(1 for _ in f) - 1, 0)
    except OSError:
        return 0


@dataclass
class Basis:
    """Measured costs of one reference record, per unit, for estimating other runs."""

    model: str
    method: str
    targets: str
    precision: str
    step_s_per_token: float
    eval_s_per_example: float
    other_s: float  # load + measurement, per run
    file: str
    measures: tuple[bool, ...] = (True, True, False)  # (latency, metrics_before, serving): what other_s paid for
    batch_size: int = 0  # per-token step cost grows at small batches
    reusable_s: float = 0.0  # latency, serving and merge time: paid once per cost configuration


def reference_bases(folders: Iterable[Path]) -> list[Basis]:
    """Per-unit costs of every ok record under the folders (recursively)."""
    return list(_bases(tuple(Path(f) for f in folders)))


@lru_cache(maxsize=8)
def _bases(folders: tuple[Path, ...]) -> tuple[Basis, ...]:
    out = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.json")) if Path(folder).is_dir() else []:
            try:
                r = json.loads(path.read_text())
                if r.get("status") != "ok":
                    continue
                cfg, cost, timing = r["config"], r["cost"], r["timing"]
                tokens = int(cfg["batch_size"]) * int(cfg["max_length"])
                task = cfg.get("task") or {}
                n_eval = eval_examples(task)
                evals = n_eval * (2 if (cfg.get("measure") or {}).get("metrics_before") else 1)
                mcfg = cfg.get("method") or {}
                measure = cfg.get("measure") or {}
                measures = _measures(measure)
                out.append(Basis(str(r["model"]), str(r["method"]), str(mcfg.get("target_modules", "-")), str(r["precision"]),
                                 float(cost["step_time_ms_median"]) / 1000.0 / tokens, float(timing["eval_s"]) / max(evals, 1),
                                 float(timing["total_s"]) - float(timing["train_s"]) - float(timing["eval_s"]), str(path),
                                 measures, int(cfg["batch_size"]),
                                 # what a run that copies its costs from another does not pay again
                                 0.0 if (r.get("measurement") or {}).get("costs_from") else float(timing.get("measure_s") or 0.0)))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return tuple(out)


def _peak_flops(precision: str) -> float | None:
    import os

    cache = Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench")) / PEAK_CACHE
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    dtype = "bfloat16" if precision == "bf16" else "float32"
    peaks = [float(v["peak_flops_per_s"]) for k, v in entries.items() if f"torch.{dtype}" in k and "|cpu|" in k]
    return max(peaks) if peaks else None


def _model_params(model: str) -> float | None:
    """Parameter count of a model from its YAML's arch block (GPU models have one), else None."""
    arch = _yaml(CONF / "model" / f"{model}.yaml").get("arch") or {}
    h, layers, inter, vocab = (arch.get(k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"))
    if all(isinstance(x, int) for x in (h, layers, inter, vocab)):
        return float(layers * (4 * h * h + 3 * h * inter) + vocab * h)
    return None


@dataclass
class Estimate:
    seconds: float
    basis: str
    reusable_s: float = 0.0  # of `seconds`, what a later run of the same cost configuration copies  # "measured" (reference records of this model x method) | "measured, other method" | "analytic" | "unknown"


def estimate_job(s: Mapping[str, Any], bases: Sequence[Basis]) -> Estimate:
    """Seconds for one run: measured step cost per token x tokens x steps, eval cost per example x
    examples, plus load and measurement, from the closest reference record; else an analytic FLOPs
    estimate over the measured peak in the peak cache."""
    tokens = s["batch_size"] * s["max_length"]
    same_model = [b for b in bases if b.model == s["model"] and b.precision == s["precision"]]
    other_precision = ""
    if not same_model:  # e.g. an AVX2 CPU (fp32) reading bf16 records: say so, never pass for measured here
        same_model = [b for b in bases if b.model == s["model"]]
        other_precision = f", at {'/'.join(sorted({b.precision for b in same_model}))} not {s['precision']}" if same_model else ""
    exact = [b for b in same_model if b.method == s["method"]]
    near = [b for b in exact if b.targets == s["targets"]] or exact
    if near or same_model:
        pool = near or same_model
        step = statistics.median(b.step_s_per_token for b in [b for b in pool if b.batch_size == s["batch_size"]] or pool)
        if not near:  # another method of this model: scale by training FLOPs (full FT 3x forward, adapters ~2x)
            full = s["method"] == "full_ft"
            others_full = all(b.method == "full_ft" for b in pool)
            step *= (3 / 2) if full and not others_full else (2 / 3) if others_full and not full else 1
        evals = s["n_eval"] * (2 if s["metrics_before"] else 1)
        # load + measurement from references that measured what this job measures; else all of
        # them (latency and base scores included: an upper bound for a run with them off)
        want = (s["latency"], s["metrics_before"], s["serving"])
        alike = ([b for b in pool if b.measures == want] or [b for b in pool if b.measures[2] == s["serving"]]
                 or pool)
        other = statistics.median(b.other_s for b in alike)
        measured = [b.reusable_s for b in alike if b.reusable_s > 0]
        reusable = min(other, statistics.median(measured)) if measured else 0.0
        secs = s["steps"] * tokens * step + evals * statistics.median(b.eval_s_per_example for b in pool) + other
        basis = "measured" if near else "measured, other method"
        # records without the serving meter say nothing of its time, the largest part of a run's
        # measurement on an LLM
        unmeasured = s["serving"] and not any(b.measures[2] for b in same_model)
        return Estimate(secs, basis + other_precision + (", serving costs not in it" if unmeasured else ""), reusable)
    peak, n_params = _peak_flops(s["precision"]), _model_params(s["model"])
    if peak and n_params:
        factor = 6 if s["method"] == "full_ft" else 4
        return Estimate(s["steps"] * factor * n_params * tokens / (peak * ASSUMED_MFU), "analytic")
    return Estimate(math.nan, "unknown")


def cost_configuration(job: Sequence[str]) -> tuple[str, ...]:
    """A job's overrides less its seed and lr: the runs that share one cost measurement."""
    return tuple(sorted(o for o in job if o.lstrip("+~").split("=", 1)[0] not in ("seed", "lr", "method.lr")))


def estimate_study(study: Study, overrides: Sequence[str] = (), variant: str | None = None,
                   reference: Iterable[Path] = (REFERENCE_DIR,)) -> dict[str, Any]:
    jobs = study_jobs(study, overrides, variant)
    bases = reference_bases(reference)
    per_job, seen = [], set()
    for j in jobs:
        est = estimate_job(job_settings(j), bases)
        key = cost_configuration(j)
        if key in seen:  # a later seed or lr of a configuration copies its costs (experiments/reuse.py)
            est = Estimate(est.seconds - est.reusable_s, est.basis, 0.0)
        seen.add(key)
        per_job.append(est)
    kinds = sorted({e.basis for e in per_job})
    total = sum(e.seconds for e in per_job) + SWEEP_OVERHEAD_S
    return {"runs": len(jobs), "seconds": total, "bases": kinds, "per_job": per_job}


def jobs_to_launch(jobs: Sequence[Sequence[str]], conf_root: Path, preset: str) -> list[bool] | None:
    """Per job, whether the sweep will launch it, by the sweeper's own test: the first job of
    its run id, without an ok record (or with `force`, or skip_done off). None when a job does
    not compose: the sweep itself then says why."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.sweep.arms import already_done, job_run_id, task_container

    head = [f"hydra.searchpath=[file://{conf_root.resolve()}]", f"+sweep={preset}"]
    seen: set[str] = set()
    launch = []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            for job in jobs:
                cfg = compose("config", overrides=[*head, *job], return_hydra_config=True)
                config = task_container(cfg)
                rid = job_run_id(config)
                done, _, _ = already_done(config, rid, bool(cfg.hydra.sweeper.get("skip_done", True)))
                launch.append(rid not in seen and not done)
                seen.add(rid)
    except Exception as e:  # noqa: BLE001 - an estimate is no reason to stop; the sweep names the problem
        print(f"[study] cannot tell which runs are done ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", flush=True)
        return None
    finally:
        GlobalHydra.instance().clear()
    return launch


def estimate_left(est: Mapping[str, Any], launch: Sequence[bool] | None) -> dict[str, Any]:
    """The estimate for the runs the sweep will launch (all of them when that is unknown)."""
    if launch is None:
        return {"runs_left": None, "seconds_left": est["seconds"]}
    secs = sum(e.seconds for e, go in zip(est["per_job"], launch) if go)
    return {"runs_left": sum(launch), "seconds_left": secs + SWEEP_OVERHEAD_S}


def fmt_duration(s: float) -> str:
    if math.isnan(s):
        return "unknown"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def list_studies(folder: Path = STUDY_DIR, claims_dir: Path | None = None) -> list[str]:
    lines = []
    for name in study_names(folder):
        study = load_study(name, folder, claims_dir)
        est = estimate_study(study)
        lines.append(f"{name}: {est['runs']} runs, est. {fmt_duration(est['seconds'])} CPU time on this machine "
                     f"({'; '.join(est['bases'])} step costs); claims: {', '.join(study.claims)}")
        for v in study.variants:
            vest = estimate_study(study, variant=v)
            lines.append(f"  --variant {v}: {vest['runs']} runs, est. {fmt_duration(vest['seconds'])} ({'; '.join(vest['bases'])})")
    lines.append("Estimates: 'measured' = step time per token, eval time per example and load+measurement time of "
                 "records under results/reference/ for the same model x method (x targets where there is one), x this "
                 "study's steps, batch, length and eval examples; 'measured, other method' = another method's record of "
                 "the same model scaled by training FLOPs (full FT 3 forward passes, adapters 2); 'analytic' = FLOPs "
                 f"(6 or 4 x parameters x tokens per step) over the measured peak in the peak cache at {ASSUMED_MFU:.0%} MFU; "
                 "', serving costs not in it' = runs that measure serving costs (measure.serving) where no record of "
                 "the model did; "
                 f"plus {SWEEP_OVERHEAD_S:.0f} s per sweep. One job at a time with all cores.")
    return lines


# ---------------------------------------------------------------- reproduce

def write_preset(study: Study, root: Path, variant: str | None) -> tuple[Path, str]:
    """The generated preset in its own config folder (passed as a Hydra searchpath)."""
    name = f"study_{study.name}" + (f"_{variant}" if variant else "")
    path = root / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preset_text(study, variant))
    return root, name


def manifest_files(sweep_dir: Path) -> list[Path]:
    """The result files of the runs of this sweep (from its manifest), those that exist."""
    from experiments import record

    m = json.loads((sweep_dir / ".sweep.json").read_text())
    paths = [record.result_path(e["results_dir"], e["run_id"]) for e in m["runs"] if e.get("run_id") and e.get("results_dir")]
    return [p for p in paths if p.exists()]


def keep_records(files: Sequence[Path], dest: Path) -> list[Path]:
    """Copy a study's records into `dest` (each written atomically); records of runs no longer
    in the study are removed, so the folder holds exactly this sweep's runs."""
    from experiments import record

    dest.mkdir(parents=True, exist_ok=True)
    kept = []
    for f in files:
        target = dest / Path(f).name
        record.write_atomic(target, json.loads(Path(f).read_text()))
        kept.append(target)
    for stale in set(dest.glob("*.json")) - set(kept):
        stale.unlink()
    return kept


def write_study_note(dest: Path, study: Study, variant: str | None, overrides: Sequence[str], est: Mapping[str, Any],
                     sweep_s: float, n_records: int) -> None:
    """`dest/study.yaml`: per invocation, the command, the estimates printed before its sweep
    started (all runs; the runs it was left to launch) and how long that sweep took (the records'
    own start and finish times say how long each run took). Earlier invocations stay."""
    path = dest / "study.yaml"
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        old = {}
    runs = [i for i in old.get("invocations") or [] if isinstance(i, dict)]
    runs.append({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "overrides": list(overrides),
                 "estimate_s": round(float(est["seconds"]), 1), "estimate_bases": list(est["bases"]),
                 "runs_left": est.get("runs_left"), "estimate_left_s": round(float(est.get("seconds_left", est["seconds"])), 1),
                 "sweep_s": round(sweep_s, 1), "records_after": n_records})
    note = {"study": study.name, "variant": variant, "records": n_records, "invocations": runs}
    tmp = dest / ".study.yaml.tmp"
    tmp.write_text(yaml.safe_dump(note, sort_keys=False))
    tmp.replace(path)


def verdict_lines(results: Sequence[Any]) -> list[str]:
    """Each claim's verdict with its reason and, per condition, each configuration's estimate,
    CI, corrected p, minimum detectable effect and seeds."""
    from analysis.claims import claim_reason, condition_line, evidence_line

    lines = []
    for r in results:
        lines.append(f"{r.id}: {r.verdict.upper()}  ({r.source})")
        lines.append(f"  why: {claim_reason(r)}")
        if r.disagreement():
            lines.append(f"  {r.disagreement()}")
        for c in r.conditions:
            lines.append(f"  {condition_line(c).replace('**', '')}")
            lines += [f"    {evidence_line(e).replace('**', '')}" for e in c.evidence]
    return lines


def reproduce(name: str, overrides: Sequence[str], *, variant: str | None = None, folder: Path = STUDY_DIR,
              claims_dir: Path | None = None, out: Path | None = None, keep: Path | None = None) -> int:
    """Run the study's sweep, report on exactly its runs, print each verdict. `keep`: also copy
    the runs' records there and write the report to `keep/report` (how results/reference/studies/
    is made)."""
    from analysis import claims as claims_mod
    from analysis.report import build
    from experiments import cli

    study = load_study(name, folder, claims_dir)
    if variant and variant not in study.variants:
        raise StudyError(f"study {name} has no variant {variant!r}; available: {', '.join(study.variants) or '(none)'}")
    results_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("results_dir=")), "results")
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    tag = name + (f"_{variant}" if variant else "")
    work = Path(results_dir) / ".studies" / tag
    conf_root, preset = write_preset(study, work / "conf", variant)
    sweep_dir = work / stamp
    est = estimate_study(study, overrides, variant)
    est.update(estimate_left(est, jobs_to_launch(study_jobs(study, overrides, variant), conf_root, preset)))
    left = ("if none is done yet" if est["runs_left"] is None else
            f"for all; {est['runs_left']} to run, est. {fmt_duration(est['seconds_left'])}")
    print(f"[study] {name}{f' ({variant})' if variant else ''}: {study.title} ({study.source}); {est['runs']} jobs, "
          f"est. {fmt_duration(est['seconds'])} {left}", flush=True)
    started = time.time()
    rc = cli.run(["-m", f"hydra.searchpath=[file://{conf_root.resolve()}]", f"+sweep={preset}",
                  f"hydra.sweep.dir={sweep_dir}", *overrides])
    if rc != 0:
        return rc
    if not (sweep_dir / ".sweep.json").exists():
        print("[study] nothing ran (hydra.sweeper.dry_run=true): no report", flush=True)
        return 0
    files = manifest_files(sweep_dir)
    if study.decide is not None:
        files, rc = run_decide_phases(study, variant, overrides, work, stamp, sweep_dir, keep)
        if rc != 0:
            return rc
    if keep is not None:
        files = keep_records(files, keep)
        write_study_note(keep, study, variant, overrides, est, time.time() - started, len(files))
    out = out or (keep / "report" if keep is not None else Path("report") / "studies" / tag)
    made = build([str(f) for f in files], out, Path(claims_dir or claims_mod.CLAIMS_DIR), claim_ids=study.claims)
    print(f"[study] sweep took {time.time() - started:.0f} s; report of its {len(files)} result files -> {out / 'index.html'}")
    for line in verdict_lines(made["claims"]):
        print(line)
    return 0


def _phase(study: Study, work: Path, name: str, arms: list[dict[str, str]], overrides: Sequence[str]) -> tuple[int, Path]:
    """One more sweep of the study: `arms` alone (each a whole job's overrides), as a preset of its own."""
    from experiments import cli

    root = work / "conf"
    path = root / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# @package _global_\n# {study.file}: {name}\n" + yaml.safe_dump(
        {"hydra": {"sweeper": {"params": {}, "arms": arms}}}, sort_keys=False))
    sweep_dir = work / name
    hydra_only = [o for o in overrides if _key_of(o).lstrip("+").startswith("hydra")]
    rc = cli.run(["-m", f"hydra.searchpath=[file://{root.resolve()}]", f"+sweep={name}", f"hydra.sweep.dir={sweep_dir}", *hydra_only])
    return rc, sweep_dir


def _key_of(item: str) -> str:
    return item.split("=", 1)[0]


def _entries_and_records(sweep_dirs: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    from experiments import record

    entries, records = [], {}
    for d in sweep_dirs:
        m = json.loads((d / ".sweep.json").read_text())
        for e in m["runs"]:
            path = record.result_path(e["results_dir"], e["run_id"]) if e.get("run_id") and e.get("results_dir") else None
            if path is not None and path.exists():
                entries.append(e)
                records[e["run_id"]] = json.loads(path.read_text())
    return entries, records


def run_decide_phases(study: Study, variant: str | None, overrides: Sequence[str], work: Path, stamp: str,
                      first: Path, keep: Path | None) -> tuple[list[Path], int]:
    """After the grid: extend the lr grid of any line picked on its edge, write the analysis plan,
    then run N seeds at each line's pick (experiments/decide.py). The result files of every phase."""
    n_seeds, rounds = study.decide  # type: ignore[misc]
    dirs = [first]
    for r in range(rounds):
        lines = decide_phases.lines_of(*_entries_and_records(dirs))
        arms = decide_phases.extension_arms(lines)
        if not arms:
            break
        print(f"[study] {len(arms)} line(s) picked on the edge of their lr grid: extending (round {r + 1} of {rounds})", flush=True)
        rc, d = _phase(study, work, f"{stamp}_extend{r + 1}", arms, overrides)
        if rc != 0:
            return [], rc
        dirs.append(d)
    lines = decide_phases.lines_of(*_entries_and_records(dirs))
    content = decide_phases.plan(study.file, study.claims, lines, n_seeds, rounds)
    for dest in [work / f"{stamp}_{decide_phases.PLAN_FILE}"] + ([keep / decide_phases.PLAN_FILE] if keep is not None else []):
        decide_phases.write_plan(dest, content)
    edges = sum(p["on_edge"] for p in content["picks"])
    print(f"[study] analysis plan written before the seeds phase ({work / f'{stamp}_{decide_phases.PLAN_FILE}'}): "
          f"{len(content['picks'])} line(s), {edges} still on a grid edge; {n_seeds} seeds at each pick", flush=True)
    arms = decide_phases.seed_arms(lines, n_seeds)
    if arms:
        rc, d = _phase(study, work, f"{stamp}_seeds", arms, overrides)
        if rc != 0:
            return [], rc
        dirs.append(d)
    files = sorted({p for d in dirs for p in manifest_files(d)})
    return files, 0


# ---------------------------------------------------------------- command line

USAGE = """usage: peftbench reproduce NAME [--variant V] [--out DIR] [--keep DIR] [--studies DIR] [--claims DIR] [OVERRIDES...]
       peftbench reproduce --list [--studies DIR]"""


def _option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    if flag in argv:
        i = argv.index(flag)
        if i + 1 >= len(argv):
            raise StudyError(f"{flag} needs a value")
        return argv[i + 1], argv[:i] + argv[i + 2:]
    return None, argv


def main(argv: list[str]) -> int:
    try:
        studies, argv = _option(list(argv), "--studies")
        claims, argv = _option(argv, "--claims")
        variant, argv = _option(argv, "--variant")
        out, argv = _option(argv, "--out")
        keep, argv = _option(argv, "--keep")
        folder = Path(studies) if studies else STUDY_DIR
        claims_dir = Path(claims) if claims else None
        if "--list" in argv:
            print("\n".join(list_studies(folder, claims_dir)))
            return 0
        names = [a for a in argv if "=" not in a and not a.startswith("-")]
        if len(names) != 1:
            print(USAGE, file=sys.stderr)
            return 2
        overrides = [a for a in argv if a != names[0]]
        return reproduce(names[0], overrides, variant=variant, folder=folder, claims_dir=claims_dir,
                         out=Path(out) if out else None, keep=Path(keep) if keep else None)
    except StudyError as e:
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2
