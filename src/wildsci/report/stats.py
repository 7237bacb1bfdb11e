"""Pure statistics behind the report and the eval tables: intervals, paired comparisons, halves, letter shares.

Every function here takes plain numbers, lists and dicts and returns plain numbers, lists and dicts: no files,
no figures, no Markdown. That keeps each number in ``report.md`` and ``results.md`` testable on its own, and keeps
the drawing code (``figures.py``) free of arithmetic.

Why these intervals: eval slices are small (tens of questions on CPU), where the normal ("Wald") interval is
badly wrong near 0 % and 100 %. The Wilson score interval keeps its coverage there, and Newcombe's hybrid score
interval (method 10 of Newcombe 1998) builds the interval of a difference from the two Wilson intervals -- with
the correlation of paired answers when both models answered the same questions.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from wildsci.answers import LETTERS

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
MIN_N = 30  # below this many questions a cell is marked too small to compare
NO_ANSWER = "none"  # bucket for predictions the parser could not read
CHANGE_KINDS = ("kept, right", "kept, wrong", "wrong → right", "right → wrong", "changed, still wrong")


def num(x: Any) -> float | None:
    """A finite number as float, else None (bools, strings, NaN and missing values are not numbers here)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


# ------------------------------------------------------------------------------------------- intervals
def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``; ``(nan, nan)`` when ``n`` is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(before: Iterable[bool], after: Iterable[bool]) -> float:
    """Exact two-sided McNemar p-value for paired binary outcomes (a sign test on the discordant pairs)."""
    b = sum(x and not y for x, y in zip(before, after, strict=True))
    c = sum(y and not x for x, y in zip(before, after, strict=True))
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n)


def accuracy_interval(accuracy: Any, n: Any) -> tuple[float, float] | None:
    """The Wilson interval of an accuracy over ``n`` questions, or None when either number is missing."""
    a, m = num(accuracy), num(n)
    if a is None or not m:
        return None
    return wilson(round(a * m), m)


def diff_interval(
    k1: float, n1: float, k2: float, n2: float, phi: float = 0.0, z: float = Z95
) -> tuple[float, float, float]:
    """``(p2 - p1, low, high)``: Newcombe's hybrid score interval for the difference of two proportions.

    ``phi`` is the correlation of paired answers (0 for independent samples); see :func:`paired_diff`.
    """
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    low = d - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    high = d + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return d, max(-1.0, low), min(1.0, high)


def paired_counts(before: Mapping[Any, bool], after: Mapping[Any, bool]) -> tuple[int, int, int, int]:
    """``(both right, only before right, only after right, both wrong)`` over the questions both answered."""
    both = [q for q in before if q in after]
    a = sum(1 for q in both if before[q] and after[q])
    b = sum(1 for q in both if before[q] and not after[q])
    c = sum(1 for q in both if not before[q] and after[q])
    return a, b, c, len(both) - a - b - c


def paired_diff(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float, float]:
    """``(after - before, low, high)`` for paired answers (Newcombe 1998, method 10)."""
    n = a + b + c + d
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom else 0.0
    return diff_interval(a + b, n, a + c, n, phi=phi, z=z)


def verdict(low: float, high: float, n: float) -> str:
    """How a difference may be described: ``too small`` (n < MIN_N), ``within noise``, ``gain`` or ``drop``."""
    if n < MIN_N:
        return "too small"
    if low <= 0 <= high:
        return "within noise"
    return "gain" if low > 0 else "drop"


