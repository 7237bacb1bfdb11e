"""The report's training section: GRPO dynamics from ``wildsci_metrics.jsonl``, per discipline, with the guards.

Accuracies here are over *completions*, and the completions of one prompt group answer the same question, so
the 95 % intervals shown are narrower than the truth; the page says so. A change between the halves of training
is called a gain only when its interval excludes 0.
"""

from __future__ import annotations

from typing import Any

from wildsci.provenance import markdown_table
from wildsci.report import figures, stats
from wildsci.report.inputs import RunInputs
from wildsci.report.text import SMALL_NOTE, accuracy, difference, fmt, rel

#: the one-letter guard of wildsci.metrics.Guards warns when a letter takes more than this share of the readable
#: answers (over a window of steps) beyond its gold share; the report draws the line where the guard fires
COLLAPSE_SHARE = 0.4
SERIES = (
    "reward reward_std accuracy format_rate completion_length clipped_ratio unparseable_rate frac_reward_zero_std "
    "loss learning_rate"
).split()


def _completions(rows: list[dict[str, Any]]) -> int:
    """Completions scored over some steps (from ``per_discipline``; 0 when a step did not log it as a dict)."""
    per = [m.get("per_discipline") for m in rows]
    return sum(
        int(stats.num(v.get("n")) or 0) for d in per if isinstance(d, dict) for v in d.values() if isinstance(v, dict)
    )


def training_summary(metrics: list[dict[str, Any]]) -> str:
    """The summary line: steps, and reward / accuracy in the first vs the second half of training."""
    first, last = stats.halves(metrics)
    line = f"- **Training:** {len(metrics)} logged steps (last step {metrics[-1]['step']})"
    a, b = stats.mean_of(first, "reward"), stats.mean_of(last, "reward")
    if a is not None and b is not None:
        line += f"; reward {fmt(a)} → {fmt(b)}"
    a, b = stats.mean_of(first, "accuracy"), stats.mean_of(last, "accuracy")
    if a is not None and b is not None:
        n1, n2 = _completions(first), _completions(last)
        shown = (accuracy(a, n1), accuracy(b, n2)) if n1 and n2 else (f"{100 * a:.1f}%", f"{100 * b:.1f}%")
        line += f"; accuracy {shown[0]} → {shown[1]}"
    return line + " (first vs second half of the logged steps)"


