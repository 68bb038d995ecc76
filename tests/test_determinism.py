"""The same config and seed, run twice on CPU, give identical metrics and loss curves: on an
empty or a filled peak-FLOPs cache, alone or after another run, as a plain run or an lr-search
trial."""
import tempfile
from pathlib import Path

import pytest

from peftbench.experiments.run import execute, prepare
from tests.conftest import FAST, SMALL_TASK, compose


def _run(tmp_path, name, seed):
    cfg = compose([*SMALL_TASK, *FAST, "method=lora", "steps=6", f"seed={seed}", f"results_dir={tmp_path / name}"])
    return execute(prepare(cfg))


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    a, b = _run(tmp_path, "a", 0), _run(tmp_path, "b", 0)
    assert a["loss_curve"] == b["loss_curve"]
    assert a["metrics"] == b["metrics"]


@pytest.mark.slow
def test_other_seed_other_numbers(tmp_path):
    a, c = _run(tmp_path, "a", 0), _run(tmp_path, "c", 1)
    assert a["loss_curve"] != c["loss_curve"]


def _tiny(tmp_path, name, *extra):
    cfg = compose([*SMALL_TASK, *FAST, "model=tiny-llama", "method=lora", "steps=4", f"results_dir={tmp_path / name}", *extra])
    return execute(prepare(cfg))


@pytest.mark.slow
def test_empty_and_filled_peak_cache_give_the_same_numbers(tmp_path, monkeypatch):
    """The first run on a machine measures the peak-FLOPs probe; later runs read it from the
    cache. Both must train on the same random stream."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PEFTBENCH_CACHE", str(cache))
    first = _tiny(tmp_path, "empty_cache")
    probe = cache / "peak_flops.json"
    assert probe.exists()
    mtime = probe.stat().st_mtime_ns
    second = _tiny(tmp_path, "filled_cache")
    assert probe.stat().st_mtime_ns == mtime, "the second run must read the cache, not measure again"
    assert first["loss_curve"] == second["loss_curve"]
    assert first["metrics"] == second["metrics"]


@pytest.mark.slow
def test_measurements_leave_the_global_random_state_alone():
    import random

    import numpy as np
    import torch

    from peftbench.experiments import meters

    torch.manual_seed(3)
    before = torch.get_rng_state()
    meters.peak._measure_peak(torch.device("cpu"), torch.float32, "k", Path(tempfile.mkdtemp()) / "p.json", {}, None)
    assert torch.equal(torch.get_rng_state(), before), "the peak probe drew from the global generator"

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with meters.rng_isolated(torch.device("cpu")):
        random.random(), np.random.rand(), torch.randn(3)
        random.seed(0), np.random.seed(1234), torch.manual_seed(1234)  # what lm-eval does
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])


@pytest.mark.slow
def test_run_order_and_an_lr_search_trial_do_not_change_a_run(tmp_path):
    """A run gives the same numbers alone, after another run in the same process, and as an
    lr-search trial (the trial is the plain run at that lr: same run id, same numbers)."""
    from peftbench.experiments import lrsearch, record

    alone = _tiny(tmp_path, "alone", "lr=0.002")
    _tiny(tmp_path, "after", "method=linear_probe", "lr=0.002")
    after = _tiny(tmp_path, "after", "lr=0.002")
    assert after["loss_curve"] == alone["loss_curve"] and after["metrics"] == alone["metrics"]

    search_cfg = compose([*SMALL_TASK, *FAST, "model=tiny-llama", "method=lora", "steps=4", "+lr_search=default",
                          f"results_dir={tmp_path / 'search'}"])
    trial_cfg = lrsearch.trial_config(search_cfg, 0.002)
    assert record.run_id(trial_cfg) == alone["run_id"]
    trial = execute(prepare(trial_cfg))
    assert trial["loss_curve"] == alone["loss_curve"] and trial["metrics"] == alone["metrics"]
