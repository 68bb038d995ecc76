"""analysis.tables: grouping, formatting, direction-aware bolding, LaTeX that parses (and compiles
when pdflatex is installed), CSV with raw numbers."""
from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis import tables  # noqa: E402
from peftbench.analysis.load import load_results  # noqa: E402
from peftbench.analysis.stats import aggregate  # noqa: E402


def jittered_dora() -> list[dict]:
    """The fixture with DoRA's +3 points varying a little by seed, so that the paired t-test has a
    variance to work with (identical differences are untested)."""
    recs = fx.main_records() + fx.second_model_records()
    for r in recs:
        if r["method"] == "dora":
            r["metrics"]["test"]["accuracy"] += {0: 0.0, 1: 0.002, 2: -0.002}[r["seed"]]
    return recs


def groups_of(folder: Path) -> dict:
    return dict(tables.table_groups(aggregate(load_results([folder]).ok)))


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    return groups_of(fx.write_all(tmp_path_factory.mktemp("results"), jittered_dora()))


@pytest.fixture(scope="module")
def minilm(groups):
    return groups[("minilm", "synth")]


def md_rows(md: str) -> list[dict[str, str]]:
    lines = [l for l in md.splitlines() if l.startswith("|")]
    split = lambda l: [c.strip() for c in re.split(r"(?<!\\)\|", l)[1:-1]]  # noqa: E731
    header = split(lines[0])
    return [dict(zip(header, split(l))) for l in lines[2:]]


def test_one_table_per_model_and_task(groups):
    assert set(groups) == {("minilm", "synth"), ("tiny-llama", "synth")}
    assert len(groups[("tiny-llama", "synth")]) == 2


def test_one_row_per_method_rank_targets(minilm):
    keys = list(zip(minilm["method"], minilm["capacity"], minilm["targets"]))
    assert len(keys) == len(set(keys)) == 12
    assert keys[0] == ("full_ft", "-", "-")  # reference first


def test_every_header_has_a_unit_and_a_legend(minilm):
    columns = tables.main_columns(minilm)
    assert [c.header for c in columns[: tables.N_LABELS]][-1] == "Setting"
    for c in columns[tables.N_LABELS:] + tables.detail_columns()[tables.N_LABELS:]:  # after the label columns
        assert "(" in c.header or c.header == "Mem kind", c.header
        assert c.legend
    legend = tables.markdown_legend([minilm])
    assert all(f"**{c.header}**" in legend for c in columns + tables.detail_columns())


def test_markdown_values_bolding_and_dagger(minilm):
    rows = {(r["Method"], r["Capacity"], r["Targets"]): r for r in md_rows(tables.to_markdown("t", minilm))}
    ft = rows[("full_ft", "-", "-")]
    assert ft["accuracy (primary) (%)"].startswith("**90.2 ± 0.8 (n=3)")  # highest accuracy: bold
    assert ft["Precision"] == "bf16"
    assert ft["% of full FT (%)"] == "100.0"  # the reference itself is never bolded
    assert rows[("linear_probe", "-", "-")]["Trainable params (count)"] == "**1,000**"  # lower is better
    assert rows[("rslora", "r=16", "attn_qv")]["% of full FT (%)"].startswith("**")
    dora = rows[("dora", "r=8", "attn_qv")]
    assert "†" in dora["accuracy (primary) (%)"] and "+3.0 (p=" in dora["Δ vs lora (pp)"]
    assert rows[("houlsby", "-", "-")]["Latency overhead merged (%)"] == "n/a (cannot merge)"
    # smallest adapter overhead is bold; full FT and the linear probe (0%, no adapter) do not compete
    assert rows[("lora", "r=8", "attn_qv")]["Latency overhead unmerged (%)"] == "**+10.0 ± 2.0**"
    assert rows[("lora", "r=8", "attn_qv")]["Train mem growth, peak (MiB)"] == "101.1"
    # full FT is no adapter: its measured overhead shows, its absent merged figure is a dash
    assert ft["Latency overhead unmerged (%)"] == "+0.0 ± 2.0" and ft["Latency overhead merged (%)"] == "–"
    assert ft["Setting"] == rows[("lora", "r=8", "attn_qv")]["Setting"] and not ft["Setting"].startswith("**")


