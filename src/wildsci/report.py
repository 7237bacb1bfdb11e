"""``wildsci report RUN_DIR``: one Markdown page and a folder of PNG plots for a run.

The report reads only the files the stages promise to write (docs/architecture.md, "File contracts"):

- ``<run>/dataset/build_report.json``   the builder's stage counts, drops and dataset statistics;
- ``<run>/grpo/wildsci_metrics.jsonl`` one object per GRPO logging step (reward, accuracy, lengths, ...);
- ``<run>/eval/results.json`` + ``predictions.jsonl`` (+ ``results.md``, ``accuracy_vs_step.png``).

Why a separate stage rather than plots inside each stage: the questions a researcher asks of a run cut
across stages ("did the letter bias of the dataset show up in the policy?", "did training change the
answers on held-out questions, or only their format?"), and a report that reads files can be rerun on a
copied run folder, on a cluster run, or on a run that is only half finished. Anything missing is said in
the report ("no eval results found in ..."); nothing missing is ever an error.

Plots use matplotlib's object API (``Figure`` renders with Agg), so no display or global backend is needed.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from wildsci.answers import LETTERS
from wildsci.errors import UserError

METRICS_FILE = "wildsci_metrics.jsonl"
DEMO_TIMINGS_FILE = "demo_stages.json"  # written by wildsci.demo; shown when present
NO_ANSWER = "none"  # bucket for predictions the parser could not read


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class RunInputs:
    """Everything the report found for a run, plus one sentence per thing it did not find."""

    run_dir: Path
    dataset_dir: Path | None = None
    build_report: dict[str, Any] | None = None
    metrics_path: Path | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval_dir: Path | None = None
    results: dict[str, Any] | None = None
    predictions: list[dict[str, Any]] = field(default_factory=list)
    demo_stages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        notes.append(f"could not read `{path}` ({str(e).splitlines()[0]}); that part of the report is left out")
        return None


def _read_jsonl(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; unreadable lines (e.g. the last line of a killed run) are counted, not fatal."""
    rows, bad, first_bad = [], 0, None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        notes.append(f"could not read `{path}` ({e}); that part of the report is left out")
        return []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad += 1
            first_bad = first_bad or i
    if bad:
        notes.append(f"`{path}`: skipped {bad} unreadable line(s) (first at line {first_bad})")
    return rows


def _clean_metrics(rows: list[dict[str, Any]], path: Path, notes: list[str]) -> list[dict[str, Any]]:
    """One entry per step, in step order. A resumed run logs some steps twice: the later entry wins."""
    by_step: dict[int, dict[str, Any]] = {}
    dropped = 0
    for r in rows:
        step = r.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float):
            dropped += 1
            continue
        by_step[int(step)] = r
    repeated = len(rows) - dropped - len(by_step)
    if dropped:
        notes.append(f"`{path}`: {dropped} line(s) without a numeric `step` were skipped")
    if repeated:
        notes.append(
            f"`{path}`: {repeated} step(s) were logged more than once (a resumed run); the last entry is used"
        )
    return [by_step[s] for s in sorted(by_step)]


def locate_inputs(
    run_dir: str | Path,
    dataset_dir: str | Path | None = None,
    grpo_dir: str | Path | None = None,
    eval_dir: str | Path | None = None,
) -> RunInputs:
    """Find the stage outputs under ``run_dir`` (``dataset/``, ``grpo/``, ``eval/``) or at the explicit paths."""
    run = Path(run_dir)
    inp = RunInputs(run_dir=run)
    notes = inp.notes

    ds = Path(dataset_dir) if dataset_dir else run / "dataset"
    if (ds / "build_report.json").is_file():
        inp.dataset_dir = ds
        inp.build_report = _read_json(ds / "build_report.json", notes)
        if inp.build_report is not None and not isinstance(inp.build_report, dict):
            notes.append(f"`{ds / 'build_report.json'}` is not a JSON object; dataset statistics are left out")
            inp.build_report = None
    else:
        notes.append(f"no dataset build report found in `{ds}` (expected `build_report.json` from `wildsci build`)")

    g = Path(grpo_dir) if grpo_dir else run / "grpo"
    candidates = [g] if g.is_file() else [g / METRICS_FILE]
    if not candidates[0].is_file() and g.is_dir():  # e.g. metrics written into a nested output folder
        candidates = sorted(g.rglob(METRICS_FILE), key=lambda p: p.stat().st_mtime, reverse=True)
    if candidates and candidates[0].is_file():
        inp.metrics_path = candidates[0]
        inp.metrics = _clean_metrics(_read_jsonl(candidates[0], notes), candidates[0], notes)
        if not inp.metrics:
            notes.append(f"`{candidates[0]}` holds no logged steps yet; training plots are left out")
    else:
        notes.append(f"no training metrics found in `{g}` (expected `{METRICS_FILE}` from `wildsci.grpo`)")

    e = Path(eval_dir) if eval_dir else run / "eval"
    if (e / "results.json").is_file():
        inp.eval_dir = e
        res = _read_json(e / "results.json", notes)
        inp.results = res if isinstance(res, dict) else None
        if (e / "predictions.jsonl").is_file():
            inp.predictions = _read_jsonl(e / "predictions.jsonl", notes)
        else:
            notes.append(f"no `predictions.jsonl` in `{e}`; response-behaviour plots are left out")
    else:
        notes.append(f"no eval results found in `{e}` (expected `results.json` from `wildsci eval`)")

    if (run / DEMO_TIMINGS_FILE).is_file():
        stages = _read_json(run / DEMO_TIMINGS_FILE, notes)
        if isinstance(stages, dict) and isinstance(stages.get("stages"), list):
            inp.demo_stages = [s for s in stages["stages"] if isinstance(s, dict) and s.get("name") != "report"]
    return inp