# ------------------------------------------------------------------------------------------- training series
def series(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the steps that logged ``key``; steps that could not compute it are absent, not zero."""
    steps, values = [], []
    for m in metrics:
        v = num(m.get(key))
        if v is not None:
            steps.append(int(m["step"]))
            values.append(v)
    return steps, values


def window(n: int) -> int:
    """Rolling-mean width: a tenth of the logged steps (1 for short runs, which are shown point by point)."""
    return max(1, n // 10)


def rolling(values: list[float], w: int) -> list[float]:
    """Trailing mean over ``w`` values (fewer at the start)."""
    return [statistics.fmean(values[max(0, i - w + 1) : i + 1]) for i in range(len(values))]


def halves(metrics: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """First and second half of the logged steps ("early" vs "late" training)."""
    k = max(1, len(metrics) // 2)
    return metrics[:k], metrics[k:] or metrics[-1:]


def mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the rows that logged it."""
    vals = [v for v in (num(r.get(key)) for r in rows) if v is not None]
    return statistics.fmean(vals) if vals else None


def pooled(rows: list[dict[str, Any]], discipline: str, key: str) -> tuple[float | None, int]:
    """A discipline's ``key`` over several steps, weighted by its completions per step: (value, completions)."""
    total = weight = 0.0
    for m in rows:
        v = (m.get("per_discipline") or {}).get(discipline) or {}
        n, val = num(v.get("n")) or 0, num(v.get(key))
        if n and val is not None:
            total, weight = total + n * val, weight + n
    return (total / weight if weight else None), int(weight)


def discipline_names(metrics: list[dict[str, Any]]) -> list[str]:
    """Every discipline any step logged, sorted."""
    return sorted({d for m in metrics for d in (m.get("per_discipline") or {}) if isinstance(d, str)})


def discipline_series(metrics: list[dict[str, Any]], discipline: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one discipline's ``key``."""
    x, y = [], []
    for m in metrics:
        v = num(((m.get("per_discipline") or {}).get(discipline) or {}).get(key))
        if v is not None:
            x.append(int(m["step"]))
            y.append(v)
    return x, y


def group_warnings(metrics: list[dict[str, Any]]) -> list[tuple[list[int], str]]:
    """The guards' warnings grouped by wording (numbers blanked): ``[(steps it fired on, latest text)]``.

    The guards repeat one warning per logging step with that step's numbers; one line per kind is enough.
    """
    groups: dict[str, tuple[list[int], str]] = {}
    for m in metrics:
        for w in m.get("warnings") or []:
            text = str(w)
            key = re.sub(r"\d+(?:\.\d+)?", "#", re.sub(r"^step \d+:\s*", "", text))
            steps, _ = groups.get(key, ([], text))
            groups[key] = (steps + [int(m["step"])], text)
    return list(groups.values())


# ------------------------------------------------------------------------------------------- letters
def count_dicts(dicts: Iterable[Any]) -> Counter:
    """Sum of ``{key: count}`` dicts (non-dicts and non-numbers are ignored)."""
    total: Counter = Counter()
    for d in dicts:
        if isinstance(d, dict):
            for k, v in d.items():
                if num(v) is not None:
                    total[str(k)] += v
    return total


def letter_keys(*counters: Mapping[str, float]) -> list[str]:
    """A..the last letter any counter used (gaps are information), then any non-letter keys (e.g. ``none``)."""
    present = [i for i, c in enumerate(LETTERS) if any(cnt.get(c) for cnt in counters)]
    keys = list(LETTERS[: max(present) + 1]) if present else []
    extra = sorted({k for cnt in counters for k in cnt if k not in LETTERS and cnt.get(k)})
    return keys + extra


def fractions(cnt: Mapping[str, float], keys: list[str]) -> list[float]:
    """Each key's share of the counter's total (0 for an empty counter)."""
    total = sum(cnt.values()) or 1
    return [cnt.get(k, 0) / total for k in keys]


# ------------------------------------------------------------------------------------------- evaluation
def base_and_trained(models: list[dict[str, Any]], extra_names: Iterable[str] = ()) -> tuple[str | None, str | None]:
    """Base: the model named ``base``, else step 0, else the first. Trained: the last other model listed.

    ``wildsci eval`` lists models in training order (base, ``checkpoint-N`` ascending, then the final save,
    whose step may be unknown), so the last one is the most-trained policy. ``extra_names``: models seen only in
    predictions.
    """
    models = [m for m in models if isinstance(m, dict) and m.get("name")]
    names = [str(m["name"]) for m in models]
    for n in extra_names:
        if n not in names:
            names.append(n)
    if not names:
        return None, None
    steps = {str(m["name"]): m.get("step") for m in models}
    base = next((n for n in names if n.lower() == "base"), None)
    base = base or next((n for n in names if steps.get(n) == 0), None) or names[0]
    others = [n for n in names if n != base]
    return base, (others[-1] if others else None)


def correct_by_question(preds: list[dict[str, Any]], model: str, task: str) -> dict[Any, bool]:
    """``{question_id: correct}`` of one model on one task."""
    return {p.get("question_id"): bool(p.get("correct")) for p in preds if p.get("model") == model and
            str(p.get("task")) == task}  # fmt: skip


def compare(
    base: Mapping[str, Any], trained: Mapping[str, Any], paired: tuple[int, int, int, int] | None = None
) -> dict[str, Any] | None:
    """Trained minus base accuracy on one task, with its 95 % interval and how it may be described.

    ``paired``: :func:`paired_counts` over the questions both answered (then the interval uses their
    correlation); without it the two scores are treated as independent samples.
    """
    a1, n1, a2, n2 = num(base.get("accuracy")), num(base.get("n")), num(trained.get("accuracy")), num(trained.get("n"))
    if paired and sum(paired) > 0:
        d, lo, hi = paired_diff(*paired)
        n, kind = sum(paired), "paired"
    elif a1 is not None and a2 is not None and n1 and n2:
        d, lo, hi = diff_interval(round(a1 * n1), n1, round(a2 * n2), n2)
        n, kind = min(n1, n2), "independent"
    else:
        return None
    return {"delta": d, "low": lo, "high": hi, "n": int(n), "kind": kind, "verdict": verdict(lo, hi, n)}


def answer_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, Counter]:
    """Per task, how the trained model's answers relate to the base model's on the same questions."""
    by_q = {(p.get("task"), p.get("question_id")): p for p in before}
    per_task: dict[str, Counter] = {}
    for p in after:
        q = by_q.get((p.get("task"), p.get("question_id")))
        if q is None:
            continue
        same = (q.get("pred") or NO_ANSWER) == (p.get("pred") or NO_ANSWER)
        a, b = bool(q.get("correct")), bool(p.get("correct"))
        if same:
            kind = "kept, right" if b else "kept, wrong"
        else:
            kind = "wrong → right" if b and not a else "right → wrong" if a and not b else "changed, still wrong"
        per_task.setdefault(str(p.get("task")), Counter())[kind] += 1
    return per_task


def pooled_disciplines(
    scores: Mapping[str, Any], models: list[str], tasks: list[str]
) -> dict[str, dict[str, tuple[float, int]]]:
    """``{model: {discipline: (accuracy, n)}}`` pooled over the tasks that carry discipline labels."""
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for m in models:
        acc: dict[str, list[float]] = {}
        for t in tasks:
            per = ((scores.get(m) or {}).get(t) or {}).get("per_discipline") or {}
            for d, v in per.items():
                n, a = num((v or {}).get("n")) or 0, num((v or {}).get("accuracy"))
                if n and a is not None:
                    s = acc.setdefault(d, [0.0, 0.0])
                    s[0], s[1] = s[0] + n * a, s[1] + n
        out[m] = {d: (s[0] / s[1], int(s[1])) for d, s in acc.items()}
    return out


def length_summary(values: list[float]) -> dict[str, float]:
    """Count, mean, median and 90th percentile (nearest rank below) of completion lengths."""
    q = sorted(values)
    return {
        "n": len(q),
        "mean": statistics.fmean(q),
        "median": statistics.median(q),
        "p90": q[int(0.9 * (len(q) - 1))],
    }
