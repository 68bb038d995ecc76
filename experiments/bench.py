"""`peftbench bench harness|trainer|measure|compile`: overhead benchmarks measured side by side in one run.

harness: the suite's training step (experiments.train.train with its meters) against a bare
         PyTorch loop doing the same forward, backward and optimizer step, on the same model,
         method and batches, alternating in rounds so machine drift hits both alike.
trainer: one whole run through `peftbench run` against the same configuration through
         transformers' Trainer + peft, each in its own process, timed from outside.
compile: one run eager against the same run under torch.compile (compile=true): training time
         with compilation included, steady step time, and how far the losses moved.
measure: a sweep (default: an lr grid of LoRA on MiniLM) with every measurement on
         (measure=full) against the same sweep with measurement off (measure=quick), each from an
         empty results folder and an empty cache, timed from outside. Costs that do not change
         with the lr are measured once, so the ratio is the price of measuring (target <= 1.15).
Each prints its ratio as its last line. These are benchmarks, not tests.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from peftbench.experiments.meters import StepTimer

ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved config a `peftbench run OVERRIDES` would see (for benchmarks and scripts)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


def _setup(config: dict[str, Any]):
    from transformers import get_linear_schedule_with_warmup

    from peftbench.experiments.run import autocast_for, load_for, prepare, seed_everything

    plan = prepare(config)
    torch.set_num_threads(plan.threads)
    seed_everything(int(config["seed"]))
    _, task, model = load_for(plan)
    model = plan.method.wrap(model, plan.info)
    opt = plan.method.optimizer(model, plan.lr, float(config["weight_decay"]))
    sched = get_linear_schedule_with_warmup(opt, 0, 10**9)
    return plan, task, model, opt, sched, autocast_for(plan.device, config["precision"])


def _bare_loop(model, opt, sched, batches, device, autocast, clip) -> None:
    """Forward, backward, clip, step: what any PyTorch loop must do, and nothing else."""
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()


def _wall_per_step(fn, n: int, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - t0) / n


def bench_harness(overrides: list[str], rounds: int = 10, steps_per_round: int = 10) -> float:
    """Wall time of whole loops, so everything the suite adds per step counts: its batch
    iteration, step timer, loss logging, progress line and listeners."""
    from peftbench.experiments.meters import synchronizer
    from peftbench.experiments.progress import Progress
    from peftbench.experiments.train import train

    config = compose_config(overrides)
    plan, task, model, opt, sched, autocast = _setup(config)
    clip, bs, dev = float(config["grad_clip"]), int(config["batch_size"]), plan.device
    sync = synchronizer(dev)
    batches = list(task.train_batches(steps_per_round * rounds * 2 + 5, bs, seed=0))
    _bare_loop(model, opt, sched, batches[:5], dev, autocast, clip)  # warm-up, untimed
    suite, bare, pos = [], [], 5
    for i in range(rounds):
        a, b = batches[pos : pos + steps_per_round], batches[pos + steps_per_round : pos + 2 * steps_per_round]
        timer = StepTimer(dev)
        progress = Progress("bench", len(a), timer, enabled=True)
        progress.every = len(a)  # the line a user would see, printed once per round

        def suite_loop(chunk=a, timer=timer, progress=progress):
            train(model, opt, sched, iter(chunk), dev, autocast, clip, timer, progress)

        def bare_loop(chunk=b):
            _bare_loop(model, opt, sched, chunk, dev, autocast, clip)

        # who goes first alternates, so that neither side always runs on a warmer cache
        if i % 2 == 0:
            suite.append(_wall_per_step(suite_loop, len(a), sync))
            bare.append(_wall_per_step(bare_loop, len(b), sync))
        else:
            bare.append(_wall_per_step(bare_loop, len(b), sync))
            suite.append(_wall_per_step(suite_loop, len(a), sync))
        pos += 2 * steps_per_round
    ratios = [s / b for s, b in zip(suite, bare)]
    s, b = statistics.median(suite), statistics.median(bare)
    print(f"method={config['method']['name']} model={config['model']['name']} batch={bs} len={config['max_length']} "
          f"precision={config['precision']} threads={plan.threads}; {rounds} rounds x {steps_per_round} steps each side, alternating")
    print(f"suite loop {s * 1e3:.2f} ms/step, bare PyTorch loop {b * 1e3:.2f} ms/step (medians over rounds); "
          f"per-round ratios {min(ratios):.3f}..{max(ratios):.3f}")
    ratio = statistics.median(ratios)
    print(f"harness/bare step-time ratio: {ratio:.3f} (target <= 1.03)")
    return ratio


def _timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"peftbench: error: benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def bench_trainer(overrides: list[str]) -> float:
    from peftbench.experiments.precision import resolve_config

    config = compose_config(overrides)
    resolve_config(config)  # both sides compute in what `auto` resolves to here
    with tempfile.TemporaryDirectory() as tmp:
        suite_cmd = [sys.executable, "-m", "peftbench", "run", *overrides, f"results_dir={tmp}", "force=true",
                     "progress=false", "measure.latency=false", "measure.adapter_size=false"]
        ref_cmd = [sys.executable, "-m", "peftbench.experiments.trainer_reference", json.dumps(config)]
        walls: dict[str, list[float]] = {"suite": [], "trainer": []}
        steps: dict[str, list[float]] = {"suite": [], "trainer": []}
        for _ in range(3):  # alternate, three times each: a median of three, not a mean of two
            wall, _ = _timed(suite_cmd, ROOT)
            rec = json.loads(next(Path(tmp).glob("*.json")).read_text())
            walls["suite"].append(wall)
            steps["suite"].append(rec["cost"]["step_time_ms_median"])
            wall, out = _timed(ref_cmd, ROOT)
            walls["trainer"].append(wall)
            steps["trainer"].append(json.loads(out.strip().splitlines()[-1])["step_time_ms_median"])
    med = {k: {"wall": statistics.median(walls[k]), "step": statistics.median(steps[k])} for k in walls}
    print(f"method={config['method']['name']} model={config['model']['name']} steps={config['steps']} batch={config['batch_size']} "
          f"precision={config['precision']}; each side run three times, alternating, medians shown")
    for k in ("suite", "trainer"):
        print(f"{k:8s} step median {med[k]['step']:.2f} ms   whole process {med[k]['wall']:.1f} s")
    step_ratio = med["suite"]["step"] / med["trainer"]["step"]
    wall_ratio = med["suite"]["wall"] / med["trainer"]["wall"]
    print(f"suite/trainer ratios: step {step_ratio:.3f} (target <= 1), wall {wall_ratio:.3f} (target < 1)")
    return step_ratio


MEASURE_DEFAULT = ["method=lora", "steps=100", "lr=1e-4,3e-4,1e-3,3e-3"]


def _sweep_side(overrides: list[str], preset: str, root: Path) -> tuple[float, list[dict[str, Any]]]:
    import os

    results, cache = root / f"results_{preset}", root / f"cache_{preset}"
    env = {**os.environ, "PEFTBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "peftbench", "run", "-m", *overrides, f"measure={preset}", f"results_dir={results}", "progress=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"peftbench: error: benchmark sweep failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    recs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    if not recs or any(r.get("status") != "ok" for r in recs):
        raise SystemExit(f"peftbench: error: benchmark sweep left {len(recs)} records, not all ok: {results}")
    return wall, recs


def bench_measure(overrides: list[str]) -> float:
    overrides = overrides or MEASURE_DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        # off first: a cold page cache then costs the side that is meant to be cheap
        off_wall, off = _sweep_side(overrides, "quick", Path(tmp))
        on_wall, on = _sweep_side(overrides, "full", Path(tmp))
    copied = sum(1 for r in on if (r.get("measurement") or {}).get("costs_from"))
    cached = sum(1 for r in on if (r.get("measurement") or {}).get("base_from_cache"))
    train = {k: sum(r["timing"]["train_s"] for r in recs) for k, recs in (("off", off), ("on", on))}
    print(f"sweep: {' '.join(overrides)}; {len(on)} runs a side, precision={on[0]['precision']}, "
          f"cpu={on[0]['provenance'].get('cpu_model')}; each side from an empty results folder and cache")
    print(f"measurement off (measure=quick): {off_wall:.1f} s whole sweep, training {train['off']:.1f} s")
    print(f"measurement on  (measure=full):  {on_wall:.1f} s whole sweep, training {train['on']:.1f} s; "
          f"{copied} of {len(on)} runs copied their costs, {cached} read the base scores from the cache")
    ratio = on_wall / off_wall
    print(f"on/off ratio: {ratio:.3f} (target <= 1.15)")
    print(amortised(on, off))
    return ratio


def amortised(on: list[dict[str, Any]], off: list[dict[str, Any]], target: float = 1.15) -> str:
    """How the price of measuring splits into what the first run of a configuration pays once and
    what every run pays (its own evaluation-side passes), and so how many runs of one configuration
    bring the ratio within the target."""
    run_s = statistics.mean(r["timing"]["total_s"] for r in off)
    # the price of measuring is the time beside training: training itself varies from run to run
    rest = lambda r: r["timing"]["total_s"] - r["timing"]["train_s"]  # noqa: E731
    off_rest = statistics.mean(rest(r) for r in off)
    extra = sorted(((r["measurement"] or {}).get("costs_from") is not None, rest(r) - off_rest) for r in on)
    once = [e for copied, e in extra if not copied]
    each = [e for copied, e in extra if copied]
    if not once or not each:
        return "amortisation: needs one measuring run and at least one copying run"
    first, later = statistics.mean(once), statistics.mean(each)
    room = (target - 1) * run_s - later
    need = "never (every copying run alone costs more than the target allows)" if room <= 0 else \
        f"{max(1, math.ceil((first - later) / room))} runs of one configuration"
    return (f"measuring costs {first:.1f} s once per configuration and {later:.1f} s in every later run, beside "
            f"{run_s:.1f} s a run with measurement off; ratio <= {target} from {need}")


COMPILE_DEFAULT = ["method=lora", "steps=100"]
COMPILE_TOLERANCE = 1e-2  # largest loss difference (relative) accepted as "the same numbers"


def _run_side(overrides: list[str], root: Path, name: str) -> tuple[float, dict[str, Any]]:
    import os

    results = root / name
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "peftbench", "run", *overrides, "measure=quick", f"results_dir={results}", "progress=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    recs = [json.loads(p.read_text()) for p in results.glob("*.json")]
    if proc.returncode != 0 or len(recs) != 1 or recs[0].get("status") != "ok":
        raise SystemExit(f"peftbench: error: benchmark run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall, recs[0]


def bench_compile(overrides: list[str]) -> float:
    """Eager against torch.compile on one configuration, each in its own process, alternating
    twice. Training time includes compilation (a run pays it); the steady step time excludes it."""
    overrides = overrides or COMPILE_DEFAULT
    sides: dict[str, list[tuple[float, dict[str, Any]]]] = {"eager": [], "compiled": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            for name, flag in (("eager", "false"), ("compiled", "true")):
                sides[name].append(_run_side([*overrides, f"compile={flag}"], Path(tmp), f"{name}{i}"))
    med = {k: {"train": statistics.median(r["timing"]["train_s"] for _, r in v),
               "step": statistics.median(r["cost"]["step_time_ms_median"] for _, r in v),
               "wall": statistics.median(w for w, _ in v)} for k, v in sides.items()}
    eager, comp = sides["eager"][0][1], sides["compiled"][0][1]
    diff = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(eager["loss_curve"], comp["loss_curve"]))
    prim = eager["metrics"]["test"], comp["metrics"]["test"]
    print(f"{' '.join(overrides)}; precision={eager['precision']} threads={eager['provenance']['torch_threads']} "
          f"cpu={eager['provenance'].get('cpu_model')}; each side run twice, alternating, medians shown")
    for k in ("eager", "compiled"):
        print(f"{k:9s} training {med[k]['train']:.1f} s (compilation included)   median step {med[k]['step']:.1f} ms   whole process {med[k]['wall']:.1f} s")
    print(f"largest relative loss difference over the run: {diff:.2e} (tolerance {COMPILE_TOLERANCE:.0e}); test {prim[0]} vs {prim[1]}")
    ratio = med["compiled"]["train"] / med["eager"]["train"]
    same = diff <= COMPILE_TOLERANCE
    print(f"compiled/eager training-time ratio: {ratio:.3f}, step-time ratio {med['compiled']['step'] / med['eager']['step']:.3f}; "
          f"{'same numbers within tolerance' if same else 'numbers differ beyond tolerance'}; "
          f"worth turning on here: {'yes' if ratio < 1 and same else 'no'}")
    return ratio


LAUNCHERS_DEFAULT = ["method=lora", "seed=0,1,2,3", "model=tiny-llama", "steps=20", "precision=fp32",
                     "task.n_train=64", "task.n_validation=16", "task.n_test=16"]


def _launcher_sides() -> dict[str, list[str]]:
    """The launchers this machine can reach, each set to start one run at a time (so that the
    difference to the sum of the runs' own times is what the launcher adds). SLURM only as the
    local cluster of scripts/slurm_local.sh: the results go to a temporary folder of this machine,
    which the nodes of a real cluster could not reach."""
    import os
    import shutil

    from peftbench.experiments.cores import usable_cores

    sides = {"basic (in this process)": []}
    conf = Path(os.environ.get("SLURM_CONF", "/nonexistent"))
    local = conf.is_file() and conf.read_text().startswith("# Generated by scripts/slurm_local.sh")
    if local and shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0:
        sides["slurm (sbatch, job array)"] = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
                                             "hydra.launcher.gpus_per_node=0", "hydra.launcher.array_parallelism=1",
                                             "hydra.launcher.timeout_min=10"]
    if os.environ.get("RAY_ADDRESS"):
        sides["ray_cluster (Ray tasks)"] = ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={os.environ['RAY_ADDRESS']}",
                                           f"hydra.launcher.ray.remote.num_cpus={usable_cores()}"]
    return sides


def bench_launchers(overrides: list[str]) -> float:
    """What each launcher adds per run (submission, start-up, collecting the result): the sweep's
    wall time less the sum of its runs' own time (`timing.total_s`), over the runs."""
    overrides = overrides or LAUNCHERS_DEFAULT
    sides = _launcher_sides()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in sides.items():
            wall, recs = _sweep_side([*overrides, "torch_threads=1", *args], "quick", Path(tmp) / name.split()[0])
            runs = sum(r["timing"]["total_s"] for r in recs)
            rows.append((name, wall, runs, len(recs), (wall - runs) / len(recs)))
    print(f"sweep: {' '.join(overrides)} torch_threads=1; one run at a time under each launcher; "
          f"cpu={recs[0]['provenance'].get('cpu_model')}")
    for name, wall, runs, n, per_run in rows:
        print(f"{name:28s} {wall:6.1f} s whole sweep, runs themselves {runs:6.1f} s: {per_run:5.1f} s added per run")
    missing = [x for x in ("slurm", "ray_cluster") if not any(n.startswith(x) for n, *_ in rows)]
    if missing:
        print(f"not reachable here: {', '.join(missing)} (SLURM: scripts/slurm_local.sh start, then "
              f"SLURM_CONF=/var/tmp/peftbench-slurm/slurm.conf; Ray: RAY_ADDRESS=HOST:PORT of a head on this machine)")
    base = rows[0][4]
    for name, *_, per_run in rows[1:]:
        print(f"{name.split()[0]}/basic added time per run: {per_run / base:.2f}")
    return rows[-1][4]


BENCHES = {"compile": lambda a: bench_compile(a), "harness": lambda a: bench_harness(a), "trainer": lambda a: bench_trainer(a),
           "measure": lambda a: bench_measure(a), "launchers": lambda a: bench_launchers(a)}


ABOUT = {"harness": "the suite's training loop against a bare PyTorch loop on the same model and batches",
         "trainer": "a whole run against the same training through transformers' Trainer",
         "measure": "a run's measurement time, the first run of a cost configuration against the seeds that copy it",
         "compile": "eager against torch.compile, each in its own process, alternating",
         "launchers": "the time each reachable launcher (basic, SLURM, Ray) adds per run to the same sweep"}


def machine_line(overrides: list[str] = ()) -> str:
    """The machine the ratios come from, in one line: CPU, usable cores, the kernel flags that set
    the speed of its matmuls, whether it computes bf16 natively, and the GPU where there is one."""
    from peftbench.experiments.cores import usable_cores
    from peftbench.experiments.machine import BF16_CPU_FLAGS, KERNEL_FLAGS, cpu_flags, cpu_name, may_have_cuda

    flags = [f for f in KERNEL_FLAGS if f in cpu_flags()]
    bf16 = "native bf16" if any(f in cpu_flags() for f in BF16_CPU_FLAGS) else "no native bf16 (emulated: slow)"
    line = f"{cpu_name()}, {usable_cores()} usable cores, flags {' '.join(flags) or 'none of ' + '/'.join(KERNEL_FLAGS)}, {bf16}"
    if may_have_cuda() and not any(o.split("=", 1) == ["device", "cpu"] for o in overrides):  # device=auto trains there
        import torch

        if torch.cuda.is_available():
            line += f"; GPU {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"
    return line


def main(argv: list[str]) -> int:
    usage = f"usage: peftbench bench {'|'.join(BENCHES)} [OVERRIDES...]"
    if argv and argv[0] in {"-h", "--help"}:
        print(usage + "\n\nSide-by-side ratios measured in one run, printed below a line naming the machine (CPU, and GPU\n"
              "where there is one) they ran on (docs/cost.md).\n\noptions:\n" + "\n".join(f"  {name:<10} {what}" for name, what in ABOUT.items())
              + f"\n  {'OVERRIDES':<10} key=value for the runs it compares, as for `peftbench run`")
        return 0
    if not argv or argv[0] not in BENCHES:
        given = f"unknown bench {argv[0]!r}" if argv else "no bench named"
        print(f"peftbench: error: {given}; name one of {', '.join(BENCHES)} (see peftbench bench --help)", file=sys.stderr)
        return 2
    from peftbench.methods.base import ConfigError

    print(f"machine: {machine_line(argv[1:])}", flush=True)  # every ratio below was measured here
    try:
        BENCHES[argv[0]](argv[1:])
    except ConfigError as e:
        print(f"peftbench: error: {e}", file=sys.stderr)
        return 2
    return 0
