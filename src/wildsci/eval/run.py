"""``wildsci eval``: base model + trained checkpoints x benchmark tasks, through real lighteval runs.

One recipe (``recipes/eval/*.yaml``, :class:`EvalRecipe`) names a base model, a trained model folder (its
``checkpoint-*`` subfolders expand to one model each, with their step), the tasks of
``eval_tasks/wildsci_tasks.py`` and where their data lives. For every model, ``wildsci eval`` runs the
lighteval CLI (``python -m wildsci.lighteval_compat accelerate ...``, or ``... endpoint litellm ...`` against
the model's vLLM OpenAI server with ``backend: server``) in a child process and then reads lighteval's own
results and per-sample details. It writes, as docs/architecture.md specifies:

- ``results.json``: models, tasks, per-task accuracy / extraction rate / n / per-discipline accuracy, and with
  ``--permutations K`` the option-order robustness of every model on every task;
- ``predictions.jsonl``: one line per model x task x question (``model, task, question_id, discipline, gold,
  pred, correct, completion_tokens``); ``permutation_predictions.jsonl`` holds the permuted copies;
- ``results.md`` (the tables) and ``accuracy_vs_step.png`` (accuracy vs training step, one line per task),
  drawn by :mod:`wildsci.report.evaluation` (``wildsci eval`` calls it after :func:`run_eval`).

Why the CLI in a child process rather than lighteval's Python API: each model gets a fresh process, so its
memory (and with ``backend: server`` the model's server) is released before the next checkpoint loads; the
numbers come from exactly the command users run by hand; and ``num_processes > 1`` runs it under ``accelerate
launch`` for data-parallel evaluation on several GPUs. The price is lighteval's start-up (~20 s on a small
CPU) per model.

Resuming: a model whose run finished (same weights, tasks, data and settings) is not evaluated again; its
saved lighteval outputs are read instead. lighteval's response cache (``<output_dir>/.lighteval_cache``)
keys on the weights too (:mod:`wildsci.lighteval_compat`), so a retrained checkpoint is never served stale
answers.

GPQA's questions must not be published: its tasks run in a separate lighteval call whose outputs, response
cache and ``datasets`` cache live in a temporary folder that is deleted afterwards; only question ids, letters
and scores are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wildsci.answers import LETTERS
from wildsci.errors import UserError, check_writable_dir
from wildsci.eval.adapters import disciplines
from wildsci.eval.config import EvalRecipe, ModelEntry, expand_models
from wildsci.eval.launch import launch_settings, model_endpoint, run_lighteval, server_api_key
from wildsci.eval.sources import (
    SOURCES,
    TASKS,
    EvalDataConfig,
    data_cache_dir,
    derived_tasks,
    in_subset,
    is_local,
    normalize,
    perm_task_name,
    prepare_task,
    read_rows,
    select,
)
from wildsci.recipes import load_recipe, recipe_hash

#: the file that records a model's finished run (weights, tasks, data, settings) so a rerun reuses it
RUN_STATE = "wildsci_run.json"


# ------------------------------------------------------------------------------------------- data
def _data_config(
    recipe: EvalRecipe, tmp: Path
) -> tuple[EvalDataConfig, list[str], dict[str, str], dict[str, dict[str, int]]]:
    """Resolve sources, skip missing ones if asked, and slice Hub sources locally when a sample size is set.

    Returns (config, tasks to run, {task: why it was skipped}, {task: {reason: rows left out}}). Rows left out
    (unreadable rows, a question id seen before -- identical rows without an id share one) are counted here, in
    the parent, so that ``wildsci eval`` reports them instead of leaving them to lighteval's log.
    """
    cfg = EvalDataConfig(
        sources=dict(recipe.sources),
        splits=dict(recipe.splits),
        limits={t: n for t in recipe.tasks if (n := recipe.task_samples.get(t, recipe.max_samples))},
        permutations=recipe.permutations,
        max_new_tokens=recipe.max_new_tokens,
    )
    tasks, skipped = [], {}
    for t in recipe.tasks:
        src = TASKS[t].source
        ref = cfg.sources.get(src)
        if ref and is_local(ref) and not Path(ref).expanduser().exists():
            if recipe.missing_sources == "skip":
                skipped[t] = f"source {ref} not found"
                continue
            raise UserError(f"task {t}: source {ref} not found -- fix 'sources.{src}' or set missing_sources: skip")
        tasks.append(t)
    cfg.tasks = list(tasks)  # lighteval's task file then reads only these tasks' sources
    unreadable: dict[str, Counter] = {}
    # Hub sources with a sample size: lighteval cannot slice them, so normalize the whole source locally once.
    for src in sorted({TASKS[t].source for t in tasks if t in cfg.limits}):
        ref = cfg.sources.get(src, SOURCES[src].hub_repo)
        if is_local(ref):
            continue
        source = SOURCES[src]
        rows = read_rows(source, ref, cfg.splits.get(src), source.hub_revision if ref == source.hub_repo else None)
        normalized, bad = [], Counter()
        for row in rows:
            try:
                normalized.append(normalize(source.adapter, row))
            except ValueError as e:
                bad[str(e)] += 1
        base = tmp if source.sensitive else data_cache_dir() / "hub"
        out = base / f"{src}-{hashlib.sha256(json.dumps(normalized).encode()).hexdigest()[:16]}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file():
            out.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in normalized), encoding="utf-8")
        cfg.sources[src] = str(out)
        unreadable[src] = bad
    dropped: dict[str, dict[str, int]] = {}
    for t in tasks:  # a damaged local file fails here, in one line, before any model loads
        if (ref := cfg.sources.get(TASKS[t].source)) and is_local(ref):
            drops = Counter(prepare_task(TASKS[t], cfg).drops) + unreadable.get(TASKS[t].source, Counter())
            if drops:
                dropped[t] = dict(drops)
    return cfg, tasks, skipped, dropped


# ------------------------------------------------------------------------------------------- reading outputs
def read_lighteval_outputs(out: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """(aggregated results per full task name, detail rows per full task name) of the latest run in ``out``."""
    import pyarrow.parquet as pq

    results_files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results_files:
        raise UserError(f"{out}: lighteval wrote no results file -- see {out / 'lighteval.log'}")
    results = json.loads(results_files[-1].read_text(encoding="utf-8"))["results"]
    stamp = results_files[-1].stem.removeprefix("results_")
    details: dict[str, list[dict]] = {}
    for f in out.rglob(f"details_*_{stamp}.parquet"):
        name = f.name.removeprefix("details_").removesuffix(f"_{stamp}.parquet")
        details[name] = pq.read_table(f).to_pylist()
    return results, details


def _record(model: str, task: str, row: dict) -> dict:
    """One ``predictions.jsonl`` line from one lighteval detail row (the metric values lighteval computed)."""
    spec = row["doc"]["specific"]
    metric = row["metric"]
    resp = row["model_response"]
    tokens = resp.get("output_tokens") or [[]]
    return {
        "model": model,
        "task": task,
        "question_id": spec["question_id"],
        "discipline": spec["discipline"],
        "gold": spec["gold"],
        "pred": metric["acc_by_discipline"].get("pred") or None,
        "correct": bool(metric["acc"]),
        "completion_tokens": len(tokens[0] or []),
        "_extracted": bool(metric["extraction_rate"]),
        "_permutation": spec.get("permutation", -1),
        "_order": spec.get("order"),
        "_subject": spec.get("subject", ""),
    }


def task_scores(result: dict, records: list[dict]) -> dict[str, Any]:
    """results.json's score block for one model x task: lighteval's aggregates plus per-discipline n."""
    n_by = Counter(r["discipline"] for r in records)
    per = {
        d: {"accuracy": float(result[f"acc:{d}"]), "n": n_by[d]}
        for d in disciplines()
        if n_by.get(d) and f"acc:{d}" in result
    }
    return {
        "accuracy": float(result["acc"]),
        "extraction_rate": float(result["extraction_rate"]),
        "n": len(records),
        "per_discipline": per,
    }


def permutation_summary(records_by_k: dict[int, list[dict]]) -> dict[str, Any]:
    """Accuracy, consistency and chosen-vs-gold letter shares over K permuted copies of one task.

    Consistency: the share of questions whose chosen option *content* (mapped back through each permutation) is
    the same under all K orders; a question with any unreadable answer counts as inconsistent.
    """
    k = len(records_by_k)
    by_q: dict[str, list[dict]] = {}
    for recs in records_by_k.values():
        for r in recs:
            by_q.setdefault(r["question_id"], []).append(r)
    total = sum(len(v) for v in by_q.values())
    consistent = 0
    for recs in by_q.values():
        contents = {r["_order"][LETTERS.index(r["pred"])] if r["pred"] else None for r in recs}
        consistent += int(len(recs) == k and None not in contents and len(contents) == 1)
    n_letters = max((len(r["_order"]) for v in by_q.values() for r in v), default=0)
    chosen = Counter(r["pred"] for v in by_q.values() for r in v if r["pred"])
    gold = Counter(r["gold"] for v in by_q.values() for r in v)
    n_chosen = sum(chosen.values())
    return {
        "k": k,
        "accuracy": sum(r["correct"] for v in by_q.values() for r in v) / total if total else 0.0,
        "consistency": consistent / len(by_q) if by_q else 0.0,
        "letter_distribution": {c: chosen[c] / n_chosen for c in LETTERS[:n_letters]} if n_chosen else {},
        "gold_letter_distribution": {c: gold[c] / total for c in LETTERS[:n_letters]} if total else {},
        "n": len(by_q),
    }


# ------------------------------------------------------------------------------------------- one model
def _run_key(recipe: EvalRecipe, model: ModelEntry, tasks: list[str], cfg: EvalDataConfig) -> str:
    from wildsci.lighteval_compat import weights_fingerprint

    data_fp = {}
    for src in sorted({TASKS[t].source for t in tasks}):
        ref = cfg.sources.get(src)
        if ref and Path(ref).expanduser().is_file():
            data_fp[src] = hashlib.sha256(Path(ref).expanduser().read_bytes()).hexdigest()[:16]
        elif ref and Path(ref).expanduser().is_dir():
            files = sorted(Path(ref).expanduser().rglob("*.parquet")) + sorted(Path(ref).expanduser().rglob("*.jsonl"))
            data_fp[src] = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        else:
            data_fp[src] = ref or SOURCES[src].hub_revision or ""
    settings = {
        k: v
        for k, v in asdict(recipe).items()
        # what is evaluated and how; not which model of the matrix a run does (model_index) or the plan's inputs
        if k not in ("output_dir", "base", "trained", "base_name", "model_index") and not k.startswith("plan_")
    }
    blob = {
        "weights": weights_fingerprint(model.path),
        "tasks": tasks,
        "cfg": cfg.to_json(),
        "data": data_fp,
        "settings": settings,
    }
    return recipe_hash(blob)


def subset_from_full(
    sub: str, full: str, records: list[dict], limit: int | None, permutations: int
) -> tuple[dict[str, dict], list[dict]]:
    """Task ``sub``'s results and records read off task ``full``'s answers (:func:`~wildsci.eval.sources.
    derived_tasks`): its questions, the same hash-ordered sample, and lighteval's aggregates (means) over them."""
    results: dict[str, dict] = {}
    out: list[dict] = []
    for k in (None, *range(permutations)):
        recs = [
            {**r, "task": sub}
            for r in records
            if r["task"] == full
            and r["_permutation"] == (-1 if k is None else k)
            and in_subset(sub, r["discipline"], r["_subject"])
        ]
        recs = select(recs, limit)
        if not recs:
            continue
        agg = {"acc": sum(r["correct"] for r in recs) / len(recs)}
        agg["extraction_rate"] = sum(r["_extracted"] for r in recs) / len(recs)
        for d in sorted({r["discipline"] for r in recs}):
            mine = [r["correct"] for r in recs if r["discipline"] == d]
            agg[f"acc:{d}"] = sum(mine) / len(mine)
        results[TASKS[sub].name if k is None else perm_task_name(sub, k)] = agg
        out += recs
    return results, out


