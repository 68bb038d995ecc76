"""`peftbench report` end to end on hand-built records: every output exists, index.html links
only files that exist, bad inputs are named on stderr and in the page, and the page renders in
headless Chromium when it is installed."""
from __future__ import annotations

import base64
import contextlib
import io
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_analysis"))
import analysis_records as fx  # noqa: E402

from peftbench.analysis.figures import pareto_front, style_of  # noqa: E402
from peftbench.analysis.report import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = fx.write_all(tmp_path_factory.mktemp("results"))
    out = tmp_path_factory.mktemp("report")
    return results, out


@pytest.fixture(scope="module")
def built_and_stderr(report):
    results, out = report
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([str(results), "--out", str(out)]) == 0
    return out, err.getvalue()


@pytest.fixture(scope="module")
def built(built_and_stderr):
    return built_and_stderr[0]


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("#"):
                self.refs.append(a[key])

    def handle_data(self, data):
        self.text.append(data)


def parse(out: Path) -> Links:
    p = Links()
    p.feed((out / "index.html").read_text())
    return p


def test_outputs_exist(built):
    for name in ("index.html", "tables.md", "tables.tex", "tables_standalone.tex", "claims.md",
                 "tables/minilm__synth.csv", "tables/tiny-llama__synth.csv",
                 "figures/minilm__synth__bf16__cpu__metric_vs_params.png", "figures/minilm__synth__bf16__cpu__metric_vs_params.pdf",
                 "figures/minilm__synth__bf16__cpu__metric_vs_rank.pdf", "figures/minilm__synth__bf16__cpu__target_sets.png",
                 "figures/minilm__synth__bf16__cpu__loss.png", "figures/minilm__synth__bf16__cpu__latency.png"):
        assert (built / name).is_file(), name


