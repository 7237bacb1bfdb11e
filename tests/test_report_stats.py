"""The report's statistics, checked against published values, an independent implementation and simulation.

Wilson intervals are compared with scipy's (``binomtest(...).proportion_ci(method="wilson")``) and a closed form;
Newcombe's difference interval with the worked example of Newcombe (1998, Stat Med 17:873, 56/70 vs 48/80); the
paired version by its coverage on simulated correlated answers (a wrong correlation term shows up as coverage far
from 95 %).
"""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import binomtest

from wildsci.report import stats


@pytest.mark.parametrize("k,n", [(0, 12), (5, 12), (12, 12), (1, 30), (17, 30), (450, 1000)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_closed_form_and_empty():
    z2 = stats.Z95**2
    assert stats.wilson(0, 12) == pytest.approx((0.0, z2 / (12 + z2)))  # k = 0: upper bound z^2 / (n + z^2)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))
    assert stats.accuracy_interval(None, 12) is None and stats.accuracy_interval(0.5, 0) is None
    assert stats.accuracy_interval(5 / 12, 12) == pytest.approx(stats.wilson(5, 12))


def test_newcombe_independent_worked_example():
    """Newcombe (1998), example (a): 56/70 vs 48/80, method 10: 0.0524 to 0.3339."""
    d, lo, hi = stats.diff_interval(48, 80, 56, 70)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)
    d, lo, hi = stats.diff_interval(56, 70, 48, 80)  # the other way round: the mirror image
    assert (d, lo, hi) == pytest.approx((-0.2, -0.3339, -0.0524), abs=1e-4)


def test_paired_without_correlation_is_the_independent_interval():
    # a*d == b*c: phi = 0, so the paired interval equals the independent one on the same margins
    a, b, c, d = 4, 4, 6, 6
    assert stats.paired_diff(a, b, c, d) == pytest.approx(stats.diff_interval(a + b, 20, a + c, 20))


def test_paired_interval_covers_the_truth_95_percent_of_the_time():
    """Two models answer the same 60 questions; their answers are strongly correlated (the paired case)."""
    rng = random.Random(0)
    p_easy, true_before, true_after = 0.5, 0.55, 0.65
    # per question: easy questions both get right more often; the true difference is +10 pt
    hits, runs = 0, 800
    for _ in range(runs):
        before, after = {}, {}
        for q in range(60):
            easy = rng.random() < p_easy
            before[q] = rng.random() < (true_before + 0.3 if easy else true_before - 0.3)
            after[q] = rng.random() < (true_after + 0.3 if easy else true_after - 0.3)
        _, lo, hi = stats.paired_diff(*stats.paired_counts(before, after))
        hits += lo <= true_after - true_before <= hi
    assert 0.92 <= hits / runs <= 0.985, f"coverage {hits / runs:.3f}"
    # and the paired interval is narrower than the independent one on correlated answers
    _, lo_p, hi_p = stats.paired_diff(20, 5, 11, 24)
    _, lo_i, hi_i = stats.diff_interval(25, 60, 31, 60)
    assert hi_p - lo_p < hi_i - lo_i


def test_paired_counts():
    before = {"q1": True, "q2": True, "q3": False, "q4": False, "q5": True}
    after = {"q1": True, "q2": False, "q3": True, "q4": False, "q6": True}  # q5/q6: answered by one model only
    assert stats.paired_counts(before, after) == (1, 1, 1, 1)


def test_small_n_is_never_a_gain():
    """The issue's case: 0/12 -> 5/12 is +41.7 pt, but n = 12 is too small to compare."""
    cmp = stats.compare({"accuracy": 0.0, "n": 12}, {"accuracy": 5 / 12, "n": 12})
    assert cmp["delta"] == pytest.approx(5 / 12) and cmp["verdict"] == "too small" and cmp["kind"] == "independent"
    assert cmp["low"] > 0, "significant or not, below 30 questions the cell is not compared"
    # n = 40: 10 -> 14 right spans 0; 10 -> 25 does not
    assert stats.compare({"accuracy": 10 / 40, "n": 40}, {"accuracy": 14 / 40, "n": 40})["verdict"] == "within noise"
    assert stats.compare({"accuracy": 10 / 40, "n": 40}, {"accuracy": 25 / 40, "n": 40})["verdict"] == "gain"
    assert stats.compare({"accuracy": 25 / 40, "n": 40}, {"accuracy": 10 / 40, "n": 40})["verdict"] == "drop"
    assert stats.compare({"accuracy": None, "n": 40}, {"accuracy": 0.5, "n": 40}) is None
    paired = stats.compare({"accuracy": 0.5, "n": 40}, {"accuracy": 0.6, "n": 40}, paired=(18, 2, 6, 14))
    assert paired["kind"] == "paired" and paired["n"] == 40


def test_halves_series_and_pooling():
    rows = [
        {"step": 1, "reward": 0.1, "per_discipline": {"Physics": {"n": 2, "accuracy": 0.0}}},
        {"step": 2, "per_discipline": {"Physics": {"n": 6, "accuracy": 1.0}, "Biology": {"n": 1, "accuracy": 1}}},
        {"step": 3, "reward": float("nan")},
    ]
    assert stats.series(rows, "reward") == ([1], [0.1]), "missing and NaN values are absent, not zero"
    assert stats.halves(rows) == (rows[:1], rows[1:]) and stats.halves(rows[:1]) == (rows[:1], rows[:1])
    assert stats.pooled(rows, "Physics", "accuracy") == (0.75, 8), "weighted by completions, not by steps"
    assert stats.pooled(rows, "Chemistry", "accuracy") == (None, 0)
    assert stats.discipline_names(rows) == ["Biology", "Physics"]
    assert stats.rolling([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0] and stats.window(9) == 1 and stats.window(40) == 4


def test_warnings_grouped_by_wording():
    rows = [{"step": s, "warnings": [f"step {s}: {50 + s}% were cut off"]} for s in (3, 4, 5)]
    rows.append({"step": 6, "warnings": ["step 6: zero std for 3 steps"]})
    expected = [([3, 4, 5], "step 5: 55% were cut off"), ([6], "step 6: zero std for 3 steps")]
    assert stats.group_warnings(rows) == expected


def test_letters():
    assert stats.letter_keys({"A": 2, "D": 1}, {"none": 3}) == ["A", "B", "C", "D", "none"]
    assert stats.fractions({"A": 3, "C": 1}, ["A", "B", "C"]) == [0.75, 0.0, 0.25]


def test_answer_changes_and_disciplines():
    before = [{"task": "t", "question_id": i, "pred": p, "correct": c} for i, (p, c) in
              enumerate([("A", True), ("B", False), ("B", False), ("A", True), (None, False)])]  # fmt: skip
    after = [{"task": "t", "question_id": i, "pred": p, "correct": c} for i, (p, c) in
             enumerate([("A", True), ("B", False), ("C", True), ("D", False), ("E", False)])]  # fmt: skip
    got = stats.answer_changes(before, after)["t"]
    assert got == dict.fromkeys(stats.CHANGE_KINDS, 1)
    scores = {"m": {"a": {"per_discipline": {"Physics": {"accuracy": 0.5, "n": 2}}},
                    "b": {"per_discipline": {"Physics": {"accuracy": 1.0, "n": 6}}}}}  # fmt: skip
    assert stats.pooled_disciplines(scores, ["m"], ["a", "b"]) == {"m": {"Physics": (0.875, 8)}}


def test_trained_model_is_the_last_one_eval_lists():
    """wildsci eval lists base, checkpoint-N ascending, then the final save (whose step may be unknown)."""
    models = [{"name": "checkpoint-2", "step": 2}, {"name": "base", "step": 0}, {"name": "final", "step": None}]
    assert stats.base_and_trained(models) == ("base", "final")
    assert stats.base_and_trained([], ["m0", "m1"]) == ("m0", "m1")
    assert stats.base_and_trained([{"name": "b0", "step": 0}, {"name": "x", "step": 3}]) == ("b0", "x")
    assert stats.base_and_trained([]) == (None, None)


def test_mcnemar_exact_p_on_discordant_pairs():
    # 1 pair flipped one way, 6 the other: p = 2 * (C(7,0) + C(7,1)) / 2**7 = 0.125
    before = [True] + [False] * 6 + [True, False]
    after = [False] + [True] * 6 + [True, False]
    assert stats.mcnemar_p(before, after) == 0.125 and stats.mcnemar_p([True], [True]) == 1.0
