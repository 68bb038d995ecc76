"""The roles a method plays in comparisons (conf/method/<name>.yaml, `report.role`): code that
must treat the reference differently branches on its role, never on its name."""

FULL_REFERENCE = "full_reference"  # every weight trains; "% of full FT" is relative to it
LOWER_REFERENCE = "lower_reference"  # a floor (e.g. a linear probe)
BASELINE = "baseline"  # "Δ vs baseline" is against it
REFERENCE_ROLES = (FULL_REFERENCE, LOWER_REFERENCE)  # no adapter: nothing to merge, no adapter latency
