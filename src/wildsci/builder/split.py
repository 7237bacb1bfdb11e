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
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from wildsci.builder.console import log


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


def _assign(paper_ids: list[str], cfg: SplitConfig) -> tuple[dict[str, str], list[str]]:
    """paper_id -> split name, and the papers moved out of train to fill a requested split hashing left empty."""
    scores = {pid: paper_score(pid, cfg.salt) for pid in sorted(set(paper_ids))}
    bounds = {"test": (0.0, cfg.test), "validation": (cfg.test, cfg.test + cfg.validation)}
    out = {}
    for pid, s in scores.items():
        out[pid] = "test" if s < cfg.test else "validation" if s < cfg.test + cfg.validation else "train"
    moved = []
    if cfg.ensure_nonempty:
        for split, (lo, hi) in bounds.items():
            if hi <= lo or split in out.values():
                continue
            train = [pid for pid, sp in out.items() if sp == "train"]
            if len(train) < 2:  # never empty the train split
                continue
            nearest = min(train, key=lambda p: (min(abs(scores[p] - lo), abs(scores[p] - hi)), p))
            out[nearest] = split
            moved.append(split)
    return out, moved


def assign_papers(paper_ids: list[str], cfg: SplitConfig) -> dict[str, str]:
    """paper_id -> split name."""
    return _assign(paper_ids, cfg)[0]


def split_note(assignment: dict[str, str], moved: list[str], rows: dict[str, list], cfg: SplitConfig) -> str | None:
    """One line when a corpus is too small for the requested fractions (a split filled by a moved paper, or left
    empty), with papers and questions per split; ``None`` when hashing alone met the request.

    Why: with a handful of papers the splits cannot have the requested shares (4 papers at 5 % / 10 % give one
    paper each to validation and test, however many questions each holds); a user must see that, not find it later.
    """
    requested = {"validation": cfg.validation, "test": cfg.test}
    empty = [name for name, frac in requested.items() if frac > 0 and name not in assignment.values()]
    if not assignment or (not moved and not empty):  # no rows: the build says that itself
        return None
    papers = Counter(assignment.values())
    shares = ", ".join(
        f"{name} {len(rows.get(name, []))} question(s) from {papers.get(name, 0)} paper(s)"
        for name in ("train", "validation", "test")
    )
    asked = f"validation {cfg.validation:g} / test {cfg.test:g}"
    if empty:
        return (
            f"split: {len(assignment)} paper(s) cannot fill {' and '.join(empty)} too ({asked} asked; train keeps "
            f"one): {shares} -- add papers, or set split.{empty[0]}: 0"
        )
    return (
        f"split: {len(assignment)} papers are too few for {asked} by hash alone, so {len(moved)} moved out of "
        f"train to fill {' and '.join(moved)}: {shares}"
    )


def split_rows(rows: list[dict[str, Any]], cfg: SplitConfig) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped into ``train``/``validation``/``test`` by their paper; row order within a split is kept.

    A corpus too small for the requested fractions is said in one line (:func:`split_note`).
    """
    assignment, moved = _assign([r["paper_id"] for r in rows], cfg)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[assignment[r["paper_id"]]].append(r)
    splits = {name: out.get(name, []) for name in ("train", "validation", "test")}
    note = split_note(assignment, moved, splits, cfg)
    if note:
        log(note)
    return splits