# ------------------------------------------------------------------------------------------- helpers
def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def _pct(x: Any, digits: int = 1) -> str:
    v = _num(x)
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _fmt(x: Any, digits: int = 3) -> str:
    v = _num(x)
    if v is None:
        return "–"
    return f"{int(v)}" if v.is_integer() and abs(v) < 1e12 else f"{v:.{digits}g}"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _series(metrics: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the steps that logged ``key``; steps that could not compute it are absent, not zero."""
    steps, values = [], []
    for m in metrics:
        v = _num(m.get(key))
        if v is not None:
            steps.append(int(m["step"]))
            values.append(v)
    return steps, values


def _window(n: int) -> int:
    return max(1, n // 10)


def _rolling(values: list[float], w: int) -> list[float]:
    return [statistics.fmean(values[max(0, i - w + 1) : i + 1]) for i in range(len(values))]


def _halves(metrics: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """First and second half of the logged steps ("early" vs "late" training)."""
    k = max(1, len(metrics) // 2)
    return metrics[:k], metrics[k:] or metrics[-1:]


def _count_dicts(dicts: list[Any]) -> Counter:
    total: Counter = Counter()
    for d in dicts:
        if isinstance(d, dict):
            for k, v in d.items():
                if _num(v) is not None:
                    total[str(k)] += v
    return total


def _letter_keys(*counters: Counter) -> list[str]:
    present = [i for i, c in enumerate(LETTERS) if any(cnt.get(c) for cnt in counters)]
    keys = list(LETTERS[: max(present) + 1]) if present else []  # A..last letter used: gaps are information
    extra = sorted({k for cnt in counters for k in cnt if k not in LETTERS and cnt.get(k)})
    return keys + extra


def _fractions(cnt: Counter, keys: list[str]) -> list[float]:
    total = sum(cnt.values()) or 1
    return [cnt.get(k, 0) / total for k in keys]


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


class _Plots:
    """Creates figures and saves them as ``plots/<name>.png``; returns the Markdown image line."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):  # a rerun with fewer inputs must not leave stale plots behind
            old.unlink()
        self.made: list[Path] = []

    def figure(self, nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (8.0, 4.5)):
        from matplotlib.figure import Figure

        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.subplots(nrows, ncols, squeeze=False)

    def save(self, fig, name: str, alt: str) -> str:
        from matplotlib.ticker import MaxNLocator

        for ax in fig.axes:  # steps are whole numbers, even on a 2-step run
            if ax.get_xlabel().startswith("optimizer step"):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        path = self.dir / f"{name}.png"
        fig.savefig(path, dpi=100)
        self.made.append(path)
        return f"![{alt}](plots/{name}.png)"


def _bars(ax, labels: list[str], groups: dict[str, list[float]], horizontal: bool = False, fmt=None) -> None:
    """Grouped bars: one group per label, one bar per series in ``groups``."""
    n = max(1, len(groups))
    width = 0.8 / n
    for i, (name, vals) in enumerate(groups.items()):
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(labels))]
        bars = (ax.barh if horizontal else ax.bar)(pos, vals, width, label=name if n > 1 else None)
        if fmt and len(labels) * n <= 24:
            ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=7, padding=1)
    top = max((v for vals in groups.values() for v in vals), default=0)
    if top > 0:  # headroom for the bar labels and the legend
        (ax.set_xlim if horizontal else ax.set_ylim)(0, top * 1.18)
    if horizontal:
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=30 if max(map(len, labels or [""])) > 6 else 0)


# ------------------------------------------------------------------------------------------- sections
def _warnings_section(inp: RunInputs) -> list[str]:
    """GRPO guard warnings go at the top: a run that learned nothing should not be read further down.

    The guards repeat one warning per logging step with that step's numbers ("step 7: 62% of completions were
    cut off ..."); they are grouped by their wording with the numbers blanked, and the latest one is quoted.
    """
    groups: dict[str, tuple[list[int], str]] = {}
    for m in inp.metrics:
        for w in m.get("warnings") or []:
            text = str(w)
            key = re.sub(r"\d+(?:\.\d+)?", "#", re.sub(r"^step \d+:\s*", "", text))
            steps, _ = groups.get(key, ([], text))
            groups[key] = (steps + [int(m["step"])], text)
    if not groups:
        return []
    out = ["## ⚠️ Training warnings", ""]
    for steps, latest in groups.values():
        where = f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} logged steps, {steps[0]}–{steps[-1]}"
        shown = latest if len(steps) == 1 else f"{latest} *(latest of {len(steps)})*"
        out += [f"> **⚠️ GRPO guard ({where}):** {shown}", ">"]
    out[-1] = ""
    return out