def evaluate_model(
    recipe: EvalRecipe, model: ModelEntry, tasks: list[str], cfg: EvalDataConfig, out_dir: Path, config_file: Path
) -> tuple[dict[str, dict], list[dict]]:
    """Run (or reuse) lighteval for one model; returns (results per full task name, prediction records)."""
    run_dir = out_dir / "lighteval" / model.name
    key = _run_key(recipe, model, tasks, cfg)
    state_file = run_dir / RUN_STATE
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("key") == key:
            return state["results"], state["records"]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    derived = derived_tasks(tasks, cfg.limits)  # scored from their full task's answers, never generated
    generated = [t for t in tasks if t not in derived]
    open_tasks = [t for t in generated if not SOURCES[TASKS[t].source].sensitive]
    secret_tasks = [t for t in generated if SOURCES[TASKS[t].source].sensitive]

    def names(group: list[str]) -> list[str]:
        return [TASKS[t].name for t in group] + [perm_task_name(t, k) for k in range(cfg.permutations) for t in group]

    results: dict[str, dict] = {}
    records: list[dict] = []

    def collect(out: Path) -> None:
        res, details = read_lighteval_outputs(out)
        for full, rows in details.items():
            base = full.split("|")[0]
            results[base] = res.get(full, {})
            short = base.split(":")[1]
            records.extend(_record(model.name, short, r) for r in rows)

    cache = out_dir / ".lighteval_cache" if recipe.response_cache else run_dir / "cache"
    run_dir.mkdir(parents=True, exist_ok=True)
    with model_endpoint(recipe, model, run_dir) as endpoint:  # server backend: one server per model
        if open_tasks:
            run_lighteval(recipe, model, names(open_tasks), run_dir, config_file, cache, endpoint=endpoint)
            collect(run_dir)
            if not recipe.response_cache:
                shutil.rmtree(run_dir / "cache", ignore_errors=True)
        if secret_tasks:
            with tempfile.TemporaryDirectory(prefix="wildsci-eval-sensitive-") as tmp:
                t = Path(tmp)
                env = {"HF_DATASETS_CACHE": str(t / "datasets")}
                run_lighteval(recipe, model, names(secret_tasks), t / "out", config_file, t / "cache", env, endpoint)
                collect(t / "out")
    for sub, full in derived.items():
        sub_results, sub_records = subset_from_full(sub, full, records, cfg.limits.get(sub), cfg.permutations)
        results.update(sub_results)
        records.extend(sub_records)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"key": key, "results": results, "records": records}), encoding="utf-8")
    return results, records


