"""Stage 8: deterministic, paper-grouped splits."""

from __future__ import annotations

import random

import pytest

from wildsci.builder.split import SplitConfig, assign_papers, split_rows
from wildsci.recipes import RecipeError, from_dict


def _rows(n_papers: int, per_paper: int = 3) -> list[dict]:
    return [{"paper_id": f"paper-{p}", "question_id": f"{p}-{k}"} for p in range(n_papers) for k in range(per_paper)]


def test_no_paper_in_two_splits_and_fractions_hold():
    rows = _rows(2000)
    splits = split_rows(rows, SplitConfig(validation=0.05, test=0.1))
    papers = {name: {r["paper_id"] for r in part} for name, part in splits.items()}
    assert not (
        papers["train"] & papers["test"]
        or papers["train"] & papers["validation"]
        or papers["test"] & papers["validation"]
    )
    assert sum(len(p) for p in splits.values()) == len(rows)
    assert abs(len(papers["test"]) / 2000 - 0.1) < 0.025
    assert abs(len(papers["validation"]) / 2000 - 0.05) < 0.02


def test_deterministic_independent_of_order_and_stable_when_papers_are_added():
    rows = _rows(300)
    a = assign_papers([r["paper_id"] for r in rows], SplitConfig())
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert assign_papers([r["paper_id"] for r in shuffled], SplitConfig()) == a
    bigger = assign_papers([r["paper_id"] for r in _rows(600)], SplitConfig())
    assert all(bigger[p] == s for p, s in a.items())  # adding papers never moves an existing one
    assert assign_papers(list(a), SplitConfig(salt="other")) != a


def test_tiny_corpus_gets_nonempty_requested_splits():
    for n in range(3, 30):
        got = set(assign_papers([f"p{i}" for i in range(n)], SplitConfig(validation=0.1, test=0.2)).values())
        assert got == {"train", "validation", "test"}, n
    assert set(assign_papers(["only"], SplitConfig()).values()) == {"train"}


def test_bad_fractions_are_a_recipe_error():
    with pytest.raises(RecipeError, match="split"):
        from_dict(SplitConfig, {"validation": 0.6, "test": 0.5}, "recipes/data/x.yaml")
