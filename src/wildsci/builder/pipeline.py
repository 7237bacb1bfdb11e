"""``wildsci build``: run the WildSci data pipeline's stages in order, with checkpoints, and write the dataset.

    ingest -> chunk -> generate -> options -> vote -> filter -> label -> [shard ends] -> validate
           -> dedup/decontaminate -> split -> save (parquet, Hub layout) -> card -> build_report.json -> [push]

Resumability: every stage is checkpointed and every LLM call cached (:mod:`wildsci.builder.state`,
:mod:`wildsci.llm.cache`). SIGKILL at any point and rerun the same command: finished stages are read back, the
interrupted stage is recomputed with its finished calls answered from the cache, and the result is
byte-identical to an uninterrupted build (tests/test_build_pipeline.py kills a real ``wildsci build`` to check).

Scale-out: ``--shard i/n`` runs the per-paper stages for one hash-partition of the papers; ``--merge_from
'[dir0, dir1, ...]'`` concatenates the shards' labelled rows and runs the global stages (dedup, split, card) once,
so n shards merged give exactly the dataset of one run (docs/scale_out.md). Checks before the first call and the
``--dry-run`` plan live in :mod:`wildsci.builder.plan`.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from wildsci.answers import LETTERS
from wildsci.builder.card import render_card
from wildsci.builder.chunk import read_and_chunk
from wildsci.builder.config import BuildRecipe
from wildsci.builder.console import failed_calls, failure_reason, log, summary_table
from wildsci.builder.dedup import Decontaminator, dedup_and_decontaminate
from wildsci.builder.generate import generate_questions
from wildsci.builder.label import label_rows
from wildsci.builder.options import complete_options
from wildsci.builder.plan import build_plan, preflight, print_plan
from wildsci.builder.push import push_dataset
from wildsci.builder.split import split_rows
from wildsci.builder.state import (
    STATE_DIR,
    Checkpoints,
    claim_output_dir,
    content_hash,
    read_pool,
    read_shards,
    stage_entry,
    write_atomic,
    write_generated,
    write_shard,
)
from wildsci.builder.vote import filter_by_votes, vote
from wildsci.dataset_io import SPLITS, save_wildsci
from wildsci.errors import UserError
from wildsci.llm.backends import BackendConfig, LLMClient, make_client
from wildsci.llm.cache import CallCache
from wildsci.provenance import KEY_PACKAGES, git_sha, package_versions
from wildsci.recipes import from_dict, load_yaml, merge_overrides
from wildsci.redact import redact_text
from wildsci.schema import COLUMNS, VOTING_TYPES, validate_row

#: versions on the dataset card: the kit's key packages plus the builder's own (MinHash, the OpenAI client)
BUILD_PACKAGES = (*KEY_PACKAGES, "datasketch", "openai")


def _unique_clients(configs: list[BackendConfig], cache: CallCache) -> list[LLMClient]:
    """One client per distinct backend config, so the same local model is loaded once for every role."""
    made: dict[str, LLMClient] = {}
    out = []
    for cfg in configs:
        key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        if key not in made:
            made[key] = make_client(cfg, cache)
        out.append(made[key])
    return out


class Clients:
    """LLM clients, created on first use (a fully checkpointed rerun never loads a model)."""

    def __init__(self, recipe: BuildRecipe, cache: CallCache) -> None:
        self.recipe, self.cache = recipe, cache
        self._all: list[LLMClient] | None = None

    def _make(self) -> list[LLMClient]:
        if self._all is None:
            r = self.recipe
            self._all = _unique_clients([r.generator, *r.voter_configs(), r.labeler_config()], self.cache)
        return self._all

    @property
    def generator(self) -> LLMClient:
        return self._make()[0]

    @property
    def voters(self) -> list[LLMClient]:
        return self._make()[1:-1]

    @property
    def labeler(self) -> LLMClient:
        return self._make()[-1]

    def _distinct(self) -> list[LLMClient]:
        return list({id(c): c for c in self._all or []}.values())

    def failures(self) -> Counter[str]:
        """Failed calls by cause over every client (``HTTP 500 from http://...``)."""
        total: Counter[str] = Counter()
        for c in self._distinct():
            total.update(getattr(c, "failures", {}))
        return total

    def close(self) -> None:
        for c in self._distinct():
            if hasattr(c, "close"):
                c.close()


def per_paper_stages(recipe: BuildRecipe, ckpt: Checkpoints, clients: Clients, stages: list[dict]) -> list[dict]:
    """ingest -> chunk -> generate -> options -> vote -> filter -> label, each checkpointed.

    Returns the labelled rows (in corpus order); each finished stage's report entry is appended to ``stages`` as
    it ends, so a build that stops midway still shows what it did.
    """
    # the other shards' pool is read (and checked) before anything is loaded or generated; a shard that draws from
    # it recomputes its options when it changes
    pool = read_pool(recipe) if recipe.pool_from and recipe.uses_pool() else None
    pool_id = "" if pool is None else "+pool" + ckpt.rows_hash(pool)

    got = ckpt.get("chunk")
    if got:
        chunks, meta = got
        stages += meta["stages"]
        log(f"ingest: {len(chunks)} passages (from checkpoint)")
    else:
        tok = recipe.generator.model if recipe.generator.backend == "transformers" else None
        chunks, st = read_and_chunk(
            recipe.sources, recipe.chunking, tokenizer=tok, shard=recipe.shard_tuple(), max_papers=recipe.max_papers
        )
        ckpt.put("chunk", chunks, {"stages": st})
        stages += st
        log(f"ingest: {st[0]['out']} papers -> {len(chunks)} passages ({st[1].get('tokens', '')})")

    def run(name: str, rows_in: list[dict], fn, n_in: int | None = None, extra_input: str = "") -> list[dict]:
        in_hash = ckpt.rows_hash(rows_in) + extra_input
        got = ckpt.get(name, in_hash)
        if got:
            rows, meta = got
            log(f"{name}: {len(rows)} rows (from checkpoint)")
        else:
            t0 = time.time()
            rows, drops = fn(rows_in)[:2]
            # failed LLM calls are not cached: mark the stage to be recomputed by the next run, which then
            # answers every finished call from the cache and retries exactly the failed ones
            meta = {"drops": drops, "input_hash": in_hash, "retry": bool(drops.get("llm_error"))}
            ckpt.put(name, rows, meta)
            log(f"{name}: {len(rows_in)} -> {len(rows)} in {time.time() - t0:.1f}s")
        stages.append(stage_entry(name, len(rows_in) if n_in is None else n_in, len(rows), meta["drops"]))
        return rows

    # generate's "in" counts attempted questions (passages x questions_per_chunk), like its drops
    attempts = len(chunks) * recipe.generate.questions_per_chunk
    rows = run("generate", chunks, lambda rs: generate_questions(rs, clients.generator, recipe.generate), attempts)
    if recipe.stop_after == "generate":
        return rows
    options = lambda rs: complete_options(rs, clients.generator, recipe.options, pool)  # noqa: E731
    rows = run("options", rows, options, None, pool_id)
    rows = run("vote", rows, lambda rs: vote(rs, clients.voters, recipe.vote))
    rows = run("filter", rows, lambda rs: filter_by_votes(rs, recipe.vote))
    labeler = (lambda: clients.labeler) if recipe.label.use_llm else (lambda: None)
    return run("label", rows, lambda rs: label_rows(rs, labeler(), recipe.label))


def canonical_order(rows: list[dict]) -> list[dict]:
    """Sort by (paper, passage, question id): shards and resumed runs meet in the same order."""
    return sorted(rows, key=lambda r: (str(r["paper_id"]), str(r.get("chunk_id") or ""), r["question_id"]))


def to_wildsci_row(row: dict[str, Any], recipe_hash: str) -> dict[str, Any]:
    out = {
        **row,
        "source_license": row.get("license", ""),
        "recipe_hash": recipe_hash,
        "rationale": row.get("rationale") or "",
    }
    return {c: out.get(c) for c in COLUMNS}


def validate_rows(rows: list[dict], recipe_hash: str, num_votes: int) -> tuple[list[dict], dict[str, int]]:
    """Final schema check: a row that fails is a counted drop (``invalid_row``), never written."""
    kept, drops = [], Counter()
    for r in rows:
        w = to_wildsci_row(r, recipe_hash)
        if validate_row(w, num_voters=num_votes):
            drops["invalid_row"] += 1
            continue
        kept.append(w)
    return kept, dict(drops)


def _source_licenses(chunks_or_rows: list[dict]) -> dict[str, int]:
    """Papers per licence (each paper counted once)."""
    per_paper = {r["paper_id"]: r.get("license") or r.get("source_license") or "unknown" for r in chunks_or_rows}
    return dict(sorted(Counter(per_paper.values()).items()))


def run_build(
    recipe_path: str | Path,
    output_dir: str | None = None,
    dry_run: bool = False,
    push: bool = False,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> dict[str, Any] | None:
    """Build (or plan, or push) the dataset of a data recipe. Returns the build report (``None`` for a dry run).

    ``command`` is the command line the card shows (default: this process's ``wildsci build ...``); an executor's
    merge passes the user's, since it runs inside a job.

    Every way it can fail prints the stage table of what was done, then one line naming the cause.
    """
    overrides = dict(overrides or {})
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    data = load_yaml(recipe_path)
    if overrides:
        data = merge_overrides(data, overrides)
    recipe = from_dict(BuildRecipe, data, str(recipe_path))
    preflight(recipe, push)
    if dry_run:
        print_plan(recipe, build_plan(recipe))
        return None
    out = Path(recipe.output_dir)
    claim_output_dir(out, overwrite)
    stages: list[dict] = []
    try:
        return _build(recipe, recipe_path, out, stages, push, command)
    except (Exception, KeyboardInterrupt):
        if stages:
            summary_table(stages, f"{recipe.name}: stopped after {stages[-1]['name']}")
        raise


def _build(
    recipe: BuildRecipe, recipe_path: str | Path, out: Path, stages: list[dict], push: bool, command: str | None = None
) -> dict[str, Any]:
    t0 = time.time()
    recipe_hash = content_hash(recipe)
    # the benchmarks are read now, not after every LLM call was paid for: an unreachable one fails here
    benchmarks = (
        Decontaminator(recipe.decontamination) if recipe.decontamination.benchmarks and not recipe.shard else None
    )
    cache = CallCache(recipe.cache_path or out / STATE_DIR / "llm_cache.sqlite")
    clients = Clients(recipe, cache)
    try:
        if recipe.merge_from:
            rows, merged = read_shards(recipe)
            stages += merged
            log(f"merged {len(recipe.merge_from)} shards: {len(rows)} labelled questions")
        else:
            rows = per_paper_stages(recipe, Checkpoints(out / STATE_DIR, recipe_hash), clients, stages)
        llm_calls = {"made": cache.stats.get("made", 0), "cached": cache.stats.get("cached", 0)}
        failures = clients.failures()
    finally:
        clients.close()
        cache.close()
    if failures:
        what = escape(f"{sum(failures.values())} LLM calls failed ({failed_calls(failures)})")
        log(f"[yellow]{what}[/] -- rerun the same command to retry exactly those (finished calls come from the cache)")

    if recipe.stop_after == "generate":
        i, n = recipe.shard_tuple()
        write_generated(out, recipe, len(rows))
        summary_table(stages, f"{recipe.name}: shard {i}/{n}, generated")
        log(
            f"shard {i}/{n} generated: {len(rows)} questions in {out} -- when every shard has generated, finish each "
            f"with `wildsci build {recipe_path} --shard {i}/{n} --pool_from '[<all shard dirs>]'`"
        )
        return {"shard": [i, n], "generated": len(rows), "stages": stages, "llm_calls": llm_calls}

    if recipe.shard:
        i, n = recipe.shard_tuple()
        write_shard(out, recipe, rows, stages, llm_calls)
        summary_table(stages, f"{recipe.name}: shard {i}/{n}")
        log(
            f"shard {i}/{n} done: {len(rows)} labelled questions in {out} -- when all shards are done, merge with "
            f"`wildsci build {recipe_path} --merge_from '[<shard dirs>]' --output-dir <final dir>`"
        )
        return {"shard": [i, n], "rows": len(rows), "stages": stages, "llm_calls": llm_calls}

    rows = canonical_order(rows)
    n_in = len(rows)
    rows, drops = validate_rows(rows, recipe_hash, recipe.vote.num_votes)
    stages.append(stage_entry("validate", n_in, len(rows), drops))
    n_in = len(rows)
    rows, drops, deco = dedup_and_decontaminate(rows, recipe.dedup, recipe.decontamination, benchmarks)
    stages.append(stage_entry("dedup_decontaminate", n_in, len(rows), drops))
    splits = {k: v for k, v in split_rows(rows, recipe.split).items() if v}
    if not rows:
        reason = failure_reason(stages, failures)
        summary_table(stages, f"{recipe.name}: no question left")
        stages.clear()  # shown already: run_build's handler must not print it twice
        raise UserError(reason)
    for split in SPLITS:  # a split that is empty now must not survive from an earlier build
        if split not in splits:
            for f in (out / "data").glob(f"{split}-*.parquet"):
                f.unlink()
    counts = save_wildsci(splits, out)
    all_drops: Counter[str] = Counter()
    for st in stages:
        all_drops.update(st["drops"])
    letters = Counter(r["answer"] for r in rows)
    report = {
        "recipe": dataclasses.asdict(recipe),
        "recipe_hash": recipe_hash,
        "stages": stages,
        "drops": dict(sorted(all_drops.items())),
        "letter_distribution": {k: letters.get(k, 0) for k in LETTERS[: recipe.options.num_options]},
        "voting_types": {
            **{t: 0 for t in VOTING_TYPES},
            **Counter(r["voting_type"] for r in rows),
        },
        "per_discipline": dict(sorted(Counter(r["discipline"] for r in rows).items())),
        "per_subdomain": dict(sorted(Counter(r["nc_subdomain"] for r in rows).items())),
        "decontamination": {k: {"checked": v["checked"], "removed": v["removed"]} for k, v in deco.items()},
        "splits": counts,
        "llm_calls": llm_calls,
        "versions": package_versions(BUILD_PACKAGES),
        "git_sha": git_sha(),
        # extras for the card (not part of the downstream contract)
        "name": recipe.name,
        "command": redact_text(  # a token typed on the command line must not travel on into a shared card
            command
            or (
                "wildsci build " + " ".join(shlex.quote(a) for a in sys.argv[2:])
                if sys.argv[1:2] == ["build"]
                else f"wildsci build {recipe_path}"
            )
        ),
        "source_licenses": _source_licenses(rows),
        "generator": recipe.generator.describe(),
        "voters": [v.describe() for v in recipe.voter_configs()],
        "num_votes": recipe.vote.num_votes,
        "hub_repo_id": recipe.hub_repo_id,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "seconds": round(time.time() - t0, 1),
    }
    write_atomic(out / "build_report.json", [json.dumps(report, indent=1, ensure_ascii=False) + "\n"])
    render_card(
        out,
        {**report, "decontamination": deco},
        redact_text(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False, allow_unicode=True, width=110)),
        recipe.card,
        recipe.name,
        recipe.description,
    )
    summary_table(stages, f"{recipe.name}: {sum(counts.values())} questions {counts} in {out}")
    log(f"LLM calls: {llm_calls['made']} made, {llm_calls['cached']} from the cache; card: {out / 'README.md'}")
    if push:
        url = push_dataset(out, recipe.hub_repo_id, private=recipe.private, message=f"wildsci build {recipe.name}")
        log(f"pushed to {recipe.hub_repo_id}: {url}")
        report["pushed"] = url
    return report
