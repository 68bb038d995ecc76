"""What a run costs: precision per machine, a peak that cannot be wrong, costs measured once,
contention flagged, presets. None of these depends on bf16 being fast: the probe is stubbed."""
from __future__ import annotations

import json

import pytest
import torch

from peftbench.experiments import precision, record, reuse
from peftbench.experiments.fields import serving_depends_on_weights
from peftbench.experiments.meters import contention, peak
from peftbench.methods.base import ConfigError
from tests.conftest import compose

TIMED = ["measure.latency=true", "measure.latency_repeats=3", "measure.latency_warmup=1",
         "measure.serving.enabled=true", "measure.serving.repeats=1", "measure.serving.warmup=0",
         "measure.serving.load_repeats=1", "measure.serving.swap_repeats=2", "measure.serving.adapters=[1,2]",
         "measure.serving.batch=2", "measure.serving.merge_eval=false", "measure.adapter_size=true",
         "forgetting.texts=4", "forgetting.tokens=16"]


# -- precision ------------------------------------------------------------------------------------

@pytest.mark.parametrize("probe, expected", [("fast", "bf16"), ("slow", "fp32")])
def test_auto_precision_follows_the_probe(monkeypatch, probe, expected):
    from peftbench.experiments.run import prepare

    monkeypatch.setenv(precision.STUB_ENV, probe)
    plan = prepare(compose(["device=cpu"]))
    assert plan.config["precision"] == expected
    assert plan.resolution.requested == "auto" and plan.resolution.precision == expected
    assert "stubbed" in plan.resolution.reason
    # the id hashes what ran: the same as a config that names it
    assert plan.run_id == record.run_id(compose(["device=cpu", f"precision={expected}"]))


