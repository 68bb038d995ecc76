"""Claims in words: each verdict's line and reason, and the claims page in Markdown."""
from __future__ import annotations

import math
import re
from typing import Mapping



from peftbench.analysis.verdicts import CANNOT_TELL, FAILS, HOLDS, INVALID
from peftbench.analysis.claims.core import ClaimResult, ConditionResult, Evidence, NO_DATA

def name_settings(text: str, labels: Mapping[str, str]) -> str:
    """`setting=5fc21d` -> `setting=5fc21d (task.n_train=250)`: the keys that set it apart."""
    return re.sub(r"setting=([0-9a-f]{6})\b", lambda m: m.group(0) + (f" ({labels[m.group(1)]})" if labels.get(m.group(1)) else ""), text)


def add_data_hint(result: ClaimResult) -> None:
    """'not enough data' names the studies (conf/study/*.yaml) whose sweeps supply the claim."""
    from peftbench.analysis.studies import studies_for_claim

    names = studies_for_claim(result.id)
    hint = f"data: peftbench reproduce {' or '.join(names)}" if names else "no study in conf/study/ lists this claim"
    for c in result.conditions:
        if c.verdict == NO_DATA:
            c.note = f"{c.note}; {hint}" if c.note else hint


def stats_suffix(evidence: Evidence) -> str:
    """Estimate, 95% CI, p and n where the evidence text does not already say them."""
    st = evidence.stats
    if not st or "95% CI" in evidence.text:
        return ""
    ci = "–" if math.isnan(st["ci_low"]) else f"[{st['ci_low']:.4g}, {st['ci_high']:.4g}]"
    p = "untested" if math.isnan(st["p"]) else f"{st['p']:.3g}"
    return f" [diff {st['estimate']:.4g}, 95% CI {ci}, p {p}, n={int(st['n'])} seeds]"


def point_text(evidence: Evidence) -> str:
    """What the point estimate alone would say: shown, never deciding."""
    return f"point estimate {'inside' if evidence.holds else 'outside'} the claim's region"


def evidence_line(e: Evidence) -> str:
    """One configuration: where, the data, and its verdict with the reason."""
    d = e.decision
    why = d.reason if d else ""
    return f"{e.where}: {e.text}{stats_suffix(e)} → **{e.verdict}**: {why}" + ("" if e.not_applicable else f" ({point_text(e)})")


def condition_line(c: ConditionResult, said: str = "") -> str:
    """One condition in a line; a note already `said` in the claim's reason is not repeated."""
    note = f" ({c.note})" if c.note and c.note not in said else " (the claim's reason)" if c.note else ""
    return f"`{c.check}`" + (f" ({c.spec})" if c.spec else "") + f": **{c.verdict}**" + note


def claim_reason(r: ClaimResult) -> str:
    """The claim's verdict in words, in one line: the evidence that decided it."""
    if r.verdict == INVALID:
        return "; ".join(c.note for c in r.conditions if c.note)
    evidence = [e for c in r.conditions for e in c.evidence]
    if r.verdict == HOLDS:
        held = [e for e in evidence if e.verdict == HOLDS]
        worst = max((e.decision.p_holm for e in held if e.decision and not math.isnan(e.decision.p_holm)), default=math.nan)
        p = f", largest Holm-corrected p {worst:.3g}" if not math.isnan(worst) else ""
        return f"every interval that applies lies where the claim holds ({len(held)} configuration(s){p})"
    for want in (FAILS, CANNOT_TELL):
        hit = next((e for e in evidence if e.verdict == want), None)
        if hit is not None:
            return f"{hit.where}: {hit.decision.reason}"
    notes = [c.note for c in r.conditions if c.note] + [e.not_applicable for e in evidence if e.not_applicable]
    return "; ".join(dict.fromkeys(notes)) or "no runs"


VERDICT_RULE = ("Verdicts are read from the 95% intervals, never from the point estimate: **holds** (every interval lies where "
                "the claim holds), **fails** (an interval lies wholly outside it), **cannot tell** (an interval reaches across a bound, "
                "one that clears it does not once corrected for the report's tests, or there is none: one seed, or one "
                "measurement copied between seeds) or **not applicable** (no runs inside the "
                "claim's regime, runs that did not learn, an lr pick on the edge of its grid, or no runs at all; the reason is "
                "given). p-values are Holm-corrected over every configuration this report judges; each verdict gives its minimum "
                "detectable effect (80% power) and, for a cannot tell, the seeds that would decide it at the observed spread. "
                "Tolerances are the claims' own, fixed in conf/claims/*.yaml before looking.")


def family_size(results: list[ClaimResult]) -> int:
    return sum(1 for r in results for c in r.conditions for e in c.evidence
               if e.decision is not None and not math.isnan(e.decision.p_raw))


def to_markdown(results: list[ClaimResult]) -> str:
    lines = ["# Claims check", "",
             "Each claim from the literature, declared in conf/claims/*.yaml, checked against these runs.",
             f"{VERDICT_RULE} Corrected over {family_size(results)} tested configurations.", "",
             "| Claim | Source | Verdict | Why |", "|---|---|---|---|"]
    lines += [f"| {r.id}: {r.statement} | {r.source} | **{r.verdict}** | {_cell(claim_reason(r))} |" for r in results]
    for r in results:
        lines += ["", f"## {r.id}: {r.verdict}", "", f"*{r.statement}* ({r.source}; {r.file})", ""]
        if r.regime:
            lines += [f"Regime of the claim: {r.regime}", ""]
        if r.disagreement():
            lines += [f"**{r.disagreement()}**", ""]
        for c in r.conditions:
            lines.append(f"- {condition_line(c)}")
            lines += [f"  - {evidence_line(e)}" for e in c.evidence]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
