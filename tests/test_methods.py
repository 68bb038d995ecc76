"""Every method trains a few steps on the pretrained MiniLM and lowers the loss."""
import pytest

METHODS = ["full_ft", "linear_probe", "lora", "qlora", "dora", "rslora", "loraplus", "houlsby", "pfeiffer", "loha"]


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_lowers_loss(run_small, method):
    rec = run_small(f"method={method}", "steps=8", "batch_size=8", "lr=3e-3" if method != "full_ft" else "lr=2e-4", "precision=fp32")
    assert rec["status"] == "ok", rec.get("error")
    losses = rec["loss_curve"]
    assert len(losses) == 8
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.02, f"{method}: loss did not go down ({first:.3f} -> {last:.3f})"
    params = rec["params"]
    if method == "full_ft":
        assert params["trainable"] == params["total"]
    else:
        assert 0 < params["trainable"] < 0.1 * params["total"]
    # the task head trains in every method and is counted: 384*3 weights + 3 biases
    assert params["trainable"] >= 384 * 3 + 3


@pytest.mark.slow
def test_linear_probe_trains_exactly_the_head(run_small):
    rec = run_small("method=linear_probe", "steps=1")
    assert rec["params"]["trainable"] == 384 * 3 + 3


@pytest.mark.slow
def test_lora_trainable_count_matches_formula(run_small):
    rec = run_small("method=lora", "method.r=4", "steps=1")
    lora = 6 * 2 * 4 * (384 + 384)  # 6 layers, query+value, A and B
    assert rec["params"]["trainable"] == lora + 384 * 3 + 3


@pytest.mark.slow
def test_total_params_count_the_base_once_plus_what_the_method_adds(run_small):
    """peft keeps an untrained shadow of the head beside the trained one; it must not count."""
    base = run_small("method=full_ft", "steps=1")["params"]["total"]
    rec = run_small("method=lora", "method.r=4", "steps=1")
    assert rec["params"]["total"] == base + 6 * 2 * 4 * (384 + 384)
