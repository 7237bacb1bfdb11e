"""Everything decided before the first LLM call: the preflight checks and the ``--dry-run`` plan.

A value that would fail a stage after paid calls must fail here instead, as one line (what, where, how to fix).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import constants
from rich.console import Console
from rich.table import Table

from wildsci.builder.card import find_template
from wildsci.builder.chunk import read_and_chunk
from wildsci.builder.config import BuildRecipe
from wildsci.builder.generate import check_planned_calls
from wildsci.builder.ingest import SourceConfig, is_remote, source_files
from wildsci.builder.push import check_push
from wildsci.errors import UserError
from wildsci.models import check_device, check_model, context_length

#: the per-paper stages, in order (each is checkpointed; see wildsci.builder.state)
STAGE_ORDER = ("ingest", "chunk", "generate", "options", "vote", "filter", "label")


def preflight(recipe: BuildRecipe, push: bool) -> None:
    """Everything that can be checked before any work starts (for a build and a dry run); each failure is one line.

    Values inside one section are checked by the recipe dataclasses' ``__post_init__`` when the recipe loads; what
    needs the outside world (files, models, the Hub, the environment) is checked here.
    """
    if push and not recipe.hub_repo_id:
        raise UserError("--push needs hub_repo_id in the recipe (or --hub_repo_id my-org/name)")
    if recipe.shard and push:
        raise UserError("--push with --shard: push the merged dataset instead (merge_from)")
    find_template(recipe.card.template)
    if not recipe.merge_from:
        for src in recipe.sources:
            source_files(src)  # raises for a missing local path
    for b in recipe.decontamination.benchmarks:
        p = Path(b.path).expanduser()
        if (p.suffix in (".jsonl", ".parquet") or b.path.startswith((".", "/", "~"))) and not p.is_file():
            raise UserError(f"benchmark {b.name!r}: file {b.path} not found -- fix decontamination.benchmarks[].path")
    roles = [("generator", recipe.generator)] + [(f"voters[{i}]", v) for i, v in enumerate(recipe.voter_configs())]
    roles.append(("labeler", recipe.labeler_config()))
    positions: dict[str, int | None] = {}  # per local model: checked once, its context length kept
    for role, cfg in roles:
        if cfg.backend == "transformers":
            check_device(cfg.device, f"{role}.device")
            if cfg.model not in positions:
                # config, weights, tokenizer, chat template: before any paper is read or model loaded
                path = check_model(cfg.model, chat_template=True, where=f"{role}.model")
                positions[cfg.model] = context_length(path)
            n = positions[cfg.model]
            if n is not None and cfg.max_new_tokens >= n:  # every call would fail as too long, after the load
                raise UserError(
                    f"{role}.max_new_tokens is {cfg.max_new_tokens}: {cfg.model} has {n} positions in all, prompt "
                    f"included -- give at most a fraction of them, e.g. {min(512, n // 4)}"
                )
        if cfg.backend == "openai" and not cfg.base_url:
            raise UserError(f"{role}: the openai backend needs base_url (e.g. http://localhost:8000/v1)")
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise UserError(
                f"{role}: api_key_env names ${cfg.api_key_env}, which is not set -- export it "
                "(never put keys in recipes)"
            )
    if push:
        check_push(recipe.hub_repo_id)  # offline or not logged in: known now, not after every call was paid for


def _remote_source_count(src: SourceConfig) -> tuple[int | None, str]:
    """Papers in a Hub source from its metadata when reachable, else the recipe's ``expected_papers``."""
    if not constants.HF_HUB_OFFLINE and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "TRUE"):
        try:
            builder = datasets.load_dataset_builder(src.path, name=src.hub_config, revision=src.revision)
            split = (builder.info.splits or {}).get(src.hub_split)
            if split is not None and split.num_examples:
                n = split.num_examples
                return (min(n, src.max_papers) if src.max_papers else n), "Hub metadata"
        except Exception:  # unreachable / offline / no metadata: fall back to the recipe
            pass
    if src.expected_papers is not None:
        n = min(src.expected_papers, src.max_papers) if src.max_papers else src.expected_papers
        return n, "estimated from the recipe's expected_papers (the Hub was not reached)"
    return None, "unknown: the Hub was not reached and the source has no expected_papers"


