"""Benchmark: the demo build in process vs on datatrove's local executor (2 and 4 tasks) vs on Slurm (issue 21).

The same recipe (``recipes/data/demo.yaml``, the embedded SmolLM2 on CPU) is built four ways, each into a fresh
folder, in this order: in process; ``--executor.kind local --executor.tasks 2``; the same with 4 tasks; and
``--executor.kind slurm --executor.tasks 4 --wait`` on a one-node Slurm cluster that this script starts from
Debian's packages (``make slurm``) the way the tests do. Every variant must give the in-process build's parquet
files byte for byte (checked, and said in the table). The overhead per task is (wall time - in-process wall time) /
tasks: what splitting costs on a machine whose 2 cores the model already fills (a model load per task, process
start, scheduling), not a speed-up, which needs more machines.

    HF_HUB_OFFLINE=1 python bench/executor_overhead.py            # writes RESULTS.md section executor_overhead
    HF_HUB_OFFLINE=1 python bench/executor_overhead.py --max-papers 6 --no-write
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's Slurm cluster starter
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, spread, start_run  # noqa: E402

WILDSCI = str(Path(sys.executable).parent / "wildsci")
VARIANTS = (
    ("in process", []),
    ("local, 2 tasks", ["--executor.kind", "local", "--executor.tasks", "2", "--executor.workers", "2"]),
    ("local, 4 tasks", ["--executor.kind", "local", "--executor.tasks", "4", "--executor.workers", "2"]),
    ("Slurm, 4 tasks", ["--executor.kind", "slurm", "--executor.tasks", "4", "--executor.workers", "2", "--wait"]),
)


def parquet(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "data").glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "data" / "demo.yaml"))
    ap.add_argument("--max-papers", type=int, default=None, help="a smaller build (default: the whole demo corpus)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of all four variants, interleaved (default 2)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--allow-dirty", action="store_true")
    args = ap.parse_args()
    run = start_run(args.allow_dirty, write=not args.no_write)
    from slurm_fixtures import _stop, start_cluster

    with tempfile.TemporaryDirectory(prefix="wildsci-bench-exec-") as tmp:
        cluster = start_cluster(Path(tmp) / "slurm")
        env = {**os.environ, **cluster.env}
        try:
            walls: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
            identical: dict[str, bool] = {name: True for name, _ in VARIANTS}
            reference = None
            for round_ in range(args.repeats):  # interleaved, so a drift in the machine's speed hits every variant
                for name, extra in VARIANTS:
                    out = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}_{round_}"
                    cmd = [WILDSCI, "build", args.recipe, "--output-dir", str(out), *extra]
                    if args.max_papers:
                        cmd += ["--max_papers", str(args.max_papers)]
                    t0 = time.monotonic()
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                    wall = time.monotonic() - t0
                    if proc.returncode != 0:
                        sys.exit(f"bench: {name} failed: {proc.stderr.strip().splitlines()[-1]}")
                    got = parquet(out)
                    reference = reference if reference is not None else got
                    identical[name] &= got == reference
                    walls[name].append(wall)
                    print(f"round {round_ + 1}, {name}: {wall:.1f} s", flush=True)
            rows = []
            base = statistics.median(walls[VARIANTS[0][0]])
            for name, extra in VARIANTS:
                tasks = int(extra[extra.index("--executor.tasks") + 1]) if extra else 1
                per_task = "-" if not extra else f"{(statistics.median(walls[name]) - base) / tasks:+.1f} s"
                rows.append([name, spread(walls[name], "{:.1f} s"), per_task, "yes" if identical[name] else "NO"])
        finally:
            _stop(cluster.procs)
    table = markdown_table(
        ["build", "wall time (min / median / max)", "overhead per task (medians)", "parquet identical to in process"],
        rows,
    )
    body = (
        f"{table}\n\n{args.repeats} round(s) of the four variants, interleaved in the order shown, each build into a "
        "fresh folder (no call cache shared); every build of every round compared with the first in-process one. "
        f"Recipe: `{Path(args.recipe).relative_to(ROOT) if Path(args.recipe).is_relative_to(ROOT) else args.recipe}`"
        + (f" with `--max_papers {args.max_papers}`" if args.max_papers else "")
        + ". The machine has 2 cores, which one model already fills: the executors cannot be faster here, and the "
        "overhead per task is what a task costs (its own model load, process start, Slurm's scheduling), to be "
        "weighed against the tasks' share of a real cluster. "
        # two ranks at a time (workers 2), each with torch's threads (one per core): the run's own load, not others'
         + run.load_note(own_threads=2 * (os.cpu_count() or 1))
    )
    if args.no_write:
        print(body)
    else:
        run.write("executor_overhead", "The demo build on datatrove's executors: in process vs local vs Slurm", body)
        print("bench: wrote section executor_overhead of bench/RESULTS.md")


if __name__ == "__main__":
    main()