def _base_and_trained(inp: RunInputs) -> tuple[str | None, str | None]:
    """Base: the model named ``base``, else step 0, else the first. Trained: the last other model listed.

    ``wildsci eval`` lists models in training order (base, ``checkpoint-N`` ascending, then the final save,
    whose step may be unknown), so the last one is the most-trained policy.
    """
    models = [m for m in (inp.results or {}).get("models") or [] if isinstance(m, dict) and m.get("name")]
    names = [str(m["name"]) for m in models]
    for p in inp.predictions:
        if p.get("model") is not None and str(p["model"]) not in names:
            names.append(str(p["model"]))
    if not names:
        return None, None
    steps = {str(m["name"]): m.get("step") for m in models}
    base = next((n for n in names if n.lower() == "base"), None)
    base = base or next((n for n in names if steps.get(n) == 0), None) or names[0]
    others = [n for n in names if n != base]
    return base, (others[-1] if others else None)


def _summary_section(inp: RunInputs) -> list[str]:
    out = ["## Summary", ""]
    br = inp.build_report or {}
    splits = br.get("splits") if isinstance(br.get("splits"), dict) else {}
    if splits:
        out.append("- **Dataset:** " + ", ".join(f"{k} {_fmt(v)}" for k, v in splits.items()) + " questions")
    if inp.metrics:
        first, last = _halves(inp.metrics)
        line = f"- **Training:** {len(inp.metrics)} logged steps (last step {inp.metrics[-1]['step']})"
        for key, label in (("reward", "reward"), ("accuracy", "accuracy")):
            a = [v for v in (_num(m.get(key)) for m in first) if v is not None]
            b = [v for v in (_num(m.get(key)) for m in last) if v is not None]
            if a and b:
                shown = _fmt if key == "reward" else _pct
                line += f"; {label} {shown(statistics.fmean(a))} → {shown(statistics.fmean(b))} (first vs second half)"
        out.append(line)
    base, trained = _base_and_trained(inp)
    scores = (inp.results or {}).get("scores") or {}
    if base and trained and isinstance(scores, dict):
        parts = []
        for task, s in (scores.get(base) or {}).items():
            t = (scores.get(trained) or {}).get(task)
            if isinstance(s, dict) and isinstance(t, dict) and _num(s.get("accuracy")) is not None:
                delta = (_num(t.get("accuracy")) or 0) - _num(s.get("accuracy"))
                parts.append(
                    f"{task} {_pct(s.get('accuracy'))} → {_pct(t.get('accuracy'))} ({100 * delta:+.1f} pt, "
                    f"n={_fmt(t.get('n'))})"
                )
        if parts:
            out.append(f"- **Evaluation ({base} → {trained}):** " + "; ".join(parts))
    if len(out) == 2:
        out.append("Nothing to summarise yet: no stage outputs were found (see *Inputs* below).")
    return out + [""]


def _inputs_section(inp: RunInputs) -> list[str]:
    rows = [
        ["dataset", f"`{inp.dataset_dir}`" if inp.dataset_dir else "missing"],
        ["training metrics", f"`{inp.metrics_path}` ({len(inp.metrics)} steps)" if inp.metrics_path else "missing"],
        ["evaluation", f"`{inp.eval_dir}` ({len(inp.predictions)} predictions)" if inp.eval_dir else "missing"],
    ]
    out = ["## Inputs", "", _table(["stage", "read from"], rows), ""]
    out += [f"- {n}" for n in inp.notes]
    return out + [""] if inp.notes else out


