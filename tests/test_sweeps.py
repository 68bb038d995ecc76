"""Sweep presets: run counts without running, arms/filter semantics, rank-matched adapter sizes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from peftbench.experiments.sweep import expand_jobs, preset_jobs

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}


def methods_of(preset: str) -> set[str]:
    return {o.split("=", 1)[1] for job in preset_jobs(preset) for o in job if o.startswith("method=")}


def zoo_size() -> int:
    """Every method YAML that the core nine and the quantisation ladder leave out
    (conf/sweep/zoo.yaml): a new method's YAML joins the zoo with no other file touched."""
    return len({p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")} - methods_of("methods") - methods_of("quant"))


# Each preset's run count, as docs/sweeps.md states it (the zoo's follows conf/method/).
COUNTS = {"methods": 9, "demo": 9, "ranks": 42, "targets": 20, "seeds": 3, "paper": 183,
          ("ranks", "seeds"): 126, ("methods", "seeds"): 27, ("targets", "seeds"): 60, "llm": 9,
          "zoo": zoo_size(), "quant": 8}


def test_the_zoo_is_every_method_beyond_the_core_and_the_ladder():
    assert zoo_size() >= 45  # the 45 of conf/method/ today; a removed YAML shows here
    assert methods_of("zoo") == {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")} - methods_of("methods") - methods_of("quant")


@pytest.mark.parametrize("preset,n", list(COUNTS.items()), ids=lambda x: "+".join(x) if isinstance(x, tuple) else str(x))
def test_preset_run_counts(preset, n):
    assert len(preset_jobs(preset)) == n


@pytest.mark.slow
def test_paper_has_no_duplicate_runs_and_covers_the_other_presets():
    """Every configuration of paper composes to its own run id, and every run of methods, ranks
    and targets is in paper: the full grid, each configuration once (x 3 seeds)."""
    from peftbench.experiments.sweep import CONF_DIR, job_run_id, task_container
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    paper = preset_jobs("paper", ["seed=0"])
    assert len(paper) == 61 and len(preset_jobs("paper")) == 3 * 61
    ranks = {frozenset(j) for j in preset_jobs("ranks")}
    assert ranks <= {frozenset(x for x in j if x != "seed=0") for j in paper}
    other_jobs = [j for p in ("methods", "targets") for j in preset_jobs(p, ["seed=0"])]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        def rid(job):
            return job_run_id(task_container(compose("config", overrides=list(job), return_hydra_config=True)))
        paper_ids = [rid(j) for j in paper]
        others = {rid(j) for j in other_jobs}
    assert len(set(paper_ids)) == 61
    assert others <= set(paper_ids)


def test_arms_are_a_union_crossed_with_params_and_filtered_by_the_command_line():
    arms = [{"method": "lora,dora", "method.r": "2,4"}, {"method": "houlsby", "method.bottleneck_size": "1,3"}]
    jobs = expand_jobs({"seed": "0,1"}, arms, [])
    assert len(jobs) == (4 + 2) * 2
    assert ["method=houlsby", "method.bottleneck_size=3", "seed=1"] in jobs
    only_lora = expand_jobs({"seed": "0,1"}, arms, ["method=lora", "seed=5"])
    assert {frozenset(j) for j in only_lora} == {frozenset({"method=lora", "method.r=2", "seed=5"}),
                                                 frozenset({"method=lora", "method.r=4", "seed=5"})}


def test_ranks_bottleneck_sizes_match_lora_parameter_counts_on_minilm():
    """ranks.yaml pairs each rank with the largest bottleneck whose parameter count does not
    exceed LoRA's (minilm: hidden 384, 6 layers; LoRA on query+value)."""
    h, layers = 384, 6
    arms = yaml.safe_load((ROOT / "conf/sweep/ranks.yaml").read_text())["hydra"]["sweeper"]["arms"]
    ranks = [int(x) for x in str(arms[0]["method.r"]).split(",")]
    for arm, sites in ((arms[1], 2 * layers), (arms[2], layers)):
        sizes = [int(x) for x in str(arm["method.bottleneck_size"]).split(",")]
        for r, m in zip(ranks, sizes, strict=True):
            lora = layers * 2 * r * (h + h)
            adapter = lambda m: sites * (2 * h * m + m + h)  # noqa: E731
            assert adapter(m) <= lora < adapter(m + 1), (arm["method"], r, m)


@pytest.mark.slow
def test_dry_run_prints_the_jobs_and_runs_nothing(tmp_path, forked_cli):
    out = forked_cli.run(["run", "-m", "+sweep=[methods,seeds]", "hydra.sweeper.dry_run=true", f"results_dir={tmp_path}"],
                         env=ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[sweep] 27 runs, 0 already done, 27 to launch" in out.stdout
    assert out.stdout.count("\nrun   ") == 27
    assert not list(tmp_path.glob("*.json"))
