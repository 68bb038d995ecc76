"""The shared lock every peftbench process holds on a results folder while it may write there."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from peftbench.experiments.sweep.cleanup import clean_stale_tmp

LOCK_NAME = ".peftbench.lock"


@contextmanager
def results_lock(results_dir: str | Path) -> Iterator[bool]:
    """Hold a shared lock on the results dir while runs may write there; yields whether this
    process found no other holder (then every temp file in the dir is from a dead writer)."""
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except OSError:
            alone = False
        if alone:
            clean_stale_tmp(d, alone=True)
        fcntl.flock(fd, fcntl.LOCK_SH)  # downgrade (or wait for a cleaner to finish)
        if not alone:
            clean_stale_tmp(d, alone=False)
        yield alone
    finally:
        os.close(fd)  # releases the lock



@contextmanager
def held_locks(dirs: Sequence[str]) -> Iterator[None]:
    if not dirs:
        yield
        return
    with results_lock(dirs[0]):
        with held_locks(dirs[1:]):
            yield
