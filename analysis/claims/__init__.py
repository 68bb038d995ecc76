"""Check published claims, declared as data in conf/claims/*.yaml, against the results.

A claim is a YAML mapping (a file may hold one mapping or a list of them):

    id: dora_ge_lora
    statement: DoRA matches or beats LoRA at the same rank.
    source: Liu et al. 2024, DoRA
    where: {precision: bf16}        # optional equality filters on run columns
    conditions:                     # all must hold (or put one condition's keys at top level)
      - check: metric_ge_with_tolerance
        method: dora                # or methods: [a, b]
        baseline: lora
        metric: primary             # the task's primary metric, or any run column by its record name
        tolerance: 0.01             # required: stated before looking at results

Metric names are the report's column names, which are the record's own: `primary` (the task's
primary metric, whatever it is), `metrics.test.<name>`, `cost.weight_bytes`, ... (see
experiments.fields). The checks are a fixed vocabulary, one function each, registered by name with
@check (core.py): the basic ones in basic.py, those that tune the lr or match partners in
kinds.py. A new claim is a new YAML entry, not new code; a new kind of check is one decorated
function.

Modules, each with one job: core (results, shared helpers, the registry), spec (reading and
checking claim files), basic and kinds (the checks), evaluate (a claim against the runs),
render (verdicts in words).
"""
# the checks register themselves on import; spec and evaluate read the registry
from peftbench.analysis.claims import basic, kinds  # noqa: F401  (registration)
from peftbench.analysis.claims.core import (CHECKS, CLAIMS_DIR, INF, NEEDS_BASELINE, NEEDS_RANGE, NO_DATA, ClaimResult,
                                           ConditionResult, Evidence, check, observed)
from peftbench.analysis.claims.evaluate import evaluate_all, evaluate_claim
from peftbench.analysis.claims.render import (VERDICT_RULE, claim_reason, condition_line, evidence_line, family_size,
                                             name_settings, to_markdown)
from peftbench.analysis.claims.spec import claim_files, config_keys, known_settings, load_claims, setting_key_problems
from peftbench.analysis.verdicts import CANNOT_TELL, FAILS, HOLDS, INVALID, NOT_APPLICABLE

__all__ = ["CANNOT_TELL", "CHECKS", "CLAIMS_DIR", "FAILS", "HOLDS", "INF", "INVALID", "NEEDS_BASELINE", "NEEDS_RANGE",
           "NOT_APPLICABLE", "NO_DATA", "VERDICT_RULE", "ClaimResult", "ConditionResult", "Evidence", "check",
           "claim_files", "claim_reason", "condition_line", "config_keys", "evaluate_all", "evaluate_claim",
           "evidence_line", "family_size", "known_settings", "load_claims", "name_settings", "observed",
           "setting_key_problems", "to_markdown"]
