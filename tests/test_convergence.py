"""The convergence check's reading: each longer run paired with its run at the study's budget,
the gain's interval over seeds read against the tolerance, whichever way the metric points."""
import math

import pandas as pd
import pytest

from peftbench.analysis import convergence as cv
from peftbench.experiments.decide import Convergence, DecideError, convergence_settings


def runs(steps, scores, method="lora", lr=1e-3, direction="max", metric="accuracy"):
    return [{"model": "minilm", "task": "synth", "method": method, "capacity": "r=8", "targets": "attn_qv",
             "precision": "fp32", "lr": lr, "protocol": "fixed_lr", "setting": "abc123", "seed": s, "steps": steps,
             "val_primary": v, "primary_direction": direction, "primary_metric": metric, "primary_range": (0.0, 1.0)}
            for s, v in enumerate(scores)]


def test_flat_curves_converge_rising_ones_are_still_learning_and_noise_cannot_tell():
    crit = Convergence(2, 0.01)
    main = pd.DataFrame(runs(100, [0.80, 0.82, 0.81]) + runs(100, [0.70, 0.71, 0.69], method="full_ft")
                        + runs(100, [0.60, 0.70, 0.65], method="ia3"))
    longer = pd.DataFrame(runs(200, [0.801, 0.819, 0.812]) + runs(200, [0.80, 0.82, 0.80], method="full_ft")
                          + runs(200, [0.70, 0.62, 0.71], method="ia3"))
    got = {ln.label.split()[1]: ln for ln in cv.check(main, longer, crit).lines}
    assert got["lora"].verdict == cv.CONVERGED and got["lora"].ci[1] <= 0.01
    assert got["full_ft"].verdict == cv.STILL_LEARNING and got["full_ft"].gain == pytest.approx(0.1067, abs=1e-3)
    assert got["ia3"].verdict == cv.CANNOT_TELL and "still gains" not in got["ia3"].reason
    c = cv.check(main, longer, crit)
    assert c.verdict() == cv.STILL_LEARNING and "of 3 line(s) at their validation pick, 1 converged, 1 still learning, 1 cannot tell" in c.summary()
    # the study's own runs at other budgets do not pair: only steps x factor does
    odd = cv.check(main, pd.DataFrame(runs(300, [0.8, 0.8, 0.8])), crit)
    assert not odd.lines and len(odd.unpaired) == 3


def test_a_lower_is_better_metric_gains_when_it_falls():
    crit = Convergence(2, 0.01)
    main = pd.DataFrame(runs(100, [2.0, 2.1, 2.05], direction="min", metric="loss"))
    longer = pd.DataFrame(runs(200, [1.5, 1.6, 1.52], direction="min", metric="loss"))
    [ln] = cv.check(main, longer, crit).lines
    assert ln.gain == pytest.approx(0.51, abs=1e-2) and ln.verdict == cv.STILL_LEARNING
    assert ln.at_budget == pytest.approx(2.05) and ln.longer == pytest.approx(1.54)  # shown in the metric's own sign


def test_one_seed_cannot_tell_and_no_check_says_so():
    [ln] = cv.check(pd.DataFrame(runs(100, [0.8])), pd.DataFrame(runs(200, [0.8])), Convergence(2, 0.01)).lines
    assert ln.verdict == cv.CANNOT_TELL and "one seed" in ln.reason and math.isnan(ln.ci[0])
    assert "not checked" in cv.regime_line(None) and "not checked" in cv.to_markdown(None)


def test_the_criterion_is_checked():
    assert convergence_settings(None, "s") is None
    assert convergence_settings({"tolerance": 0.02}, "s") == Convergence(2, 0.02)
    for bad in ({"steps_factor": 2}, {"steps_factor": 1.5, "tolerance": 0.01}, {"tolerance": -1}, {"tolerance": 0.01, "x": 1}, [1]):
        with pytest.raises(DecideError):
            convergence_settings(bad, "s")


