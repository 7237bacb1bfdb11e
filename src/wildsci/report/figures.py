"""Every figure of ``wildsci report`` and ``wildsci eval``: drawing only, from numbers already computed.

Why one module: the evaluation plots were drawn twice (``eval/run.py`` with pyplot's global state, the report
with the object API). Here every function builds a ``matplotlib.figure.Figure`` (rendered by Agg, no display, no
global backend, safe in threads and tests) from plain lists that :mod:`wildsci.report.stats` computed, and
:class:`Plots` saves it. Functions that draw a panel take an ``Axes``; functions that make a whole figure return
it. Files are written to a temporary name and renamed, so a killed run never leaves half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from wildsci.report.stats import CHANGE_KINDS, NO_ANSWER, fractions, rolling

STEP_LABEL = "optimizer step"
CHANGE_COLOURS = ("#4c9a2a", "#9e9e9e", "#1f77b4", "#d62728", "#ff9f1c")


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (8.0, 4.5)):
    """A Figure and its axes grid (always 2-D)."""
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_png(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` atomically (temporary file + rename)."""
    for ax in fig.axes:  # steps are whole numbers, even on a 2-step run
        if ax.get_xlabel().startswith(STEP_LABEL) or ax.get_xlabel() == "training step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return path


class Plots:
    """Saves figures as ``<dir>/<name>.png`` and returns the Markdown image line; clears stale PNGs first."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):  # a rerun with fewer inputs must not leave stale plots behind
            old.unlink()
        self.made: list[Path] = []

    def save(self, fig: Figure, name: str, alt: str) -> str:
        self.made.append(save_png(fig, self.dir / f"{name}.png"))
        return f"![{alt}]({self.dir.name}/{name}.png)"


def bars(
    ax: Axes,
    labels: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    horizontal: bool = False,
    fmt: Callable[[float], str] | None = None,
    errors: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
) -> None:
    """Grouped bars: one group per label, one bar per series; ``errors`` gives (low, high) per bar (e.g. 95 % CI)."""
    n = max(1, len(groups))
    width = 0.8 / n
    for i, (name, vals) in enumerate(groups.items()):
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        err = None
        if errors and name in errors:
            # max(0, ...): rounding can put an interval end a hair past its bar (k = 0 or k = n)
            lo = [max(0.0, v - e[0]) if e else 0 for v, e in zip(vals, errors[name], strict=True)]
            hi = [max(0.0, e[1] - v) if e else 0 for v, e in zip(vals, errors[name], strict=True)]
            err = [lo, hi]
        kw = {"xerr": err} if horizontal else {"yerr": err}
        drawn = (ax.barh if horizontal else ax.bar)(
            pos, vals, width, label=name if n > 1 else None, capsize=2 if err else 0, **kw
        )
        if fmt and len(labels) * n <= 24:
            ax.bar_label(drawn, labels=[fmt(v) for v in vals], fontsize=7, padding=1)
    top = max((v for vals in groups.values() for v in vals), default=0)
    if top > 0:  # headroom for the bar labels and the legend
        (ax.set_xlim if horizontal else ax.set_ylim)(0, top * 1.18)
    if horizontal:
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
    else:
        rotation = 30 if max(map(len, labels or [""])) > 6 else 0
        ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=rotation)


def legend(ax: Axes, **kwargs) -> None:
    """A legend when something drawn has a label (matplotlib warns on an empty one, e.g. a model without answers)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def percent(v: float) -> str:
    return f"{100 * v:.0f}%"


# ------------------------------------------------------------------------------------------- dataset
def dataset_funnel(names: list[str], ins: list[float], outs: list[float], fmt: Callable) -> Figure:
    fig, ax = new_figure(size=(8, 0.45 * len(names) + 1.6))
    ax = ax[0][0]
    bars(ax, names, {"in": ins, "out": outs}, horizontal=True, fmt=fmt)
    ax.set_xlabel("items (papers, passages or questions, per stage)")
    ax.set_title("Dataset build: items in and out of each stage")
    legend(ax, fontsize=8)
    return fig


