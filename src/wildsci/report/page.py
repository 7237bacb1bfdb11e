"""``wildsci report RUN_DIR``: writes ``report.md`` and ``plots/*.png`` for a run, one section per stage.

Why a separate stage rather than plots inside each stage: the questions a researcher asks of a run cut across
stages ("did the letter bias of the dataset show up in the policy?", "did training change the answers on
held-out questions, or only their format?"), and a report that reads files can be rerun on a copied run folder,
on a cluster run, or on a run that is only half finished. This module lays the page out; the numbers come from
:mod:`wildsci.report.stats`, the wording of numbers from :mod:`wildsci.report.text`, the pictures from
:mod:`wildsci.report.figures`. The training and evaluation sections live in ``training.py`` and ``generalization.py``.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from wildsci.answers import LETTERS
from wildsci.errors import UserError, check_writable_dir
from wildsci.provenance import markdown_table, pct
from wildsci.redact import redact_text
from wildsci.report import figures, stats
from wildsci.report.generalization import eval_section, response_section
from wildsci.report.inputs import RunInputs, locate_inputs
from wildsci.report.text import CI_NOTE, SMALL_NOTE, accuracy, difference, fmt, rel
from wildsci.report.training import training_section, training_summary


def warnings_section(inp: RunInputs) -> list[str]:
    """GRPO guard warnings go at the top: a run that learned nothing should not be read further down."""
    groups = stats.group_warnings(inp.metrics)
    if not groups:
        return []
    out = ["## ⚠️ Training warnings", ""]
    for steps, latest in groups:
        where = f"step {steps[0]}" if len(steps) == 1 else f"{len(steps)} logged steps, {steps[0]}–{steps[-1]}"
        shown = latest if len(steps) == 1 else f"{latest} *(latest of {len(steps)})*"
        out += [f"> **⚠️ GRPO guard ({where}):** {shown}", ">"]
    out[-1] = ""
    return out


def base_and_trained(inp: RunInputs) -> tuple[str | None, str | None]:
    """The models compared before/after training (see :func:`wildsci.report.stats.base_and_trained`)."""
    models = (inp.results or {}).get("models") or []
    seen = [str(p["model"]) for p in inp.predictions if p.get("model") is not None]
    return stats.base_and_trained(models if isinstance(models, list) else [], dict.fromkeys(seen))


def summary_section(inp: RunInputs) -> list[str]:
    out = ["## Summary", ""]
    br = inp.build_report or {}
    splits = br.get("splits") if isinstance(br.get("splits"), dict) else {}
    if splits:
        out.append("- **Dataset:** " + ", ".join(f"{k} {fmt(v)}" for k, v in splits.items()) + " questions")
    if inp.metrics:
        out.append(training_summary(inp.metrics))
    base, trained = base_and_trained(inp)
    scores = (inp.results or {}).get("scores") or {}
    if base and trained and isinstance(scores, dict):
        parts = []
        for task, s in (scores.get(base) or {}).items():
            t = (scores.get(trained) or {}).get(task)
            if not (isinstance(s, dict) and isinstance(t, dict)) or stats.num(s.get("accuracy")) is None:
                continue
            before = stats.correct_by_question(inp.predictions, base, task)
            after = stats.correct_by_question(inp.predictions, trained, task)
            paired = stats.paired_counts(before, after) if before and after else None
            cmp = stats.compare(s, t, paired)
            parts.append(
                f"{task} {accuracy(s.get('accuracy'), s.get('n'))} → {accuracy(t.get('accuracy'), t.get('n'))}: "
                f"{difference(cmp)} ({cmp['kind'] + ', ' if cmp else ''}n={fmt(t.get('n'))})"
            )
        if parts:
            out.append(f"- **Evaluation ({base} → {trained}):** " + "; ".join(parts))
            out.append(f"  ({CI_NOTE} Differences: Newcombe's interval, paired when both answered the same "
                       f"questions; a difference whose interval spans 0 is not a gain. {SMALL_NOTE})")  # fmt: skip
    if len(out) == 2:
        out.append("Nothing to summarise yet: no stage outputs were found (see *Inputs* below).")
    return out + [""]


def inputs_section(inp: RunInputs) -> list[str]:
    rows = [
        ["dataset", f"`{inp.dataset_dir}`" if inp.dataset_dir else "missing"],
        ["training metrics", f"`{inp.metrics_path}` ({len(inp.metrics)} steps)" if inp.metrics_path else "missing"],
        ["evaluation", f"`{inp.eval_dir}` ({len(inp.predictions)} predictions)" if inp.eval_dir else "missing"],
    ]
    out = ["## Inputs", "", markdown_table(["stage", "read from"], rows), ""]
    out += [f"- {n}" for n in inp.notes]
    return out + [""] if inp.notes else out


def dataset_section(inp: RunInputs, plots: figures.Plots) -> list[str]:
    out = ["## 1. Dataset", ""]
    br = inp.build_report
    if not br:
        return out + [
            "No dataset statistics: " + next((n for n in inp.notes if "dataset" in n), "none found") + ".",
            "",
        ]
    card = inp.dataset_dir / "README.md" if inp.dataset_dir else None
    if card and card.is_file():
        out += [f"Dataset card: [`{rel(card, inp.run_dir)}`]({rel(card, inp.run_dir)}).", ""]
    if br.get("recipe_hash") or br.get("git_sha"):
        out += [f"Recipe hash `{br.get('recipe_hash', '?')}`, git `{br.get('git_sha', '?')}`.", ""]
    # beyond the contract, shown when the builder recorded them
    if isinstance(br.get("command"), str):
        took = f" in {stats.num(br.get('seconds')):.0f} s" if stats.num(br.get("seconds")) is not None else ""
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
                [s["name"], fmt(s.get("in")), fmt(s.get("out")), ", ".join(f"{k}: {v}" for k, v in drops.items())]
            )
        out += ["### Pipeline stages", "", markdown_table(["stage", "in", "out", "drops (reason: count)"], rows), ""]
        fig = figures.dataset_funnel(
            [str(s["name"]) for s in stages],
            [stats.num(s.get("in")) or 0 for s in stages],
            [stats.num(s.get("out")) or 0 for s in stages],
            fmt,
        )
        out += [plots.save(fig, "dataset_funnel", "dataset build funnel"), ""]

    drops = br.get("drops") if isinstance(br.get("drops"), dict) else {}
    if drops:
        rows = [[k, fmt(v)] for k, v in sorted(drops.items(), key=lambda kv: -(stats.num(kv[1]) or 0))]
        out += ["### Drops (all stages)", "", markdown_table(["reason", "count"], rows), ""]

    panels = [
        ("per_discipline", "Questions per discipline", True),
        ("letter_distribution", "Gold answer letter balance", False),
        ("voting_types", "Voting classes (8 voters vs gold)", True),
        ("splits", "Split sizes", False),
    ]
    present = [p for p in panels if isinstance(br.get(p[0]), dict) and br[p[0]]]
    if present:
        drawn = []
        for key, title, horiz in present:
            d = br[key]
            labels = [k for k in LETTERS if k in d] if key == "letter_distribution" else list(d)
            drawn.append((key, title, labels, [stats.num(d[k]) or 0 for k in labels], horiz))
        out += [plots.save(figures.dataset_stats(drawn, fmt), "dataset_stats", "dataset statistics"), ""]
        for key, title, _ in present:
            d = br[key]
            total = sum(stats.num(v) or 0 for v in d.values()) or 1
            rows = [[k, fmt(v), pct((stats.num(v) or 0) / total)] for k, v in d.items()]
            out += [f"**{title}**", "", markdown_table([key.replace("_", " "), "count", "share"], rows), ""]

    decon = br.get("decontamination") if isinstance(br.get("decontamination"), dict) else None
    if decon == {}:
        out += ["Decontamination: none (the recipe lists no benchmarks to check against).", ""]
    if decon:
        rows = [[b, fmt(v.get("checked")), fmt(v.get("removed"))] for b, v in decon.items() if isinstance(v, dict)]
        out += ["### Decontamination", "", markdown_table(["benchmark", "questions checked", "removed"], rows), ""]
    calls = br.get("llm_calls") if isinstance(br.get("llm_calls"), dict) else {}
    if calls:
        out += [f"LLM calls: {fmt(calls.get('made'))} made, {fmt(calls.get('cached'))} served from the cache.", ""]
    return out


def demo_section(inp: RunInputs) -> list[str]:
    if not inp.demo_stages:
        return []
    rows = [
        [s.get("name", "?"), s.get("status", "?"), f"{stats.num(s.get('seconds')) or 0:.0f} s",
         f"`{s.get('command', '')}`"]
        for s in inp.demo_stages
    ]  # fmt: skip
    return ["## Stage times (`wildsci demo`)", "", markdown_table(["stage", "status", "time", "command"], rows), ""]


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
    check_writable_dir(run, "run directory")  # report.md and plots/ go here: refuse before reading anything
    if (run / "plots").exists():
        check_writable_dir(run / "plots", "run directory's plots folder")
    run.mkdir(parents=True, exist_ok=True)
    inp = locate_inputs(run, dataset_dir, grpo_dir, eval_dir)
    plots = figures.Plots(run / "plots")
    base, trained = base_and_trained(inp)

    lines = [
        f"# WildSci run report: `{run.name or run.resolve().name}`",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `wildsci report {run}`. "
        "Rerun that command after any stage to refresh it.",
        "",
    ]
    lines += warnings_section(inp)
    lines += summary_section(inp)
    lines += inputs_section(inp)
    sections = (
        ("dataset", lambda: dataset_section(inp, plots)),
        ("training", lambda: training_section(inp, plots)),
        ("response", lambda: response_section(inp, plots, base, trained)),
        ("eval", lambda: eval_section(inp, plots, base, trained)),
    )
    for title, section in sections:
        try:
            lines += section()
        except Exception as e:  # a malformed input must cost one section, not the whole report
            detail = str(e).splitlines()[0] if str(e) else ""
            msg = f"the {title} section could not be drawn: {type(e).__name__}: {detail}"
            lines += [f"> **{msg}** -- the input files do not follow docs/architecture.md.", ""]
            print(redact_text(f"wildsci report: warning: {msg}"), file=sys.stderr)
    lines += demo_section(inp)

    path = run / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(redact_text("\n".join(lines).rstrip() + "\n"), encoding="utf-8")  # commands quote what users typed
    os.replace(tmp, path)
    return path
