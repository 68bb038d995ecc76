"""objective=grpo: GRPO with verifiable rewards through trl, recorded like every other run."""
from __future__ import annotations

import math

import pytest

from tests.conftest import compose

TINY_RL = ["model=tiny-llama", "task=procedural", "objective=grpo", "steps=3", "batch_size=2", "task.n_train=32",
           "task.n_validation=8", "task.n_test=8", "measure.latency=false", "measure.serving.enabled=false",
           "progress=false", "precision=fp32"]


def test_supervised_ids_stay_and_grpo_is_its_own_setting():
    from peftbench.experiments import record

    sft = compose(["method=lora"])
    assert sft["objective"] == {"name": "sft"}
    without = {k: v for k, v in sft.items() if k != "objective"}  # a config from before objectives
    assert record.run_id(sft) == record.run_id(without)
    rl = compose(["method=lora", "objective=grpo"])
    assert record.run_id(rl) != record.run_id(sft) and record.semantic_config(rl)["objective"]["name"] == "grpo"


def test_the_reward_is_the_tasks_own_score_of_the_completion():
    from types import SimpleNamespace

    from peftbench.experiments.data.generation import Example, GenerationTask
    from peftbench.experiments.grpo import reward_function

    task = GenerationTask.__new__(GenerationTask)
    task.raw = SimpleNamespace(name="procedural", metrics=["exact_match"])
    task.scorer, task.stop, task.outcome_metric = "procedural", ["\n"], "exact_match"
    task.examples = {"train": [Example("Q", " Friday", "Friday")]}
    eos = 2  # trl decodes without special tokens: whether a completion ended is in its ids
    reward = reward_function(task, 0.25, eos)
    texts = [" Friday", " Friday\nmore", " Monday", " Monday"]
    ids = [[5, 6, eos], [5, 6, 7, 8], [9, eos], [9, 9, 9]]
    got = reward(["Q"] * 4, texts, ["Friday"] * 4, completion_ids=ids)
    assert got == [1.25, 1.0, 0.25, 0.0]  # correct and ended, correct then cut at the stop, wrong but ended, wrong
    assert reward(["Q"], [" Friday"], ["Friday"]) == [1.0]  # no ids given: no format reward


@pytest.mark.slow
@pytest.mark.parametrize("method,reference", [("lora", "disabled adapters"), ("full_ft", "frozen copy"), ("pissa", "frozen copy"),
                                              ("vera", "disabled adapters")])  # vera: rl_peft's fourth family, on all linear layers
def test_a_grpo_run_records_rewards_kl_and_generation_time(run_small, method, reference):
    rec = run_small(*TINY_RL, f"method={method}", *(["method.target_modules=all_linear"] if method == "vera" else []), fast=False)
    assert rec["status"] == "ok", rec.get("error")
    o = rec["objective"]
    for key in ("reward_mean", "reward_std", "groups_without_signal_frac", "kl_to_reference", "completion_tokens_mean", "generation_s"):
        assert len(o[key]) == 3, key
    assert len(rec["loss_curve"]) == 3 and o["num_generations"] == 8 and o["prompts_per_step"] == 2
    assert all(0 <= r <= 1 for r in o["reward_mean"]) and o["generation_s_total"] > 0
    # the reference is the model before training: LoRA's disabled adapters; a frozen copy for full
    # fine-tuning and for PiSSA, whose initialisation rewrote the base weights (disabling its
    # adapters would leave the residual)
    assert o["reference"] == reference
    assert rec["cost"]["mfu_frac"] is None and "no FLOP model" in rec["measurement"]["mfu_unknown_reason"]
    assert rec["cost"]["train_tokens_per_s_median"] > 0 and rec["config"]["objective"]["name"] == "grpo"
    assert rec["metrics"]["test"]["n"] == 8 and rec["forgetting"] is not None  # evaluated and probed like a supervised run


def test_a_grpo_job_is_estimated_from_grpo_runs_only(tmp_path):
    """A GRPO step's cost follows the completion tokens it samples, not the supervised step's
    tokens: with no GRPO record to time it by the estimate says unknown (never a supervised
    run's figure), and a measure preset (measure=quick) is read as the run reads it."""
    from peftbench.experiments.estimate import estimate_job, job_settings, reference_bases

    job = ["model=smollm2-135m", "task=procedural", "method=lora", "objective=grpo", "objective.max_completion_length=8",
           "batch_size=2", "steps=20", "measure=quick"]
    s = job_settings(job)
    assert s["objective"] == "grpo" and s["completion_tokens"] == 2 * 8 * 8
    assert (s["latency"], s["serving"], s["metrics_before"]) == (False, False, False)
    est = estimate_job(s, reference_bases([tmp_path]))  # an empty reference folder
    assert math.isnan(est.seconds) and est.basis.startswith("unknown: no grpo run")
    from peftbench.experiments.paths import REFERENCE

    pilot = REFERENCE / "studies" / "rl_peft_pilot"
    if pilot.is_dir():  # the committed pilot times GRPO steps: a measured estimate, near the pilot's own time
        est = estimate_job(s, reference_bases([pilot]))
        assert est.basis.startswith("measured") and 60 < est.seconds < 600