def _dataset_section(inp: RunInputs, plots: _Plots) -> list[str]:
    out = ["## 1. Dataset", ""]
    br = inp.build_report
    if not br:
        return out + [
            "No dataset statistics: " + next((n for n in inp.notes if "dataset" in n), "none found") + ".",
            "",
        ]
    card = inp.dataset_dir / "README.md" if inp.dataset_dir else None
    if card and card.is_file():
        out += [f"Dataset card: [`{_rel(card, inp.run_dir)}`]({_rel(card, inp.run_dir)}).", ""]
    if br.get("recipe_hash") or br.get("git_sha"):
        out += [f"Recipe hash `{br.get('recipe_hash', '?')}`, git `{br.get('git_sha', '?')}`.", ""]
    # beyond the contract, shown when the builder recorded them
    if isinstance(br.get("command"), str):
        took = f" in {_num(br.get('seconds')):.0f} s" if _num(br.get("seconds")) is not None else ""
        out += [f"Built with `{br['command']}`{took} ({br.get('built_at', 'time not recorded')}).", ""]
    if isinstance(br.get("generator"), str):
        voters = br.get("voters") if isinstance(br.get("voters"), list) else []
        out += [
            f"Generator: {br['generator']}; voters: {', '.join(map(str, voters)) or 'the generator'}"
            + (f", {br['num_votes']} votes per question" if br.get("num_votes") else "")
            + ".",
            "",
        ]

    stages = [s for s in br.get("stages") or [] if isinstance(s, dict) and s.get("name")]
    if stages:
        rows = []
        for s in stages:
            drops = s.get("drops") if isinstance(s.get("drops"), dict) else {}
            rows.append(
                [s["name"], _fmt(s.get("in")), _fmt(s.get("out")), ", ".join(f"{k}: {v}" for k, v in drops.items())]
            )
        out += ["### Pipeline stages", "", _table(["stage", "in", "out", "drops (reason: count)"], rows), ""]
        fig, ax = plots.figure(size=(8, 0.45 * len(stages) + 1.6))
        ax = ax[0][0]
        names = [str(s["name"]) for s in stages]
        _bars(
            ax,
            names,
            {"in": [_num(s.get("in")) or 0 for s in stages], "out": [_num(s.get("out")) or 0 for s in stages]},
            horizontal=True,
            fmt=_fmt,
        )
        ax.set_xlabel("items (papers, passages or questions, per stage)")
        ax.set_title("Dataset build: items in and out of each stage")
        ax.legend(fontsize=8)
        out += [plots.save(fig, "dataset_funnel", "dataset build funnel"), ""]

    drops = br.get("drops") if isinstance(br.get("drops"), dict) else {}
    if drops:
        rows = [[k, _fmt(v)] for k, v in sorted(drops.items(), key=lambda kv: -(_num(kv[1]) or 0))]
        out += ["### Drops (all stages)", "", _table(["reason", "count"], rows), ""]

    panels = [
        ("per_discipline", "Questions per discipline", "questions", True),
        ("letter_distribution", "Gold answer letter balance", "questions", False),
        ("voting_types", "Voting classes (8 voters vs gold)", "questions", True),
        ("splits", "Split sizes", "questions", False),
    ]
    present = [p for p in panels if isinstance(br.get(p[0]), dict) and br[p[0]]]
    if present:
        fig, axes = plots.figure(2, 2, size=(12, 8))
        for ax, (key, title, unit, horiz) in zip(axes.flat, present, strict=False):
            d = br[key]
            labels = [k for k in LETTERS if k in d] if key == "letter_distribution" else list(d)
            vals = [_num(d[k]) or 0 for k in labels]
            _bars(ax, labels, {key: vals}, horizontal=horiz, fmt=_fmt)
            (ax.set_xlabel if horiz else ax.set_ylabel)(f"{unit} (count)")
            ax.set_title(title)
            if key == "letter_distribution" and sum(vals):
                ax.axhline(sum(vals) / len(vals), color="k", ls="--", lw=1, label="uniform")
                ax.legend(fontsize=8, loc="lower right")
        for ax in list(axes.flat)[len(present) :]:
            ax.set_axis_off()
        fig.suptitle("Dataset statistics (build_report.json)")
        out += [plots.save(fig, "dataset_stats", "dataset statistics"), ""]
        for key, title, _, _ in present:
            d = br[key]
            total = sum(_num(v) or 0 for v in d.values()) or 1
            rows = [[k, _fmt(v), _pct((_num(v) or 0) / total)] for k, v in d.items()]
            out += [f"**{title}**", "", _table([key.replace("_", " "), "count", "share"], rows), ""]

    decon = br.get("decontamination") if isinstance(br.get("decontamination"), dict) else None
    if decon == {}:
        out += ["Decontamination: none (the recipe lists no benchmarks to check against).", ""]
    if decon:
        rows = [[b, _fmt(v.get("checked")), _fmt(v.get("removed"))] for b, v in decon.items() if isinstance(v, dict)]
        out += ["### Decontamination", "", _table(["benchmark", "questions checked", "removed"], rows), ""]
    calls = br.get("llm_calls") if isinstance(br.get("llm_calls"), dict) else {}
    if calls:
        out += [f"LLM calls: {_fmt(calls.get('made'))} made, {_fmt(calls.get('cached'))} served from the cache.", ""]
    return out