def dataset_stats(panels: list[tuple[str, str, list[str], list[float], bool]], fmt: Callable) -> Figure:
    """Up to four count panels: (key, title, labels, counts, horizontal)."""
    fig, axes = new_figure(2, 2, size=(12, 8))
    for ax, (key, title, labels, vals, horiz) in zip(axes.flat, panels, strict=False):
        bars(ax, labels, {key: vals}, horizontal=horiz, fmt=fmt)
        (ax.set_xlabel if horiz else ax.set_ylabel)("questions (count)")
        ax.set_title(title)
        if key == "letter_distribution" and sum(vals):
            ax.axhline(sum(vals) / len(vals), color="k", ls="--", lw=1, label="uniform")
            legend(ax, fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    fig.suptitle("Dataset statistics (build_report.json)")
    return fig


# ------------------------------------------------------------------------------------------- training
def trend(ax: Axes, x: list[int], y: list[float], w: int, label: str, color=None) -> None:
    """Thin per-step line plus a thick rolling mean (with markers when there are few points)."""
    if not x:
        return
    (raw,) = ax.plot(x, y, lw=0.8, alpha=0.45, color=color)
    marker = "o" if len(x) <= 20 else None  # a short run is a few points, not a trend
    ax.plot(x, rolling(y, w), lw=2, color=raw.get_color(), label=label, marker=marker, ms=4)


def reward_accuracy(series: dict[str, tuple[list[int], list[float]]], w: int) -> Figure:
    fig, axes = new_figure(1, 2, size=(12, 4.2))
    ax = axes[0][0]
    x, y = series["reward"]
    if x:
        std = dict(zip(*series["reward_std"], strict=True))
        lo = [v - std.get(s, 0.0) for s, v in zip(x, y, strict=True)]
        hi = [v + std.get(s, 0.0) for s, v in zip(x, y, strict=True)]
        ax.fill_between(x, lo, hi, alpha=0.15, label="± reward std (within step)")
    trend(ax, x, y, w, "mean reward")
    ax.set(title="Reward over training", xlabel=STEP_LABEL, ylabel="reward (mean over completions)")
    legend(ax, fontsize=8)
    ax = axes[0][1]
    for key, label in (("accuracy", "accuracy"), ("format_rate", "boxed-format rate")):
        trend(ax, *series[key], w, label)
    ax.set(title="Accuracy and answer format", xlabel=STEP_LABEL, ylabel="fraction of completions")
    ax.set_ylim(-0.02, 1.02)
    legend(ax, fontsize=8)
    return fig


def per_discipline_training(
    disciplines: list[str],
    rolling_curves: dict[str, dict[str, tuple[list[int], list[float]]]],
    halves: dict[str, list[float]],
    completions: list[int],
    w: int,
) -> Figure:
    """Per-discipline accuracy and reward curves, first-vs-second-half accuracy, completions per discipline."""
    cmap = colormaps["tab10"]
    fig, axes = new_figure(2, 2, size=(13, 9))
    for ax, key, ylabel in (
        (axes[0][0], "accuracy", "accuracy (fraction correct)"),
        (axes[0][1], "reward", "reward (mean over completions)"),
    ):
        for i, d in enumerate(disciplines):
            x, y = rolling_curves[key].get(d, ([], []))
            if x:
                mk = "o" if len(x) <= 20 else None
                ax.plot(x, y, lw=1.6, color=cmap(i % 10), label=d, marker=mk, ms=3)
        ax.set(
            title=f"{key.capitalize()} per discipline",
            xlabel=f"{STEP_LABEL} ({w}-step window, weighted by completions)",
            ylabel=ylabel,
        )
    axes[0][0].set_ylim(-0.02, 1.02)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper center", ncols=5, fontsize=8)
    ax = axes[1][0]
    bars(ax, disciplines, halves, horizontal=True)
    ax.set(title="Accuracy per discipline: first vs second half of training", xlabel="accuracy (fraction correct)")
    legend(ax, fontsize=8)
    ax = axes[1][1]
    bars(ax, disciplines, {"completions": completions}, horizontal=True, fmt=lambda v: f"{v:.0f}")
    ax.set(title="Completions scored per discipline (whole run)", xlabel="completions (count)")
    return fig


def length_rates(
    series: dict[str, tuple[list[int], list[float]]], per_discipline: list[tuple[list[int], list[float]]], w: int
) -> Figure:
    cmap = colormaps["tab10"]
    fig, axes = new_figure(1, 2, size=(12, 4.2))
    ax = axes[0][0]
    trend(ax, *series["completion_length"], w, "mean completion length")
    for i, (x, y) in enumerate(per_discipline):
        if len(x) > 1:
            ax.plot(x, rolling(y, w), lw=0.9, ls=":", color=cmap(i % 10))
    ax.set(title="Completion length (dotted: per discipline)", xlabel=STEP_LABEL, ylabel="tokens per completion")
    legend(ax, fontsize=8)
    ax = axes[0][1]
    for key, label in (
        ("clipped_ratio", "clipped (hit max length)"),
        ("unparseable_rate", "unparseable answer"),
        ("frac_reward_zero_std", "groups with zero reward std"),
    ):
        trend(ax, *series[key], w, label)
    ax.set(title="Clipped, unparseable and zero-signal rates", xlabel=STEP_LABEL, ylabel="fraction")
    ax.set_ylim(-0.02, 1.02)
    legend(ax, fontsize=8)
    return fig


def loss_lr(loss: tuple[list[int], list[float]], lr: tuple[list[int], list[float]], w: int) -> Figure:
    fig, axes = new_figure(1, 2, size=(12, 3.6))
    trend(axes[0][0], *loss, w, "loss")
    axes[0][0].set(title="GRPO loss", xlabel=STEP_LABEL, ylabel="loss (unitless)")
    axes[0][1].plot(*lr, lw=1.6)
    axes[0][1].set(title="Learning rate schedule", xlabel=STEP_LABEL, ylabel="learning rate")
    axes[0][1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    return fig


def letter_shares(keys: list[str], groups: dict[str, Mapping[str, float]], title: str, ylabel: str) -> Figure:
    """Share of each option letter, one bar series per counter (gold first)."""
    fig, ax = new_figure(size=(max(9, 0.5 * len(keys) * len(groups)), 4))
    ax = ax[0][0]
    bars(ax, keys, {name: fractions(c, keys) for name, c in groups.items()})
    ax.set(title=title, xlabel=f"option letter ('{NO_ANSWER}' = unparseable)", ylabel=ylabel)
    legend(ax, fontsize=8)
    return fig


def letter_collapse(x: list[int], share: list[float], excess: list[float], threshold: float, w: int) -> Figure:
    """The most frequent answer letter's share per step and its excess over the gold letters' share."""
    fig, ax = new_figure(size=(9, 4))
    ax = ax[0][0]
    trend(ax, x, share, w, "most frequent letter: share of answers")
    trend(ax, x, excess, w, "excess over its gold share")
    ax.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"guard threshold ({threshold:.0%} share)")
    ax.set(title="Letter collapse guard", xlabel=STEP_LABEL, ylabel="fraction of parsed answers")
    ax.set_ylim(-0.02, 1.02)
    legend(ax, fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------- evaluation
def completion_lengths(lengths: dict[str, list[float]], medians: dict[str, float]) -> Figure:
    fig, ax = new_figure(size=(9, 4))
    ax = ax[0][0]
    hi = max(max(v) for v in lengths.values() if v)
    bins = [hi * i / 30 for i in range(31)] if hi > 0 else 10
    for m, v in lengths.items():
        if v:
            ax.hist(v, bins=bins, alpha=0.5, label=f"{m} (median {medians[m]:.0f})")
    ax.set(title="Completion length before vs after training", xlabel="completion length (tokens)")
    ax.set_ylabel("completions (count)")
    legend(ax, fontsize=8)
    return fig


def answer_changes(tasks: list[str], shares: dict[str, list[float]], base: str, trained: str) -> Figure:
    """Stacked horizontal bars: per task, the share of questions in each kind of answer change."""
    fig, ax = new_figure(size=(10, 0.6 * len(tasks) + 2))
    ax = ax[0][0]
    left = [0.0] * len(tasks)
    for kind, color in zip(CHANGE_KINDS, CHANGE_COLOURS, strict=True):
        ax.barh(tasks, shares[kind], left=left, color=color, label=kind)
        left = [a + b for a, b in zip(left, shares[kind], strict=True)]
    ax.invert_yaxis()
    ax.set(title=f"How answers changed: {base} → {trained} (same questions)", xlabel="fraction of questions")
    legend(ax, fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return fig


def accuracy_bars(
    labels: list[str],
    acc: dict[str, list[float]],
    intervals: dict[str, list[tuple[float, float] | None]],
    title: str,
    horizontal: bool = False,
) -> Figure:
    """Accuracy per label and model, with 95 % interval whiskers."""
    n = max(1, len(acc))
    size = (9, 0.45 * len(labels) * n + 1.8) if horizontal else (max(7, 1.6 * len(labels) * n / 2 + 3), 4.5)
    fig, ax = new_figure(size=size)
    ax = ax[0][0]
    bars(ax, labels, acc, horizontal=horizontal, fmt=percent, errors=intervals)
    axis = "accuracy (fraction correct; whiskers: 95 % interval)"
    if horizontal:
        ax.set(title=title, xlabel=axis)
        ax.set_xlim(0, 1.1)
    else:
        ax.set(title=title, xlabel="task", ylabel=axis)
        ax.set_ylim(0, 1.12)
    legend(ax, fontsize=8)
    return fig


def permutations(
    labels: list[str],
    accuracy: list[float],
    consistency: list[float],
    keys: list[str],
    letter_groups: dict[str, Mapping[str, float]],
) -> Figure:
    fig, axes = new_figure(1, 2, size=(13, 4.5))
    bars(axes[0][0], labels, {"accuracy": accuracy, "consistency": consistency}, fmt=percent)
    axes[0][0].set(title="Accuracy and consistency under permutations", ylabel="fraction of questions")
    axes[0][0].set_ylim(0, 1.1)
    legend(axes[0][0], fontsize=8)
    bars(axes[0][1], keys, {k: fractions(c, keys) for k, c in letter_groups.items()})
    axes[0][1].set(title="Chosen letters under permutations vs gold", xlabel="option letter")
    axes[0][1].set_ylabel("fraction of answers")
    legend(axes[0][1], fontsize=7)
    return fig


def accuracy_vs_step(
    xs: list[float],
    tick_names: list[str] | None,
    lines: dict[str, tuple[list[float], list[float], list[tuple[float, float] | None]]],
) -> Figure:
    """One line per task (label -> (x, accuracy, 95 % interval)), with a shaded interval band."""
    fig, ax = new_figure(size=(8, 4.5))
    ax = ax[0][0]
    for label, (x, y, band) in lines.items():
        (line,) = ax.plot(x, y, marker="o", alpha=0.85, label=label)
        pts = [(xi, b) for xi, b in zip(x, band, strict=True) if b]
        if pts:
            ax.fill_between([p[0] for p in pts], [p[1][0] for p in pts], [p[1][1] for p in pts],
                            color=line.get_color(), alpha=0.12)  # fmt: skip
    if tick_names is None:
        ax.set_xlabel("training step")
    else:
        ax.set_xlabel("model")
        ax.set_xticks(xs, tick_names, rotation=20)
    ax.set_ylabel("accuracy (band: 95 % interval)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy vs training step")
    ax.grid(alpha=0.3)
    legend(ax, fontsize=8)
    return fig
