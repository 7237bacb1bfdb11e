"""The crawl: one listing task (search pages, cursorMark), then fetch ranks that each take every n-th paper.

State lives in ``<work_dir>`` (default ``<output_dir>/.crawl``) and is what makes the crawl resumable:

- ``listing.pages``: one JSON line per search page, appended as each page arrives (a killed listing resumes from
  the last page's ``nextCursorMark``); the listing is complete when the last page has no next cursor.
- ``docs/<PMCID>.xml.gz``: each fetched JATS document, written atomically (temporary file + rename), so a
  SIGKILL leaves either the whole document or nothing; ``docs/<PMCID>.missing`` records a 404 (no full text).
  A rerun fetches only papers with neither file: nothing is fetched twice.

The suffixes are chosen so that ``wildsci build`` pointed at the output folder never reads the state as papers
(it reads ``.jsonl``/``.parquet``/``.xml``). Ranks share nothing but the listing file and ``docs/``, so they can
run as the tasks of a Slurm array (:func:`fetch_rank`).
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from wildsci.errors import UserError
from wildsci.papers.config import PapersRecipe
from wildsci.papers.europepmc import EuropePMC, RequestFailed
from wildsci.papers.licenses import allowed, license_family

LISTING = "listing.pages"
RECIPE_MARK = "recipe.json"


# --------------------------------------------------------------------------------------------- listing
def compact_hit(r: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``resultType=core`` hit that the rows need (the rest of the page is not kept)."""
    ids = (r.get("fullTextIdList") or {}).get("fullTextId") or []
    pmcid = r.get("pmcid") or next((str(i) for i in ids if str(i).upper().startswith("PMC")), "")
    journal = ((r.get("journalInfo") or {}).get("journal") or {}).get("title") or r.get("journalTitle") or ""
    return {
        "pmcid": str(pmcid).upper(),
        "doi": r.get("doi") or "",
        "pmid": r.get("pmid") or "",
        "title": r.get("title") or "",
        "journal": journal,
        "date": r.get("firstPublicationDate") or "",
        "year": r.get("pubYear") or "",
        "license": r.get("license") or "",
        "keywords": list((r.get("keywordList") or {}).get("keyword") or []),
        "open_access": r.get("isOpenAccess") == "Y",
        "in_epmc": r.get("inEPMC") == "Y",
    }


def read_listing(state: Path) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """``(hits so far, next cursor or None when complete, hitCount)``; ``([], "*", None)`` before the first page."""
    path = state / LISTING
    if not path.is_file():
        return [], "*", None
    hits: list[dict[str, Any]] = []
    nxt: str | None = "*"
    total = None
    with path.open("rb") as fh:
        for raw in fh:
            try:
                page = json.loads(raw)
            except json.JSONDecodeError:  # a page cut by a kill: it is fetched again
                break
            hits += page["hits"]
            nxt = page["next"]
            total = page.get("hitCount", total)
    return hits, nxt, total


def classify(hit: dict[str, Any], recipe: PapersRecipe) -> str | None:
    """Why a listed paper is not fetched (``None``: fetch it). Europe PMC's flags are ``"Y"``/``"N"`` strings."""
    if not hit["pmcid"] or not hit["open_access"] or not hit["in_epmc"]:
        return "no_full_text"
    if not allowed(license_family(hit["license"]), recipe.licenses):
        return "license_not_allowed"
    return None


@dataclass
class Plan:
    """The listing, sorted into what is fetched and what is dropped (with the reason and the licences)."""

    hits: list[dict[str, Any]]
    complete: bool
    hit_count: int | None
    fetch: list[dict[str, Any]] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    dropped_licenses: Counter = field(default_factory=Counter)
    beyond_max_papers: int = 0


def plan(recipe: PapersRecipe) -> Plan:
    """What the saved listing says to fetch (the first ``max_papers`` fetchable papers, in listing order)."""
    hits, nxt, total = read_listing(recipe.state_dir)
    p = Plan(hits, complete=nxt is None, hit_count=total)
    seen: set[str] = set()
    for h in hits:
        reason = classify(h, recipe)
        if reason is None and h["pmcid"] in seen:
            reason = "duplicate"
        if reason is not None:
            p.drops[reason] += 1
            if reason == "license_not_allowed":
                p.dropped_licenses[h["license"] or "(none)"] += 1
            continue
        seen.add(h["pmcid"])
        if recipe.max_papers is not None and len(p.fetch) >= recipe.max_papers:
            p.beyond_max_papers += 1
            continue
        p.fetch.append(h)
    return p