def collapse_series(metrics: list[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
    """(steps, top letter share, its excess over the gold share) of the steps that logged them."""
    x, share, excess = [], [], []
    for m in metrics:
        s, e = stats.num(m.get("top_letter_share")), stats.num(m.get("top_letter_excess"))
        if s is not None and e is not None:
            x.append(int(m["step"]))
            share.append(s)
            excess.append(e)
    return x, share, excess


def training_section(inp: RunInputs, plots: figures.Plots) -> list[str]:
    out = ["## 2. Training dynamics (GRPO)", ""]
    metrics = inp.metrics
    if not metrics:
        return out + ["No training plots: " + next((n for n in inp.notes if "metrics" in n), "no metrics") + ".", ""]
    w = stats.window(len(metrics))
    out += [
        f"{len(metrics)} logged steps from `{rel(inp.metrics_path, inp.run_dir)}`. "
        + (f"Thin lines are per-step values, thick lines a {w}-step rolling mean. " if w > 1 else "")
        + "Keys a step could not compute are absent, not zero.",
        "",
    ]
    if not any(m.get("warnings") for m in metrics):
        out += ["No GRPO guard warnings were raised.", ""]
    series = {k: stats.series(metrics, k) for k in SERIES}
    fig = figures.reward_accuracy(series, w)
    out += ["### Reward and accuracy", "", plots.save(fig, "train_reward_accuracy", "reward and accuracy"), ""]

    disciplines = stats.discipline_names(metrics)
    if disciplines:
        out += _per_discipline(metrics, disciplines, w, plots)

    per_disc_len = [stats.discipline_series(metrics, d, "completion_length") for d in disciplines]
    out += [
        "### Completion length, clipping and unparseable answers",
        "",
        "A rising clipped ratio means completions hit `max_completion_length` (their answers are cut off); a high "
        "zero-std fraction means most groups give GRPO no learning signal.",
        "",
        plots.save(figures.length_rates(series, per_disc_len, w), "train_length_rates", "completion length and rates"),
        "",
    ]
    if series["loss"][0] or series["learning_rate"][0]:
        fig = figures.loss_lr(series["loss"], series["learning_rate"], w)
        out += ["### Loss and learning rate", "", plots.save(fig, "train_loss_lr", "loss and learning rate"), ""]

    early, late = stats.halves(metrics)
    pe = stats.count_dicts(m.get("letters") for m in early)
    pl = stats.count_dicts(m.get("letters") for m in late)
    gold = stats.count_dicts(m.get("gold_letters") for m in metrics)
    if pe or pl or gold:
        groups = {"gold (whole run)": gold} if gold else {}
        groups.update({"policy, first half": pe, "policy, second half": pl})
        fig = figures.letter_shares(
            stats.letter_keys(pe, pl, gold), groups, "Answer letters during training vs gold", "fraction of answers"
        )
        out += [
            "### Answer letters during training",
            "",
            "A policy that collapses onto one letter shows here before it shows in accuracy.",
            "",
            plots.save(fig, "train_letters", "answer letters during training"),
            "",
        ]
    out += _collapse(metrics, w, plots)
    return out


def _per_discipline(metrics: list[dict[str, Any]], disciplines: list[str], w: int, plots: figures.Plots) -> list[str]:
    steps = [int(m["step"]) for m in metrics]
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for key in ("accuracy", "reward"):
        curves[key] = {}
        for d in disciplines:
            ys = [stats.pooled(metrics[max(0, j - w + 1) : j + 1], d, key)[0] for j in range(len(metrics))]
            pts = [(s, v) for s, v in zip(steps, ys, strict=True) if v is not None]
            curves[key][d] = ([p[0] for p in pts], [p[1] for p in pts])
    early, late = stats.halves(metrics)
    e = [stats.pooled(early, d, "accuracy") for d in disciplines]
    late_acc = [stats.pooled(late, d, "accuracy") for d in disciplines]
    totals = [stats.pooled(metrics, d, "accuracy")[1] for d in disciplines]
    halves = {"first half": [a or 0 for a, _ in e], "second half": [a or 0 for a, _ in late_acc]}
    fig = figures.per_discipline_training(disciplines, curves, halves, totals, w)
    rows = []
    for d, n, (a, na), (b, nb) in zip(disciplines, totals, e, late_acc, strict=True):
        cmp = stats.compare({"accuracy": a, "n": na}, {"accuracy": b, "n": nb}) if na and nb else None
        rows.append([d, n, accuracy(a, na, with_n=True), accuracy(b, nb, with_n=True), difference(cmp)])
    headers = ["discipline", "completions", "accuracy 1st half", "accuracy 2nd half", "change"]
    return [
        "### Per discipline",
        "",
        plots.save(fig, "train_per_discipline", "per-discipline training dynamics"),
        "",
        markdown_table(headers, rows),
        "",
        "n counts completions; the completions of one prompt group answer the same question, so these 95 % "
        f"intervals are narrower than the truth. {SMALL_NOTE}",
        "",
    ]


def _collapse(metrics: list[dict[str, Any]], w: int, plots: figures.Plots) -> list[str]:
    """The letter-collapse guard's per-step numbers (``top_letter*`` keys of wildsci_metrics.jsonl) and warnings."""
    x, share, excess = collapse_series(metrics)
    if not x:
        return []
    letters = {int(m["step"]): m.get("top_letter") for m in metrics}
    over = [s for s, sh, e in zip(x, share, excess, strict=True) if sh > COLLAPSE_SHARE and e > 0]
    worst = max(range(len(x)), key=lambda i: excess[i])
    fig = figures.letter_collapse(x, share, excess, COLLAPSE_SHARE, w)
    fired = [(steps, text) for steps, text in stats.group_warnings(metrics) if "onto one letter" in text]
    out = [
        "### Letter collapse guard",
        "",
        "Per logged step: the most frequent answer letter's share of the readable answers, and its excess over "
        f"that letter's share of the gold letters. The guard warns when one letter takes more than "
        f"{COLLAPSE_SHARE:.0%} of the answers of a window of steps beyond its gold share: the policy then answers "
        "by position, not content, and is right by chance.",
        "",
        plots.save(fig, "train_letter_collapse", "letter collapse guard"),
        "",
        markdown_table(
            ["logged steps", f"steps with share > {COLLAPSE_SHARE:.0%} and excess > 0", "largest excess", "at step"],
            [[len(x), len(over), f"{letters.get(x[worst]) or '?'}: {100 * excess[worst]:+.1f} pt", x[worst]]],
        ),
        "",
    ]
    for steps, text in fired:
        out += [f"Guard fired on {len(steps)} logged step(s), {steps[0]}–{steps[-1]}; latest: {text}", ""]
    if not fired:
        out += ["The letter-collapse guard did not fire.", ""]
    return out
