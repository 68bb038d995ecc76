"""`peftbench compare` on identical and perturbed records, and the cost-penalised score column
(no torch: fabricated records)."""
from __future__ import annotations

import copy
import math

import pytest
import yaml

from peftbench.analysis import compare as cmp
from peftbench.analysis.cost_score import CONFIG, add_cost_score, cost_score, load_params
from peftbench.analysis.load import load_results
from fixtures_analysis.analysis_records import record, write_all


def refs(accs=(0.80, 0.81, 0.79)) -> list[dict]:
    return [record("lora", seed=s, acc=a) for s, a in enumerate(accs)]


def frames(tmp_path, mine, ref):
    return (load_results([write_all(tmp_path / "mine", mine, broken=False)]).ok,
            load_results([write_all(tmp_path / "ref", ref, broken=False)]).ok)


def test_identical_records_are_bit_identical(tmp_path):
    [c] = cmp.compare(*frames(tmp_path, refs(), refs()))
    assert c.verdict == cmp.BIT_IDENTICAL and "same CPU model, CPU kernels and torch build" in c.detail


def test_perturbed_records_within_ci_or_not_reproduced(tmp_path):
    near = copy.deepcopy(refs())
    for r in near:
        r["metrics"]["test"]["accuracy"] += 0.004  # inside the reference seeds' CI (±0.025)
        r["provenance"]["cpu_model"] = r["provenance"]["device_name"] = "Intel Xeon"
    [c] = cmp.compare(*frames(tmp_path / "a", near, refs()))
    assert c.verdict == cmp.WITHIN_CI and "different machine Intel Xeon here, AMD EPYC in reference" in c.detail
    far = copy.deepcopy(near)
    for r in far:
        r["metrics"]["test"]["accuracy"] -= 0.10
    [c] = cmp.compare(*frames(tmp_path / "b", far, refs()))
    assert c.verdict == cmp.NOT_REPRODUCED
    # one reference seed: no CI, so a differing number cannot be judged
    [c] = cmp.compare(*frames(tmp_path / "c", near[:1], refs()[:1]))
    assert c.verdict == cmp.CANNOT_TELL
    other = [record("dora", seed=0)]
    assert cmp.compare(*frames(tmp_path / "d", other, refs()))[0].verdict == cmp.NO_REFERENCE


def test_one_cpu_model_name_with_other_kernels_is_another_machine(tmp_path):
    """Two AMD EPYC machines, one AVX2-only and one with AVX-512: the same model name, other
    kernels, so bit-identical numbers are not expected and the line says why."""
    mine, ref = copy.deepcopy(refs()), copy.deepcopy(refs())
    for r in mine:
        r["provenance"]["cpu_kernel_isa"] = "AVX2"
        r["metrics"]["test"]["accuracy"] += 0.004
    for r in ref:
        r["provenance"]["cpu_kernel_isa"] = "AVX512"
    [c] = cmp.compare(*frames(tmp_path, mine, ref))
    assert c.verdict == cmp.WITHIN_CI and "different machine AMD EPYC (AVX2) here, AMD EPYC (AVX512) in reference" in c.detail
    assert "bit-identical was expected" not in c.detail
    # on a GPU the host's CPU kernels set no number: the same GPU and torch is the same machine
    mine, ref = copy.deepcopy(refs()), copy.deepcopy(refs())
    for side, isa in ((mine, "AVX2"), (ref, "AVX512")):
        for r in side:
            r["provenance"].update(device="cuda:0", gpu="NVIDIA H100", cpu_kernel_isa=isa)
    [c] = cmp.compare(*frames(tmp_path / "gpu", mine, ref))
    assert c.verdict == cmp.BIT_IDENTICAL and "same CPU model, CPU kernels and torch build" in c.detail


