"""analysis.load and analysis.stats on hand-built records: validation, grouping, aggregates, tests."""
from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis.load import load_results  # noqa: E402
from peftbench.analysis.stats import ZERO_VARIANCE_NOTE, aggregate, paired_test, t_ci95  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_results([fx.write_all(tmp_path_factory.mktemp("results"))])


@pytest.fixture(scope="module")
def agg(loaded):
    return aggregate(loaded.ok)


def row(agg, **kw):
    m = agg
    for k, v in kw.items():
        m = m[m[k] == v]
    assert len(m) == 1, kw
    return m.iloc[0]


def test_bad_files_are_reported_by_name_and_skipped(loaded):
    reasons = {Path(p.file).name: p.reason for p in loaded.problems}
    assert set(reasons) == {"corrupt.json", "no_seed.json"}
    assert reasons["corrupt.json"].startswith("corrupt JSON")
    assert "missing seed" in reasons["no_seed.json"]


def test_a_file_the_json_parser_refuses_is_a_problem_not_a_crash(tmp_path):
    from peftbench.analysis.load import read_record

    (tmp_path / "huge.json").write_text('{"n": ' + "9" * 5000 + "}")  # past Python's 4300-digit int limit
    (tmp_path / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    assert read_record(tmp_path / "huge.json") == (None, "corrupt JSON (a value the parser refuses)")
    assert read_record(tmp_path / "latin1.json") == (None, "unreadable: not UTF-8 text")


def test_failed_runs_are_kept_apart(loaded):
    assert list(loaded.failed["method"]) == ["pfeiffer"]
    assert "out of memory" in loaded.failed["error"].iloc[0]
    assert "pfeiffer" not in set(loaded.ok["method"])


def test_rank_and_targets_come_from_the_method_config(loaded):
    ok = loaded.ok
    assert set(ok[ok.method == "lora"]["capacity"]) == {"r=4", "r=8", "r=16"}
    # houlsby's capacity key (its YAML's report block) is bottleneck_size, unset here: no capacity
    assert set(ok[ok.method == "houlsby"]["capacity"]) == {"-"}
    assert math.isnan(ok[ok.method == "houlsby"]["capacity_value"].iloc[0])
    assert set(ok[ok.method == "full_ft"]["targets"]) == {"-"}
    assert set(ok[ok.method == "lora"]["targets"]) == {"attn_qv", "all_linear"}


def test_rerun_of_same_config_and_seed_supersedes_instead_of_adding_a_seed(tmp_path):
    old, new = fx.record("lora", acc=0.5), fx.record("lora", acc=0.7)
    new["run_id"] += "_rerun"
    new["finished_at"] = "2027-01-01T00:00:00"
    fx.write_all(tmp_path, [old, new], broken=False)
    loaded = load_results([tmp_path])
    assert len(loaded.ok) == 1 and loaded.ok["primary"].iloc[0] == 0.7
    assert any("superseded" in p.reason for p in loaded.problems)


def test_missing_path_is_a_problem_not_a_crash(tmp_path):
    loaded = load_results([tmp_path / "nope"])
    assert loaded.ok.empty and "no such file" in loaded.problems[0].reason


def test_models_are_never_pooled(agg):
    ft = agg[agg.method == "full_ft"]
    assert sorted(ft["model"]) == ["minilm", "tiny-llama"]
    assert row(agg, model="tiny-llama", method="full_ft")["n"] == 1


def test_mean_std_ci_over_seeds(agg):
    r = row(agg, model="minilm", method="lora", capacity="r=8", targets="attn_qv")
    accs = [0.82 + fx.SEED_OFFSET[s] for s in fx.SEEDS]
    assert r["n"] == 3 and r["seeds"] == (0, 1, 2)
    assert r["primary_mean"] == pytest.approx(sum(accs) / 3)
    assert r["primary_ci95"] == pytest.approx(4.302653 * r["primary_std"] / math.sqrt(3), rel=1e-5)


def test_t_ci95_known_value_and_single_value():
    assert t_ci95([1.0, 2.0, 3.0]) == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(t_ci95([1.0]))


def test_pct_of_full_ft_is_paired_per_seed(agg):
    r = row(agg, model="minilm", method="lora", capacity="r=8", targets="attn_qv")
    expected = sum(100 * (0.82 + fx.SEED_OFFSET[s]) / (0.90 + fx.SEED_OFFSET[s]) for s in fx.SEEDS) / 3
    assert r["pct_of_full_ft_paired"] and r["pct_of_full_ft_percent"] == pytest.approx(expected)
    assert row(agg, model="tiny-llama", method="lora")["pct_of_full_ft_percent"] == pytest.approx(100 * 0.6 / 0.7)


def test_identical_differences_on_every_seed_are_untested(agg):
    r = row(agg, model="minilm", method="dora")  # the fixture's DoRA is LoRA + exactly 3 points
    assert r["vs_baseline_n"] == 3 and r["vs_baseline_diff"] == pytest.approx(0.03)
    assert math.isnan(r["vs_baseline_p"]) and r["vs_baseline_note"] == ZERO_VARIANCE_NOTE


def test_zero_variance_paired_test_is_nan_not_a_p_value():
    res = paired_test({0: 0.85, 1: 0.86, 2: 0.845}, {0: 0.82, 1: 0.83, 2: 0.815})  # diffs 0.03 up to rounding
    assert res.n == 3 and math.isnan(res.p_value) and not res.tested and res.note == ZERO_VARIANCE_NOTE
    assert paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).tested is False  # all-zero differences too