def list_papers(recipe: PapersRecipe, client: EuropePMC) -> Plan:
    """The listing task: follow ``cursorMark`` until the end (or until ``max_papers`` fetchable papers are listed).

    Each page is appended to ``listing.pages`` as it arrives, so a killed listing resumes where it stopped and a
    finished one sends no request at all.
    """
    state = recipe.state_dir
    state.mkdir(parents=True, exist_ok=True)
    _check_same_query(recipe)
    current = plan(recipe)
    hits, cursor, _ = read_listing(state)
    if cursor is None or (recipe.max_papers is not None and len(current.fetch) >= recipe.max_papers):
        return current
    _rewrite_whole_pages(state)
    with (
        (state / LISTING).open("ab") as fh,
        tqdm(desc="list", unit="hit", initial=len(hits), dynamic_ncols=True) as bar,
    ):
        for sent, page, nxt in client.search_pages(recipe.search_query(), cursor):
            results = (page.get("resultList") or {}).get("result") or []
            bar.total = int(page.get("hitCount") or 0) or None
            record = {
                "cursor": sent,
                "next": nxt,
                "hitCount": page.get("hitCount"),
                "hits": [compact_hit(r) for r in results],
            }
            fh.write((json.dumps(record) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(results))
            if recipe.max_papers is not None and len(plan(recipe).fetch) >= recipe.max_papers:
                break
    return plan(recipe)


def _rewrite_whole_pages(state: Path) -> None:
    """Drop a half-written last line (a kill during a write) before appending after it."""
    path = state / LISTING
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data[: data.rfind(b"\n") + 1])
        os.replace(tmp, path)


def _check_same_query(recipe: PapersRecipe) -> None:
    """A work dir belongs to one query: refuse to mix two crawls' listings."""
    mark = recipe.state_dir / RECIPE_MARK
    query = recipe.search_query()
    if mark.is_file():
        saved = json.loads(mark.read_text()).get("query")
        if saved != query:
            raise UserError(
                f"{recipe.state_dir} holds the crawl of another query ({saved!r}) -- use another output_dir "
                "(or work_dir), or delete that folder to start over"
            )
        return
    mark.write_text(json.dumps({"query": query, "name": recipe.name}) + "\n")


# --------------------------------------------------------------------------------------------- fetching
def doc_path(state: Path, pmcid: str) -> Path:
    return state / "docs" / f"{pmcid}.xml.gz"


def missing_path(state: Path, pmcid: str) -> Path:
    return state / "docs" / f"{pmcid}.missing"


def is_done(state: Path, pmcid: str) -> bool:
    return doc_path(state, pmcid).is_file() or missing_path(state, pmcid).is_file()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fetch_one(client: EuropePMC, state: Path, pmcid: str) -> str:
    """Fetch one paper's JATS and keep it; returns ``fetched``, ``xml_missing`` or ``fetch_failed``."""
    try:
        r = client.full_text_xml(pmcid)
    except RequestFailed as e:
        client.say(str(e))
        return "fetch_failed"
    if r.status == 200:
        _write_atomic(doc_path(state, pmcid), gzip.compress(r.body, compresslevel=6, mtime=0))
        return "fetched"
    _write_atomic(missing_path(state, pmcid), f"HTTP {r.status}\n".encode())
    return "xml_missing"


def rank_slice(papers: list[dict[str, Any]], rank: int, world_size: int) -> list[dict[str, Any]]:
    """Rank ``r`` of ``n`` takes papers ``r, r+n, r+2n...`` of the listing: ranks never overlap, all cover it."""
    if not (world_size >= 1 and 0 <= rank < world_size):
        raise UserError(f"rank {rank} of {world_size}: need 0 <= rank < world_size")
    return papers[rank::world_size]


def fetch_papers(recipe: PapersRecipe, papers: list[dict[str, Any]], rate: float | None, label: str) -> Counter:
    """Fetch the papers not on disk yet with ``api.concurrency`` threads under one rate; counts by outcome.

    Worker threads are daemons and the main thread only waits on a queue, so Ctrl-C stops the fetch at once
    (documents already written stay; the one in flight is fetched again next time).
    """
    state = recipe.state_dir
    (state / "docs").mkdir(parents=True, exist_ok=True)
    todo = [p["pmcid"] for p in papers if not is_done(state, p["pmcid"])]
    counts: Counter = Counter(cached=len(papers) - len(todo))
    if not todo:
        return counts
    jobs: queue.Queue = queue.Queue()
    for pmcid in todo:
        jobs.put(pmcid)
    results: queue.Queue = queue.Queue()
    with EuropePMC(recipe.api, rate=rate) as client:

        def work() -> None:
            while True:
                try:
                    pmcid = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put(fetch_one(client, state, pmcid))
                except Exception as e:  # noqa: BLE001 - a disk error must reach the main thread, not vanish
                    results.put(e)

        for _ in range(min(recipe.api.concurrency, len(todo))):
            threading.Thread(target=work, daemon=True).start()
        with tqdm(total=len(papers), initial=counts["cached"], desc=label, unit="paper", dynamic_ncols=True) as bar:
            for _ in todo:
                got = results.get()
                if isinstance(got, Exception):
                    raise UserError(f"{state}: cannot write a fetched paper ({got}) -- check the disk") from None
                counts[got] += 1
                bar.set_postfix({k: v for k, v in counts.items() if v}, refresh=False)
                bar.update(1)
    return counts
