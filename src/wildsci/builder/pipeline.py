"""``wildsci build``: the orchestrator of the WildSci data pipeline.

    ingest -> chunk -> generate -> options -> vote -> filter -> label -> [shard ends] -> validate
           -> dedup/decontaminate -> split -> save (parquet, Hub layout) -> card -> build_report.json -> [push]

Resumability. Every stage writes its output to ``<output_dir>/.wildsci_build/<stage>.jsonl`` (temporary file,
fsync, rename) and records it in ``manifest.json`` under the recipe's content hash; every LLM call is cached in
``.wildsci_build/llm_cache.sqlite`` (committed per call). SIGKILL at any point and rerun the same command:
finished stages are read back, the interrupted stage is recomputed with its finished calls answered from the
cache, and the result is byte-identical to an uninterrupted build (tests/test_build_pipeline.py kills a real
``wildsci build`` subprocess to check this). A changed recipe invalidates the stage files, never the cache.

Scale-out: ``--shard i/n`` runs the per-paper stages for one hash-partition of the papers; ``--merge_from
'[dir0, dir1, ...]'`` concatenates the shards' labelled rows and runs the global stages (dedup, split, card) once,
so n shards merged give exactly the dataset of one run (docs/scale_out.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from wildsci.errors import UserError

STATE_DIR = ".wildsci_build"
STAGE_ORDER = ("ingest", "chunk", "generate", "options", "vote", "filter", "label")


# ------------------------------------------------------------------------------------ checkpoints
class Checkpoints:
    """Stage outputs as JSONL files plus a manifest, both replaced atomically (a kill never leaves half a file)."""

    def __init__(self, root: Path, content_hash: str) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.hash = content_hash
        self.manifest_path = root / "manifest.json"
        self.manifest: dict[str, Any] = {"recipe_hash": content_hash, "stages": {}}
        if self.manifest_path.is_file():
            try:
                old = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = {}
            if old.get("recipe_hash") == content_hash:
                self.manifest = old
            elif old:
                log(f"recipe changed since the last run in {root.parent}: recomputing stages (LLM cache kept)")

    def _write_atomic(self, path: Path, text_lines: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for line in text_lines:
                fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @staticmethod
    def rows_hash(rows: list[dict[str, Any]]) -> str:
        """Identity of a stage's input: a stage file is reused only for exactly the rows it was computed from."""
        h = hashlib.sha256()
        for r in rows:
            h.update(json.dumps(r, ensure_ascii=False, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def get(self, name: str, input_hash: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """A finished stage's rows, unless its input changed or it must be retried (it had failed LLM calls)."""
        meta = self.manifest["stages"].get(name)
        path = self.root / f"{name}.jsonl"
        if not meta or not path.is_file() or meta.get("retry"):
            return None
        if input_hash is not None and meta.get("input_hash") != input_hash:
            return None
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        if len(rows) != meta.get("rows"):
            return None
        return rows, meta

    def put(self, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        self._write_atomic(
            self.root / f"{name}.jsonl", (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        )
        self.manifest["stages"][name] = {**meta, "rows": len(rows)}
        self._write_atomic(self.manifest_path, [json.dumps(self.manifest, indent=1, sort_keys=True)])


# ---------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(f"[bold cyan]wildsci build[/]: {msg}")


#: backend fields that say how to reach a model, not what it answers (moving to another server keeps the hash)
TRANSPORT_KEYS = ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries")


def _content_dict(recipe: Any) -> dict[str, Any]:
    """The recipe values that determine the dataset's content (its hash names the rows' ``recipe_hash``)."""
    from wildsci.builder.config import NON_CONTENT_KEYS

    data = dataclasses.asdict(recipe)
    out = {k: v for k, v in data.items() if k not in NON_CONTENT_KEYS}
    for role in ("generator", "labeler"):
        if isinstance(out.get(role), dict):
            out[role] = {k: v for k, v in out[role].items() if k not in TRANSPORT_KEYS}
    out["voters"] = [{k: v for k, v in b.items() if k not in TRANSPORT_KEYS} for b in out.get("voters", [])]
    return out


def _hash(data: dict[str, Any]) -> str:
    from wildsci.recipes import recipe_hash

    return recipe_hash(data)


def _stage(name: str, n_in: int, n_out: int, drops: dict[str, int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": n_in, "out": n_out, "drops": dict(sorted(drops.items())), **extra}


def _unique_clients(configs: list[Any], cache: Any) -> list[Any]:
    """One client per distinct backend config, so the same local model is loaded once for every role."""
    from wildsci.llm.backends import make_client

    made: dict[str, Any] = {}
    out = []
    for cfg in configs:
        key = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
        if key not in made:
            made[key] = make_client(cfg, cache)
        out.append(made[key])
    return out


def preflight(recipe: Any, push: bool) -> None:
    """Everything that can be checked before any work starts; each failure is one line."""
    from wildsci.builder.card import find_template
    from wildsci.builder.ingest import _source_files

    if push and not recipe.hub_repo_id:
        raise UserError("--push needs hub_repo_id in the recipe (or --hub_repo_id my-org/name)")
    if recipe.shard and push:
        raise UserError("--push with --shard: push the merged dataset instead (merge_from)")
    find_template(recipe.card.template)
    if not recipe.merge_from:
        for src in recipe.sources:
            _source_files(src)  # raises for a missing local path
    for b in recipe.decontamination.benchmarks:
        p = Path(b.path).expanduser()
        if (p.suffix in (".jsonl", ".parquet") or b.path.startswith((".", "/", "~"))) and not p.is_file():
            raise UserError(f"benchmark {b.name!r}: file {b.path} not found -- fix decontamination.benchmarks[].path")
    roles = [("generator", recipe.generator)] + [(f"voters[{i}]", v) for i, v in enumerate(recipe.voter_configs())]
    roles.append(("labeler", recipe.labeler_config()))
    for role, cfg in roles:
        if cfg.backend == "transformers":
            from wildsci.models import resolve_model

            resolve_model(cfg.model)  # a bad model reference fails here, before any paper is read
        if cfg.backend == "openai" and not cfg.base_url:
            raise UserError(f"{role}: the openai backend needs base_url (e.g. http://localhost:8000/v1)")
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env):
            raise UserError(
                f"{role}: api_key_env names ${cfg.api_key_env}, which is not set -- export it "
                "(never put keys in recipes)"
            )
    out = Path(recipe.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"output_dir {out}: cannot create it ({e.strerror}) -- choose another --output-dir") from None


# ------------------------------------------------------------------------------------- the stages
class Clients:
    """LLM clients, created on first use (a fully checkpointed rerun never loads a model)."""

    def __init__(self, recipe: Any, cache: Any) -> None:
        self.recipe, self.cache = recipe, cache
        self._all: list[Any] | None = None

    def _make(self) -> list[Any]:
        if self._all is None:
            r = self.recipe
            self._all = _unique_clients([r.generator, *r.voter_configs(), r.labeler_config()], self.cache)
        return self._all

    @property
    def generator(self) -> Any:
        return self._make()[0]

    @property
    def voters(self) -> list[Any]:
        return self._make()[1:-1]

    @property
    def labeler(self) -> Any:
        return self._make()[-1]

    def close(self) -> None:
        for c in {id(c): c for c in self._all or []}.values():
            if hasattr(c, "close"):
                c.close()


def per_paper_stages(recipe: Any, ckpt: Checkpoints, cache: Any) -> tuple[list[dict], list[dict]]:
    """ingest -> chunk -> generate -> options -> vote -> filter -> label, each checkpointed.

    Returns the labelled rows (in corpus order) and the stage entries of the build report.
    """
    from wildsci.builder.generate import generate_questions
    from wildsci.builder.ingest import ingest
    from wildsci.builder.label import label_rows
    from wildsci.builder.options import complete_options
    from wildsci.builder.vote import filter_by_votes, vote

    stages: list[dict] = []
    clients = Clients(recipe, cache)

    got = ckpt.get("chunk")
    if got:
        chunks, meta = got
        stages += meta["stages"]
        log(f"ingest: {len(chunks)} passages (from checkpoint)")
    else:
        tok = recipe.generator.model if recipe.generator.backend == "transformers" else None
        chunks, st = ingest(
            recipe.sources, recipe.chunking, tokenizer=tok, shard=recipe.shard_tuple(), max_papers=recipe.max_papers
        )
        ckpt.put("chunk", chunks, {"stages": st})
        stages += st
        log(f"ingest: {st[0]['out']} papers -> {len(chunks)} passages ({st[1].get('tokens', '')})")

    def run(name: str, rows_in: list[dict], fn, n_in: int | None = None) -> list[dict]:
        in_hash = ckpt.rows_hash(rows_in)
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
        stages.append(_stage(name, len(rows_in) if n_in is None else n_in, len(rows), meta["drops"]))
        return rows

    try:
        # generate's "in" counts attempted questions (passages x questions_per_chunk), like its drops
        attempts = len(chunks) * recipe.generate.questions_per_chunk
        rows = run("generate", chunks, lambda rs: generate_questions(rs, clients.generator, recipe.generate), attempts)
        rows = run("options", rows, lambda rs: complete_options(rs, clients.generator, recipe.options))
        rows = run("vote", rows, lambda rs: vote(rs, clients.voters, recipe.vote))
        rows = run("filter", rows, lambda rs: filter_by_votes(rs, recipe.vote))
        labeler = (lambda: clients.labeler) if recipe.label.use_llm else (lambda: None)
        rows = run("label", rows, lambda rs: label_rows(rs, labeler(), recipe.label))
    finally:
        clients.close()
    return rows, stages


def canonical_order(rows: list[dict]) -> list[dict]:
    """Sort by (paper, passage, question id): shards and resumed runs meet in the same order."""
    return sorted(rows, key=lambda r: (str(r["paper_id"]), str(r.get("chunk_id") or ""), r["question_id"]))


def to_wildsci_row(row: dict[str, Any], recipe_hash: str) -> dict[str, Any]:
    from wildsci.schema import COLUMNS

    out = {
        **row,
        "source_license": row.get("license", ""),
        "recipe_hash": recipe_hash,
        "rationale": row.get("rationale") or "",
    }
    return {c: out.get(c) for c in COLUMNS}


def validate_rows(rows: list[dict], recipe_hash: str, num_votes: int) -> tuple[list[dict], dict[str, int]]:
    """Final schema check: a row that fails is a counted drop (``invalid_row``), never written."""
    from wildsci.schema import validate_row

    kept, drops = [], Counter()
    for r in rows:
        w = to_wildsci_row(r, recipe_hash)
        if validate_row(w, num_voters=num_votes):
            drops["invalid_row"] += 1
            continue
        kept.append(w)
    return kept, dict(drops)


def read_shards(recipe: Any) -> tuple[list[dict], list[dict]]:
    """Labelled rows and stage counts of every shard folder in ``merge_from`` (checked complete and consistent)."""
    base = _base_hash(recipe)
    seen: dict[int, str] = {}
    rows: list[dict] = []
    totals: dict[str, dict[str, Any]] = {}
    expected_n = None
    for d in recipe.merge_from:
        meta_path = Path(d) / "shard.json"
        if not meta_path.is_file():
            raise UserError(f"merge_from: {d} is not a finished shard (no shard.json) -- run or resume that shard")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["base_hash"] != base:
            raise UserError(f"merge_from: {d} was built from a different recipe -- rebuild it with this recipe")
        i, n = meta["shard"]
        if expected_n not in (None, n) or i in seen:
            raise UserError(f"merge_from: {d} is shard {i}/{n}, inconsistent with {seen} -- list each shard once")
        expected_n, seen[i] = n, d
        rows += [json.loads(line) for line in (Path(d) / "shard_rows.jsonl").read_text(encoding="utf-8").splitlines()]
        for st in meta["stages"]:
            t = totals.setdefault(st["name"], {"name": st["name"], "in": 0, "out": 0, "drops": Counter()})
            t["in"] += st["in"]
            t["out"] += st["out"]
            t["drops"].update(st["drops"])
    missing = sorted(set(range(expected_n or 0)) - set(seen))
    if missing:
        raise UserError(f"merge_from: shards {missing} of {expected_n} are missing -- build them and list them all")
    stages = [_stage(t["name"], t["in"], t["out"], dict(t["drops"])) for t in totals.values()]
    return rows, stages


def _base_hash(recipe: Any) -> str:
    data = _content_dict(recipe)
    data.pop("shard", None)
    return _hash(data)


def _source_licenses(chunks_or_rows: list[dict]) -> dict[str, int]:
    """Papers per licence (each paper counted once)."""
    per_paper = {r["paper_id"]: r.get("license") or r.get("source_license") or "unknown" for r in chunks_or_rows}
    return dict(sorted(Counter(per_paper.values()).items()))


def summary_table(stages: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in ("stage", "in", "out", "dropped", "drop reasons"):
        t.add_column(col, justify="right" if col in ("in", "out", "dropped") else "left")
    for st in stages:
        drops = st.get("drops", {})
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "-"
        t.add_row(st["name"], str(st["in"]), str(st["out"]), str(sum(drops.values())), reasons)
    Console(stderr=True).print(t)


# ---------------------------------------------------------------------------------------- dry run
def _remote_source_count(src: Any) -> tuple[int | None, str]:
    """Papers in a Hub source from its metadata when reachable, else the recipe's ``expected_papers``."""
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "TRUE"):
        try:
            import datasets

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


def build_plan(recipe: Any) -> dict[str, Any]:
    """Counts of papers and passages, and the LLM calls each stage will make at most (nothing is generated)."""
    from wildsci.builder.ingest import ingest, is_remote

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
            got, st = ingest(
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
    return {
        "sources": sources,
        "papers": papers,
        "passages": chunks,
        "questions_max": questions,
        "calls_max": calls,
        "exact": exact,
    }


def print_plan(recipe: Any, plan: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

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


# ------------------------------------------------------------------------------------------ entry
def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_build(
    recipe_path: str | Path,
    output_dir: str | None = None,
    dry_run: bool = False,
    push: bool = False,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Build (or plan, or push) the dataset of a data recipe. Returns the build report (``None`` for a dry run)."""
    from wildsci.answers import LETTERS
    from wildsci.builder.card import git_sha, package_versions, render_card
    from wildsci.builder.config import BuildRecipe
    from wildsci.builder.dedup import dedup_and_decontaminate
    from wildsci.builder.push import push_dataset
    from wildsci.builder.split import split_rows
    from wildsci.dataset_io import SPLITS, save_wildsci
    from wildsci.llm.cache import CallCache
    from wildsci.recipes import from_dict, load_yaml, merge_overrides
    from wildsci.schema import VOTING_TYPES

    overrides = dict(overrides or {})
    if output_dir is not None:
        overrides["output_dir"] = output_dir
    data = load_yaml(recipe_path)
    if overrides:
        data = merge_overrides(data, overrides)
    recipe = from_dict(BuildRecipe, data, str(recipe_path))
    if dry_run:
        print_plan(recipe, build_plan(recipe))
        return None
    preflight(recipe, push)
    t0 = time.time()
    out = Path(recipe.output_dir)
    content_hash = _hash(_content_dict(recipe))
    state = out / STATE_DIR
    cache = CallCache(recipe.cache_path or state / "llm_cache.sqlite")
    try:
        if recipe.merge_from:
            rows, stages = read_shards(recipe)
            log(f"merged {len(recipe.merge_from)} shards: {len(rows)} labelled questions")
        else:
            rows, stages = per_paper_stages(recipe, Checkpoints(state, content_hash), cache)
        llm_calls = {"made": cache.stats.get("made", 0), "cached": cache.stats.get("cached", 0)}
    finally:
        cache.close()

    if recipe.shard:
        i, n = recipe.shard_tuple()
        shard_file = out / "shard_rows.jsonl"
        tmp = shard_file.with_name(shard_file.name + ".tmp")
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8"
        )
        os.replace(tmp, shard_file)
        _atomic_json(
            out / "shard.json",
            {"shard": [i, n], "base_hash": _base_hash(recipe), "stages": stages, "llm_calls": llm_calls},
        )
        summary_table(stages, f"{recipe.name}: shard {i}/{n}")
        log(
            f"shard {i}/{n} done: {len(rows)} labelled questions in {out} -- when all shards are done, merge with "
            f"`wildsci build {recipe_path} --merge_from '[<shard dirs>]' --output-dir <final dir>`"
        )
        return {"shard": [i, n], "rows": len(rows), "stages": stages, "llm_calls": llm_calls}

    rows = canonical_order(rows)
    n_in = len(rows)
    rows, drops = validate_rows(rows, content_hash, recipe.vote.num_votes)
    stages.append(_stage("validate", n_in, len(rows), drops))
    n_in = len(rows)
    rows, drops, deco = dedup_and_decontaminate(rows, recipe.dedup, recipe.decontamination)
    stages.append(_stage("dedup_decontaminate", n_in, len(rows), drops))
    splits = {k: v for k, v in split_rows(rows, recipe.split).items() if v}
    if not rows:
        raise UserError(
            "every question was dropped (see the summary above) -- loosen the recipe's filters or check the generator"
        )
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
        "recipe_hash": content_hash,
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
        "versions": package_versions(),
        "git_sha": git_sha(),
        # extras for the card (not part of the downstream contract)
        "name": recipe.name,
        "command": "wildsci build " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if sys.argv[1:2] == ["build"]
        else f"wildsci build {recipe_path}",
        "source_licenses": _source_licenses(rows),
        "generator": recipe.generator.describe(),
        "voters": [v.describe() for v in recipe.voter_configs()],
        "num_votes": recipe.vote.num_votes,
        "hub_repo_id": recipe.hub_repo_id,
        "built_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "seconds": round(time.time() - t0, 1),
    }
    _atomic_json(out / "build_report.json", report)
    render_card(
        out,
        {**report, "decontamination": deco},
        yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False, allow_unicode=True, width=110),
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
