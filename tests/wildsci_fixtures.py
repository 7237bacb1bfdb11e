"""A small, schema-valid WildSci-format dataset for tests of the stages downstream of the builder.

Questions are simple templated facts (one per subdomain) so that GRPO, eval and the Space can be tested
without waiting for a real build; the builder's own tests use real papers.
"""

from __future__ import annotations

import random
from pathlib import Path

from wildsci.answers import LETTERS
from wildsci.dataset_io import save_wildsci
from wildsci.schema import options_dict, question_id, voting_type
from wildsci.taxonomy import load_taxonomy


def make_rows(n: int, seed: int = 0, prefix: str = "paper") -> list[dict]:
    rng = random.Random(seed)
    tax = load_taxonomy()
    rows = []
    for i in range(n):
        sub = tax.subdomains[i % len(tax.subdomains)]
        correct = f"It is studied in {sub.name.lower()}"
        distractors = [f"It is studied only in field number {k} of {sub.discipline.lower()}" for k in range(9)]
        options = distractors[:]
        gold_idx = rng.randrange(10)
        options.insert(gold_idx, correct)
        gold = LETTERS[gold_idx]
        votes = [gold if rng.random() < 0.6 else rng.choice(LETTERS) for _ in range(8)]
        q = f"Question {i}: which statement is true of the topic '{sub.description.rstrip('.')}'?"
        pid = f"{prefix}-{i // 2}"
        rows.append(
            {
                "paper_id": pid,
                "question": q,
                "options": options_dict(options),
                "answer": gold,
                "rationale": f"The topic belongs to {sub.name}.",
                "voting_type": voting_type(votes, gold),
                "voting_answers": votes,
                "discipline": sub.discipline,
                "nc_domain": sub.nc_domain,
                "nc_subdomain": sub.name,
                "question_id": question_id(pid, q),
                "source_license": "CC0-1.0",
                "generator_model": "fixture",
                "recipe_hash": "fixture",
            }
        )
    return rows


def make_wildsci_dataset(out_dir: str | Path, n_train: int = 32, n_test: int = 12, seed: int = 0) -> Path:
    """Write train/validation/test splits (papers never shared between splits) in the Hub layout."""
    out = Path(out_dir)
    save_wildsci(
        {
            "train": make_rows(n_train, seed, "train-paper"),
            "validation": make_rows(max(2, n_test // 2), seed + 1, "val-paper"),
            "test": make_rows(n_test, seed + 2, "test-paper"),
        },
        out,
    )
    return out
