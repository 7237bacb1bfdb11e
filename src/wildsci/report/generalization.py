"""The report's evaluation sections: response behaviours (base vs trained) and accuracy per task and discipline.

Every accuracy is written with its 95 % Wilson interval and n; a cell with fewer than 30 questions carries a
dagger, so a 0/12 → 5/12 change is never read as a result.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from wildsci.answers import COLLAPSE_SHARE, LETTERS, letter_share
from wildsci.provenance import markdown_table, pct
from wildsci.report import figures, stats
from wildsci.report.inputs import RunInputs
from wildsci.report.text import CI_NOTE, SMALL_NOTE, accuracy, fmt, rel


def letter_table(gold: Counter, chosen: dict[str, Counter]) -> list[str]:
    """Per model: the most frequent answer letter's share of all its answers, against that letter's gold share.

    Why a table beside the figure: "no letter above 40 %" is the line between a policy that reads the questions
    and one that collapsed onto a letter (issue 16), and it should be read off, not estimated from bars.
    """
    rows = []
    for m, cnt in chosen.items():
        total = sum(cnt.values())
        top = letter_share({k: v for k, v in cnt.items() if k in LETTERS}, gold)
        if not total or not top:
            rows.append([m, total, "–", "–", "no readable answer"])
            continue
        share = cnt[top["top_letter"]] / total
        verdict = f"yes: one letter above {pct(COLLAPSE_SHARE)}" if share > COLLAPSE_SHARE else "no"
        gold_share = top["top_letter_share"] - top["top_letter_excess"]
        rows.append([m, total, f"{top['top_letter']} {pct(share)}", pct(gold_share), verdict])
    header = ["model", "answers", "most frequent letter (share of all answers)", "its gold share", "collapsed"]
    return [markdown_table(header, rows), ""]


def response_section(inp: RunInputs, plots: figures.Plots, base: str | None, trained: str | None) -> list[str]:
    out = ["## 3. Response behaviours (base vs trained, from evaluation)", ""]
    preds = [p for p in inp.predictions if isinstance(p, dict) and p.get("model") is not None]
    if not preds:
        why = next((n for n in inp.notes if "eval" in n or "predictions" in n), "no predictions found")
        return out + [f"No response-behaviour plots: {why}.", ""]
    models = [m for m in (base, trained) if m]
    by_model: dict[str, list[dict[str, Any]]] = {m: [p for p in preds if str(p["model"]) == m] for m in models}
    out += [f"Compared: **{base}** (before) and **{trained or '—'}** (after), all tasks pooled.", ""]

    lengths = {m: [v for v in (stats.num(p.get("completion_tokens")) for p in by_model[m]) if v is not None]
               for m in models}  # fmt: skip
    summaries = {m: stats.length_summary(v) for m, v in lengths.items() if v}
    if summaries:
        fig = figures.completion_lengths(lengths, {m: s["median"] for m, s in summaries.items()})
        out += ["### Completion length", "", plots.save(fig, "eval_completion_length", "completion lengths"), ""]
        rows = [[m, s["n"], f"{s['mean']:.0f}", f"{s['median']:.0f}", f"{s['p90']:.0f}"] for m, s in summaries.items()]
        out += [markdown_table(["model", "completions", "mean tokens", "median", "p90"], rows), ""]

    gold: Counter = Counter()
    seen = set()
    for p in preds:
        key = (p.get("task"), p.get("question_id"))
        if key not in seen and p.get("gold"):
            seen.add(key)
            gold[str(p["gold"])] += 1
    chosen = {m: Counter(str(p.get("pred") or stats.NO_ANSWER) for p in by_model[m]) for m in models}
    keys = stats.letter_keys(gold, *chosen.values())
    fig = figures.letter_shares(keys, {"gold": gold, **chosen}, "Answer letters vs gold (evaluation)",
                                "fraction of questions")  # fmt: skip
    out += ["### Answer letters vs gold", "", plots.save(fig, "eval_letters", "answer letters vs gold"), ""]
    out += letter_table(gold, chosen)

    if base and trained:
        per_task = stats.answer_changes(by_model[base], by_model[trained])
        if per_task:
            tasks = sorted(per_task)
            totals = {t: max(1, sum(per_task[t].values())) for t in tasks}
            shares = {k: [per_task[t][k] / totals[t] for t in tasks] for k in stats.CHANGE_KINDS}
            fig = figures.answer_changes(tasks, shares, base, trained)
            saved = plots.save(fig, "eval_answer_changes", "answer changes")
            out += ["### How often the answer changes", "", saved, ""]
            rows = []
            for t in tasks:
                c, n = per_task[t], sum(per_task[t].values())
                changed = n - c["kept, right"] - c["kept, wrong"]
                rows.append([t, n, pct(changed / n), *(c[k] for k in stats.CHANGE_KINDS[2:])])
            out += [markdown_table(["task", "questions", "answer changed", *stats.CHANGE_KINDS[2:]], rows), ""]
    return out


def eval_section(inp: RunInputs, plots: figures.Plots, base: str | None, trained: str | None) -> list[str]:
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
    if isinstance(res.get("skipped"), dict) and res["skipped"]:
        out += ["Skipped tasks: " + "; ".join(f"{t} ({why})" for t, why in res["skipped"].items()) + ".", ""]
    if isinstance(res.get("ran_on"), dict):
        ran = res["ran_on"]
        out += ["Ran on: " + ", ".join(f"{k} `{v}`" for k, v in ran.items() if not isinstance(v, dict)) + ".", ""]

    def cell(m: str, t: str) -> dict[str, Any]:
        return (scores.get(m) or {}).get(t) or {}

    rows = []
    for m in names:
        row = [m, fmt(steps.get(m)) if steps.get(m) is not None else "–"]
        for t in tasks:
            s = cell(m, t)
            row.append(f"{accuracy(s.get('accuracy'), s.get('n'))} (n={fmt(s.get('n'))}, parsed "
                       f"{pct(s.get('extraction_rate'), 0)})" if s else "–")  # fmt: skip
        rows.append(row)
    out += [
        "Accuracy per model and task; *parsed* is the share of completions the answer parser could read. "
        f"{CI_NOTE} {SMALL_NOTE}",
        "",
        markdown_table(["model", "step", *tasks], rows),
        "",
    ]
    if (inp.eval_dir / "results.md").is_file():
        link = rel(inp.eval_dir / "results.md", inp.run_dir)
        out += [f"Full table as written by `wildsci eval`: [`{link}`]({link}).", ""]

    acc = {m: [stats.num(cell(m, t).get("accuracy")) or 0 for t in tasks] for m in names}
    ci = {m: [stats.accuracy_interval(cell(m, t).get("accuracy"), cell(m, t).get("n")) for t in tasks] for m in names}
    fig = figures.accuracy_bars(tasks, acc, ci, "Accuracy per benchmark and model")
    out += [plots.save(fig, "eval_accuracy", "accuracy per task and model"), ""]
    avs = inp.eval_dir / "accuracy_vs_step.png"
    if avs.is_file():
        out += ["Accuracy against training step, as plotted by `wildsci eval`:", "",
                f"![accuracy vs step]({rel(avs, inp.run_dir)})", ""]  # fmt: skip

    per = stats.pooled_disciplines(scores, names, tasks)
    disciplines = sorted({d for m in names for d in per[m]})
    if disciplines:
        shown = [m for m in (base, trained) if m in per] or names[:2]  # predictions may name other models
        acc = {m: [per[m].get(d, (0.0, 0))[0] for d in disciplines] for m in shown}
        ci = {m: [stats.accuracy_interval(*per[m][d]) if d in per[m] else None for d in disciplines] for m in shown}
        fig = figures.accuracy_bars(
            disciplines, acc, ci, "Accuracy per discipline (tasks with discipline labels, pooled)", horizontal=True
        )
        out += ["### Per discipline", "", plots.save(fig, "eval_per_discipline", "accuracy per discipline"), ""]
        rows = [[d, *(accuracy(*per[m][d], with_n=True) if d in per[m] else "–" for m in shown)] for d in disciplines]
        out += [markdown_table(["discipline", *shown], rows), "", SMALL_NOTE, ""]
    out += _permutations(res, plots)
    return out


def _permutations(res: dict[str, Any], plots: figures.Plots) -> list[str]:
    perms = res.get("permutations") if isinstance(res.get("permutations"), dict) else {}
    if not perms:
        return []
    out = [
        "### Option-order permutations",
        "",
        "Each question is asked under K seeded option orders. *Consistency* is how often the model picks the "
        "same option (by content) under every order: position bias shows as low consistency. Intervals count "
        f"questions, not answers (the K answers to one question are not independent). {SMALL_NOTE}",
        "",
    ]
    rows, pairs = [], []
    for m, per_task in perms.items():
        for t, v in (per_task or {}).items():
            if isinstance(v, dict):
                rows.append([m, t, fmt(v.get("k")), accuracy(v.get("accuracy"), v.get("n"), with_n=True),
                             accuracy(v.get("consistency"), v.get("n"))])  # fmt: skip
                pairs.append((m, t, v))
    out += [markdown_table(["model", "task", "K", "accuracy", "consistency"], rows), ""]
    if pairs:

        def shares(d: Any) -> Counter:
            return Counter({k: stats.num(x) or 0 for k, x in (d or {}).items()})

        gold = shares(pairs[0][2].get("gold_letter_distribution"))
        chosen = {f"{m} / {t}": shares(v.get("letter_distribution")) for m, t, v in pairs}
        fig = figures.permutations(
            [f"{m}\n{t}" for m, t, _ in pairs],
            [stats.num(v.get("accuracy")) or 0 for *_, v in pairs],
            [stats.num(v.get("consistency")) or 0 for *_, v in pairs],
            stats.letter_keys(gold, *chosen.values()),
            {"gold": gold, **chosen},
        )
        out += [plots.save(fig, "eval_permutations", "permutation robustness"), ""]
    return out
