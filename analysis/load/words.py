"""A record's reasons as a report shows them. Records keep an unexpected error's own text (the
exception's type and message), which is what someone debugging the run needs; a report is read by
others, and shows the suite's words instead: the part that failed, the kind of error, and where
the message is kept."""
from __future__ import annotations

import re

# `ValueError: ...`, `rank 1: RuntimeError: ...`, `failed: KeyError: ...`, `SystemExit(1)`: an
# exception's name where a reason begins or after a `rank N:` / `failed:` lead
_RAW = re.compile(r"^(?P<lead>(?:rank \d+: )?(?:failed: )?)(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s|\(|$)")
_RANKS = re.compile(r"; (?=rank \d+: )")
# the suite's own refusals carry a message written for a reader: kept, without the class name
_WORDED = ("ConfigError",)
# failures whose message says something a reader can act on, said in words
_KNOWN = (("out of memory", "ran out of memory"),)


def in_words(reason: object, where: str) -> str:
    """`reason` (a record's `error`, each rank's joined by "; rank N: ", or one part's
    `serving.skipped` entry) with every raw exception replaced by words that name its kind and
    `where` its message is kept in the record. An exception's message may hold "; " itself: only
    a rank's lead starts another reason."""
    parts = []
    for part in _RANKS.split(str(reason or "")):
        m = _RAW.match(part)
        if m is None:
            parts.append(part)
            continue
        name, rest = m["name"].rsplit(".", 1)[-1], part[m.end():]
        if name in _WORDED:
            parts.append(m["lead"] + rest)
        else:
            lead = m["lead"].removesuffix("failed: ")
            known = next((words for text, words in _KNOWN if text in rest.lower()), None)
            parts.append(f"{lead}{known or f'failed with an unexpected {name}'} (its message is in the record's `{where}`)")
    return "; ".join(parts)


def is_raw(text: object) -> bool:
    """Whether `text` still holds a raw exception (what `in_words` replaces)."""
    return any((m := _RAW.match(part)) and m["name"].rsplit(".", 1)[-1] not in _WORDED for part in _RANKS.split(str(text or "")))
