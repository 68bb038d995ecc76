"""A torchrun worker (experiments/distributed.py starts one per device): run the resolved config
that `launch` wrote, as this rank."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from peftbench.experiments.distributed import stop
from peftbench.experiments.quiet import quiet
from peftbench.experiments.run import execute, prepare
from peftbench.experiments.signals import Interrupted
from peftbench.methods.base import ConfigError


def main(argv: list[str] | None = None) -> int:
    """A torchrun worker: run the resolved config written by `launch`."""
    quiet()
    argv = list(sys.argv[1:] if argv is None else argv)
    config = json.loads(Path(argv[0]).read_text())
    try:
        plan = prepare(config)
    except ConfigError as e:
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2
    try:
        rec = execute(plan)
    except Interrupted as e:
        return 128 + e.signum
    finally:
        stop()
    # only rank 0's outcome is the run's; another rank fails the launch only when it failed itself
    return 0 if rec.get("status") == "ok" or (plan.world.rank > 0 and rec.get("status") != "failed") else 1


if __name__ == "__main__":
    sys.exit(main())