def test_figures_are_embedded_and_every_other_link_exists_and_is_relative(built):
    links = parse(built)
    embedded = [r for r in links.refs if r.startswith("data:image/png;base64,")]
    files = [r for r in links.refs if not r.startswith("data:")]
    assert len(embedded) >= 7  # the page shows its figures without the figures/ folder
    assert base64.b64decode(embedded[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert files and all(not r.startswith(("/", "http", "file:")) for r in files)
    assert [r for r in files if not (built / r).is_file()] == []
    assert not any(r.endswith(".png") for r in files) and sum(r.endswith(".pdf") for r in files) >= 7
    assert "PDF (separate file)" in " ".join(links.text)


def test_index_has_a_cost_details_table_per_model_and_task(built):
    text = " ".join(parse(built).text)
    assert "minilm / synth: cost details" in text and "tiny-llama / synth: cost details" in text
    assert "Peak FLOP/s (TFLOP/s)" in text and "Setting" in text
    md = (built / "tables.md").read_text()
    assert md.count(": cost details") == 2 and "## Cost-details columns" in md


def test_index_lists_failed_skipped_provenance_claims_and_skipped_figures(built):
    text = " ".join(parse(built).text)
    assert "corrupt.json" in text and "no_seed.json" in text and "missing seed" in text
    # the failed run's error (`RuntimeError: CUDA out of memory`) in words, not as the exception's text
    assert "ran out of memory (its message is in the record's `error`)" in text and "RuntimeError" not in text
    assert "abc1234 (dirty)" in text and "AMD EPYC" in text and "torch 2.13.0+cpu" in text
    assert "Dettmers et al. 2023" in text and "holds" in text
    # tiny-llama has one rank and one target set: those figures are skipped with a reason
    assert "tiny-llama / synth / bf16 / cpu: metric vs capacity: no method was run at two or more ranks" in text


def test_bad_inputs_named_on_stderr(built_and_stderr):
    err = built_and_stderr[1]
    assert "corrupt.json" in err and "no_seed.json" in err and "failed run" in err and "not in any mean" in err


def test_empty_results_do_not_crash(tmp_path):
    (tmp_path / "none").mkdir()  # a folder without records (a path that does not exist is an error: test_bad_input)
    assert main([str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 0
    assert "No successful runs" in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.slow
def test_single_seed_report_says_untested(tmp_path):
    res = fx.write_all(tmp_path / "r", fx.second_model_records(), broken=False)
    assert main([str(res), "--out", str(tmp_path / "out")]) == 0
    text = " ".join(parse(tmp_path / "out").text)  # visible text: header tooltips may explain the mark
    assert "single seed: differences untested" in text and "†" not in text


def test_method_styles_come_from_the_method_yaml_and_are_deterministic():
    from peftbench.analysis.meta import method_report

    assert style_of(method_report("lora", fx.record("lora")["config"]["method"])) == ("#0072B2", "o")
    new = method_report("brand_new", {"name": "brand_new"})  # no report block: a stable fallback
    assert style_of(new) == style_of(method_report("brand_new", {"name": "brand_new"})) and new["color"].startswith("#")
    shipped = ("lora", "qlora", "dora", "rslora", "loraplus", "houlsby", "pfeiffer")
    assert len({style_of(method_report(m, fx.record(m)["config"]["method"])) for m in shipped}) == 7
    # a record keeps the colour of the day it ran: a shipped method is drawn in today's, a user's own in its own
    assert method_report("lora", {"report": {"color": "#1f77b4"}})["color"] == "#0072B2"
    assert method_report("my_method", {"report": {"color": "#123456"}})["color"] == "#123456"


def test_every_shipped_method_is_coloured_from_the_colour_blind_safe_palette():
    """Okabe & Ito's palette and a grey; the demo's nine methods, drawn together, nine colours."""
    from peftbench.analysis.meta import PALETTE, method_report, shipped_colour

    colours = {p.stem: shipped_colour(p.stem) for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert len(colours) >= 61 and set(colours.values()) <= set(PALETTE), {k: v for k, v in colours.items() if v not in PALETTE}
    from peftbench.experiments.sweep import preset_jobs

    demo = [o.split("=", 1)[1] for job in preset_jobs("demo") for o in job if o.startswith("method=")]
    assert len(demo) == 9 and len({colours[m] for m in demo}) == 9
    assert method_report("brand_new", {"name": "brand_new"})["color"] in PALETTE  # a user's method without a colour


def test_pareto_front_keeps_only_undominated_points():
    import numpy as np
    x, y = np.array([1, 2, 3, 4]), np.array([0.5, 0.4, 0.8, 0.7])
    assert pareto_front(x, y) == [0, 2]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (Debian package 'chromium')")
def test_index_renders_in_headless_chromium(built, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--window-size=1280,2000", f"--screenshot={shot}", (built / "index.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a real page, not a blank frame


HARNESS = """<!DOCTYPE html><html><body><iframe id='f' src='%s' style='width:1280px;height:900px;border:0'></iframe>
<pre id='out'>pending</pre><script>
document.getElementById('f').addEventListener('load', function () {
  var d = this.contentDocument, w = this.contentWindow, out = {};
  try {
    var t = d.querySelector('table.data'), rows = function () { return Array.from(t.tBodies[0].rows); };
    var visible = function () { return rows().filter(function (r) { return r.style.display !== 'none'; }).length; };
    out.rows = rows().length;
    var heads = Array.from(t.tHead.rows[0].cells);
    var col = heads.findIndex(function (h) { return h.dataset.group === 'quality'; });
    var firstCol = function () { return rows().map(function (r) { return r.cells[col].textContent; }).join('|'); };
    var before = firstCol();
    heads[col].click(); var asc = firstCol(); heads[col].click(); var desc = firstCol();
    out.sorted = asc !== desc || asc !== before;
    out.ascending = rows().map(function (r) { return parseFloat(r.cells[col].textContent); });
    var word = rows()[0].cells[0].textContent.trim();
    var f = t.closest('section').querySelector('input.filter');
    f.value = word; f.dispatchEvent(new w.Event('input'));
    out.filtered = visible(); out.word = word;
    f.value = 'no-such-method-anywhere'; f.dispatchEvent(new w.Event('input')); out.none = visible();
    f.value = ''; f.dispatchEvent(new w.Event('input')); out.all = visible();
    var box = d.querySelector('.tools input[type=checkbox][data-group=cost]');
    out.costColumns = heads.filter(function (h) { return h.dataset.group === 'cost'; }).length;
    if (box) { box.checked = false; box.dispatchEvent(new w.Event('change'));
      out.hidden = heads.filter(function (h) { return h.style.display === 'none'; }).length; }
    out.points = d.querySelectorAll('.pareto svg circle.point').length;
    out.plots = d.querySelectorAll('.pareto').length;
    out.front = d.querySelectorAll('.pareto svg polyline.front').length;
    var sel = d.querySelector('.pareto select.y'); sel.value = '1'; sel.dispatchEvent(new w.Event('change'));
    out.pointsAfterAxis = d.querySelectorAll('.pareto svg circle.point').length;
    out.pageWidth = d.documentElement.scrollWidth;
  } catch (e) { out.error = String(e); }
  document.getElementById('out').textContent = JSON.stringify(out);
});
</script></body></html>"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (Debian package 'chromium')")
@pytest.mark.parametrize("page", ["fixture", "results/reference/demo/report", "results/reference/studies/lora_without_regret/report"])
def test_index_is_explorable_in_headless_chromium(built, tmp_path, page):
    """Sorting and filtering change the rows, column groups hide, the Pareto plot draws and redraws,
    no script error reaches the console, and nothing is cut off at 1280 px: on hand-built records
    and on committed reference reports as `make reference` wrote them."""
    import json
    import re

    harness = tmp_path / "harness.html"
    harness.write_text(HARNESS % ((built if page == "fixture" else ROOT / page) / "index.html").resolve().as_uri())
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0", "--window-size=1300,1000",
           "--virtual-time-budget=15000", "--dump-dom", harness.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r"<pre id=\"out\">(.*?)</pre>", proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    got = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in got, got
    assert got["rows"] >= 3 and got["sorted"], got
    nums = [x for x in got["ascending"] if x == x]
    assert nums == sorted(nums, reverse=True), got  # the second click sorts descending
    assert 1 <= got["filtered"] < got["rows"] and got["none"] == 0 and got["all"] == got["rows"], got
    assert got["costColumns"] >= 1 and got["hidden"] == got["costColumns"], got
    assert got["plots"] >= 1 and got["points"] >= 3 and got["front"] == got["plots"] and got["pointsAfterAxis"] >= 1, got
    assert got["pageWidth"] <= 1280, got
    errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)]
    assert errors == [], errors


@pytest.mark.slow
def test_rank_lines_survive_alpha_scaled_with_rank_and_peft_kwargs_ranks(tmp_path):
    """alpha = 2r makes each rank a different setting; LoHa keeps its rank in peft_kwargs. Both
    are still one line across ranks; two alphas at one rank split into two lines."""
    from peftbench.analysis import figures
    from peftbench.analysis.load import load_results
    from peftbench.analysis.stats import aggregate

    recs = []
    for r in (4, 8, 16):
        lora = fx.record("lora", r=r, acc=0.7 + r / 100)
        lora["config"]["method"]["alpha"] = 2 * r
        loha = fx.record("loha", r=None, targets=None, acc=0.6 + r / 100)
        loha["config"]["method"]["peft_kwargs"] = {"r": r, "alpha": 2 * r, "target_modules": "attn_qv"}
        loha["run_id"] += f"_r{r}"
        recs += [lora, loha]
    agg = aggregate(load_results([fx.write_all(tmp_path / "a", recs, broken=False)]).ok)
    lines = figures._series(agg[agg["capacity_value"].notna()], ["method", "targets", "lr", "protocol", "steps"], "capacity_value")
    assert sorted((k[0], len(g)) for k, g in lines) == [("loha", 3), ("lora", 3)]
    fig = figures.metric_vs_rank(agg, "t", tmp_path / "out", "capacity")
    assert fig.files, fig
    extra = fx.record("lora", r=8, acc=0.9)
    extra["config"]["method"]["alpha"] = 8  # a second alpha at r=8
    extra["run_id"] += "_alpha8"
    agg = aggregate(load_results([fx.write_all(tmp_path / "b", recs + [extra], broken=False)]).ok)
    lines = figures._series(agg[(agg["method"] == "lora")], ["method", "targets", "lr", "protocol", "steps"], "capacity_value")
    # split by full setting: no line passes through r=8 twice (here alpha=8 at r4 and r8 is one line)
    assert sum(len(g) for _, g in lines) == 4 and not any(g["capacity_value"].duplicated().any() for _, g in lines)
    assert sorted(len(g) for _, g in lines) == [1, 1, 2]


@pytest.mark.slow
def test_lr_lines_peak_where_each_configuration_is_best(tmp_path):
    """One line per configuration along its lr grid, full FT included; a configuration run at one
    lr draws no line, and a report with none says why the figure is missing."""
    from peftbench.analysis import figures
    from peftbench.analysis.load import load_results
    from peftbench.analysis.stats import aggregate

    recs = []
    for lr, ft_acc, lora_acc in ((1e-4, 0.95, 0.6), (1e-3, 0.5, 0.9), (1e-2, 0.4, 0.7)):
        for seed in (0, 1):
            ft = fx.record("full_ft", r=None, targets=None, seed=seed, acc=ft_acc + seed / 100, lr=lr)
            lora = fx.record("lora", seed=seed, acc=lora_acc + seed / 100, lr=lr)
            for rec in (ft, lora):
                rec["run_id"] += f"_lr{lr}"
            recs += [ft, lora]
    agg = aggregate(load_results([fx.write_all(tmp_path / "a", recs, broken=False)]).ok)
    lines = figures._series(agg[agg["lr"].notna()], ["method", "capacity", "targets", "protocol", "steps"], "lr")
    peaks = {k[0]: float(g.loc[g["primary_mean"].idxmax(), "lr"]) for k, g in lines}
    assert peaks == {"full_ft": 1e-4, "lora": 1e-3}
    fig = figures.metric_vs_lr(agg, "t", tmp_path / "out", "lr")
    assert fig.files == ["lr.png", "lr.pdf"] and (tmp_path / "out" / "lr.png").stat().st_size > 0
    one_lr = aggregate(load_results([fx.write_all(tmp_path / "b", recs[:2], broken=False)]).ok)
    skipped = figures.metric_vs_lr(one_lr, "t", tmp_path / "out", "lr1")
    assert not skipped.files and "two or more learning rates" in skipped.skipped


def test_learning_vs_forgetting_labels_say_lr_and_configuration():
    from peftbench.analysis import figures
    import pandas as pd

    rows = [("full_ft", "-", "-", "s1", "fixed_lr", 100, 3e-5), ("full_ft", "-", "-", "s1", "fixed_lr", 100, 1e-4),
            ("lora", "r=16", "all_linear", "s1", "fixed_lr", 100, 1e-3), ("lora", "r=2", "all_linear", "s1", "fixed_lr", 100, 1e-3)]
    cols = ["method", "capacity", "targets", "setting", "protocol", "steps", "lr"]
    pts = pd.DataFrame(rows, columns=cols)
    labels = [figures.forgetting_point_label(r, pts) for _, r in pts.iterrows()]
    # full FT has one configuration at two lrs; LoRA two configurations at one lr each
    assert labels == ["lr 3e-05", "lr 0.0001", "r=16 all_linear", "r=2 all_linear"]
    assert figures.forgetting_point_label(pts.iloc[0], pts.iloc[:1]) == ""  # a lone point needs no label
    # two step budgets at one lr each: the steps tell them apart; a searched lr says so
    budgets = pd.DataFrame([("full_ft", "-", "-", "s1", "fixed_lr", 100, 1e-4), ("full_ft", "-", "-", "s1", "fixed_lr", 400, 1e-4),
                            ("full_ft", "-", "-", "s1", "lr_search", 100, float("nan"))], columns=cols)
    assert [figures.forgetting_point_label(r, budgets) for _, r in budgets.iterrows()] == [
        "100 steps", "400 steps", "100 steps lr searched"]
    # paths: full FT's two lrs in lr order; LoRA's two configurations have one point each; step
    # budgets and a search are never joined
    [path] = figures.lr_paths(pd.DataFrame([rows[1], rows[0], *rows[2:]], columns=cols))
    assert list(path["lr"]) == [3e-5, 1e-4]
    assert figures.lr_paths(budgets) == []


@pytest.mark.parametrize("reason, where, shown", [
    ("failed: ValueError: Cannot pass `adapter_names` when DoRA is enabled.", "serving.skipped",
     "failed with an unexpected ValueError (its message is in the record's `serving.skipped`)"),
    ("rank 1: RuntimeError: injected failure on rank 1; rank 0: interrupted by SIGTERM", "error",
     "rank 1: failed with an unexpected RuntimeError (its message is in the record's `error`); rank 0: interrupted by SIGTERM"),
    ("ConfigError: method prefix_tuning cannot run on model minilm; use a causal LM", "error",
     "method prefix_tuning cannot run on model minilm; use a causal LM"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", "error",
     "ran out of memory (its message is in the record's `error`)"),
    ("interrupted by SIGTERM", "error", "interrupted by SIGTERM"),
    ("RuntimeError: shape mismatch; got [2, 3] at /home/u/x.py", "error",  # a message with "; " in it
     "failed with an unexpected RuntimeError (its message is in the record's `error`)"),
    ("the method cannot merge its adapter into the weights", "serving.skipped", "the method cannot merge its adapter into the weights"),
])
def test_a_records_reasons_reach_a_report_in_words(reason, where, shown):
    from peftbench.analysis.load.words import in_words, is_raw

    assert in_words(reason, where) == shown
    assert not is_raw(shown)


def test_a_check_the_records_cannot_answer_says_why_in_words():
    from peftbench.analysis.claims.evaluate import unanswerable

    assert unanswerable(KeyError("model")) == "these records have no `model` field, which this check reads"
    assert unanswerable(ValueError("cannot convert")) == "the check cannot use these records' values (an unexpected ValueError)"
    assert unanswerable(KeyError("['b'] not in index")) == "the check cannot use these records' values (an unexpected KeyError)"
    from peftbench.analysis.claims.core import ClaimProblem, Condition

    with pytest.raises(ClaimProblem, match="the claim gives no `axis`, which check lr_sensitivity needs"):
        Condition({"check": "lr_sensitivity"})["axis"]


def test_no_committed_report_holds_raw_exception_text():
    """Every committed reference report, as `make reference` writes it from the records."""
    import re

    raw = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b: ")
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sorted((ROOT / "results" / "reference").rglob("report/*"))
             if p.suffix in (".md", ".html", ".tex", ".csv") for m in raw.finditer(p.read_text(errors="replace"))]
    assert not found, found[:10]


def test_a_methods_further_configurations_take_colours_no_other_line_has():
    from peftbench.analysis.figures import shade
    from peftbench.analysis.meta import PALETTE

    taken = {"#0072b2", "#000000"}  # LoRA and full FT in one figure
    second = shade("#0072B2", 1, taken)
    taken.add(second.lower())
    third = shade("#0072B2", 2, taken)
    assert second in PALETTE and third in PALETTE and len({second.lower(), third.lower()} | {"#0072b2", "#000000"}) == 4
    assert shade("#0072B2", 0, taken) == "#0072B2"
    assert shade("#0072B2", 1, {c.lower() for c in PALETTE}) == "#0072B2"  # none free: its own, its marker apart


def test_each_model_and_task_shows_its_own_claims_verdicts(built, report):
    """The summary's first table gives each model x task the verdicts of the claims checked on its
    runs alone (as the README's verdict columns do), not the verdicts pooled over every pair."""
    from peftbench.analysis.claims import evaluate_all
    from peftbench.analysis.html import verdicts_here
    from peftbench.analysis.load import load_results
    from peftbench.analysis.report import claims_per_group

    results, _ = report
    ok = load_results([str(results)]).ok
    pairs = sorted({(m, t) for m, t in zip(ok["model"], ok["task"])})
    assert len(pairs) == 2
    every = evaluate_all(ok)
    here = claims_per_group(ok, every, ROOT / "conf" / "claims", None, 0.05)
    assert sorted(here) == pairs
    # a claim needing runs of one pair is "not applicable" in the other pair's cell
    assert [(r.id, r.verdict) for r in here[pairs[0]]] != [(r.id, r.verdict) for r in here[pairs[1]]]
    assert any([r.verdict for r in here[p]] != [r.verdict for r in every] for p in pairs), "no cell differs from the pooled verdicts"
    page = (built / "index.html").read_text()
    summary = page.split("<table class='summary'>", 1)[1].split("</table>", 1)[0]
    for (m, t), got in here.items():  # each pair's row holds its own verdicts
        row = summary.split(f"<td>{m} / {t}</td>", 1)[1].split("</tr>", 1)[0]
        assert row.endswith(f"<td>{verdicts_here(got)}</td>") and got, (m, t, row[-300:])
    assert "no claims checked" not in summary and "pooled over every model and task" in page
    one = claims_per_group(ok[ok["model"] == pairs[0][0]], every, ROOT / "conf" / "claims", None, 0.05)
    assert list(one.values()) == [every]  # one pair: the report's own verdicts, not checked twice
