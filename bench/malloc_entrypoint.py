"""Benchmark: ``wildsci build`` typed in a plain shell, before and after the kit tuned malloc itself, vs ``make``.

Why this exists: the Makefile exports glibc's ``MALLOC_*`` tunables (bench/RESULTS.md ``malloc_tunables`` shows why:
on a VM that reclaims freed pages, generation spends much of its CPU faulting them in again), but a user who
follows the README stage by stage runs ``wildsci build`` from a shell that never ran ``make``. ``wildsci`` now sets
the same values itself at import (``wildsci.process``: ``mallopt`` in the process, the variables for its children).
This script runs the same small build three ways, one fresh process and output folder per run, interleaved:

- ``shell, no tuning``: no ``MALLOC_*`` variables and ``WILDSCI_MALLOC_TUNING=0`` (what a shell got before);
- ``shell``: no ``MALLOC_*`` variables (what a shell gets now);
- ``make's variables``: the ``MALLOC_*`` values read from the Makefile, exported as ``make`` exports them.

It reports wall time, the build process's kernel and user CPU seconds, minor page faults and peak memory (from
``wait4``), and whether the three settings wrote the same dataset bytes.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/malloc_entrypoint.py             # writes section `malloc_entrypoint`
    HF_HUB_OFFLINE=1 .venv/bin/python bench/malloc_entrypoint.py --papers 2 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from _results import markdown_table, spread, start_run  # noqa: E402

RECIPE = "recipes/data/demo.yaml"


def makefile_malloc() -> dict[str, str]:
    """The ``export MALLOC_* ?= value`` lines of the Makefile: what ``make`` gives its targets."""
    found = dict(re.findall(r"^export (MALLOC_[A-Z_]+) \?= (\d+)$", (ROOT / "Makefile").read_text(), re.M))
    if not found:
        sys.exit("malloc_entrypoint: the Makefile exports no MALLOC_* variable -- nothing to compare against")
    return found


def settings() -> dict[str, dict[str, str]]:
    shell = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "WILDSCI_MALLOC_TUNING"}
    shell.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    return {
        "shell, no tuning (WILDSCI_MALLOC_TUNING=0)": {**shell, "WILDSCI_MALLOC_TUNING": "0"},
        "shell (wildsci tunes malloc itself)": shell,
        "make's variables": {**shell, **makefile_malloc()},
    }


def one_build(env: dict[str, str], papers: int, out: Path) -> dict:
    """``wildsci build`` in a fresh process and output folder: wall time, its own rusage, the dataset's hash."""
    cmd = [sys.executable, "-m", "wildsci.cli", "build", RECIPE, "--max_papers", str(papers), "--output-dir", str(out)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"malloc_entrypoint: the build failed (exit {proc.returncode}):\n{err[-2000:]}")
    digest = hashlib.sha256()
    for f in sorted((out / "data").glob("*.parquet")):
        digest.update(f.read_bytes())
    return {
        "seconds": seconds,
        "kernel_seconds": usage.ru_stime,
        "user_seconds": usage.ru_utime,
        "minor_faults": usage.ru_minflt,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "dataset_sha256": digest.hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--papers", type=int, default=6, help="papers of the built-in corpus the build reads")
    ap.add_argument("--repeats", type=int, default=1, help="builds per setting (min / median / max reported)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch bench/RESULTS.md")
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    args = ap.parse_args()
    if args.repeats < 1 or args.papers < 1:
        ap.error("--repeats and --papers must be >= 1")
    run = start_run(args.allow_dirty, write=not args.no_write)
    envs = settings()
    results: dict[str, list[dict]] = {name: [] for name in envs}
    with tempfile.TemporaryDirectory(prefix="wildsci-malloc-") as tmp:
        for i in range(args.repeats):  # interleaved, so that a change in the machine's load hits every setting
            for k, (name, env) in enumerate(envs.items()):
                results[name].append(r := one_build(env, args.papers, Path(tmp) / f"{i}-{k}"))
                print(f"run {i + 1}/{args.repeats} {name}: {r['seconds']:.1f} s, {r['kernel_seconds']:.1f} s in the "
                      f"kernel, {r['minor_faults']:,} minor faults", flush=True)  # fmt: skip
    base = results[next(iter(envs))]
    rows = []
    for name, rs in results.items():
        ratio = [b["seconds"] / r["seconds"] for b, r in zip(base, rs, strict=True)]
        rows.append([
            name,
            spread([r["seconds"] for r in rs], "{:.1f}"),
            spread(ratio, "{:.2f}"),
            spread([r["kernel_seconds"] for r in rs], "{:.1f}"),
            spread([r["user_seconds"] for r in rs], "{:.1f}"),
            spread([r["minor_faults"] / 1e6 for r in rs], "{:.2f}"),
            spread([r["peak_rss_gib"] for r in rs], "{:.2f}"),
        ])  # fmt: skip
    table = markdown_table(
        ["how `wildsci build` was started", "wall s", "speed-up vs no tuning (paired)", "kernel CPU s",
         "user CPU s", "minor page faults (millions)", "peak RSS GiB"], rows)  # fmt: skip
    hashes = {r["dataset_sha256"] for rs in results.values() for r in rs}
    same = "identical" if len(hashes) == 1 else f"NOT identical ({len(hashes)} different)"
    print("\n" + table + f"\n\ndatasets across all runs: {same}")
    if not args.no_write:
        make_vars = " ".join(f"{k}={v}" for k, v in makefile_malloc().items())
        body = (
            f"Workload: `wildsci build {RECIPE} --max_papers {args.papers}` (embedded SmolLM2-135M generating, "
            f"voting and labelling on the CPU; model already converted), a fresh process and empty output folder "
            f"per run, {args.repeats} run(s) per setting, interleaved. Min / median / max. CPU seconds, faults and "
            "peak RSS: the build process's own (`wait4`). Settings: no `MALLOC_*` variables with "
            "`WILDSCI_MALLOC_TUNING=0` (a shell before the kit tuned malloc itself); no `MALLOC_*` variables (a "
            f"shell now: `wildsci.process` calls `mallopt` at import); the Makefile's `{make_vars}`.\n\n"
            f"{table}\n\n"
            f"Datasets written across all {sum(map(len, results.values()))} runs: {same} (the allocator does not "
            "change arithmetic).\n\n"
            f"Load: {run.load_note(own_threads=len(os.sched_getaffinity(0)))}"
        )
        run.write("malloc_entrypoint", "malloc at every entry point: `wildsci build` from a shell vs `make`", body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