def test_checks_are_found_where_the_loader_reads_records(tmp_path):
    from peftbench.experiments.decide import write_criterion

    for folder in ("study/convergence", ".studies/x/convergence", "reference/y/convergence"):
        write_criterion(tmp_path / folder, Convergence(2, 0.01), "s.yaml")
    assert cv.folders([tmp_path]) == [tmp_path / "study" / "convergence"]
    assert cv.folders([tmp_path / "reference" / "y"]) == [tmp_path / "reference" / "y" / "convergence"]


def test_an_interval_stays_within_what_a_gain_can_be_and_one_above_zero_says_it_still_gains():
    crit = Convergence(2, 0.01)
    [wide] = cv.check(pd.DataFrame(runs(100, [0.1, 0.1])), pd.DataFrame(runs(200, [0.1, 1.0])), crit).lines
    assert wide.ci == (-1.0, 1.0)  # the t interval reaches past +-1; an accuracy gain cannot
    [up] = cv.check(pd.DataFrame(runs(100, [0.80, 0.80, 0.80])), pd.DataFrame(runs(200, [0.815, 0.81, 0.82])), crit).lines
    assert up.verdict == cv.CANNOT_TELL and "lies above 0, so training longer still gains" in up.reason
    assert "1 of them still gaining" in cv.Check(2, 0.01, [up]).summary()


def test_a_seed_without_a_score_or_a_failed_run_keeps_the_check_from_saying_converged():
    crit = Convergence(2, 0.05)
    main = pd.DataFrame(runs(100, [0.80, 0.81, 0.80]))
    longer = pd.DataFrame(runs(200, [0.80, 0.81, float("nan")]))
    c = cv.check(main, longer, crit)
    [ln] = c.lines
    assert ln.seeds == (0, 1) and ln.verdict == cv.CANNOT_TELL and "left no validation score" in ln.reason
    assert c.missing and c.verdict() == cv.CANNOT_TELL and "failed or left no score" in c.summary()
    flat = cv.check(main, pd.DataFrame(runs(200, [0.80, 0.81, 0.80])), crit, failed=["lora seed 3 (failed)"])
    assert flat.lines[0].verdict == cv.CONVERGED and flat.verdict() == cv.CANNOT_TELL
    assert "lora seed 3 (failed)" in cv.to_markdown(flat)
    # two studies' records of one configuration and seed: no pair is guessed
    twice = cv.check(pd.concat([main, main]), pd.DataFrame(runs(200, [0.8, 0.8, 0.8])), crit)
    assert not twice.lines and "2 runs at 100 steps to pair with" in cv.to_markdown(twice)


def test_the_check_skips_a_line_whose_lr_was_searched():
    from peftbench.experiments.decide import Line, convergence_arms

    fixed = Line({"method": "lora", "steps": "100"}, {(1e-3, s): {"config": {"steps": 100}, "protocol": "fixed_lr"} for s in (0, 1)})
    searched = Line({"method": "ia3", "steps": "100"}, {(None, s): {"config": {"steps": 100}, "protocol": "lr_search"} for s in (0, 1)})
    arms = convergence_arms({("a",): fixed, ("b",): searched}, 3)
    assert arms == [{"method": "lora", "steps": "300", "lr": "0.001", "seed": "0,1"}]


def test_a_pair_from_two_cpus_says_so():
    main = pd.DataFrame([{**r, "prov_hardware": "Intel Xeon"} for r in runs(100, [0.80, 0.81, 0.80])])
    longer = pd.DataFrame([{**r, "prov_hardware": "AMD EPYC"} for r in runs(200, [0.80, 0.81, 0.80])])
    [ln] = cv.check(main, longer, Convergence(2, 0.05)).lines
    assert "the budget's runs ran on Intel Xeon, the longer ones on AMD EPYC" in ln.reason
    [same] = cv.check(main, longer.assign(prov_hardware="Intel Xeon"), Convergence(2, 0.05)).lines
    assert "ran on" not in same.reason
