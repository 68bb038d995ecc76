"""`peftbench reproduce --until-decided`: a group-sequential design fixed in the plan, verdicts read
at its per-look level, looks that stop when the claims decide, at the schedule's end or at the
budget."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from scipy import stats as sps

from peftbench import reproduce as rp
from peftbench.analysis import report
from peftbench.analysis.claims.core import ClaimResult, ConditionResult, Evidence
from peftbench.analysis.verdicts import CANNOT_TELL, HOLDS, decide
from peftbench.experiments import decide as dp


def _claim(estimate: float, half: float, n: int = 10, region=(0.0, math.inf)) -> ClaimResult:
    st = {"estimate": estimate, "ci_low": estimate - half, "ci_high": estimate + half, "n": n, "p": math.nan}
    e = Evidence("lora", "text", True, stats=st, holds_if=region)
    return ClaimResult("c", "s", "src", CANNOT_TELL, [ConditionResult("check", CANNOT_TELL, [e])])


def test_a_stricter_level_turns_a_narrow_win_into_cannot_tell_and_says_so():
    # a t interval that clears 0 at 95% but not at 0.05 / 3
    half = 1.0
    se = half / sps.t.ppf(0.975, 9)
    est = half + 0.3 * se  # p of "outside the region" about 0.04
    at_05, at_017 = _claim(est, half), _claim(est, half)
    decide([at_05])
    decide([at_017], alpha=0.05 / 3)
    assert at_05.verdict == HOLDS and "sequential" not in at_05.conditions[0].evidence[0].decision.reason
    d = at_017.conditions[0].evidence[0].decision
    assert at_017.verdict == CANNOT_TELL and "against a level of 0.0167 (sequential design)" in d.reason
    assert d.seeds_needed is not None and d.seeds_needed > 10  # more seeds decide it at that level
    assert d.mde > at_05.conditions[0].evidence[0].decision.mde  # a stricter level needs a larger effect
    with pytest.raises(ValueError, match="alpha must be in"):
        decide([_claim(est, half)], alpha=0.2)


def test_the_design_and_the_budget_are_read_once_and_refused_in_one_line():
    seq = dp.sequential_design(5, 3, 7200)
    assert seq["seeds_per_look"] == [5, 10, 15] and seq["alpha_per_look"] == pytest.approx(0.05 / 3)
    assert dp.alpha_of({"sequential": seq}) == pytest.approx(0.05 / 3) and dp.alpha_of({}) == 0.05
    with pytest.raises(dp.DecideError, match="--looks must be a whole number >= 2"):
        dp.sequential_design(5, 1, 60)
    assert [dp.parse_duration(x) for x in ("2h", "90m", "45s", "1.5h", "600")] == [7200, 5400, 45, 5400, 600]
    for bad in ("two hours", "-1h", "0", "h", "inf"):
        with pytest.raises(dp.DecideError, match="is not a duration; write e.g. 2h"):
            dp.parse_duration(bad)
    with pytest.raises(dp.DecideError, match="alpha_per_look must be a number"):
        dp.alpha_of({"sequential": {"alpha_per_look": 0.5}})


def _run_looks(monkeypatch, tmp_path, verdicts_per_look, *, per_run=10.0, budget=3600.0, looks=3):
    """more_looks with the sweeps and the claims stubbed: `verdicts_per_look[k]` is what look k+1
    finds undecided. Returns (what ran, the looks file)."""
    ran, seen = [], []

    def fake_phase(study, work, name, arms, overrides, config_dir=None):
        ran.append((name, arms))
        d = tmp_path / name
        d.mkdir()
        return 0, d

    def fake_undecided(files, claims_dir, ids, alpha):
        seen.append(alpha)
        return verdicts_per_look[len(seen) - 1]

    monkeypatch.setattr(rp, "_phase", fake_phase)
    monkeypatch.setattr(rp, "undecided", fake_undecided)
    monkeypatch.setattr(rp, "manifest_files", lambda d: [])
    monkeypatch.setattr(rp, "_entries_and_records", lambda dirs: ([], {}))
    monkeypatch.setattr(rp, "_seconds_per_run", lambda records: per_run)  # the runs' own measured times
    monkeypatch.setattr(dp, "lines_of", lambda entries, records: {})
    monkeypatch.setattr(dp, "seed_arms", lambda lines, n: [{"method": "lora", "lr": "1e-3", "seed": ",".join(map(str, range(n - 5, n)))}])

    class S:
        claims = ["c"]

    seq = dp.sequential_design(5, looks, budget)
    rc = rp.more_looks(S(), seq, [tmp_path], tmp_path, "t", [], None, tmp_path, tmp_path)
    assert rc == 0 and all(a == pytest.approx(0.05 / looks) for a in seen)
    return ran, yaml.safe_load((tmp_path / "sequential_looks.yaml").read_text())


def test_looks_stop_when_every_claim_decides(monkeypatch, tmp_path):
    ran, log = _run_looks(monkeypatch, tmp_path, [["c"], []])
    assert [name for name, _ in ran] == ["t_look2"] and ran[0][1][0]["seed"] == "5,6,7,8,9"
    assert [lk["cannot_tell"] for lk in log["looks"]] == [["c"], []] and log["looks"][-1]["stop"] == "every claim decided"


def test_looks_stop_after_the_last_look_of_the_plan(monkeypatch, tmp_path):
    ran, log = _run_looks(monkeypatch, tmp_path, [["c"], ["c"], ["c"]])
    assert [name for name, _ in ran] == ["t_look2", "t_look3"]
    assert log["looks"][-1]["stop"] == "the plan's last look (3) is done" and len(log["looks"]) == 3


def test_looks_stop_when_the_next_would_not_fit_the_budget(monkeypatch, tmp_path):
    ran, log = _run_looks(monkeypatch, tmp_path, [["c"]], per_run=100.0, budget=300.0)  # 5 runs x 100 s > 300 s
    assert ran == [] and "does not fit the" in log["looks"][-1]["stop"] and "budget" in log["looks"][-1]["stop"]


def test_a_look_whose_seeds_are_there_already_runs_nothing(monkeypatch, tmp_path):
    """A resumed study whose next look's seeds an earlier invocation ran: no empty phase is
    launched (an empty arm list would be one job of the default config); the look after it reads
    the records there are."""
    from peftbench.experiments import decide as dpm

    ran, _ = [], None
    monkeypatch.setattr(dpm, "seed_arms", lambda lines, n: [])
    monkeypatch.setattr(rp, "_phase", lambda *a, **k: ran.append(a) or (0, tmp_path))
    monkeypatch.setattr(rp, "undecided", lambda files, claims_dir, ids, alpha: ["c"])
    monkeypatch.setattr(rp, "manifest_files", lambda d: [])
    monkeypatch.setattr(rp, "_entries_and_records", lambda dirs: ([], {}))
    monkeypatch.setattr(dpm, "lines_of", lambda entries, records: {})

    class S:
        claims = ["c"]

    assert rp.more_looks(S(), dp.sequential_design(5, 3, 60), [tmp_path], tmp_path, "t", [], None, tmp_path, tmp_path) == 0
    log = yaml.safe_load((tmp_path / "sequential_looks.yaml").read_text())
    assert ran == [] and [lk["look"] for lk in log["looks"]] == [1, 2, 3] and "last look" in log["looks"][-1]["stop"]


def test_a_report_reads_the_level_from_the_plan_beside_the_records(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, looks in ((a, 3), (b, 4)):
        d.mkdir()
        dp.write_plan(d / dp.PLAN_FILE, {"picks": [], "sequential": dp.sequential_design(5, looks, 60)})
    alpha, note = report.verdict_level([str(a)])
    assert alpha == pytest.approx(0.05 / 3) and "at most 3 looks at 5, 10, 15 seeds per pick" in note
    assert report.verdict_level([str(tmp_path / "none")]) == (0.05, "")
    nested = tmp_path / "results" / "study_a"
    nested.mkdir(parents=True)
    dp.write_plan(nested / dp.PLAN_FILE, {"picks": [], "sequential": dp.sequential_design(5, 3, 60)})
    assert report.verdict_level([str(tmp_path / "results")])[0] == pytest.approx(0.05 / 3)  # found below, as records are
    with pytest.raises(dp.DecideError, match="different levels"):
        report.verdict_level([str(a), str(b)])


@pytest.mark.parametrize("args,message", [
    (["--until-decided"], "--until-decided needs --budget T"),
    (["--budget", "2h"], "--budget and --looks go with --until-decided"),
    (["--until-decided", "--budget", "soon"], "--budget 'soon' is not a duration"),
    (["--until-decided", "--budget", "2h", "--looks", "x"], "--looks 'x' is not a whole number"),
    (["--until-decided", "--budget", "2h", "--looks", "1"], "--looks must be a whole number >= 2"),
])
def test_bad_sequential_options_are_one_line(args, message, forked_cli, tmp_path):
    proc = forked_cli.run(["reproduce", "sst2_headline", *args, f"results_dir={tmp_path}"])
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("peftbench: error: ") and message in lines[0], proc.stderr
    assert not Path(tmp_path).exists() or not any(Path(tmp_path).iterdir())


def test_a_study_without_a_decide_block_cannot_add_seeds(forked_cli, tmp_path):
    from peftbench.experiments.study import load_study, study_names

    name = next(n for n in study_names() if load_study(n).decide is None)
    proc = forked_cli.run(["reproduce", name, "--until-decided", "--budget", "1h", f"results_dir={tmp_path}"])
    assert proc.returncode == 2 and f"study {name} has no decide: block" in proc.stderr, proc.stderr
