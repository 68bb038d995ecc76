"""`peftbench report`: tables, figures, statistics, claims and index.html from result records.

Nothing here imports torch: the report must run in seconds on any machine that has the JSON files.
"""
