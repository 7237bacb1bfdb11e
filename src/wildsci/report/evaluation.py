"""``results.md`` and ``accuracy_vs_step.png`` of one ``wildsci eval`` output folder, from its ``results.json``.

Why here and not in ``wildsci.eval.run``: data flows one way (evaluate -> report), and the same numbers appear
in ``report.md``; one package owns how accuracies are written (with their 95 % interval, and a dagger below
n = 30) and drawn. ``wildsci eval`` calls :func:`write_eval_outputs` after the evaluation; running it again on a
copied folder rebuilds both files from ``results.json`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wildsci.answers import letter_share
from wildsci.errors import UserError, first_line
from wildsci.provenance import markdown_table, pct
from wildsci.redact import redact_text
from wildsci.report import figures, stats
from wildsci.report.text import CI_NOTE, SMALL_NOTE, accuracy, fmt

RESULTS_MD = "results.md"
ACCURACY_PNG = "accuracy_vs_step.png"


def _score(res: dict[str, Any], model: str, task: str) -> dict[str, Any]:
    return (res.get("scores", {}).get(model) or {}).get(task) or {}


def results_markdown(res: dict[str, Any]) -> str:
    """The tables of ``results.md``: accuracy (95 % interval) and extraction rate per model and task, accuracy
    per discipline for tasks with two or more disciplines, option-order robustness, skipped tasks, rows left out
    and subsets scored from their full task."""
    from wildsci.eval.adapters import disciplines

    models, tasks = res["models"], res["tasks"]
    lines = [
        "# Evaluation results",
        "",
        "Accuracy with its 95 % Wilson interval in brackets, then the answer-extraction rate (share of answers "
        "the parser could read a letter from) in parentheses; n = questions per task. " + SMALL_NOTE,
        "",
    ]
    ran = res.get("ran_on")
    if isinstance(ran, dict):
        lines += ["Ran on: " + ", ".join(f"{k} `{v}`" for k, v in ran.items() if not isinstance(v, dict)) + ".", ""]
    n = {t: max((_score(res, m["name"], t).get("n", 0) for m in models), default=0) for t in tasks}
    rows = []
    for m in models:
        cells = []
        for t in tasks:
            s = _score(res, m["name"], t)
            cells.append(f"{accuracy(s['accuracy'], s.get('n'))} ({pct(s['extraction_rate'])})" if s else "–")
        rows.append([m["name"], "–" if m["step"] is None else str(m["step"]), *cells])
    lines += [markdown_table(["model", "step", *(f"{t} (n={n[t]})" for t in tasks)], rows), ""]
    for t in tasks:
        per_model = {m["name"]: _score(res, m["name"], t).get("per_discipline", {}) for m in models}
        discs = [d for d in disciplines() if any(d in per for per in per_model.values())]
        if len(discs) < 2:
            continue
        counts = {d: max(per.get(d, {}).get("n", 0) for per in per_model.values()) for d in discs}
        rows = [
            [name, *(accuracy(per[d]["accuracy"], per[d].get("n")) if d in per else "–" for d in discs)]
            for name, per in per_model.items()
        ]
        header = ["model", *(f"{d} (n={counts[d]})" for d in discs)]
        lines += [f"## {t}: accuracy per discipline", "", markdown_table(header, rows), ""]
    perms = res.get("permutations")
    if perms:
        lines += [
            "## Robustness to option order",
            "",
            "Every question asked under K seeded orders of its options. Consistency: share of questions whose "
            "chosen option (by content) is the same under all K orders. Top letter: the most chosen letter "
            "and its share of answers, against its share among the gold letters. " + CI_NOTE,
            "",
        ]
        rows = []
        for m in models:
            for t in tasks:
                p = perms.get(m["name"], {}).get(t)
                if not p:
                    continue
                top = letter_share(p["letter_distribution"], p["gold_letter_distribution"])
                top_s = (
                    f"{top['top_letter']}: {pct(top['top_letter_share'])} vs "
                    f"{pct(top['top_letter_share'] - top['top_letter_excess'])}"
                    if top
                    else "no readable answer"
                )
                rows.append([m["name"], t, p["k"], accuracy(p["accuracy"], p.get("n")),
                             accuracy(p["consistency"], p.get("n")), top_s])  # fmt: skip
        header = ["model", "task", "K", "accuracy", "consistency", "top letter (chosen vs gold)"]
        lines += [markdown_table(header, rows), ""]
    skipped = res.get("skipped") or {}
    if skipped:
        lines += ["## Skipped tasks", ""] + [f"- {t}: {why}" for t, why in skipped.items()] + [""]
    dropped = res.get("dropped") or {}
    if dropped:
        lines += ["## Rows left out of a task", ""]
        lines += [f"- {t}: {', '.join(f'{why}: {n}' for why, n in d.items())}" for t, d in dropped.items()] + [""]
    derived = res.get("derived") or {}
    if derived:
        lines += ["## Subsets scored from their full task's answers (not generated again)", ""]
        lines += [f"- {t}: the {full} answers to its questions" for t, full in derived.items()] + [""]
    return "\n".join(lines)


def accuracy_vs_step_figure(res: dict[str, Any]):
    """One line per task against training step (the base model at step 0), or against model order when a step is
    unknown, with each point's 95 % interval as a band."""
    models = res["models"]
    use_steps = all(m["step"] is not None for m in models)
    xs = [m["step"] for m in models] if use_steps else list(range(len(models)))
    lines = {}
    for t in res["tasks"]:
        scores = [_score(res, m["name"], t) for m in models]
        pts = [(x, s) for x, s in zip(xs, scores, strict=True) if s]
        if pts:
            n = max(s["n"] for _, s in pts)
            lines[f"{t} (n={fmt(n)})"] = (
                [x for x, _ in pts],
                [s["accuracy"] for _, s in pts],
                [stats.accuracy_interval(s["accuracy"], s.get("n")) for _, s in pts],
            )
    return figures.accuracy_vs_step(xs, None if use_steps else [m["name"] for m in models], lines)


def write_eval_outputs(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.md`` and ``accuracy_vs_step.png`` next to ``results.json``; return their paths."""
    out = Path(out_dir)
    try:
        res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{out / 'results.json'}: cannot read ({first_line(e)}) -- rerun wildsci eval") from None
    md = out / RESULTS_MD
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(redact_text(results_markdown(res)), encoding="utf-8")
    tmp.replace(md)
    png = figures.save_png(accuracy_vs_step_figure(res), out / ACCURACY_PNG, dpi=110)
    return md, png