# ------------------------------------------------------------------------------------------- outputs
def ran_on(recipe: EvalRecipe, model: ModelEntry, out_dir: Path) -> dict[str, Any]:
    """What ran where, for results.json: backend, device and dtype as given to lighteval, kit commit, versions."""
    from wildsci.provenance import git_sha, package_versions

    return {**launch_settings(recipe, model, out_dir), "git_sha": git_sha(), "versions": package_versions()}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- entry point
def check_models(recipe: EvalRecipe) -> list[ModelEntry]:
    """The recipe's models, each refused in one line before any data is read or model loaded if it cannot run:
    the device (transformers backend), every model's config and tokenizer (:func:`wildsci.models.check_model`,
    the check every stage shares), or, attached to a running server, a server that serves another model."""
    from wildsci.models import check_device, check_model
    from wildsci.serving import find_served

    if recipe.backend == "transformers":
        check_device(recipe.device, "device")
    models = expand_models(recipe)
    if recipe.base_url:
        find_served(recipe.base_url, [models[0].path, models[0].ref], server_api_key(recipe))
    elif recipe.backend == "transformers":  # a server loads the model itself, perhaps with another transformers
        for m in models:
            check_model(m.path, where=f"model {m.name}")
    return models


def _run_one_model(recipe: EvalRecipe, models: list[ModelEntry], out_dir: Path) -> Path | None:
    """``model_index``: one model's lighteval run, saved for the matrix that a later run without it writes.

    Why: on a cluster every model (base and each checkpoint) is one task of an array job with its own GPUs and
    server; the array is sized before training ends, so an index past the models that exist has nothing to do.
    """
    i = recipe.model_index
    if i >= len(models):
        print(
            f"wildsci eval: model_index {i}: there are {len(models)} model(s) -- nothing to evaluate", file=sys.stderr
        )
        return None
    m = models[i]
    with tempfile.TemporaryDirectory(prefix="wildsci-eval-") as tmp:
        cfg, tasks, skipped, _ = _data_config(recipe, Path(tmp))
        if not tasks:
            raise UserError(f"no task left to run ({skipped}) -- check 'sources'")
        config_file = out_dir / "lighteval" / f"{m.name}.eval_config.json"  # one per task: no two writers
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(cfg.to_json(), indent=1), encoding="utf-8")
        print(f"wildsci eval: {m.name} (step {m.step}), model {i + 1} of {len(models)}", file=sys.stderr)
        evaluate_model(recipe, m, tasks, cfg, out_dir, config_file)
    print(f"wildsci eval: {m.name} saved in {out_dir / 'lighteval' / m.name} (the matrix: rerun without model_index)")
    return None


