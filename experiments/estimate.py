"""How long a study takes on this machine, before it runs: `peftbench reproduce --list` and the
estimate printed before a study's sweep. Step costs come from the reference records of the same
model and method where there are some, else from FLOPs over the measured peak."""
from __future__ import annotations

import copy
import json
import math
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from peftbench.experiments.cores import usable_cores
from peftbench.experiments.machine import known_auto
from peftbench.experiments.paths import CONF, REFERENCE as REFERENCE_DIR
from peftbench.methods.roles import FULL_REFERENCE
from peftbench.experiments.study import STUDY_DIR, parsed_yaml, Study, load_study, study_jobs, study_names

PEAK_CACHE = "peak_flops.json"
# Where no record measured a step, the analytic estimate divides FLOPs by the measured peak at
# this fraction of it: the MFU the reference records reach on this CPU is 0.5-0.6.
ASSUMED_MFU = 0.5
# meters.serving.DEFAULTS["enabled"], where a config leaves it out (that module loads torch, which
# --list must not wait for; tests/test_serving.py checks the two agree)
SERVING_ENABLED_DEFAULT = False
# Outside the runs, per sweep: process start, imports, Hydra composing every job (README, "Launchers").
SWEEP_OVERHEAD_S = 7.0

def _yaml(path: Path) -> dict[str, Any]:
    """A config file's contents; each file is parsed once per process (--list reads the same
    few files for hundreds of jobs), and callers get their own copy."""
    return copy.deepcopy(parsed_yaml(path))


def _resolved_precision(requested: str, device: str, model_cfg: Mapping[str, Any]) -> str:
    """What `precision` resolves to on this machine (auto: experiments.precision)."""
    return requested if requested != "auto" else _auto_precision(device, str(model_cfg.get("dtype", "fp32")))


@lru_cache(maxsize=16)
def _auto_precision(device: str, weights: str) -> str:
    """Without importing torch where the machine's answer is known (experiments.machine)."""
    known = known_auto(device, weights, usable_cores())
    if known is not None:
        return known
    from peftbench.experiments.precision import resolve

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
    measure = dict(top.get("measure") or {})
    preset = str(ov.get("measure", defaults.get("measure", "full")))  # measure=quick: a preset's blocks over the top config's
    measure.update((_yaml(CONF / "measure" / f"{preset}.yaml").get("measure") or {}))
    task_cfg = dict(tcfg, data_files=dict(tcfg.get("data_files") or {}))
    for k, v in ov.items():
        if k.startswith("task.data_files."):
            task_cfg["data_files"][k.rsplit(".", 1)[-1]] = v
        elif k.startswith("task."):
            task_cfg[k[len("task."):]] = v
    n_eval = eval_examples(task_cfg)
    objective = str(ov.get("objective", defaults.get("objective", "sft")))
    ocfg = _yaml(CONF / "objective" / f"{objective}.yaml")
    batch = int(ov.get("batch_size", top.get("batch_size", 16)))
    return {"model": model, "method": method, "task": task, "steps": int(steps), "objective": objective,
            # a GRPO step's cost follows the completion tokens it samples (experiments/grpo.py)
            "completion_tokens": batch * int(ov.get("objective.num_generations", ocfg.get("num_generations", 0)) or 0)
                                 * int(ov.get("objective.max_completion_length", ocfg.get("max_completion_length", 0)) or 0),
            # the reference trains every weight: its step costs 3 forward passes, an adapter's 2
            "trains_all": (meth.get("report") or {}).get("role") == FULL_REFERENCE,
            "batch_size": batch,
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
    latency = bool(ov.get("measure.latency", measure.get("latency", True)))
    value = ov.get("measure.serving.enabled", (measure.get("serving") or {}).get("enabled", SERVING_ENABLED_DEFAULT))
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
    trains_all: bool = False  # the method's role is the full reference (every weight trains)
    objective: str = "sft"  # grpo: step_s_per_token is per completion token sampled


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
                objective = str((cfg.get("objective") or {}).get("name", "sft"))
                tokens = (int(cfg["batch_size"]) * int(cfg["max_length"]) if objective == "sft" else
                          int(cfg["batch_size"]) * int(cfg["objective"]["num_generations"]) * int(cfg["objective"]["max_completion_length"]))
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
                                 0.0 if (r.get("measurement") or {}).get("costs_from") else float(timing.get("measure_s") or 0.0),
                                 (mcfg.get("report") or {}).get("role") == FULL_REFERENCE, objective))
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
    objective = s.get("objective", "sft")
    tokens = s["completion_tokens"] if objective != "sft" else s["batch_size"] * s["max_length"]
    bases = [b for b in bases if b.objective == objective]  # a GRPO step is timed by GRPO runs only
    if not bases and objective != "sft":
        return Estimate(math.nan, f"unknown: no {objective} run among the reference records to time one by")
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
            full = s["trains_all"]
            others_full = all(b.trains_all for b in pool)
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
    if objective != "sft":  # no FLOP model covers sampling: no analytic estimate
        return Estimate(math.nan, f"unknown: no {objective} run of model {s['model']} among the reference records")
    peak, n_params = _peak_flops(s["precision"]), _model_params(s["model"])
    if peak and n_params:
        factor = 6 if s["trains_all"] else 4
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
    longer = []
    if study.convergence is not None:  # each line's pick again at its seeds, factor x the steps
        longer = convergence_jobs(jobs, study.convergence.steps_factor)
        per_job += [estimate_job(job_settings(j), bases) for j in longer]
    kinds = sorted({e.basis for e in per_job})
    total = sum(e.seconds for e in per_job) + SWEEP_OVERHEAD_S
    return {"runs": len(jobs), "check_runs": len(longer), "seconds": total, "bases": kinds, "per_job": per_job}


