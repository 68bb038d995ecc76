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

from analysis import tables  # noqa: E402
from analysis.load import load_results  # noqa: E402
from analysis.stats import aggregate  # noqa: E402


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    loaded = load_results([fx.write_all(tmp_path_factory.mktemp("results"))])
    return dict(tables.table_groups(aggregate(loaded.ok)))


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
    keys = list(zip(minilm["method"], minilm["rank"], minilm["targets"]))
    assert len(keys) == len(set(keys)) == 12
    assert keys[0] == ("full_ft", "-", "-")  # reference first


def test_every_header_has_a_unit_and_a_legend():
    for c in tables.COLUMNS[7:]:  # after the label columns
        assert "(" in c.header or c.header == "Mem kind", c.header
    legend = tables.markdown_legend()
    assert all(f"**{c.header}**" in legend for c in tables.COLUMNS)


def test_markdown_values_bolding_and_dagger(minilm):
    rows = {(r["Method"], r["Rank"], r["Targets"]): r for r in md_rows(tables.to_markdown("t", minilm))}
    ft = rows[("full_ft", "-", "-")]
    assert ft["Accuracy (%)"].startswith("**90.2 ± 0.8 (n=3)")  # highest accuracy: bold
    assert ft["Precision"] == "bf16"
    assert ft["% of full FT (%)"] == "100.0"  # the reference itself is never bolded
    assert rows[("linear_probe", "-", "-")]["Trainable params (count)"] == "**1,000**"  # lower is better
    assert rows[("rslora", "16", "attn_qv")]["% of full FT (%)"].startswith("**")
    dora = rows[("dora", "8", "attn_qv")]
    assert "†" in dora["Accuracy (%)"] and "+3.0 (p=" in dora["Δ acc vs LoRA (pp)"]
    assert rows[("houlsby", "rf16", "-")]["Latency overhead merged (%)"] == "n/a (cannot merge)"
    assert rows[("lora", "8", "attn_qv")]["Latency overhead unmerged (%)"] == "+10.0 ± 5.0"
    assert rows[("lora", "8", "attn_qv")]["Peak train mem (MiB)"] == "101.1"


def test_single_seed_table_says_untested(groups):
    md = tables.to_markdown("t", groups[("tiny-llama", "synth")])
    assert tables.SINGLE_SEED_NOTE in md and "†" not in md.split("- ")[0]
    row = {r["Method"]: r for r in md_rows(md)}["lora"]
    assert row["Accuracy (%)"] == "60.0 (n=1)"


def test_best_rows_is_direction_aware(minilm):
    col = {c.header: c for c in tables.COLUMNS}
    best_acc = tables.best_rows(minilm, col["Accuracy (%)"])
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
    doc = tables.LATEX_PREAMBLE + "\n".join(tables.to_latex(f"{m} / {t}", g) for (m, t), g in groups.items()) + "\n\\end{document}\n"
    (tmp_path / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_csv_keeps_raw_numbers_with_units(minilm):
    rows = list(csv.DictReader(io.StringIO(tables.to_csv(minilm))))
    assert len(rows) == 12
    ft = next(r for r in rows if r["method"] == "full_ft")
    assert float(ft["accuracy_mean_frac"]) == pytest.approx(0.9 + sum(fx.SEED_OFFSET.values()) / 3)
    assert ft["seeds"] == "0;1;2" and "peak_mem_bytes" in ft and "latency_overhead_merged_frac" in ft
