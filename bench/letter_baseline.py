"""Is a trained policy's held-out accuracy more than its favourite letter's share of the gold answers?

    python bench/letter_baseline.py            # reads bench/results/grpo_quality/*.jsonl, writes its own section

A policy that answers one letter to every question scores exactly that letter's share of the gold answers.
So a gain over the base model means little until it beats that constant-letter policy on the same questions.
This script needs no model: it reads the per-question outputs that ``bench/grpo_quality.py`` committed and
compares each policy with "always answer its most frequent letter" (exact McNemar test, paired per question).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _results import RESULT_FILES, markdown_table, mcnemar_p, read_jsonl, start_run  # noqa: E402
from grpo_quality import summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--section", default="grpo_quality", help="whose per-question files to read")
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch bench/RESULTS.md")
    args = ap.parse_args()
    run = start_run(args.allow_dirty, write=not args.no_write)
    folder = RESULT_FILES / args.section
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        sys.exit(f"letter_baseline: no per-question files in {folder} -- run bench/grpo_quality.py first")
    rows = []
    for f in files:
        recs = [r for r in read_jsonl(f) if r["rotation"] == 0]
        s = summarize(recs, None)
        n, top = s["n"], s["top"]
        always = [r["gold"] == top for r in recs]
        p = mcnemar_p(always, [r["correct"] for r in recs])
        rows.append(
            [
                f"`{f.stem}`",
                f"{top} {s['top_n']}/{n}",
                f"{s['correct']}/{n} ({100 * s['correct'] / n:.1f}%)",
                f"{sum(always)}/{n} ({100 * sum(always) / n:.1f}%)",
                f"{s['correct'] - sum(always):+d}",
                f"{p:.3g}",
            ]
        )
    table = markdown_table(
        ["policy", "most frequent letter", "accuracy", "always that letter", "difference", "p (McNemar)"], rows
    )
    body = (
        f"Per-question outputs: `bench/results/{args.section}/` (written by `bench/grpo_quality.py`). "
        "`always that letter` is the accuracy of a policy that answers the policy's most frequent letter to every "
        "question: the gold share of that letter. A policy that beats its base model but not this column has "
        "learned to answer readably and to prefer a letter, not to answer the questions.\n\n"
        f"{table}\n\nLoad: {run.load_note(own_threads=1)} (no model runs here; the timings of the policies are in "
        f"section `{args.section}`)."
    )
    print(body)
    if not args.no_write:
        run.write(f"{args.section}_letters", "Held-out accuracy against the constant-letter policy", body)


if __name__ == "__main__":
    main()
