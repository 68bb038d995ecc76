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
    decide: {seeds: 10, extend: 2}         # optional: extend edge picks, then N seeds at each pick
    convergence: {steps_factor: 2, tolerance: 0.01}  # optional: each pick again at 2x the steps
    variants:                              # other settings the same study runs on
      sst2: {task: sst2, ...}
      llm: {model: smollm2-135m, arms: [...]}  # a variant's own arms replace the study's

Here a study is read, checked and turned into a sweep preset (settings and grid as
`hydra.sweeper.params`, arms as `hydra.sweeper.arms`); experiments/estimate.py says how long it
takes, and peftbench/reproduce.py runs it through the ordinary `peftbench run -m` path (skip-done,
resume, launchers, SLURM), reports on exactly the runs of that sweep and prints each verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from peftbench.experiments.names import did_you_mean
from peftbench.experiments import decide as decide_phases
from peftbench.experiments.paths import CONF

STUDY_DIR = CONF / "study"
STUDY_KEYS = {"name", "title", "source", "about", "claims", "settings", "grid", "arms", "variants", "sizing", "decide", "convergence"}
REQUIRED = ("name", "title", "source", "claims", "arms")


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
    convergence: decide_phases.Convergence | None = None  # the budget check run at each pick: experiments/decide.py

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
        convergence = decide_phases.convergence_settings(data.get("convergence"), file)
    except decide_phases.DecideError as e:
        raise StudyError(str(e)) from None
    return Study(name=str(data["name"]), title=str(data["title"]), source=str(data["source"]), claims=list(claims),
                 settings=_scalar_map(data.get("settings"), "settings"), grid=_scalar_map(data.get("grid"), "grid"),
                 arms=parsed_arms, variants=settings, variant_arms=variant_arms,
                 about=str(data.get("about") or "").strip(), file=str(file), decide=decide,
                 convergence=convergence)


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
        raise StudyError(f"unknown study {name!r}{did_you_mean(name, names)}; available: {', '.join(names) or '(none)'} "
                         f"(add {name}.yaml under {folder}, or see peftbench reproduce --list)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"study {path}: not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from None
    return parse_study(data, str(path), known_claim_ids(claims_dir))


def known_claim_ids(claims_dir: Path | None = None) -> set[str]:
    return set(_claim_ids(claims_dir))


@lru_cache(maxsize=None)
def parsed_yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError):
        return {}


@lru_cache(maxsize=4)
def _claim_ids(claims_dir: Path | None) -> frozenset[str]:
    """The ids of the claims in conf/claims (or `claims_dir`): each file holds a claim or a list
    of them. Read once per process, with the C YAML parser: --list checks every study."""
    folder = Path(claims_dir or CONF / "claims")
    ids = set()
    for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        data = parsed_yaml(path)
        ids |= {str(c.get("id")) for c in (data if isinstance(data, list) else [data]) if isinstance(c, dict)}
    return frozenset(ids)


# ---------------------------------------------------------------- jobs

def study_jobs(study: Study, overrides: Sequence[str] = (), variant: str | None = None) -> list[list[str]]:
    """The jobs the sweep launches (before merging jobs that compose to one run id), exactly as
    the sweeper expands them."""
    from peftbench.experiments.sweep import expand_jobs

    return expand_jobs(study.params(variant), study.arms_for(variant), list(overrides))


def preset_text(study: Study, variant: str | None = None) -> str:
    """The study as a sweep preset (conf/sweep/*.yaml form) that `peftbench run -m` composes."""
    body = {"hydra": {"sweeper": {"params": {k: str(v) for k, v in study.params(variant).items()},
                                  "arms": [{k: str(v) for k, v in a.items()} for a in study.arms_for(variant)]}}}
    return f"# @package _global_\n# generated from {study.file}\n" + yaml.safe_dump(body, sort_keys=False)
