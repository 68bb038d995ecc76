"""The same config and seed, run twice on CPU, give identical metrics and loss curves."""
from experiments.run import execute, prepare
from tests.conftest import FAST, SMALL_TASK, compose


def _run(tmp_path, name, seed):
    cfg = compose([*SMALL_TASK, *FAST, "method=lora", "steps=6", f"seed={seed}", f"results_dir={tmp_path / name}"])
    return execute(prepare(cfg))


def test_same_seed_same_numbers(tmp_path):
    a, b = _run(tmp_path, "a", 0), _run(tmp_path, "b", 0)
    assert a["loss_curve"] == b["loss_curve"]
    assert a["metrics"] == b["metrics"]


def test_other_seed_other_numbers(tmp_path):
    a, c = _run(tmp_path, "a", 0), _run(tmp_path, "c", 1)
    assert a["loss_curve"] != c["loss_curve"]
