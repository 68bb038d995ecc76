#!/usr/bin/env python
"""Measured sweep scaling on this machine: wall time of a sweep with 1 and with N parallel jobs
(joblib), parallel efficiency, and how sweep cost grows with the number of runs.

    python scripts/scaling.py                          # methods preset, minilm, 150 steps, 1 vs 2 jobs
    python scripts/scaling.py --steps 1 --methods lora,linear_probe --sizes 1,2 --model tiny-llama   # smoke test

Every measurement writes to a fresh results folder (skip-if-done would otherwise skip the runs).
Parallel efficiency = T(1 job) / (jobs x T(jobs)). Run it on an otherwise idle machine: other
load on the cores makes both numbers meaningless. Prints a table and writes --out (JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = "full_ft,linear_probe,lora,qlora,dora,rslora,loraplus,houlsby,pfeiffer"


def sweep(methods: list[str], jobs: int, args: argparse.Namespace) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="peftbench-scaling-") as tmp:
        cmd = [sys.executable, "-m", "peftbench", "run", "-m", f"method={','.join(methods)}", f"model={args.model}",
               f"steps={args.steps}", f"measure.latency={str(args.latency).lower()}", "progress=false", f"results_dir={tmp}"]
        if jobs > 1:
            cmd += ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(f"sweep failed ({' '.join(cmd)}):\n{(out.stdout + out.stderr)[-3000:]}")
        recs = [json.loads(p.read_text()) for p in Path(tmp).glob("*.json")]
    ok = [r for r in recs if r["status"] == "ok"]
    return {"runs": len(methods), "jobs": jobs, "wall_s": wall, "ok": len(ok),
            "sum_run_total_s": sum(r["timing"]["total_s"] for r in ok),
            "sum_train_s": sum(r["timing"]["train_s"] for r in ok)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=METHODS, help="the sweep measured for parallelism (default: the methods preset)")
    ap.add_argument("--jobs", default="1,2", help="parallel job counts to compare")
    ap.add_argument("--sizes", default="1,3,9", help="sweep sizes (first N methods) for the cost-growth series, with 1 job")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--latency", action="store_true", help="also measure latency in every run (default off)")
    ap.add_argument("--out", default="scaling.json")
    args = ap.parse_args()
    methods = args.methods.split(",")
    jobs = [int(j) for j in args.jobs.split(",")]
    sizes = [int(n) for n in args.sizes.split(",")]
    print(f"cores: {len(os.sched_getaffinity(0))}, model {args.model}, steps {args.steps}, load avg {os.getloadavg()[0]:.2f}")

    par = []
    for j in jobs:
        r = sweep(methods, j, args)
        par.append(r)
        print(f"  {r['runs']} runs x {j} job(s): {r['wall_s']:.1f} s wall")
    base = next(r for r in par if r["jobs"] == 1)
    print(f"\nparallelism ({len(methods)} runs)\n{'jobs':>5} {'wall s':>8} {'speedup':>8} {'efficiency':>10}")
    for r in par:
        r["speedup"] = base["wall_s"] / r["wall_s"]
        r["efficiency"] = r["speedup"] / r["jobs"]
        print(f"{r['jobs']:>5} {r['wall_s']:>8.1f} {r['speedup']:>8.2f} {r['efficiency']:>10.0%}")

    growth = []
    pool = (methods * (max(sizes) // len(methods) + 1))
    for n in sizes:
        subset = list(dict.fromkeys(pool[:n])) if n <= len(methods) else methods
        r = base if n == len(methods) and subset == methods else sweep(subset, 1, args)
        growth.append(r)
    print(f"\ncost growth (1 job)\n{'runs':>5} {'wall s':>8} {'s/run':>7} {'overhead s':>10}")
    for r in growth:
        r["s_per_run"] = r["wall_s"] / r["runs"]
        r["overhead_s"] = r["wall_s"] - r["sum_run_total_s"]  # process start, Hydra, imports, skips
        print(f"{r['runs']:>5} {r['wall_s']:>8.1f} {r['s_per_run']:>7.1f} {r['overhead_s']:>10.1f}")
    if len(growth) >= 2:
        a, b = growth[0], growth[-1]
        slope = (b["wall_s"] - a["wall_s"]) / max(1, b["runs"] - a["runs"])
        print(f"marginal cost: {slope:.1f} s per extra run; fixed cost: {a['wall_s'] - slope * a['runs']:.1f} s per sweep")
    Path(args.out).write_text(json.dumps({"parallel": par, "growth": growth, "args": vars(args)}, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