def with_config(rec: dict, **cfg) -> dict:
    """A record whose config differs only in `cfg` (and so gets its own run id, like the runner's)."""
    rec["config"].update(cfg)
    rec["run_id"] += "_" + "_".join(f"{k}{v}" for k, v in cfg.items())
    return rec


def test_runs_differing_only_in_batch_size_are_two_rows_not_two_seeds(tmp_path):
    recs = [with_config(fx.record("lora", acc=0.8), batch_size=16), with_config(fx.record("lora", acc=0.7), batch_size=32)]
    loaded = load_results([fx.write_all(tmp_path, recs, broken=False)])
    assert len(loaded.ok) == 2 and loaded.problems == []  # nothing "superseded"
    agg = aggregate(loaded.ok)
    assert len(agg) == 2 and set(agg["n"]) == {1} and agg["setting"].nunique() == 2
    assert all(len(s) == 6 for s in agg["setting"])


def test_device_type_is_part_of_the_setting(tmp_path):
    gpu = fx.record("lora", acc=0.7)
    gpu["provenance"]["device"], gpu["run_id"] = "cuda:0", gpu["run_id"] + "_gpu"
    ok = load_results([fx.write_all(tmp_path, [fx.record("lora"), gpu], broken=False)]).ok
    assert sorted(ok["device"]) == ["cpu", "cuda"] and ok["setting"].nunique() == 2


def test_references_prefer_the_same_non_method_setting(tmp_path):
    def full_ft(batch: int, acc: float, val: float) -> dict:
        rec = with_config(fx.record("full_ft", acc=acc, r=None, targets=None), batch_size=batch)
        rec["metrics"]["validation"]["accuracy"] = val
        return rec
    lora = with_config(fx.record("lora", acc=0.6), batch_size=32)
    lora["config"]["method"]["alpha"] = 16  # method-only keys do not stop full FT pairing
    # full FT at batch 16 is best on validation, but LoRA ran at batch 32: that is its reference
    recs = [full_ft(16, 0.9, 0.99), full_ft(32, 0.8, 0.5), lora]
    agg = aggregate(load_results([fx.write_all(tmp_path, recs, broken=False)]).ok)
    assert row(agg, method="lora")["pct_of_full_ft_percent"] == pytest.approx(100 * 0.6 / 0.8)


