"""Paper figures: every figure kind, drawn from committed records at both column widths, has no
two pieces of text over each other, fits its column, and embeds TrueType fonts in its PDF."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from peftbench.analysis import figures
from peftbench.analysis.load import load_results
from peftbench.analysis.stats import aggregate
from fixtures_analysis.analysis_records import record, write_all

ROOT = Path(__file__).resolve().parents[1]
# the demo (nine methods, serving, forgetting), a study with ranks and lr grids, and GRPO's rewards
FOLDERS = ["results/reference/demo", "results/reference/studies/lora_without_regret", "results/reference/studies/rl_peft_pilot"]


def drawn_texts(fig) -> list[Text]:
    """The pieces of text a reader sees: visible, not empty, and for tick labels only those of
    ticks inside their axis's limits (matplotlib keeps the others, undrawn, where they would be)."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-12 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-12 * abs(hi - lo):
                    hidden |= {id(tick.label1), id(tick.label2)}
    seen = {id(t): t for t in fig.findobj(Text) if t.get_visible() and str(t.get_text()).strip() and id(t) not in hidden}
    return list(seen.values())


def clash(a: Text, ba, b: Text, bb) -> bool:
    """Whether two pieces of text cover each other by more than a pixel. Parallel rotated labels
    (tick labels at 45 degrees) are compared in their own direction: their upright boxes overlap
    where the glyphs do not."""
    w, h = min(ba.x1, bb.x1) - max(ba.x0, bb.x0), min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
    if w <= 1 or h <= 1:
        return False
    if a.get_rotation() == b.get_rotation() and a.get_rotation() % 180:
        th = math.radians(a.get_rotation())
        pa, pb = a.get_transform().transform(a.get_position()), b.get_transform().transform(b.get_position())
        across = abs((pb[0] - pa[0]) * -math.sin(th) + (pb[1] - pa[1]) * math.cos(th))
        lines = (a.get_text().count("\n") + b.get_text().count("\n") + 2) / 2  # each label's half-height, summed
        return across < 0.9 * lines * a.get_fontsize() * a.figure.dpi / 72
    return True


@pytest.mark.slow
@pytest.mark.parametrize("width", sorted(figures.WIDTHS_IN))
def test_every_figure_kind_fits_its_column_with_no_text_over_text_and_truetype_fonts(width, tmp_path, monkeypatch):
    problems, kinds = [], set()
    save = figures._save

    def checked_save(fig, out, name):
        files = save(fig, out, name)  # as saved: after any label thinning (saving closes it)
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        boxes = [(t, t.get_window_extent(renderer)) for t in drawn_texts(fig)]
        problems.extend(f"{name}: {a.get_text()[:40]!r} over {b.get_text()[:40]!r}"
                        for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if clash(a, ba, b, bb))
        png = (out / files[0]).read_bytes()  # the file as saved, not the canvas asked for: its width in the PNG header
        assert int.from_bytes(png[16:20], "big") <= 1.1 * figures.WIDTHS_IN[width] * figures.DPI, name  # to scale by at most 10%
        assert int.from_bytes(png[20:24], "big") <= 9 * figures.DPI, name  # within a page's text height
        kinds.add(name.rsplit("__", 1)[-1])
        return files

    monkeypatch.setattr(figures, "_save", checked_save)
    # the committed folders as PNG alone: PDF export (its font subsetting) is a third of the drawing
    # time, and the overlaps are measured on the canvas, whatever the format
    monkeypatch.setattr(figures, "FORMATS", ("png",))
    # no committed study runs one method on several target sets at one rank: a made-up one does
    targets = write_all(tmp_path / "targets", [record(m, seed=s, r=r, targets=tg, acc=0.6 + 0.05 * i + 0.01 * s)
                                               for s in (0, 1, 2) for i, (m, r, tg) in enumerate(
                                                   [("lora", 8, "attn_qv"), ("lora", 8, "all_linear"), ("dora", 8, "attn_qv"),
                                                    ("dora", 8, "all_linear"), ("full_ft", None, None)])], broken=False)
    for folder in [*(ROOT / f for f in FOLDERS), targets]:
        if folder == targets and width == "single":  # the PDFs' fonts, checked once: at the narrow width, on the small folder
            monkeypatch.setattr(figures, "FORMATS", ("png", "pdf"))
        loaded = load_results([str(folder)])
        figures.figures_for(loaded.ok, aggregate(loaded.ok), tmp_path / "out" / folder.name, width)
    assert {"metric_vs_params", "metric_vs_memory", "metric_vs_rank", "metric_vs_lr", "learning_vs_forgetting", "target_sets",
            "throughput", "latency", "serving", "loss", "reward"} <= kinds, kinds
    assert not problems, "\n".join(problems[:20])
    # Type 42: the TrueType program embedded (FontFile2), as a CID font; never Type 3
    if width == "single":
        pdf = next((tmp_path / "out" / targets.name).rglob("*__loss.pdf")).read_bytes()
        assert b"/FontFile2" in pdf and b"/CIDFontType2" in pdf and b"/Type3" not in pdf
