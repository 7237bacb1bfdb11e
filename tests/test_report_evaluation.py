"""``results.md`` and ``accuracy_vs_step.png`` of an eval folder, rebuilt from its results.json alone.

The real ``wildsci eval`` run (tests/test_evaluate.py) checks that the CLI writes both files; here the tables are
checked number by number on a results.json written from the contract, including the cases a real run on CPU
rarely produces (n < 30, skipped tasks, a final save without a step, permutations).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest
from wildsci_fixtures import assert_png_nontrivial

from wildsci.errors import UserError
from wildsci.report import write_eval_outputs


def wilson_text(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return f"{100 * k / n:.1f}% [{100 * ci.low:.1f}–{100 * ci.high:.1f}]"


def results(tmp_path: Path, final_step: int | None = 40) -> Path:
    models = [
        {"name": "base", "path": "/m/base", "step": 0},
        {"name": "checkpoint-20", "path": "/m/c20", "step": 20},
        {"name": "final", "path": "/m/final", "step": final_step},
    ]
    right = {"base": (3, 30, 60), "checkpoint-20": (6, 45, 66), "final": (8, 51, 80)}  # of 12, 100, 200
    scores = {}
    for m, (w, g, p) in right.items():
        scores[m] = {
            "wildsci": {
                "accuracy": w / 12,
                "extraction_rate": 0.75,
                "n": 12,
                "per_discipline": {
                    "Physics": {"accuracy": (w // 2) / 6, "n": 6},
                    "Biology": {"accuracy": 3 / 6, "n": 6},
                },  # noqa: E501
            },
            "gpqa_diamond": {"accuracy": g / 100, "extraction_rate": 1.0, "n": 100, "per_discipline": {}},
            "mmlu_pro": {"accuracy": p / 200, "extraction_rate": 0.9, "n": 200, "per_discipline": {}},
        }
    uniform = {c: 0.25 for c in "ABCD"}
    res = {
        "models": models,
        "tasks": ["wildsci", "gpqa_diamond", "mmlu_pro"],
        "scores": scores,
        "permutations": {
            "final": {
                "gpqa_diamond": {
                    "k": 2,
                    "n": 100,
                    "accuracy": 0.4,
                    "consistency": 0.35,
                    "letter_distribution": {"A": 0.7, "B": 0.1, "C": 0.1, "D": 0.1},
                    "gold_letter_distribution": uniform,
                }
            }
        },
        "skipped": {"scieval": "source /data/scieval.jsonl not found"},
        "ran_on": {"backend": "transformers", "device": "cpu", "dtype": "float32", "versions": {"torch": "2.9"}},
    }
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(res))
    return out


def test_results_md_shows_intervals_small_n_and_skips(tmp_path):
    out = results(tmp_path)
    md_path, png = write_eval_outputs(out)
    md = md_path.read_text()
    assert "| model | step | wildsci (n=12) | gpqa_diamond (n=100) | mmlu_pro (n=200) |" in md
    final = next(line for line in md.splitlines() if line.startswith("| final | 40 |"))
    cells = [c.strip() for c in final.strip("|").split("|")]
    assert cells[2] == f"{wilson_text(8, 12)}† (75.0%)", "n < 30 carries the dagger"
    assert cells[3] == f"{wilson_text(51, 100)} (100.0%)" and cells[4] == f"{wilson_text(80, 200)} (90.0%)"
    assert "† n < 30: too few questions to compare" in md
    assert "## wildsci: accuracy per discipline" in md and "| model | Physics (n=6) | Biology (n=6) |" in md
    assert f"| base | {wilson_text(1, 6)}† | {wilson_text(3, 6)}† |" in md  # taxonomy order, each with n
    perm = next(line for line in md.splitlines() if line.startswith("| final | gpqa_diamond | 2 |"))
    assert f"| {wilson_text(40, 100)} | {wilson_text(35, 100)} | A: 70.0% vs 25.0% |" in perm
    assert "## Skipped tasks\n\n- scieval: source /data/scieval.jsonl not found" in md
    assert "Ran on: backend `transformers`, device `cpu`, dtype `float32`." in md
    assert_png_nontrivial(png)


def test_rewrites_from_results_json_alone(tmp_path):
    """A copied eval folder (or a final save whose step is unknown) is redrawn from results.json."""
    out = results(tmp_path, final_step=None)
    (out / "results.md").write_text("stale")
    md, png = write_eval_outputs(out)
    assert "| final | – |" in md.read_text() and "stale" not in md.read_text()
    assert_png_nontrivial(png)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy_vs_step.png", "results.json", "results.md"]


def test_unreadable_results_is_one_line(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(UserError, match=r"results.json: cannot read .* -- rerun wildsci eval$"):
        write_eval_outputs(tmp_path)
