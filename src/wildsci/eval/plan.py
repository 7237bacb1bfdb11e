"""``wildsci eval RECIPE --dry-run``: what an evaluation will generate and how long it will take, before anything runs.

An evaluation of the paper's matrix is hours of GPU time per model, so the plan is printed from the recipe alone:
no server starts, no model loads, no network. Per task it gives the questions (counted in the local file, or the
pinned Hub split's size as its dataset card states), whether the task is generated or scored from its full
task's answers (:func:`~wildsci.eval.sources.derived_tasks`: no task is generated twice), the generations (x the
option orders of ``permutations``) and the generated tokens (the answers' measured mean from an earlier run's
``predictions.jsonl`` in ``output_dir``, else the ``max_new_tokens`` bound). The time is those tokens over the
GPUs at the throughput the recipe states with its source (``plan_tokens_per_second``, ``plan_throughput_source``):
no number is made up, and an input that is missing is named.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildsci.errors import UserError
from wildsci.eval.config import EvalRecipe
from wildsci.eval.sources import SOURCES, TASKS, EvalDataConfig, derived_tasks, is_local, prepare_task
from wildsci.recipes import load_recipe


@dataclass
class TaskPlan:
    """One task of the plan: its questions (None: unknown, ``why`` says why), and how its answers are obtained."""

    task: str
    questions: int | None
    counted: str  # where the count comes from, or why it is unknown
    from_task: str | None  # the full task whose answers it is scored from (None: generated itself)
    answer_tokens: float  # mean generated tokens per answer (measured, or the max_new_tokens bound)
    tokens_measured: bool


def _count(task: str, cfg: EvalDataConfig) -> tuple[int | None, str]:
    spec = TASKS[task]
    source = SOURCES[spec.source]
    ref = cfg.sources.get(spec.source, source.hub_repo)
    limit = cfg.limits.get(task)
    if is_local(ref):
        if not Path(ref).expanduser().exists():
            return None, f"unknown: {ref} not there yet"
        try:
            return prepare_task(spec, cfg).n, f"counted in {ref}"
        except UserError as e:
            return None, f"unknown: {e}"
    if ref != source.hub_repo or source.card_rows is None or spec.subset is not None:
        return None, f"unknown: {ref} is a Hub dataset and --dry-run reads no network"
    n = source.card_rows if limit is None else min(limit, source.card_rows)
    return n, f"{source.hub_repo}@{(source.hub_revision or 'main')[:7]} {source.hub_split} split, its dataset card"


def _measured_tokens(out_dir: Path) -> dict[str, tuple[float, int]]:
    """Mean completion tokens per task from an earlier run's predictions.jsonl ({task: (mean, answers)})."""
    path = out_dir / "predictions.jsonl"
    if not path.is_file():
        return {}
    by: dict[str, list[int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            by.setdefault(row["task"], []).append(int(row["completion_tokens"]))
        except (ValueError, KeyError, TypeError):
            continue
    return {t: (sum(v) / len(v), len(v)) for t, v in by.items() if v and sum(v) > 0}


def _models(recipe: EvalRecipe) -> tuple[int, str]:
    """How many models the run evaluates, without resolving or loading any (no network)."""
    if not recipe.trained:
        return 1, "the base model"
    p = Path(recipe.trained).expanduser()
    if not p.is_dir():
        return 1, f"the base model only: {recipe.trained} is not there yet; each checkpoint adds one model's time"
    ckpts = [c for c in p.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", c.name) and c.is_dir()]
    final = int((p / "config.json").is_file())
    return 1 + len(ckpts) + final, f"the base model, {len(ckpts)} checkpoint(s) and {final} final save"


def plan_eval(recipe: EvalRecipe) -> dict[str, Any]:
    """The plan as data (what :func:`format_plan` prints): tasks, models, generations, tokens and hours."""
    limits = {t: n for t in recipe.tasks if (n := recipe.task_samples.get(t, recipe.max_samples))}
    cfg = EvalDataConfig(sources=dict(recipe.sources), splits=dict(recipe.splits), limits=limits, tasks=recipe.tasks)
    derived = derived_tasks(recipe.tasks, limits)
    measured = _measured_tokens(Path(recipe.output_dir).expanduser())
    tasks = []
    for t in recipe.tasks:
        n, counted = _count(t, cfg)
        mean, answers = measured.get(t, (float(recipe.max_new_tokens), 0))
        tasks.append(TaskPlan(t, n, counted, derived.get(t), mean, answers > 0))
    orders = 1 + recipe.permutations
    generated = [tp for tp in tasks if tp.from_task is None]
    known = [tp for tp in generated if tp.questions is not None]
    gens = sum(tp.questions * orders for tp in known)
    tokens = sum(tp.questions * orders * tp.answer_tokens for tp in known)
    n_models, models_note = _models(recipe)
    if recipe.backend == "server":
        gpus = recipe.plan_gpus or recipe.tensor_parallel_size * recipe.data_parallel_size
    else:
        gpus = recipe.plan_gpus or recipe.num_processes
    missing = [f"the question count of {tp.task} ({tp.counted})" for tp in generated if tp.questions is None]
    if recipe.plan_tokens_per_second is None:
        missing.append("the throughput: set plan_tokens_per_second (generated tokens/s of one GPU) and its source")
    hours = None
    if recipe.plan_tokens_per_second:
        hours = n_models * tokens / (gpus * recipe.plan_tokens_per_second) / 3600
    return {
        "tasks": tasks,
        "orders": orders,
        "generations_per_model": gens,
        "tokens_per_model": tokens,
        "models": n_models,
        "models_note": models_note,
        "gpus": gpus,
        "hours": hours,
        "missing": missing,
        "bound": any(not tp.tokens_measured for tp in known),
    }


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _h(x: float) -> str:
    """Hours with three significant digits below 100 (0.64, 12.5), whole hours above."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def format_plan(recipe: EvalRecipe, plan: dict[str, Any], recipe_path: str) -> str:
    """The plan as the lines ``--dry-run`` prints."""
    orders = plan["orders"]
    lines = [f"wildsci eval --dry-run {recipe_path}: nothing started, no model loaded", ""]
    head = f"{'task':<20} {'questions':>9}  {'generated':<27} {'tokens/answer':>13}  questions counted from"
    lines.append(head)
    for tp in plan["tasks"]:
        how = f"yes, x{orders} option order(s)" if tp.from_task is None else f"no: {tp.from_task}'s answers"
        tok = "-" if tp.from_task else (f"{tp.answer_tokens:,.0f}" + ("" if tp.tokens_measured else " max"))
        q = _n(tp.questions) if tp.questions is not None else "?"
        lines.append(f"{tp.task:<20} {q:>9}  {how:<27} {tok:>13}  {tp.counted}")
    per = plan["tokens_per_model"]
    bound = "at most " if plan["bound"] else ""
    lines += [
        "",
        f"per model: {_n(plan['generations_per_model'])} generations, {bound}{_n(per)} generated tokens"
        + (" (answers at max_new_tokens: an earlier run's predictions.jsonl gives measured means)" if bound else ""),
        f"models: {plan['models']} ({plan['models_note']})",
        f"all models: {_n(plan['models'] * plan['generations_per_model'])} generations, "
        f"{bound}{_n(plan['models'] * per)} generated tokens",
    ]
    gpus = plan["gpus"]
    unit = "GPU" if recipe.backend == "server" else "process"  # transformers: num_processes (GPUs, or one CPU)
    if recipe.backend == "server":
        per_gpu = recipe.concurrent_requests / gpus
        lines.append(f"requests in flight: {recipe.concurrent_requests} ({per_gpu:,.0f} per GPU)")
    if plan["hours"] is not None:
        rate = f"{recipe.plan_tokens_per_second:,.0f} tokens/s per {unit} ({recipe.plan_throughput_source})"
        lines.append(
            f"time on {gpus} {unit}(s): {bound}{_h(plan['hours'])} h of generation at {rate}; plus each model's start"
        )
    else:
        gpu_h = plan["models"] * per / 3600
        lines.append(
            f"time on {gpus} {unit}(s): {bound}{_h(gpu_h / gpus)} h / T, for T generated tokens/s per {unit} "
            "(no throughput stated)"
        )
    if plan["missing"]:
        lines += ["", "missing from this estimate:"] + [f"- {m}" for m in plan["missing"]]
    return "\n".join(lines)


def print_plan(recipe_path: str | Path, overrides: dict[str, Any] | None = None) -> None:
    """``wildsci eval RECIPE --dry-run``."""
    recipe: EvalRecipe = load_recipe(recipe_path, EvalRecipe, dict(overrides or {}))
    print(format_plan(recipe, plan_eval(recipe), str(recipe_path)))