def run_eval(recipe_path: str | Path, overrides: dict[str, Any] | None = None) -> Path | None:
    """``wildsci eval RECIPE [--permutations K] [--output-dir DIR] [--key value ...]``; returns results.json's path
    (``None`` with ``model_index``, which writes one model's run only)."""
    from tqdm import tqdm

    overrides = dict(overrides or {})
    recipe: EvalRecipe = load_recipe(recipe_path, EvalRecipe, overrides)
    out_dir = check_writable_dir(recipe.output_dir, "output_dir")
    models = check_models(recipe)
    out_dir.mkdir(parents=True, exist_ok=True)
    if recipe.model_index is not None:
        return _run_one_model(recipe, models, out_dir)
    with tempfile.TemporaryDirectory(prefix="wildsci-eval-") as tmp:
        cfg, tasks, skipped, dropped = _data_config(recipe, Path(tmp))
        if not tasks:
            raise UserError(f"{recipe_path}: no task left to run ({skipped}) -- check 'sources'")
        config_file = out_dir / "eval_config.json"
        config_file.write_text(json.dumps(cfg.to_json(), indent=1), encoding="utf-8")
        for t, why in skipped.items():
            print(f"wildsci eval: skipping task {t}: {why}", file=sys.stderr)
        for t, why in dropped.items():
            reasons = ", ".join(f"{reason}: {n}" for reason, n in why.items())
            print(f"wildsci eval: task {t}: {sum(why.values())} row(s) left out ({reasons})", file=sys.stderr)
        derived = derived_tasks(tasks, cfg.limits)
        for sub, full in derived.items():
            print(f"wildsci eval: task {sub} is scored from the {full} answers (not generated twice)", file=sys.stderr)
        res: dict[str, Any] = {
            "models": [{"name": m.name, "path": m.path, "step": m.step} for m in models],
            "tasks": tasks,
            "scores": {},
        }
        perms: dict[str, dict] = {}
        preds, perm_preds = [], []
        bar = tqdm(models, desc="wildsci eval", unit="model", disable=None)
        for m in bar:
            bar.set_postfix_str(m.name)
            bar.write(f"wildsci eval: {m.name} (step {m.step}): lighteval log in {out_dir / 'lighteval' / m.name}")
            results, records = evaluate_model(recipe, m, tasks, cfg, out_dir, config_file)
            res["scores"][m.name] = {}
            for t in tasks:
                recs = [r for r in records if r["task"] == t and r["_permutation"] == -1]
                if TASKS[t].name in results:
                    res["scores"][m.name][t] = task_scores(results[TASKS[t].name], recs)
                preds.extend(recs)
                if cfg.permutations:
                    by_k = {
                        k: [r for r in records if r["task"] == t and r["_permutation"] == k]
                        for k in range(cfg.permutations)
                    }
                    if all(by_k.values()):
                        perms.setdefault(m.name, {})[t] = permutation_summary(by_k)
                    perm_preds.extend(r for k in by_k for r in by_k[k])
    if cfg.permutations:
        res["permutations"] = perms

    def public(r: dict) -> dict:
        return {k: v for k, v in r.items() if not k.startswith("_")}

    _write_jsonl(out_dir / "predictions.jsonl", [public(r) for r in preds])
    if perm_preds:
        _write_jsonl(
            out_dir / "permutation_predictions.jsonl",
            [{**public(r), "permutation": r["_permutation"], "order": r["_order"]} for r in perm_preds],
        )
    if skipped:
        res["skipped"] = skipped  # results.md (wildsci.report.evaluation) lists them, as it lists the next two
    if dropped:
        res["dropped"] = dropped
    if derived:
        res["derived"] = derived
    res["ran_on"] = ran_on(recipe, models[0], out_dir)
    tmp_json = out_dir / "results.json.tmp"
    tmp_json.write_text(json.dumps(res, indent=1), encoding="utf-8")
    os.replace(tmp_json, out_dir / "results.json")
    print(f"wildsci eval: {len(models)} model(s) x {len(tasks)} task(s) -> {out_dir / 'results.json'}")
    return out_dir / "results.json"