def test_measurement_switches_do_not_split_a_configuration(tmp_path):
    """A run with latency or the forgetting probe switched differently trained the same numbers
    as the reference run, so it is compared with it; a trained key that differs is another
    configuration."""
    measured = copy.deepcopy(refs())
    for r in measured:
        r["config"].setdefault("measure", {})["latency"] = not r["config"].get("measure", {}).get("latency", False)
        r["config"].setdefault("forgetting", {})["enabled"] = True
    [c] = cmp.compare(*frames(tmp_path / "a", measured, refs()))
    assert c.verdict == cmp.BIT_IDENTICAL
    trained = copy.deepcopy(refs())
    for r in trained:
        r["config"]["batch_size"] = 7
    [c] = cmp.compare(*frames(tmp_path / "b", trained, refs()))
    assert c.verdict == cmp.NO_REFERENCE


def test_compare_cli_exit_codes(tmp_path, capsys):
    write_all(tmp_path / "ref", refs(), broken=False)
    write_all(tmp_path / "mine", refs(), broken=False)
    assert cmp.main([str(tmp_path / "mine"), "--reference", str(tmp_path / "ref")]) == 0
    assert "1 bit-identical" in capsys.readouterr().out
    assert cmp.main([str(tmp_path / "mine"), "--reference", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("peftbench: error: no reference 'nosuch'; available: ")


def test_cost_score_follows_the_stated_formula(tmp_path):
    params = load_params()
    assert set(params) >= {"params", "inference", "memory"}  # the YAML states every constant
    ok = load_results([write_all(tmp_path, [record("lora", acc=0.8, trainable=220_000, lat_merged=0.05)], broken=False)]).ok
    run = ok.iloc[0].to_dict()
    frac, mem = 220_000 / 22_000_000, run["cost.peak_train_mem_growth_bytes"] / run["cost.weight_bytes"]
    expected = 0.8
    for m, key in ((frac, "params"), (0.05, "inference"), (mem, "memory")):  # merged overhead: the method merges
        expected *= (1 + m / params[key]["scale"]) ** -params[key]["beta"]
    assert cost_score(run, params) == pytest.approx(expected)
    assert add_cost_score(ok)["cost_score"].iloc[0] == pytest.approx(expected)
    # a heavier method with the same accuracy scores lower; no latency measured: no score
    heavy = {**run, "params.trainable_pct": 100.0}
    assert cost_score(heavy, params) < cost_score(run, params)
    assert math.isnan(cost_score({**run, "cost.latency_overhead_merged_frac": float("nan")}, params))
    assert "PEFT-Bench" in CONFIG.read_text() and yaml.safe_load(CONFIG.read_text())["name"] == "pscp"


def test_no_reference_says_what_moved_from_the_nearest_run(tmp_path):
    mine = [record("lora", steps=100, seed=0)]
    ref = [record("lora", steps=200, seed=0), record("lora", steps=200, lr=5e-3, seed=1), record("dora", steps=100, seed=2)]
    [c] = cmp.compare(*frames(tmp_path, mine, ref))
    assert c.verdict == cmp.NO_REFERENCE
    # the nearest lora run differs in the steps alone (not in lr too), and dora is another method
    assert c.detail.endswith("nearest reference of this method differs in steps 100 here, 200 there"), c.detail


def test_a_same_machine_difference_says_whether_training_or_evaluation_moved_and_which_code_ran(tmp_path):
    evaluated = copy.deepcopy(refs())
    for r in evaluated:  # same training, one test item more, another commit
        r["metrics"]["test"]["accuracy"] += 0.0025
        r["provenance"]["git_commit"] = "feedface" * 5
    [c] = cmp.compare(*frames(tmp_path / "a", evaluated, refs()))
    assert "training identical (loss curves equal), evaluation differs" in c.detail
    assert "code differs: feedfacef" in c.detail
    trained = copy.deepcopy(evaluated)
    for r in trained:
        r["loss_curve"] = [x + 1e-3 for x in r["loss_curve"]]
    [c] = cmp.compare(*frames(tmp_path / "b", trained, refs()))
    assert "training differs (loss curves)" in c.detail
