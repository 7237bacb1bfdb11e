"""Benchmark: glibc malloc's defaults vs the Makefile's ``MALLOC_*`` tunables, on the demo build's dominant cost.

Why this exists: on virtual machines that take freed memory back from the guest (Firecracker with free-page
reporting, as on the 2-core machines this kit is developed on), glibc's defaults hand large freed blocks back to
the kernel (``munmap`` above the mmap threshold, heap trimming above the trim threshold). Generation reallocates
its KV cache at every new token, so every step faults the same pages in again: a third to a half of the CPU time
went to page faults in the kernel. The Makefile therefore exports ``MALLOC_MMAP_THRESHOLD_`` (32 MiB, the most
glibc accepts), ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_``, which keep freed memory in the process. This
script measures what that buys and what it costs (peak memory), and checks that the outputs do not change.

Workload: the question-generation batch of ``recipes/data/demo.yaml`` (its generator settings, the first 16
passages of the built-in corpus, shared prompt prefix), one fresh process per run, the two settings interleaved.
It reads the tunables from its own environment (``make bench`` exports them); the baseline removes them.

    make bench-malloc                                       # writes bench/RESULTS.md section `malloc_tunables`
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824 \\
      HF_HUB_OFFLINE=1 .venv/bin/python bench/malloc_tunables.py --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from _results import markdown_table, spread, start_run  # noqa: E402

TUNABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def child(passages: int) -> None:
    """One timed generation batch; prints one JSON line (seconds, faults, kernel time, peak memory, output hash)."""
    import dataclasses

    from wildsci.builder.chunk import read_and_chunk
    from wildsci.builder.config import BuildRecipe
    from wildsci.builder.generate import build_request_messages, question_schema
    from wildsci.llm.backends import ChatRequest, make_client
    from wildsci.recipes import load_recipe

    recipe = load_recipe("recipes/data/demo.yaml", BuildRecipe)
    chunks, _ = read_and_chunk(recipe.sources, recipe.chunking, tokenizer=recipe.generator.model, progress=False)
    chunks = chunks[:passages]
    client = make_client(dataclasses.replace(recipe.generator, batch_size=len(chunks)), None)
    schema = question_schema(recipe.generate)
    client._load()
    client._grammar(ChatRequest(messages=[], json_schema=schema))  # compile outside the timing
    reqs = [ChatRequest(build_request_messages(c, recipe.generate), json_schema=schema) for c in chunks]
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    res = client.chat(reqs, desc="generate")
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    client.close()
    texts = json.dumps([r.text for r in res])
    print(json.dumps({
        "seconds": seconds,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "kernel_seconds": after.ru_stime - before.ru_stime,
        "user_seconds": after.ru_utime - before.ru_utime,
        "peak_rss_gib": after.ru_maxrss / 2**20,
        "outputs_sha256": hashlib.sha256(texts.encode()).hexdigest(),
    }))  # fmt: skip


def run_child(passages: int, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--passages", str(passages)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        sys.exit(f"malloc_tunables: the timed run failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=16, help="built-in passages (one generation batch)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting (min / median / max reported)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch bench/RESULTS.md")
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1 or args.passages < 1:
        ap.error("--repeats and --passages must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        os.chdir(ROOT)
        child(args.passages)
        return
    tuned = {k: os.environ[k] for k in TUNABLES if k in os.environ}
    if not tuned:
        sys.exit(f"malloc_tunables: none of {', '.join(TUNABLES)} is set -- run `make bench-malloc`, which exports "
                 "the Makefile's values, or set them yourself")  # fmt: skip
    run = start_run(args.allow_dirty, write=not args.no_write)
    settings = {
        # wildsci tunes malloc itself on import (wildsci.process): the baseline turns that off too
        "glibc defaults": {
            **{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
            "WILDSCI_MALLOC_TUNING": "0",
        },
        " ".join(f"{k}={v}" for k, v in tuned.items()): dict(os.environ),
    }
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for i in range(args.repeats):  # interleaved, so that a change in the machine's load hits both settings
        for name, env in settings.items():
            results[name].append(r := run_child(args.passages, env))
            print(f"run {i + 1}/{args.repeats} {name}: {r['seconds']:.1f} s, {r['minor_faults']:,} minor faults, "
                  f"{r['kernel_seconds']:.1f} s in the kernel", flush=True)  # fmt: skip
    hashes = {r["outputs_sha256"] for rs in results.values() for r in rs}
    rows = []
    for name, rs in results.items():
        rows.append([
            f"`{name}`" if "=" in name else name,
            spread([r["seconds"] for r in rs], "{:.1f}"),
            spread([r["minor_faults"] / 1e6 for r in rs], "{:.1f}"),
            spread([r["kernel_seconds"] for r in rs], "{:.1f}"),
            spread([r["user_seconds"] for r in rs], "{:.1f}"),
            spread([r["peak_rss_gib"] for r in rs], "{:.2f}"),
        ])  # fmt: skip
    table = markdown_table(
        ["allocator setting", "seconds", "minor page faults (millions)", "kernel CPU s", "user CPU s",
         "peak RSS GiB"], rows)  # fmt: skip
    same = "identical" if len(hashes) == 1 else f"NOT identical ({len(hashes)} different)"
    print("\n" + table + f"\n\noutputs across all runs: {same}")
    if not args.no_write:
        body = (
            f"Workload: the question-generation batch of `recipes/data/demo.yaml` (embedded SmolLM2-135M, its "
            f"generator settings, the first {args.passages} passages of the built-in corpus, shared prompt prefix), "
            f"one fresh process per run, {args.repeats} runs per setting, interleaved. Min / median / max. "
            "Seconds: the generation call alone (model load and grammar compilation excluded); CPU seconds and "
            "faults: the same call, from the process's own counters; peak RSS: the whole process.\n\n"
            f"{table}\n\n"
            f"Generated text across all {sum(map(len, results.values()))} runs: {same} (seeded sampling; the "
            "allocator does not change arithmetic).\n\n"
            "Why: glibc returns large freed blocks to the kernel; on a VM that reclaims freed guest pages, each "
            "KV-cache reallocation faults them in again. The tunables keep freed memory in the process, at the "
            "cost of a higher peak RSS. The Makefile exports them for every target.\n\n"
            f"Load: {run.load_note(own_threads=len(os.sched_getaffinity(0)))}"
        )
        run.write("malloc_tunables", "glibc malloc tunables on a VM (embedded SmolLM2-135M generation, CPU)", body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