def test_auto_is_fp32_without_probe_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.delenv(precision.STUB_ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(precision, "_measure_bf16_speedup", lambda: pytest.fail("probed a CPU without bf16"))
    res = precision.resolve("auto", "cpu")
    assert res.precision == "fp32" and res.bf16_speedup is None and "emulated" in res.reason


def test_auto_follows_cuda_support_and_bf16_weights(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    capability = {0: (8, 0), 1: (7, 5)}  # an A100 and a T4: the T4 emulates bf16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability[i])
    assert precision.resolve("auto", "cuda").precision == "bf16"
    assert precision.resolve("auto", "cuda:0").precision == "bf16"
    assert precision.resolve("auto", "cuda:1").precision == "fp32"
    assert precision.resolve("auto", "cpu", weights_dtype="bf16").precision == "bf16"


def test_forced_bf16_on_a_slow_cpu_warns_once_with_the_ratio(monkeypatch, capsys):
    monkeypatch.setenv(precision.STUB_ENV, "slow")
    monkeypatch.setattr(precision, "_warned", set())
    for _ in range(2):
        res = precision.resolve("bf16", "cpu")
        precision.warn_if_slow(res)
    err = capsys.readouterr().err.strip().splitlines()
    assert res.precision == "bf16"
    assert len(err) == 1 and err[0].startswith("peftbench: warning: precision=bf16") and "0.03x" in err[0], err


def test_a_bad_probe_stub_is_one_config_error(monkeypatch):
    monkeypatch.setenv(precision.STUB_ENV, "maybe")
    with pytest.raises(ConfigError, match="PEFTBENCH_BF16_PROBE must be one of"):
        precision.resolve("auto", "cpu")


def test_the_probe_is_cached_only_on_idle_cores(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.delenv(precision.STUB_ENV, raising=False)
    calls = []
    monkeypatch.setattr(precision, "_measure_bf16_speedup", lambda: calls.append(1) or (1.7, True))  # contended
    assert precision.bf16_speedup_cpu()[0] == 1.7 and "not cached" in precision.bf16_speedup_cpu()[1]
    assert len(calls) == 2 and not json.loads((tmp_path / "bf16_probe.json").read_text() if (tmp_path / "bf16_probe.json").exists() else "{}")
    monkeypatch.setattr(precision, "_measure_bf16_speedup", lambda: calls.append(1) or (1.7, False))
    precision.bf16_speedup_cpu()
    assert precision.bf16_speedup_cpu() == (1.7, "probe (cached)") and len(calls) == 3


# -- peak and MFU ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_peak_measured_on_busy_cores_is_never_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "ROUND_S", 0.1)
    monkeypatch.setattr(contention, "OTHERS_BUSY_MAX", -1.0)  # every stretch reads as contended
    got = peak.peak_matmul_flops(torch.device("cpu"), torch.float32)
    assert got["peak_contended"] is True and got["peak_flops_per_s"] > 0
    assert not (tmp_path / "peak_flops.json").exists()
    monkeypatch.setattr(contention, "OTHERS_BUSY_MAX", 2.0)  # never contended
    got = peak.peak_matmul_flops(torch.device("cpu"), torch.float32)
    cached = json.loads((tmp_path / "peak_flops.json").read_text())
    key = got["peak_key"]
    assert key in cached and "torch=" in key and "threads=" in key and "flags=" in key and "|torch.float32|" in key


@pytest.mark.slow
def test_an_mfu_above_100_percent_is_never_written(run_small, monkeypatch):
    from peftbench.experiments import meters

    fake = {"peak_flops_per_s": 1.0, "peak_key": "tiny", "peak_cached": True}
    monkeypatch.setattr(meters, "peak_matmul_flops", lambda *a, **k: fake)
    rec = run_small("method=lora", "steps=3")
    assert rec["status"] == "ok", rec.get("error")
    assert rec["cost"]["mfu_frac"] is None
    assert "even after probing again" in rec["measurement"]["mfu_unknown_reason"]


# -- measure once ---------------------------------------------------------------------------------

@pytest.fixture
def idle(monkeypatch):
    """Reads every stretch as uncontended, whatever else the machine runs beside the tests."""
    monkeypatch.setattr(contention, "OTHERS_BUSY_MAX", 2.0)


@pytest.mark.slow
def test_a_second_seed_copies_the_costs_and_names_their_source(run_small, idle):
    first = run_small("method=lora", "steps=3", *TIMED)
    second = run_small("method=lora", "steps=3", "seed=1", *TIMED)
    other_lr = run_small("method=lora", "steps=3", "lr=3e-3", *TIMED)
    assert first["status"] == second["status"] == other_lr["status"] == "ok"
    assert first["measurement"]["costs_from"] is None
    for rec in (second, other_lr):
        assert rec["measurement"]["costs_from"] == first["run_id"]
        # the timings are copied; merge precision is each run's own (it depends on its weights)
        timings = lambda s: {k: v for k, v in s.items() if k not in ("measure_s", "skipped") and not serving_depends_on_weights(k)}
        assert timings(rec["serving"]) == timings(first["serving"]) and timings(rec["serving"])
        for k, v in first["cost"].items():
            if reuse.is_copied_cost(k):
                assert rec["cost"][k] == v, k
        assert rec["timing"]["measure_s"] < first["timing"]["measure_s"]
    assert second["metrics"] != first["metrics"] or second["loss_curve"] != first["loss_curve"]  # trained anew
    # another rank is another cost configuration: measured again
    r4 = run_small("method=lora", "method.r=4", "steps=3", *TIMED)
    assert r4["measurement"]["costs_from"] is None


@pytest.mark.slow
def test_costs_timed_on_busy_cores_are_not_kept(run_small, monkeypatch):
    monkeypatch.setattr(contention, "OTHERS_BUSY_MAX", -1.0)
    first = run_small("method=lora", "steps=3", *TIMED)
    assert first["measurement"]["contended"] is True
    assert "other processes kept" in first["measurement"]["contended_reason"]
    monkeypatch.setattr(contention, "OTHERS_BUSY_MAX", 2.0)
    second = run_small("method=lora", "steps=3", "seed=1", *TIMED)
    assert second["measurement"]["costs_from"] is None and second["measurement"]["contended"] is False
    assert 0 < second["measurement"]["cpu_share_train_frac"] <= 1.5


@pytest.mark.slow
def test_the_base_is_scored_once_per_model_task_precision_and_seed(run_small):
    lora = run_small("method=lora", "steps=2", "seed=5", "measure.metrics_before=true", "forgetting.texts=4", "forgetting.tokens=16")
    full = run_small("method=full_ft", "steps=2", "seed=5", "measure.metrics_before=true", "forgetting.texts=4", "forgetting.tokens=16")
    assert lora["measurement"]["base_from_cache"] is False and full["measurement"]["base_from_cache"] is True
    assert full["metrics_before"] == lora["metrics_before"]
    assert full["forgetting"]["hidden_drift_cos"] > 0
    # a classifier's fresh head comes from the seed: another seed scores its own base
    other = run_small("method=lora", "steps=2", "seed=6", "measure.metrics_before=true", "forgetting.texts=4", "forgetting.tokens=16")
    assert other["measurement"]["base_from_cache"] is False
    off = run_small("method=dora", "steps=2", "seed=5", "measure.metrics_before=true", "forgetting.texts=4", "forgetting.tokens=16",
                    "reuse_measurements=false")
    assert off["measurement"]["base_from_cache"] is False and off["metrics_before"] == lora["metrics_before"]


@pytest.mark.slow
def test_a_cached_base_gives_the_numbers_a_fresh_one_does(run_small, tmp_path):
    """Same config, once with a fresh base pass and once from the cache: identical records."""
    args = ("method=lora", "steps=2", "seed=7", "measure.metrics_before=true", "forgetting.texts=4", "forgetting.tokens=16")
    fresh = run_small(*args, "reuse_measurements=false")
    run_small(*args, "lr=1e-3")  # fills the cache
    (tmp_path / "results" / f"{fresh['run_id']}.json").unlink()  # the same run again, from the cache
    cached = run_small(*args)
    assert cached["measurement"]["base_from_cache"] is True
    assert cached["metrics_before"] == fresh["metrics_before"]
    assert cached["metrics"] == fresh["metrics"] and cached["forgetting"] == fresh["forgetting"]
    assert cached["run_id"] == fresh["run_id"]  # reuse_measurements is not part of the id


# -- presets --------------------------------------------------------------------------------------

def test_measure_presets():
    full, quick, plain = compose(["measure=full"]), compose(["measure=quick"]), compose([])
    assert full == plain and record.run_id(full) == record.run_id(plain)
    assert quick["measure"]["latency"] is False and quick["measure"]["serving"]["enabled"] is False
    assert quick["measure"]["metrics_before"] is False and quick["forgetting"]["enabled"] is False
    assert record.run_id(quick) != record.run_id(full)
    # an explicit key still wins over the preset
    assert compose(["measure=quick", "measure.latency=true"])["measure"]["latency"] is True


# -- contention between sweeps ------------------------------------------------------------------

def test_runs_take_turns_on_the_cores(monkeypatch, tmp_path, capsys):
    import threading
    import time

    from peftbench.experiments import cores

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cores, "slot_cpus", lambda: [0, 1])
    monkeypatch.setattr(cores, "SLOT_WAIT_S", 0.05)
    waited = {}

    def second():
        t0 = time.perf_counter()
        with cores.core_slots(1, "[b] "):
            waited["s"] = time.perf_counter() - t0

    with cores.core_slots(2, "[a] "):  # one run holds both cores
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.4)
        assert "s" not in waited  # the second run has not started on a busy machine
    t.join(5)
    assert waited["s"] >= 0.35
    assert "[b] waiting for cores" in capsys.readouterr().err
    # two runs of one thread each fit two cores side by side
    with cores.core_slots(1), cores.core_slots(1):
        pass


@pytest.mark.slow
def test_auto_on_a_cpu_held_to_avx2_kernels_is_fp32():
    """Not stubbed: torch's kernels capped at AVX2, as on an AVX2-only CPU. Where the CPU has
    AVX512-BF16 the probe runs and measures bf16 emulated (much slower); elsewhere no probe runs."""
    import subprocess
    import sys
    import tempfile

    env = {k: v for k, v in __import__("os").environ.items() if k != precision.STUB_ENV}
    env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2",
               PEFTBENCH_CACHE=tempfile.mkdtemp())
    code = "from peftbench.experiments.precision import resolve; r = resolve('auto', 'cpu'); print(r.precision, r.bf16_speedup)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    got, ratio = out.stdout.split()
    assert got == "fp32", out
    if ratio != "None":
        assert float(ratio) < 0.5, ratio