def _training_section(inp: RunInputs, plots: _Plots) -> list[str]:
    from matplotlib import colormaps

    out = ["## 2. Training dynamics (GRPO)", ""]
    metrics = inp.metrics
    if not metrics:
        return out + ["No training plots: " + next((n for n in inp.notes if "metrics" in n), "no metrics") + ".", ""]
    out += [
        f"{len(metrics)} logged steps from `{_rel(inp.metrics_path, inp.run_dir)}`. "
        + (
            f"Thin lines are per-step values, thick lines a {_window(len(metrics))}-step rolling mean. "
            if _window(len(metrics)) > 1
            else ""
        )
        + "Keys a step could not compute are absent, not zero.",
        "",
    ]
    if not any(m.get("warnings") for m in metrics):
        out += ["No GRPO guard warnings were raised.", ""]
    w = _window(len(metrics))
    cmap = colormaps["tab10"]

    def line(ax, key: str, label: str, color: str | None = None) -> bool:
        x, y = _series(metrics, key)
        if not x:
            return False
        (raw,) = ax.plot(x, y, lw=0.8, alpha=0.45, color=color)
        marker = "o" if len(x) <= 20 else None  # a short run is a few points, not a trend
        ax.plot(x, _rolling(y, w), lw=2, color=raw.get_color(), label=label, marker=marker, ms=4)
        return True

    # reward + accuracy
    fig, axes = plots.figure(1, 2, size=(12, 4.2))
    ax = axes[0][0]
    x, y = _series(metrics, "reward")
    if x:
        sx, sd = _series(metrics, "reward_std")
        std = dict(zip(sx, sd, strict=True))
        lo = [v - std.get(s, 0.0) for s, v in zip(x, y, strict=True)]
        hi = [v + std.get(s, 0.0) for s, v in zip(x, y, strict=True)]
        ax.fill_between(x, lo, hi, alpha=0.15, label="± reward std (within step)")
    line(ax, "reward", "mean reward")
    ax.set(title="Reward over training", xlabel="optimizer step", ylabel="reward (mean over completions)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for key, label in (("accuracy", "accuracy"), ("format_rate", "boxed-format rate")):
        line(ax, key, label)
    ax.set(title="Accuracy and answer format", xlabel="optimizer step", ylabel="fraction of completions")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    out += ["### Reward and accuracy", "", plots.save(fig, "train_reward_accuracy", "reward and accuracy"), ""]

    # per discipline
    disciplines = sorted({d for m in metrics for d in (m.get("per_discipline") or {}) if isinstance(d, str)})
    if disciplines:
        out += ["### Per discipline", ""]
        fig, axes = plots.figure(2, 2, size=(13, 9))
        steps = [int(m["step"]) for m in metrics]
        early, late = _halves(metrics)

        def pooled(rows: list[dict[str, Any]], d: str, key: str) -> tuple[float | None, int]:
            num = den = 0.0
            for m in rows:
                v = (m.get("per_discipline") or {}).get(d) or {}
                n, val = _num(v.get("n")) or 0, _num(v.get(key))
                if n and val is not None:
                    num, den = num + n * val, den + n
            return (num / den if den else None), int(den)

        for ax, key, ylabel in (
            (axes[0][0], "accuracy", "accuracy (fraction correct)"),
            (axes[0][1], "reward", "reward (mean over completions)"),
        ):
            for i, d in enumerate(disciplines):
                ys = [pooled(metrics[max(0, j - w + 1) : j + 1], d, key)[0] for j in range(len(metrics))]
                pts = [(s, v) for s, v in zip(steps, ys, strict=True) if v is not None]
                if pts:
                    mk = "o" if len(pts) <= 20 else None
                    ax.plot(*zip(*pts, strict=True), lw=1.6, color=cmap(i % 10), label=d, marker=mk, ms=3)
            ax.set(
                title=f"{key.capitalize()} per discipline",
                xlabel=f"optimizer step ({w}-step window, weighted by completions)",
                ylabel=ylabel,
            )
        axes[0][0].set_ylim(-0.02, 1.02)
        fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper center", ncols=5, fontsize=8)
        ax = axes[1][0]
        e_acc = [pooled(early, d, "accuracy")[0] for d in disciplines]
        l_acc = [pooled(late, d, "accuracy")[0] for d in disciplines]
        _bars(ax, disciplines, {"first half": [v or 0 for v in e_acc], "second half": [v or 0 for v in l_acc]}, True)
        ax.set(title="Accuracy per discipline: first vs second half of training", xlabel="accuracy (fraction correct)")
        ax.legend(fontsize=8)
        ax = axes[1][1]
        n_tot = [pooled(metrics, d, "accuracy")[1] for d in disciplines]
        _bars(ax, disciplines, {"completions": n_tot}, True, fmt=_fmt)
        ax.set(title="Completions scored per discipline (whole run)", xlabel="completions (count)")
        out += [plots.save(fig, "train_per_discipline", "per-discipline training dynamics"), ""]
        rows = []
        for d, n, a, b in zip(disciplines, n_tot, e_acc, l_acc, strict=True):
            delta = f"{100 * (b - a):+.1f} pt" if a is not None and b is not None else "–"
            rows.append([d, n, _pct(a), _pct(b), delta])
        out += [_table(["discipline", "completions", "accuracy 1st half", "accuracy 2nd half", "change"], rows), ""]

    # completion length
    fig, axes = plots.figure(1, 2, size=(12, 4.2))
    ax = axes[0][0]
    line(ax, "completion_length", "mean completion length")
    for i, d in enumerate(disciplines):
        x, y = [], []
        for m in metrics:
            v = _num(((m.get("per_discipline") or {}).get(d) or {}).get("completion_length"))
            if v is not None:
                x.append(int(m["step"]))
                y.append(v)
        if len(x) > 1:
            ax.plot(x, _rolling(y, w), lw=0.9, ls=":", color=cmap(i % 10))
    ax.set(title="Completion length (dotted: per discipline)", xlabel="optimizer step", ylabel="tokens per completion")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for key, label in (
        ("clipped_ratio", "clipped (hit max length)"),
        ("unparseable_rate", "unparseable answer"),
        ("frac_reward_zero_std", "groups with zero reward std"),
    ):
        line(ax, key, label)
    ax.set(title="Clipped, unparseable and zero-signal rates", xlabel="optimizer step", ylabel="fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    out += [
        "### Completion length, clipping and unparseable answers",
        "",
        "A rising clipped ratio means completions hit `max_completion_length` (their answers are cut off); a high "
        "zero-std fraction means most groups give GRPO no learning signal.",
        "",
        plots.save(fig, "train_length_rates", "completion length and rates"),
        "",
    ]

    # loss + learning rate
    if _series(metrics, "loss")[0] or _series(metrics, "learning_rate")[0]:
        fig, axes = plots.figure(1, 2, size=(12, 3.6))
        line(axes[0][0], "loss", "loss")
        axes[0][0].set(title="GRPO loss", xlabel="optimizer step", ylabel="loss (unitless)")
        x, y = _series(metrics, "learning_rate")
        axes[0][1].plot(x, y, lw=1.6)
        axes[0][1].set(title="Learning rate schedule", xlabel="optimizer step", ylabel="learning rate")
        axes[0][1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        out += ["### Loss and learning rate", "", plots.save(fig, "train_loss_lr", "loss and learning rate"), ""]

    # letters chosen during training vs gold
    early, late = _halves(metrics)
    pe, pl = _count_dicts([m.get("letters") for m in early]), _count_dicts([m.get("letters") for m in late])
    gold = _count_dicts([m.get("gold_letters") for m in metrics])
    if pe or pl or gold:
        keys = _letter_keys(pe, pl, gold)
        fig, ax = plots.figure(size=(9, 4))
        ax = ax[0][0]
        groups = {"gold (whole run)": _fractions(gold, keys)} if gold else {}
        groups.update({"policy, first half": _fractions(pe, keys), "policy, second half": _fractions(pl, keys)})
        _bars(ax, keys, groups)
        ax.set(title="Answer letters during training vs gold", xlabel="option letter")
        ax.set_ylabel("fraction of parsed answers")
        ax.legend(fontsize=8)
        out += [
            "### Answer letters during training",
            "",
            "A policy that collapses onto one letter shows here before it shows in accuracy.",
            "",
            plots.save(fig, "train_letters", "answer letters during training"),
            "",
        ]
    return out


def _response_section(inp: RunInputs, plots: _Plots) -> list[str]:
    out = ["## 3. Response behaviours (base vs trained, from evaluation)", ""]
    preds = [p for p in inp.predictions if isinstance(p, dict) and p.get("model") is not None]
    if not preds:
        why = next((n for n in inp.notes if "eval" in n or "predictions" in n), "no predictions found")
        return out + [f"No response-behaviour plots: {why}.", ""]
    base, trained = _base_and_trained(inp)
    models = [m for m in (base, trained) if m]
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        by_model[str(p["model"])].append(p)
    out += [f"Compared: **{base}** (before) and **{trained or '—'}** (after), all tasks pooled.", ""]

    # completion length distribution
    lengths = {
        m: [v for v in (_num(p.get("completion_tokens")) for p in by_model[m]) if v is not None] for m in models
    }
    if any(lengths.values()):
        fig, ax = plots.figure(size=(9, 4))
        ax = ax[0][0]
        hi = max(max(v) for v in lengths.values() if v)
        bins = [hi * i / 30 for i in range(31)] if hi > 0 else 10
        for m, v in lengths.items():
            if v:
                ax.hist(v, bins=bins, alpha=0.5, label=f"{m} (median {statistics.median(v):.0f})")
        ax.set(title="Completion length before vs after training", xlabel="completion length (tokens)")
        ax.set_ylabel("completions (count)")
        ax.legend(fontsize=8)
        out += ["### Completion length", "", plots.save(fig, "eval_completion_length", "completion lengths"), ""]
        rows = []
        for m, v in lengths.items():
            if v:
                q = sorted(v)
                rows.append(
                    [
                        m,
                        len(v),
                        f"{statistics.fmean(v):.0f}",
                        f"{statistics.median(v):.0f}",
                        f"{q[int(0.9 * (len(q) - 1))]:.0f}",
                    ]
                )
        out += [_table(["model", "completions", "mean tokens", "median", "p90"], rows), ""]

    # answer letters vs gold
    gold: Counter = Counter()
    seen_gold = set()
    for p in preds:
        key = (p.get("task"), p.get("question_id"))
        if key not in seen_gold and p.get("gold"):
            seen_gold.add(key)
            gold[str(p["gold"])] += 1
    chosen = {m: Counter(str(p.get("pred") or NO_ANSWER) for p in by_model[m]) for m in models}
    keys = _letter_keys(gold, *chosen.values())
    fig, ax = plots.figure(size=(10, 4))
    ax = ax[0][0]
    _bars(ax, keys, {"gold": _fractions(gold, keys), **{m: _fractions(c, keys) for m, c in chosen.items()}})
    ax.set(title="Answer letters vs gold (evaluation)", xlabel=f"option letter ('{NO_ANSWER}' = unparseable)")
    ax.set_ylabel("fraction of questions")
    ax.legend(fontsize=8)
    out += ["### Answer letters vs gold", "", plots.save(fig, "eval_letters", "answer letters vs gold"), ""]

    # how often the answer changes
    if base and trained:
        before = {(p.get("task"), p.get("question_id")): p for p in by_model[base]}
        cats = ("kept, right", "kept, wrong", "wrong → right", "right → wrong", "changed, still wrong")
        per_task: dict[str, Counter] = defaultdict(Counter)
        for p in by_model[trained]:
            q = before.get((p.get("task"), p.get("question_id")))
            if q is None:
                continue
            same = (q.get("pred") or NO_ANSWER) == (p.get("pred") or NO_ANSWER)
            a, b = bool(q.get("correct")), bool(p.get("correct"))
            cat = (
                ("kept, right" if b else "kept, wrong")
                if same
                else ("wrong → right" if b and not a else "right → wrong" if a and not b else "changed, still wrong")
            )
            per_task[str(p.get("task"))][cat] += 1
        if per_task:
            tasks = sorted(per_task)
            fig, ax = plots.figure(size=(10, 0.6 * len(tasks) + 2))
            ax = ax[0][0]
            left = [0.0] * len(tasks)
            colors = ("#4c9a2a", "#9e9e9e", "#1f77b4", "#d62728", "#ff9f1c")
            for cat, color in zip(cats, colors, strict=True):
                vals = [per_task[t][cat] / max(1, sum(per_task[t].values())) for t in tasks]
                ax.barh(tasks, vals, left=left, color=color, label=cat)
                left = [a + b for a, b in zip(left, vals, strict=True)]
            ax.invert_yaxis()
            ax.set(title=f"How answers changed: {base} → {trained} (same questions)", xlabel="fraction of questions")
            ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
            out += [
                "### How often the answer changes",
                "",
                plots.save(fig, "eval_answer_changes", "answer changes"),
                "",
            ]
            rows = []
            for t in tasks:
                c, n = per_task[t], sum(per_task[t].values())
                changed = n - c["kept, right"] - c["kept, wrong"]
                rows.append([t, n, _pct(changed / n), *(c[k] for k in cats[2:])])
            out += [_table(["task", "questions", "answer changed", *cats[2:]], rows), ""]
    return out


def _eval_section(inp: RunInputs, plots: _Plots) -> list[str]:
    out = ["## 4. Generalization (evaluation)", ""]
    res = inp.results
    if not res:
        why = next((n for n in inp.notes if "eval" in n), "no eval results found")
        return out + [f"No evaluation results: {why}.", ""]
    scores = res.get("scores") if isinstance(res.get("scores"), dict) else {}
    models = [m for m in res.get("models") or [] if isinstance(m, dict) and m.get("name")]
    names = [str(m["name"]) for m in models] or list(scores)
    steps = {str(m["name"]): m.get("step") for m in models}
    tasks = [str(t) for t in res.get("tasks") or []] or sorted({t for s in scores.values() for t in (s or {})})
    if not scores or not tasks:
        return out + [f"`{inp.eval_dir / 'results.json'}` holds no scores yet.", ""]
    rows = []
    for m in names:
        row = [m, _fmt(steps.get(m)) if steps.get(m) is not None else "–"]
        for t in tasks:
            s = (scores.get(m) or {}).get(t) or {}
            row.append(f"{_pct(s.get('accuracy'))} (n={_fmt(s.get('n'))}, parsed {_pct(s.get('extraction_rate'), 0)})")
        rows.append(row)
    out += [
        "Accuracy per model and task; *parsed* is the share of completions the answer parser could read.",
        "",
        _table(["model", "step", *tasks], rows),
        "",
    ]
    if (inp.eval_dir / "results.md").is_file():
        out += [
            f"Full table as written by `wildsci eval`: [`{_rel(inp.eval_dir / 'results.md', inp.run_dir)}`]"
            f"({_rel(inp.eval_dir / 'results.md', inp.run_dir)}).",
            "",
        ]

    fig, ax = plots.figure(size=(max(7, 1.6 * len(tasks) * max(1, len(names)) / 2 + 3), 4.5))
    ax = ax[0][0]
    groups = {m: [_num(((scores.get(m) or {}).get(t) or {}).get("accuracy")) or 0 for t in tasks] for m in names}
    _bars(ax, tasks, groups, fmt=lambda v: f"{100 * v:.0f}%")
    ax.set(title="Accuracy per benchmark and model", xlabel="task", ylabel="accuracy (fraction correct)")
    ax.set_ylim(0, 1.12)
    ax.legend(fontsize=8)
    out += [plots.save(fig, "eval_accuracy", "accuracy per task and model"), ""]
    avs = inp.eval_dir / "accuracy_vs_step.png"
    if avs.is_file():
        out += [
            "Accuracy against training step, as plotted by `wildsci eval`:",
            "",
            f"![accuracy vs step]({_rel(avs, inp.run_dir)})",
            "",
        ]

    # per discipline, for tasks that carry disciplines (e.g. the WildSci held-out split)
    per: dict[str, dict[str, list[float]]] = {m: defaultdict(lambda: [0.0, 0.0]) for m in names}
    for m in names:
        for t in tasks:
            pd = ((scores.get(m) or {}).get(t) or {}).get("per_discipline") or {}
            for d, v in pd.items():
                n, a = _num((v or {}).get("n")) or 0, _num((v or {}).get("accuracy"))
                if n and a is not None:
                    per[m][d][0] += n * a
                    per[m][d][1] += n
    disciplines = sorted({d for m in names for d in per[m]})
    if disciplines:
        shown = [m for m in _base_and_trained(inp) if m] or names[:2]
        fig, ax = plots.figure(size=(9, 0.45 * len(disciplines) * len(shown) + 1.8))
        ax = ax[0][0]
        acc = {m: [per[m][d][0] / per[m][d][1] if per[m][d][1] else 0 for d in disciplines] for m in shown}
        _bars(ax, disciplines, acc, horizontal=True, fmt=lambda v: f"{100 * v:.0f}%")
        ax.set(
            title="Accuracy per discipline (tasks with discipline labels, pooled)",
            xlabel="accuracy (fraction correct)",
        )
        ax.set_xlim(0, 1.1)
        ax.legend(fontsize=8)
        out += ["### Per discipline", "", plots.save(fig, "eval_per_discipline", "accuracy per discipline"), ""]
        rows = [
            [
                d,
                *(
                    f"{_pct(per[m][d][0] / per[m][d][1]) if per[m][d][1] else '–'} (n={int(per[m][d][1])})"
                    for m in shown
                ),
            ]
            for d in disciplines
        ]
        out += [_table(["discipline", *shown], rows), ""]

    perms = res.get("permutations") if isinstance(res.get("permutations"), dict) else {}
    if perms:
        out += [
            "### Option-order permutations",
            "",
            "Each question is asked under K seeded option orders. *Consistency* is how often the model picks the "
            "same option (by content) under every order: position bias shows as low consistency.",
            "",
        ]
        rows, pairs = [], []
        for m, per_task in perms.items():
            for t, v in (per_task or {}).items():
                if isinstance(v, dict):
                    rows.append([m, t, _fmt(v.get("k")), _pct(v.get("accuracy")), _pct(v.get("consistency"))])
                    pairs.append((m, t, v))
        out += [_table(["model", "task", "K", "accuracy", "consistency"], rows), ""]
        if pairs:
            fig, axes = plots.figure(1, 2, size=(13, 4.5))
            labels = [f"{m}\n{t}" for m, t, _ in pairs]
            _bars(
                axes[0][0],
                labels,
                {
                    "accuracy": [_num(v.get("accuracy")) or 0 for *_, v in pairs],
                    "consistency": [_num(v.get("consistency")) or 0 for *_, v in pairs],
                },
                fmt=lambda v: f"{100 * v:.0f}%",
            )
            axes[0][0].set(title="Accuracy and consistency under permutations", ylabel="fraction of questions")
            axes[0][0].set_ylim(0, 1.1)
            axes[0][0].legend(fontsize=8)
            gold = Counter({k: _num(x) or 0 for k, x in (pairs[0][2].get("gold_letter_distribution") or {}).items()})
            chosen = {
                f"{m} / {t}": Counter({k: _num(x) or 0 for k, x in (v.get("letter_distribution") or {}).items()})
                for m, t, v in pairs
            }
            keys = _letter_keys(gold, *chosen.values())
            _bars(
                axes[0][1],
                keys,
                {"gold": _fractions(gold, keys), **{k: _fractions(c, keys) for k, c in chosen.items()}},
            )
            axes[0][1].set(
                title="Chosen letters under permutations vs gold", xlabel="option letter", ylabel="fraction of answers"
            )
            axes[0][1].legend(fontsize=7)
            out += [plots.save(fig, "eval_permutations", "permutation robustness"), ""]
    return out


def _demo_section(inp: RunInputs) -> list[str]:
    if not inp.demo_stages:
        return []
    rows = [
        [s.get("name", "?"), s.get("status", "?"), f"{_num(s.get('seconds')) or 0:.0f} s", f"`{s.get('command', '')}`"]
        for s in inp.demo_stages
    ]
    return ["## Stage times (`wildsci demo`)", "", _table(["stage", "status", "time", "command"], rows), ""]


# ------------------------------------------------------------------------------------------- entry point
def write_report(
    run_dir: str | Path,
    dataset_dir: str | Path | None = None,
    grpo_dir: str | Path | None = None,
    eval_dir: str | Path | None = None,
) -> Path:
    """Write ``<run_dir>/report.md`` and ``<run_dir>/plots/*.png``; return the report's path.

    Inputs are looked up under ``run_dir`` (``dataset/``, ``grpo/``, ``eval/``) unless given explicitly. A
    missing input becomes a sentence in the report; only a run folder that does not exist at all is an error.
    """
    run = Path(run_dir)
    if not run.is_dir() and not (dataset_dir or grpo_dir or eval_dir):
        raise UserError(f"{run}: no such run directory -- pass the folder that holds dataset/, grpo/ and eval/")
    run.mkdir(parents=True, exist_ok=True)
    inp = locate_inputs(run, dataset_dir, grpo_dir, eval_dir)
    plots = _Plots(run / "plots")

    lines = [
        f"# WildSci run report: `{run.name or run.resolve().name}`",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `wildsci report {run}`. "
        "Rerun that command after any stage to refresh it.",
        "",
    ]
    lines += _warnings_section(inp)
    lines += _summary_section(inp)
    lines += _inputs_section(inp)
    sections = (_dataset_section, _training_section, _response_section, _eval_section)
    for section in sections:
        try:
            lines += section(inp, plots)
        except Exception as e:  # a malformed input must cost one section, not the whole report
            title = section.__name__.strip("_").replace("_section", "")
            detail = str(e).splitlines()[0] if str(e) else ""
            msg = f"the {title} section could not be drawn: {type(e).__name__}: {detail}"
            lines += [f"> **{msg}** -- the input files do not follow docs/architecture.md.", ""]
            print(f"wildsci report: warning: {msg}", file=sys.stderr)
    lines += _demo_section(inp)

    path = run / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
