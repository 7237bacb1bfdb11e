"""What a build keeps on disk between runs: stage checkpoints, the recipe's content hash and shard files.

Resumability. Every stage writes its output to ``<output_dir>/.wildsci_build/<stage>.jsonl`` (temporary file,
fsync, rename) and records it in ``manifest.json`` under the recipe's content hash; a changed recipe invalidates
the stage files, never the LLM call cache. A shard (``--shard i/n``) leaves ``shard_rows.jsonl`` and ``shard.json``,
which :func:`read_shards` checks complete and consistent before a merge (docs/scale_out.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wildsci.builder.config import NON_CONTENT_KEYS, BuildRecipe
from wildsci.builder.console import log
from wildsci.errors import UserError
from wildsci.recipes import recipe_hash

STATE_DIR = ".wildsci_build"

#: backend fields that say how to reach a model, not what it answers (moving to another server keeps the hash)
TRANSPORT_KEYS = ("base_url", "api_key_env", "concurrency", "timeout_s", "max_retries")


def claim_output_dir(out: Path, overwrite: bool) -> None:
    """Make ``out`` a build folder: new, empty, one an earlier build made (it holds ``.wildsci_build``), or
    ``overwrite``. A user's own files (a README.md, a data/ folder) are never replaced without being asked."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} is a file -- choose a folder with --output-dir")
    if out.is_dir() and not overwrite and not (out / STATE_DIR).is_dir():
        theirs = sorted(p.name for p in out.iterdir())
        if theirs:
            shown = ", ".join(theirs[:3]) + (", ..." if len(theirs) > 3 else "")
            raise UserError(
                f"output_dir {out} already holds files wildsci build did not write ({shown}) -- choose an empty "
                "folder with --output-dir, or pass --overwrite to replace its README.md and data/"
            )
    try:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)  # the marker: this folder is a build's
    except OSError as e:
        raise UserError(f"output_dir {out}: cannot create it ({e.strerror}) -- choose another --output-dir") from None


def content_dict(recipe: BuildRecipe) -> dict[str, Any]:
    """The recipe values that determine the dataset's content (its hash names the rows' ``recipe_hash``)."""
    data = dataclasses.asdict(recipe)
    out = {k: v for k, v in data.items() if k not in NON_CONTENT_KEYS}
    for role in ("generator", "labeler"):
        if isinstance(out.get(role), dict):
            out[role] = {k: v for k, v in out[role].items() if k not in TRANSPORT_KEYS}
    out["voters"] = [{k: v for k, v in b.items() if k not in TRANSPORT_KEYS} for b in out.get("voters", [])]
    return out


def content_hash(recipe: BuildRecipe) -> str:
    return recipe_hash(content_dict(recipe))


def base_hash(recipe: BuildRecipe) -> str:
    """The content hash without the shard: every shard of one build shares it."""
    data = content_dict(recipe)
    data.pop("shard", None)
    return recipe_hash(data)


def stage_entry(name: str, n_in: int, n_out: int, drops: dict[str, int], **extra: Any) -> dict[str, Any]:
    """One row of the build report's ``stages``."""
    return {"name": name, "in": n_in, "out": n_out, "drops": dict(sorted(drops.items())), **extra}