def build_plan(recipe: BuildRecipe) -> dict[str, Any]:
    """Counts of papers and passages, and the LLM calls each stage will make at most (nothing is generated)."""
    sources, papers, chunks, exact = [], 0, 0, True
    for src in recipe.sources:
        if is_remote(src):
            n, how = _remote_source_count(src)
            # a full-text paper is ~6,000 words; an abstract ~200: assume full text (the larger estimate)
            per_paper = max(1, round(6000 * 1.3 / recipe.chunking.max_tokens))
            if recipe.chunking.max_chunks_per_paper:
                per_paper = min(per_paper, recipe.chunking.max_chunks_per_paper)
            c = None if n is None else n * per_paper
            sources.append({"path": src.path, "papers": n, "passages": c, "how": how})
            exact = False
            papers += n or 0
            chunks += c or 0
        else:
            cfg = dataclasses.replace(recipe.chunking, tokenizer=None)  # word estimate: no download in a dry run
            got, st = read_and_chunk(
                [src], cfg, tokenizer=None, shard=recipe.shard_tuple(), max_papers=recipe.max_papers, progress=False
            )
            sources.append(
                {
                    "path": src.path,
                    "papers": st[0]["out"],
                    "passages": len(got),
                    "how": "read (tokens ~ words x 1.3)",
                    "drops": {**st[0]["drops"], **st[1]["drops"]},
                }
            )
            papers += st[0]["out"]
            chunks += len(got)
    if recipe.max_papers is not None:
        papers = min(papers, recipe.max_papers)
    questions = chunks * recipe.generate.questions_per_chunk
    calls = {
        "generate": questions,
        "options (distractors, only for questions with < 10 options)": (
            0
            if recipe.options.distractor_source == "pool" or not recipe.options.generate_distractors
            else questions * recipe.options.max_attempts
        ),
        "vote": questions * recipe.vote.num_votes,
        "label": (papers if recipe.label.per_paper else questions) if recipe.label.use_llm else 0,
    }
    check_planned_calls(sum(calls.values()), f"{chunks:,} passages x {recipe.generate.questions_per_chunk} questions")
    return {
        "sources": sources,
        "papers": papers,
        "passages": chunks,
        "questions_max": questions,
        "calls_max": calls,
        "exact": exact,
    }


def print_plan(recipe: BuildRecipe, plan: dict[str, Any]) -> None:
    con = Console()
    con.print(
        f"[bold]wildsci build --dry-run[/]: {recipe.name} -> {recipe.output_dir}"
        + (f" (push: {recipe.hub_repo_id}, {'private' if recipe.private else 'public'})" if recipe.hub_repo_id else "")
    )
    if recipe.shard:
        con.print(f"shard {recipe.shard}: only this hash-partition of the papers; merge the shards with merge_from")
    con.print("stages: " + " -> ".join([*STAGE_ORDER, "validate", "dedup_decontaminate", "split", "save", "card"]))
    t = Table(title="sources")
    for col in ("source", "papers", "passages", "how counted"):
        t.add_column(col)
    for s in plan["sources"]:
        t.add_row(
            s["path"],
            str(s["papers"] if s["papers"] is not None else "?"),
            str(s["passages"] if s["passages"] is not None else "?"),
            s["how"],
        )
    con.print(t)
    voters = ", ".join(v.describe() for v in recipe.voter_configs())
    t = Table(title="LLM calls (upper bounds; the cache answers calls already made)")
    t.add_column("stage")
    t.add_column("calls", justify="right")
    t.add_column("model")
    models = {"generate": recipe.generator.describe(), "vote": voters, "label": recipe.labeler_config().describe()}
    for stage, n in plan["calls_max"].items():
        t.add_row(stage, f"{n:,}", models.get(stage.split(" ")[0], recipe.generator.describe()))
    con.print(t)
    benches = ", ".join(b.name for b in recipe.decontamination.benchmarks) or "none"
    con.print(
        f"dedup: MinHash LSH threshold {recipe.dedup.threshold} ({'on' if recipe.dedup.enabled else 'off'}); "
        f"decontamination against: {benches}; splits by paper: validation {recipe.split.validation}, "
        f"test {recipe.split.test}"
    )
    if not plan["exact"]:
        con.print("[yellow]counts marked 'estimated' were not read: the source is a Hub id that was not reached[/]")
    con.print("dry run: nothing was generated.")