@pytest.mark.slow
def test_identical_differences_get_no_dagger(tmp_path):
    minilm = groups_of(fx.write_all(tmp_path, fx.main_records(), broken=False))[("minilm", "synth")]
    md = tables.to_markdown("t", minilm)
    dora = {r["Method"]: r for r in md_rows(md)}["dora"]
    assert "†" not in dora["accuracy (primary) (%)"]
    assert dora["Δ vs lora (pp)"] == "+3.0 (zero-variance differences: untested, n=3)"


def test_latency_off_is_not_measured_and_cannot_merge_is_na(tmp_path):
    off = dict(lat_unmerged=None, lat_merged=None, lat_noise=None)
    recs = [fx.record("lora", **off), fx.record("houlsby", r=None, targets=None, reduction_factor=16, can_merge=False, **off),
            fx.record("full_ft", r=None, targets=None, can_merge=False, **off)]
    rows = {r["Method"]: r for r in md_rows(tables.to_markdown("t", groups_of(fx.write_all(tmp_path, recs, broken=False))[("minilm", "synth")]))}
    assert rows["lora"]["Latency overhead unmerged (%)"] == rows["lora"]["Latency overhead merged (%)"] == "not measured"
    assert rows["houlsby"]["Latency overhead merged (%)"] == "n/a (cannot merge)"
    assert rows["houlsby"]["Latency overhead unmerged (%)"] == "not measured"
    assert rows["full_ft"]["Latency overhead unmerged (%)"] == rows["full_ft"]["Latency overhead merged (%)"] == "–"


def test_bolding_is_per_precision(tmp_path):
    recs = [fx.record("lora", r=8, acc=0.80, precision="bf16"), fx.record("lora", r=16, acc=0.82, precision="bf16"),
            fx.record("lora", r=8, acc=0.70, precision="fp32"), fx.record("lora", r=16, acc=0.75, precision="fp32")]
    md = tables.to_markdown("t", groups_of(fx.write_all(tmp_path, recs, broken=False))[("minilm", "synth")])
    bold = {(r["Precision"], r["Capacity"]) for r in md_rows(md) if r["accuracy (primary) (%)"].startswith("**")}
    assert bold == {("bf16", "r=16"), ("fp32", "r=16")}  # each precision's best, not only the overall best


def test_setting_column_and_notes_name_what_differs(tmp_path):
    a, b = fx.record("lora", acc=0.8), fx.record("lora", acc=0.7)
    b["config"]["batch_size"], b["run_id"] = 32, b["run_id"] + "_b32"
    extra = fx.record("lora", acc=0.75, r=16)  # two rows share a's setting: a's is the most common
    t = groups_of(fx.write_all(tmp_path, [a, b, extra], broken=False))[("minilm", "synth")]
    md = tables.to_markdown("t", t)
    settings = {r["Setting"] for r in md_rows(md)}
    assert len(settings) == 2
    note = next(line for line in md.splitlines() if line.startswith("- Setting "))
    assert "batch_size=32 (vs absent)" in note and "most common" in note and "method." not in note


