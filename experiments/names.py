"""Names a user typed, against the names that exist: "did you mean". Standard library only, so
that every command (`report`, `reproduce --list`, `--version`) can use it without importing torch."""
from __future__ import annotations

import difflib


def did_you_mean(name: str, known: list[str], prefix: str = "") -> str:
    """`; did you mean lora?` for a name that differs from a known one in case, by a hub
    organisation (`Qwen/Qwen2.5-0.5B` is `qwen2.5-0.5b`) or by a typo; '' when nothing is close.
    A name of two or three letters needs a looser match (`rr` is 0.67 like `r`); a one-letter
    name, an exact one (`r` is as like `lr` as `rr` is like `r`)."""
    lower = {k.lower(): k for k in known}
    bare = name.rsplit("/", 1)[-1].lower()
    hit = lower.get(name.lower()) or lower.get(bare)
    cutoff = 0.6 if 2 <= len(bare) <= 3 else 0.75
    close = [hit] if hit else [lower[k] for k in difflib.get_close_matches(bare, list(lower), n=3, cutoff=cutoff)]
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
