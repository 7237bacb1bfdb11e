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


def _tiny_build(tmp_path, capsys, n_papers: int) -> tuple[dict, str]:
    """``wildsci build`` of ``n_papers`` one-passage papers against the fake server: (split sizes, stderr)."""
    import json

    import yaml
    from build_fake_llm import FakeLLM

    from wildsci.cli import main

    papers = tmp_path / "papers.jsonl"
    topics = ["glacier melt rates", "enzyme kinetics", "neutron star spin", "soil microbe diversity"]
    rows = [
        {
            "id": f"p-{i}",
            "title": topic.title(),
            "abstract": f"We report new measurements of {topic}. " * 2
            + f"Across {i + 3} sites, {topic} rose with temperature, pressure and humidity in every season.",
            "license": "CC-BY-4.0",
        }
        for i, topic in enumerate(topics[:n_papers])
    ]
    papers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeLLM() as llm:
        recipe = {
            "name": "tiny",
            "output_dir": str(tmp_path / "out"),
            "sources": [{"path": str(papers)}],
            "chunking": {"max_tokens": 200, "min_words": 10},
            "generator": {"backend": "openai", "model": "fake-llm", "base_url": llm.base_url, "max_retries": 0},
            "generate": {"questions_per_chunk": 2},
            "options": {"max_attempts": 1},
            "vote": {"num_votes": 2, "constrained": True, "min_correct_votes": 0},
        }
        path = tmp_path / "recipes" / "data" / "tiny.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(recipe))
        assert main(["build", str(path)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines: compare the words
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    return report, err


def test_a_build_too_small_for_the_requested_splits_says_so(tmp_path, capsys):
    report, err = _tiny_build(tmp_path, capsys, 2)
    line = err[err.index("split: 2 paper(s)") :]
    assert "cannot fill validation too (validation 0.05 / test 0.1 asked; train keeps one)" in line, err[-2000:]
    assert "-- add papers, or set split.validation: 0" in line


def test_a_build_whose_splits_needed_moved_papers_says_how_many_questions_each_got(tmp_path, capsys):
    report, err = _tiny_build(tmp_path, capsys, 4)
    assert "split: 4 papers are too few for validation 0.05 / test 0.1 by hash alone, so 2 moved" in err, err[-2000:]
    for name in ("train", "validation", "test"):
        assert f"{name} {report['splits'][name]} question(s) from" in err, (name, report["splits"])