def runs_text(est: Mapping[str, Any], noun: str = "runs") -> str:
    """'18 runs' or '18 runs + 6 for the convergence check'."""
    extra = est.get("check_runs") or 0
    return f"{est['runs']} {noun}" + (f" + {extra} for the convergence check" if extra else "")


def convergence_jobs(jobs: Sequence[Sequence[str]], factor: int) -> list[list[str]]:
    """The convergence check's jobs, before the picks are known: per line (a job less its lr and
    seed) one job a seed, at `factor` times the line's steps (an lr costs what any other does)."""
    out, seen = [], set()
    for job in jobs:
        key = (cost_configuration(job), next((o for o in job if o.lstrip("+~").startswith("seed=")), ""))
        if key in seen:
            continue
        seen.add(key)
        steps = job_settings(job)["steps"]
        out.append([o for o in job if not o.lstrip("+~").startswith("steps=")] + [f"steps={factor * steps}"])
    return out


def searchpath(roots: Path | Sequence[Path]) -> str:
    """The Hydra override that adds config folders (the study's generated preset, the user's own)."""
    roots = [roots] if isinstance(roots, Path) else list(roots)
    return "hydra.searchpath=[" + ",".join(f"file://{Path(r).resolve()}" for r in roots) + "]"


def jobs_to_launch(jobs: Sequence[Sequence[str]], conf_root: Path | Sequence[Path], preset: str) -> list[bool] | None:
    """Per job, whether the sweep will launch it, by the sweeper's own test: the first job of
    its run id, without an ok record (or with `force`, or skip_done off). None when a job does
    not compose: the sweep itself then says why."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from peftbench.experiments.sweep.arms import already_done, job_run_id, task_container

    head = [searchpath(conf_root), f"+sweep={preset}"]
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
    """The estimate for the runs the sweep will launch (all of them when that is unknown). Jobs
    past `launch` belong to a later phase whose runs depend on the grid's picks (the convergence
    check): counted as left."""
    if launch is None:
        return {"runs_left": None, "seconds_left": est["seconds"]}
    go = list(launch) + [True] * (len(est["per_job"]) - len(launch))
    secs = sum(e.seconds for e, g in zip(est["per_job"], go) if g)
    return {"runs_left": sum(go), "seconds_left": secs + SWEEP_OVERHEAD_S}


def fmt_duration(s: float) -> str:
    if math.isnan(s):
        return "unknown"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def list_studies(folder: Path = STUDY_DIR, claims_dir: Path | None = None) -> list[str]:
    lines = []
    for name in study_names(folder):
        study = load_study(name, folder, claims_dir)
        est = estimate_study(study)
        lines.append(f"{name}: {runs_text(est)}, est. {fmt_duration(est['seconds'])} CPU time on this machine "
                     f"({'; '.join(est['bases'])} step costs); claims: {', '.join(study.claims)}")
        for v in study.variants:
            vest = estimate_study(study, variant=v)
            lines.append(f"  --variant {v}: {runs_text(vest)}, est. {fmt_duration(vest['seconds'])} ({'; '.join(vest['bases'])})")
    lines.append("Estimates: 'measured' = step time per token, eval time per example and load+measurement time of "
                 "records under results/reference/ for the same model x method (x targets where there is one), x this "
                 "study's steps, batch, length and eval examples; 'measured, other method' = another method's record of "
                 "the same model scaled by training FLOPs (full FT 3 forward passes, adapters 2); 'analytic' = FLOPs "
                 f"(6 or 4 x parameters x tokens per step) over the measured peak in the peak cache at {ASSUMED_MFU:.0%} MFU; "
                 "', serving costs not in it' = runs that measure serving costs (measure.serving) where no record of "
                 "the model did; "
                 f"plus {SWEEP_OVERHEAD_S:.0f} s per sweep. One job at a time with all cores.")
    return lines