def test_single_seed_comparison_is_untested(agg):
    r = row(agg, model="tiny-llama", method="full_ft")
    assert r["vs_baseline_n"] == 0  # full FT has no rank: no LoRA at the same rank
    assert math.isnan(row(agg, model="tiny-llama", method="lora")["vs_baseline_p"])


def test_paired_test_needs_two_shared_seeds():
    assert paired_test({0: 0.5}, {0: 0.4}).tested is False
    res = paired_test({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.52, 2: 0.58, 3: 0.1})
    assert res.n == 3 and res.seeds == (0, 1, 2) and 0 < res.p_value < 0.05


@pytest.mark.slow
def test_analysis_never_imports_torch():
    code = ("import sys; import peftbench.analysis.report, peftbench.analysis.load, peftbench.experiments.record, peftbench.experiments.fields; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_lr_searched_seeds_stay_one_row_with_their_chosen_lrs(tmp_path):
    """Under lr_search each seed picks its own lr; the seeds still aggregate into one row."""
    from peftbench.analysis import stats, tables

    recs = [fx.record("lora", seed=s, acc=0.8 + 0.01 * s, lr=[1e-3, 3e-3, 1e-3][s]) for s in fx.SEEDS]
    for r in recs:
        r["protocol"] = "lr_search"
        r["lr_search"] = {"protocol": "lr_search"}
    agg = stats.aggregate(load_results([fx.write_all(tmp_path, recs, broken=False)]).ok)
    assert len(agg) == 1 and agg.iloc[0]["n"] == 3
    assert tables._lr_text(agg.iloc[0], "md") == "search: 1e-03;3e-03"
    # each run's own lr is `lr` in runs.csv, one name from the record to the CSV
    runs = stats.per_run(load_results([tmp_path]).ok, agg)
    assert "chosen_lr" not in tables.runs_csv(runs).splitlines()[0].split(",")
    assert sorted(pd.read_csv(io.StringIO(tables.runs_csv(runs)))["lr"]) == [1e-3, 1e-3, 3e-3]


def test_schema_valid_but_odd_record_is_skipped_by_name(tmp_path):
    odd = fx.record("lora", seed=5)
    odd["provenance"]["versions"] = "torch 2.13"  # a string where a mapping belongs
    folder = fx.write_all(tmp_path, [fx.record("lora", seed=0), odd], broken=False)
    loaded = load_results([folder])
    assert len(loaded.ok) == 1
    [problem] = loaded.problems
    assert problem.file.endswith(f"{odd['run_id']}.json") and "schema-invalid" in problem.reason


def test_the_report_scores_a_run_by_the_metric_spec_it_recorded(tmp_path):
    """A run keeps the metric declaration it scored by (`metric_spec`); the report reads that, not
    whatever its config's task block says, and records written before it read their config."""
    by_spec = fx.record("lora")
    by_spec["metric_spec"] = [{"name": "accuracy", "direction": "max", "primary": False},
                              {"name": "macro_f1", "direction": "max", "primary": True}]
    old = fx.record("full_ft", r=None, targets=None)
    ok = load_results([fx.write_all(tmp_path, [by_spec, old], broken=False)]).ok
    rows = {r["method"]: r for _, r in ok.iterrows()}
    assert rows["lora"]["primary_metric"] == "macro_f1" and rows["lora"]["primary"] == by_spec["metrics"]["test"]["macro_f1"]
    assert rows["full_ft"]["primary_metric"] == "accuracy"


def test_an_interval_near_a_bound_stays_inside_the_metrics_range(tmp_path):
    """Three seeds at 98%, 100% and 100% accuracy: the t interval of the mean passes 100%; the
    report's interval stops there, in the aggregate, the CI column and the error bars, and a
    record written before runs kept the range takes the metric's known one."""
    from peftbench.analysis import tables
    from peftbench.analysis.figures import _yerr

    recs = [fx.record("lora", seed=s, acc=a) for s, a in ((0, 0.98), (1, 1.0), (2, 1.0))]
    for rec in recs:
        rec.pop("metric_spec", None)  # as written before: the range comes from the metric's name
    ok = load_results([fx.write_all(tmp_path, recs, broken=False)]).ok
    assert tuple(ok["primary_range"].iloc[0]) == (0.0, 1.0)
    [r] = [x for _, x in aggregate(ok).iterrows()]
    assert r["primary_mean"] + r["primary_ci95"] > 1.0  # the t interval alone passes 100%
    assert r["primary_ci_high"] == 1.0 and r["primary_ci_low"] == pytest.approx(r["primary_mean"] - r["primary_ci95"])
    ci = next(c for c in tables.metric_columns(aggregate(ok)) if "95% CI" in c.header)
    assert ci.text(r, "md").endswith(", 100.0]")
    below, above = _yerr(aggregate(ok), 100.0)
    assert above[0] == pytest.approx(100 * (1.0 - r["primary_mean"])) and below[0] == pytest.approx(100 * r["primary_ci95"])


def test_a_metric_range_is_declared_or_known_and_checked():
    """Every metric a shipped task scores by has a value range: declared in its task's YAML, or
    known by name; so a new metric needs only its builder and its YAML (`range:`)."""
    import yaml

    from peftbench.experiments import metric_spec
    from peftbench.methods.errors import ConfigError

    tasks = {p.stem: yaml.safe_load(p.read_text()) for p in (Path(__file__).resolve().parents[1] / "conf" / "task").glob("*.yaml")}
    unranged = [(name, m["name"]) for name, t in tasks.items() for m in metric_spec.with_ranges(metric_spec.of_task(t))
                if m["range"] is None]
    assert len(tasks) >= 9 and not unranged, unranged
    spec = metric_spec.with_ranges(metric_spec.normalise([{"name": "bleu", "primary": True, "range": [0, 100]}, {"name": "accuracy"}]))
    assert [m["range"] for m in spec] == [[0.0, 100.0], [0.0, 1.0]]
    assert metric_spec.with_ranges(metric_spec.normalise([{"name": "loss", "direction": "min", "primary": True}]))[0]["range"] is None
    for bad in ([1, 0], [0], "0-1", [0, True]):
        with pytest.raises(ConfigError, match="range"):
            metric_spec.normalise([{"name": "bleu", "primary": True, "range": bad}])


def test_aggregate_means_and_stds_are_pandas_own_bit_for_bit():
    """aggregate computes its means and stds without a Series per cell: they must be the very
    floats pandas gives, or a table's last digit could move between two versions."""
    from peftbench.analysis.stats import _nanmean, _nanstd

    rng = np.random.default_rng(0)
    for n in range(1, 12):
        for _ in range(30):
            x = rng.choice([0.5875, 0.6125, 1 / 3, 0.1, 2.0, 1e-9, 7.25], n) * rng.uniform(0.9, 1.1, n)
            x[rng.random(n) < 0.25] = np.nan
            s = pd.Series(x)
            mean, std = s.mean(), s.std(ddof=1)
            assert _nanmean(x) == mean or (np.isnan(mean) and np.isnan(_nanmean(x)))
            if s.notna().sum() > 1:
                assert _nanstd(x) == std


def test_aggregate_of_frames_joined_with_repeated_labels_is_that_of_the_joined_runs(tmp_path):
    """Two loaded folders joined keep their row labels (0, 1, ... twice): each configuration's
    values are still its own runs', not those of every run with the same labels."""
    from peftbench.analysis import stats

    a = load_results([fx.write_all(tmp_path / "a", [fx.record("lora", seed=s, acc=0.6 + 0.01 * s) for s in fx.SEEDS], broken=False)]).ok
    b = load_results([fx.write_all(tmp_path / "b", [fx.record("dora", seed=s, acc=0.8 + 0.02 * s) for s in fx.SEEDS], broken=False)]).ok
    joined = stats.aggregate(pd.concat([a, b]))
    pd.testing.assert_frame_equal(joined, stats.aggregate(pd.concat([a, b], ignore_index=True)), check_exact=True)
    assert sorted(joined["primary_mean"].round(4)) == [0.61, 0.82]