def test_cost_details_table_has_every_cost_figure_with_units(tmp_path):
    extra = dict(est_train_mem_growth_bytes=50 * 2**20, mem_measured_over_estimated_ratio=2.5, peak_train_reserved_bytes=2**30,
                 train_samples_per_s_median=90.0, step_time_ms_p10=90.0, step_time_ms_p90=120.0, train_tokens_per_s_p10=2500.0,
                 train_tokens_per_s_p90=3500.0, flops_per_step=2.5e10, peak_flops_per_s=4.3e11, latency_ms_base=10.0,
                 latency_ms_unmerged=11.0, latency_ms_merged=10.1)
    recs = [fx.record("lora", **extra), fx.record("houlsby", r=None, targets=None, reduction_factor=16, can_merge=False,
                                                   **{**extra, "latency_ms_merged": None})]
    t = groups_of(fx.write_all(tmp_path, recs, broken=False))[("minilm", "synth")]
    rows = {r["Method"]: r for r in md_rows(tables.to_markdown("t", t, details=True))}
    lora = rows["lora"]
    assert lora["Est. train mem (MiB)"] == "50.0" and lora["Measured / est. mem (×)"] == "2.50"
    assert lora["Peak reserved (MiB)"] == "–"  # CUDA-only figure, CPU run
    assert lora["Train samples/s (samples/s)"] == "90.0" and lora["Step time p10 (ms)"] == "90.0" and lora["Step time p90 (ms)"] == "120.0"
    assert lora["Train tok/s p10 (tokens/s)"] == "2,500" and lora["Train tok/s p90 (tokens/s)"] == "3,500"
    assert lora["FLOPs/step (GFLOP)"] == "25.0" and lora["Peak FLOP/s (TFLOP/s)"] == "0.43"
    assert lora["Train time (s)"] == "10.0" and lora["Eval time (s)"] == "–"
    assert (lora["Latency base (ms)"], lora["Latency unmerged (ms)"], lora["Latency merged (ms)"]) == ("10.00", "11.00", "10.10")
    assert rows["houlsby"]["Latency merged (ms)"] == "n/a (cannot merge)"
    csv_row = next(csv.DictReader(io.StringIO(tables.to_csv(t))))
    # one name from the record to the CSV: every measured field under its record path
    for col in ("cost.est_train_mem_growth_bytes", "cost.mem_measured_over_estimated_ratio", "cost.peak_train_reserved_bytes",
                "cost.train_samples_per_s_median", "cost.step_time_ms_p10", "cost.step_time_ms_p90", "cost.train_tokens_per_s_p10",
                "cost.train_tokens_per_s_p90", "cost.flops_per_step", "cost.peak_flops_per_s", "timing.train_s", "timing.eval_s",
                "cost.latency_ms_base", "cost.latency_ms_unmerged", "cost.latency_ms_merged", "setting", "device"):
        assert col in csv_row, col
    assert float(csv_row["cost.mem_measured_over_estimated_ratio"]) == 2.5
    tex = tables.to_latex("t", t, details=True)
    assert "Peak FLOP/s (TFLOP/s)" in tex and len(re.split(r"(?<!\\)&", tex_rows(tex)[0])) == len(tables.detail_columns())


def test_single_seed_table_says_untested(groups):
    md = tables.to_markdown("t", groups[("tiny-llama", "synth")])
    rows = md_rows(md)
    assert tables.SINGLE_SEED_NOTE in md and rows and not any("†" in cell for r in rows for cell in r.values())
    row = {r["Method"]: r for r in rows}["lora"]
    assert row["accuracy (primary) (%)"] == "60.0 (n=1)"


def test_best_rows_is_direction_aware(minilm):
    col = {c.header: c for c in tables.main_columns(minilm)}
    best_acc = tables.best_rows(minilm, col["accuracy (primary) (%)"])
    best_step = tables.best_rows(minilm, col["Step time (ms)"])
    assert [minilm.iloc[i]["method"] for i in best_acc] == ["full_ft"]
    assert len(best_step) == 12  # all tied: every one is best


def tex_rows(tex: str) -> list[str]:
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    return [l for l in body.strip().splitlines() if l.strip()]


def test_latex_parses_balanced_and_consistent(minilm):
    tex = tables.to_latex("minilm / synth_task", minilm)
    stripped = re.sub(r"\\[{}]", "", tex)
    assert stripped.count("{") == stripped.count("}")
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    for line in [header, *tex_rows(tex)]:
        assert line.endswith(r"\\")
        assert len(re.split(r"(?<!\\)&", line)) == len(spec), line
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert r"synth\_task" in tex and r"attn\_qv" in tex and r"full\_ft" in tex
    cells_text = "\n".join([header, *tex_rows(tex)])
    assert re.search(r"(?<!\\)[_%#]", cells_text) is None  # every special escaped
    assert r"\textbf{1,000}" in tex and r"$^\dagger$" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (apt-get install texlive-latex-recommended)")
def test_latex_compiles_with_pdflatex(groups, tmp_path):
    doc = tables.LATEX_PREAMBLE + "\n".join(tables.to_latex(f"{m} / {t}", g, details=d) for (m, t), g in groups.items()
                                             for d in (False, True)) + "\n\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_csv_keeps_raw_numbers_with_units(minilm):
    rows = list(csv.DictReader(io.StringIO(tables.to_csv(minilm))))
    assert len(rows) == 12
    ft = next(r for r in rows if r["method"] == "full_ft")
    assert float(ft["primary_mean"]) == pytest.approx(0.9 + sum(fx.SEED_OFFSET.values()) / 3)
    assert float(ft["metrics.test.accuracy_mean"]) == float(ft["primary_mean"]) and ft["primary_metric"] == "accuracy"
    assert ft["seeds"] == "0;1;2" and "cost.peak_train_mem_growth_bytes" in ft and "cost.latency_overhead_merged_frac" in ft
