"""Read result records, validate them, and flatten them into one pandas DataFrame.

read (files, validation, `load_results`), upgrade (older schemas), identity (what makes a row, an
lr line, a run), rows (a record as columns), words (a record's reasons as a report shows them).
The record's schema and field names come from experiments.record and experiments.fields, which are
stdlib-only: analysis/ never imports torch.
"""
from peftbench.analysis.load.identity import (CONFIG_KEY, GROUP_KEY, LINE_KEY, ROW_KEY, RUN_KEY, TRAINED_KEY, non_method, setting_items,
                                              setting_labels, setting_value, short_hash, trained_items)
from peftbench.analysis.load.read import (READABLE_VERSIONS, Loaded, Problem, find_json_files, load_results, read_record,
                                         skipped_below)
from peftbench.analysis.load.rows import (RESUME_PARTIAL, contended_for, flatten, is_copied, is_timing, machine_label,
                                          measurement_records, measurement_source, resumed_note, timings_contended)
from peftbench.analysis.load.upgrade import upgrade_v1
from peftbench.experiments.record import SCHEMA_VERSION

__all__ = ["CONFIG_KEY", "GROUP_KEY", "LINE_KEY", "TRAINED_KEY", "READABLE_VERSIONS", "ROW_KEY", "RUN_KEY", "SCHEMA_VERSION", "Loaded", "Problem",
           "RESUME_PARTIAL", "contended_for", "find_json_files", "flatten", "is_copied", "is_timing", "load_results", "machine_label", "measurement_records", "measurement_source", "skipped_below",
           "non_method", "read_record", "resumed_note", "setting_items", "setting_labels", "setting_value", "short_hash",
           "timings_contended", "trained_items", "upgrade_v1"]