def write_atomic(path: Path, text_lines: Iterable[str]) -> None:
    """Write a file so that a kill leaves the old one or the new one, never half of either."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in text_lines:
            fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def jsonl_lines(rows: list[dict[str, Any]]) -> Iterable[str]:
    return (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


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
        write_atomic(self.root / f"{name}.jsonl", jsonl_lines(rows))
        self.manifest["stages"][name] = {**meta, "rows": len(rows)}
        write_atomic(self.manifest_path, [json.dumps(self.manifest, indent=1, sort_keys=True)])


def write_shard(out: Path, recipe: BuildRecipe, rows: list[dict], stages: list[dict], llm_calls: dict) -> None:
    """A finished shard: its labelled rows and the counts a merge adds up."""
    i, n = recipe.shard_tuple()
    write_atomic(out / "shard_rows.jsonl", jsonl_lines(rows))
    meta = {"shard": [i, n], "base_hash": base_hash(recipe), "stages": stages, "llm_calls": llm_calls}
    write_atomic(out / "shard.json", [json.dumps(meta, indent=1, ensure_ascii=False) + "\n"])


def write_generated(out: Path, recipe: BuildRecipe, rows: int) -> None:
    """A shard whose generation is done (``stop_after: generate``): its rows are the ``generate`` checkpoint."""
    i, n = recipe.shard_tuple()
    meta = {"shard": [i, n], "base_hash": base_hash(recipe), "rows": rows}
    write_atomic(out / "generated.json", [json.dumps(meta, indent=1) + "\n"])


def _shard_metas(
    recipe: BuildRecipe, key: str, meta_file: str, unfinished: str, verbs: tuple[str, str, str]
) -> list[tuple[Path, dict]]:
    """Each folder of ``recipe.<key>`` with its ``meta_file``, in shard order, checked: present (else ``unfinished``
    says how to finish it), made from this recipe, each shard once, none missing. ``verbs``: ``built, rebuild,
    build`` or the like, for the messages."""
    done, redo, do = verbs
    base = base_hash(recipe)
    seen: dict[int, tuple[Path, dict]] = {}
    expected_n = None
    for d in getattr(recipe, key):
        meta_path = Path(d) / meta_file
        if not meta_path.is_file():
            raise UserError(f"{key}: {d} {unfinished}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["base_hash"] != base:
            raise UserError(f"{key}: {d} was {done} from a different recipe -- {redo} it with this recipe")
        i, n = meta["shard"]
        if expected_n not in (None, n) or i in seen:
            shown = {k: str(v[0]) for k, v in seen.items()}
            raise UserError(f"{key}: {d} is shard {i}/{n}, inconsistent with {shown} -- list each shard once")
        expected_n, seen[i] = n, (Path(d), meta)
    missing = sorted(set(range(expected_n or 0)) - set(seen))
    if missing:
        raise UserError(f"{key}: shards {missing} of {expected_n} are missing -- {do} them and list them all")
    return [seen[i] for i in sorted(seen)]


def read_pool(recipe: BuildRecipe) -> list[dict]:
    """The generated rows of every shard in ``pool_from`` (checked complete and from this recipe), in shard order."""
    unfinished = "has not finished generating (no generated.json) -- run that shard with stop_after: generate"
    rows: list[dict] = []
    for d, meta in _shard_metas(
        recipe, "pool_from", "generated.json", unfinished, ("generated", "regenerate", "generate")
    ):
        path = d / STATE_DIR / "generate.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        if len(lines) != meta["rows"]:
            raise UserError(f"pool_from: {path} does not hold the {meta['rows']} generated rows -- regenerate {d}")
        rows += [json.loads(line) for line in lines]
    return rows


def read_shards(recipe: BuildRecipe) -> tuple[list[dict], list[dict]]:
    """Labelled rows and stage counts of every shard folder in ``merge_from`` (checked complete and consistent)."""
    unfinished = "is not a finished shard (no shard.json) -- run or resume that shard"
    rows: list[dict] = []
    totals: dict[str, dict[str, Any]] = {}
    for d, meta in _shard_metas(recipe, "merge_from", "shard.json", unfinished, ("built", "rebuild", "build")):
        rows += [json.loads(line) for line in (d / "shard_rows.jsonl").read_text(encoding="utf-8").splitlines()]
        for st in meta["stages"]:
            t = totals.setdefault(st["name"], {"name": st["name"], "in": 0, "out": 0, "drops": Counter()})
            t["in"] += st["in"]
            t["out"] += st["out"]
            t["drops"].update(st["drops"])
    stages = [stage_entry(t["name"], t["in"], t["out"], dict(t["drops"])) for t in totals.values()]
    return rows, stages
