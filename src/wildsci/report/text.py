"""How numbers are written in report.md and results.md: counts, accuracies with their 95 % interval, differences.

One place for the wording, so that the report and the eval table say "within noise" and "n < 30" the same way.
Tables and percentages come from :mod:`wildsci.provenance` (``markdown_table``, ``pct``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from wildsci.provenance import pct
from wildsci.report.stats import MIN_N, accuracy_interval, num

SMALL = "†"  # marks a cell with fewer than MIN_N questions
SMALL_NOTE = f"{SMALL} n < {MIN_N}: too few questions to compare models on this cell."
CI_NOTE = "Brackets: 95 % Wilson interval."


def fmt(x: Any, digits: int = 3) -> str:
    """A count as an integer, another number with ``digits`` significant digits, a missing one as ``–``."""
    v = num(x)
    if v is None:
        return "–"
    return f"{int(v)}" if v.is_integer() and abs(v) < 1e12 else f"{v:.{digits}g}"


def ci(low: float, high: float) -> str:
    """``[19.3–68.0]`` (percent, one decimal)."""
    return f"[{100 * low:.1f}–{100 * high:.1f}]"


def accuracy(acc: Any, n: Any, with_n: bool = False) -> str:
    """``41.7% [19.3–68.0]`` (+ `` n=12``), with ``†`` when n < 30; ``–`` when the accuracy is missing."""
    if num(acc) is None:
        return "–"
    interval = accuracy_interval(acc, n)
    text = pct(acc) + (f" {ci(*interval)}" if interval else "")
    if with_n:
        text += f" n={fmt(n)}"
    if num(n) is not None and num(n) < MIN_N:
        text += SMALL
    return text


def difference(cmp: dict[str, Any] | None) -> str:
    """``+26.7 pt [+3.1 to +46.0], gain`` -- or ``within noise`` / ``n < 30: too small to compare``."""
    if not cmp:
        return "–"
    d, lo, hi = 100 * cmp["delta"], 100 * cmp["low"], 100 * cmp["high"]
    words = {
        "too small": f"n={cmp['n']} < {MIN_N}: too small to compare",
        "within noise": "within noise (the interval spans 0)",
        "gain": "a gain",
        "drop": "a drop",
    }[cmp["verdict"]]
    return f"{d:+.1f} pt [{lo:+.1f} to {hi:+.1f}], {words}"


def rel(path: Path, start: Path) -> str:
    """``path`` relative to ``start``, with forward slashes (Markdown links)."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
