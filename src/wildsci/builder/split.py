"""Stage 9, split: deterministic train/validation/test splits, grouped by paper.

A paper's split is a pure function of its id (a salted SHA-256 mapped to [0, 1)), so:
- no paper is in two splits (questions from one paper share facts; splitting them would leak test answers);
- adding papers to a corpus never moves an existing paper to another split (datasets stay comparable across
  versions), and sharded builds split exactly like a single build.

Tiny corpora are the exception worth handling: with 26 papers and a 10 % test fraction, pure hashing leaves
the test split empty about 6 % of the time. When a requested split would be empty, the train paper whose
hash lies closest to that split's range moves there (still deterministic, still whole papers).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SplitConfig:
    """Fractions of *papers* (not questions) per split."""

    validation: float = field(default=0.05, metadata={"help": "Fraction of papers in the validation split."})
    test: float = field(default=0.1, metadata={"help": "Fraction of papers in the test split."})
    salt: str = field(
        default="wildsci", metadata={"help": "Salt of the paper-id hash; change it to draw a different split."}
    )
    ensure_nonempty: bool = field(
        default=True,
        metadata={"help": "Move the nearest train paper into a requested split that hashing left empty."},
    )

    def __post_init__(self) -> None:
        if not (0 <= self.validation < 1 and 0 <= self.test < 1 and self.validation + self.test < 1):
            raise ValueError(
                f"split: validation ({self.validation}) and test ({self.test}) must be fractions in [0, 1) "
                "summing to less than 1 -- fix split.validation / split.test"
            )


def paper_score(paper_id: str, salt: str) -> float:
    """A paper's position in [0, 1): test is [0, test), validation [test, test+validation), train the rest."""
    digest = hashlib.sha256(f"{salt}\x00{paper_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_papers(paper_ids: list[str], cfg: SplitConfig) -> dict[str, str]:
    """paper_id -> split name."""
    scores = {pid: paper_score(pid, cfg.salt) for pid in sorted(set(paper_ids))}
    bounds = {"test": (0.0, cfg.test), "validation": (cfg.test, cfg.test + cfg.validation)}
    out = {}
    for pid, s in scores.items():
        out[pid] = "test" if s < cfg.test else "validation" if s < cfg.test + cfg.validation else "train"
    if cfg.ensure_nonempty:
        for split, (lo, hi) in bounds.items():
            if hi <= lo or split in out.values():
                continue
            train = [pid for pid, sp in out.items() if sp == "train"]
            if len(train) < 2:  # never empty the train split
                continue
            nearest = min(train, key=lambda p: (min(abs(scores[p] - lo), abs(scores[p] - hi)), p))
            out[nearest] = split
    return out


def split_rows(rows: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped into ``train``/``validation``/``test`` by their paper; row order within a split is kept."""
    assignment = assign_papers([r["paper_id"] for r in rows], cfg)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[assignment[r["paper_id"]]].append(r)
    return {name: out.get(name, []) for name in ("train", "validation", "test")}