@pytest.mark.slow
def test_a_forced_run_measures_anew(run_small, idle):
    first = run_small("method=lora", "steps=2", *TIMED)
    forced = run_small("method=lora", "steps=2", "seed=1", "force=true", *TIMED)
    assert forced["measurement"]["costs_from"] is None and forced["measurement"]["base_from_cache"] is False
    later = run_small("method=lora", "steps=2", "seed=2", *TIMED)
    assert later["measurement"]["costs_from"] == forced["run_id"]  # the forced run's figures replaced the first's
    assert first["run_id"] != forced["run_id"]


@pytest.mark.slow
def test_merge_logit_diffs_are_each_runs_own_and_merge_scores_are_copied(run_small, idle):
    extra = ("measure.serving.merge_eval=true",)
    first = run_small("method=lora", "steps=3", *TIMED, *extra)
    second = run_small("method=lora", "steps=3", "seed=1", *TIMED, *extra)
    assert second["measurement"]["costs_from"] == first["run_id"]
    # the merge variants' test passes are the first run's, named by costs_from ...
    scores = [k for k in first["serving"] if k.startswith("primary_")]
    assert "primary_merged_bf16" in scores
    assert {k: second["serving"][k] for k in scores} == {k: first["serving"][k] for k in scores}
    assert "primary_unmerged" not in first["serving"]  # the unmerged score is each run's own, in metrics.test
    # ... the logit differences are measured on its own weights
    diffs = [k for k in second["serving"] if serving_depends_on_weights(k)]
    assert diffs and all(second["serving"][k] is not None for k in diffs)
    assert second["serving"]["measure_s"].keys() == {"merge_precision"}
    assert second["cost"]["merge_max_abs_logit_diff"] is not None


@pytest.mark.slow
def test_a_remote_launcher_refuses_auto(tmp_path, forked_cli):
    out = forked_cli.run(["run", "-m", "hydra/launcher=slurm", "seed=0,1", f"results_dir={tmp_path}"], timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "peftbench: error: precision=auto resolves on the machine that runs it" in out.stderr
    assert "Traceback" not in out.stderr
