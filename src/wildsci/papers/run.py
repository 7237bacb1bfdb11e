"""``wildsci papers RECIPE``: dry run, the listing task, the fetch ranks, the card, the push.

The listing is one task (cursor pages are sequential by nature); fetching splits into ranks (:func:`fetch_rank`,
a function of ``(recipe, rank, world_size)`` and nothing else) that may run in this process or as the tasks of a
datatrove executor; :func:`finish` then writes the card from what every rank reported.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from wildsci.errors import UserError, first_line
from wildsci.papers.config import PapersRecipe, load_papers_recipe
from wildsci.papers.crawl import Plan, fetch_papers, list_papers, plan, rank_slice
from wildsci.papers.europepmc import EuropePMC, RequestFailed
from wildsci.papers.rows import shard_name, write_rank_rows
from wildsci.provenance import git_sha, markdown_table

MARKER = ".wildsci_papers"
REPORT = "report.json"  # in the (hidden) work dir: `wildsci build` reads a folder's .json files as papers


def crawl_estimate(papers: int, page_size: int, rate: float) -> str:
    """Requests and time for a crawl at a rate: one search page per ``page_size`` hits + one request per paper.

    Arithmetic, not a measurement: it ignores retries, and assumes each request finishes within its time slot.
    """
    pages = math.ceil(papers / page_size)
    requests = pages + papers
    seconds = requests / rate
    hours, rest = divmod(round(seconds), 3600)
    return (
        f"{papers:,} papers: {pages:,} search pages + {papers:,} full texts = {requests:,} requests; "
        f"at {rate:g} requests/s: {seconds:,.0f} s ({hours} h {rest // 60:02d} min)"
    )


def claim_output_dir(recipe: PapersRecipe) -> None:
    """An output folder is new, empty, or one an earlier ``wildsci papers`` made (it holds the marker)."""
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} is a file -- choose a folder (--output_dir)")
    if out.is_dir() and not (out / MARKER).is_file():
        theirs = sorted(p.name for p in out.iterdir())
        if theirs:
            raise UserError(
                f"output_dir {out} already holds files wildsci papers did not write ({', '.join(theirs[:3])}) "
                "-- choose an empty folder (--output_dir)"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by wildsci papers\n")


def search_url(recipe: PapersRecipe) -> str:
    params = {
        "query": recipe.search_query(),
        "resultType": "core",
        "format": "json",
        "pageSize": recipe.api.page_size,
        "cursorMark": "*",
    }
    return f"{recipe.api.base_url.rstrip('/')}/search?{urlencode(params)}"


def executor_tasks(recipe: PapersRecipe) -> tuple[int, int]:
    """``(ranks, ranks running at once)`` of the recipe's executor (one in this process without one)."""
    ex = recipe.executor
    if ex.kind == "inprocess":
        return 1, 1
    return ex.tasks, ex.concurrent


def dry_run(recipe: PapersRecipe) -> None:
    """Print the query, the first request, the hit count (one request; none is fetched) and the plan."""
    print(f"wildsci papers --dry-run: {recipe.name} -> {recipe.output_dir}")
    print(f"query:   {recipe.search_query()}")
    print(f"request: GET {search_url(recipe)}")
    once = dataclasses.replace(recipe.api, max_retries=0, timeout_s=min(recipe.api.timeout_s, 20))  # one try
    try:
        with EuropePMC(once) as client:
            hits: int | None = client.hit_count(recipe.search_query())
        print(f"hits:    {hits:,} (Europe PMC, now)")
    except (RequestFailed, UserError) as e:
        hits = None
        print(f"hits:    unknown -- Europe PMC was not reached ({first_line(e)})")
    ranks, parallel = executor_tasks(recipe)
    n = hits if hits is not None else None
    if n is not None and recipe.max_papers is not None:
        n = min(n, recipe.max_papers)
    print(
        f"plan:    1 listing task (search pages of {recipe.api.page_size}), then {ranks} fetch rank(s), "
        f"{parallel} at once, {recipe.api.concurrency} connection(s) each, {recipe.api.rate:g} requests/s in all"
    )
    print(f"licences: keep {', '.join(recipe.licenses)}; every other paper is counted and dropped")
    if n is not None:
        print(f"time:    {crawl_estimate(n, recipe.api.page_size, recipe.api.rate)} (arithmetic, no retries)")
    print(f"state:   {recipe.state_dir} (listing + fetched XML: rerun the same command to resume)")


def fetch_rank(recipe: PapersRecipe, rank: int, world_size: int, rate: float | None = None) -> dict[str, Any]:
    """Fetch rank ``rank`` of ``world_size`` (every ``world_size``-th paper of the finished listing) and write its
    parquet shard; returns its counts. Safe to rerun and to run at the same time as the other ranks.

    ``rate`` is this rank's share of the recipe's rate (the caller divides it by the ranks running at once).
    """
    p = plan(recipe)
    if not p.complete and (recipe.max_papers is None or len(p.fetch) < recipe.max_papers):
        raise UserError(
            f"{recipe.state_dir}: the listing is not finished -- run `wildsci papers RECIPE` (it lists first)"
        )
    mine = rank_slice(p.fetch, rank, world_size)
    counts = fetch_papers(recipe, mine, rate, label=f"fetch {rank + 1}/{world_size}" if world_size > 1 else "fetch")
    stats = write_rank_rows(recipe, mine, rank, world_size)
    stats["fetch"] = dict(counts)
    return stats


def finish(recipe: PapersRecipe, p: Plan, world_size: int, recipe_yaml: str) -> dict[str, Any]:
    """Gather every rank's counts, drop shards of another rank count, write the report and the card."""
    out = Path(recipe.output_dir)
    ranks = []
    for r in range(world_size):
        f = recipe.state_dir / "ranks" / f"{r:05d}-of-{world_size:05d}.json"
        if not f.is_file():
            raise UserError(f"fetch rank {r} of {world_size} has not finished -- rerun the same command")
        ranks.append(json.loads(f.read_text()))
    keep = {shard_name(r, world_size) for r in range(world_size)}
    for f in (out / "data").glob("train-*.parquet"):
        if f.name not in keep:  # a shard of an earlier run with another rank count (ours: the folder is claimed)
            f.unlink()
    drops = dict(p.drops)
    dropped_licenses = dict(p.dropped_licenses)
    licenses: dict[str, int] = {}
    years: dict[str, int] = {}
    for st in ranks:
        for key, into in (
            ("drops", drops),
            ("dropped_licenses", dropped_licenses),
            ("licenses", licenses),
            ("years", years),
        ):
            for k, v in st[key].items():
                into[k] = into.get(k, 0) + v
    report = {
        "name": recipe.name,
        "query": recipe.search_query(),
        "base_url": recipe.api.base_url,
        "hit_count": p.hit_count,
        "listed": len(p.hits),
        "listing_complete": p.complete,
        "papers": sum(st["rows"] for st in ranks),
        "beyond_max_papers": p.beyond_max_papers,
        "drops": drops,
        "dropped_licenses": dropped_licenses,
        "licenses": licenses,
        "years": years,
        "crawled_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_sha": git_sha(),
        "world_size": world_size,
    }
    (recipe.state_dir / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    write_card(recipe, report, recipe_yaml)
    return report


def write_card(recipe: PapersRecipe, report: dict[str, Any], recipe_yaml: str) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    from wildsci.builder.card import dataset_license, find_template  # datasets: 1 s to import, only needed here

    out = Path(recipe.output_dir)
    total = report["papers"]
    data = DatasetCardData(
        pretty_name=recipe.name,
        license=dataset_license(report["licenses"]) if report["licenses"] else "other",
        language=["en"],
        task_categories=["text-generation"],
        tags=["papers", "europe-pmc", "jats", "wildsci"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    not_included = dict(report["drops"])
    if report["beyond_max_papers"]:
        not_included["beyond_max_papers (not fetched)"] = report["beyond_max_papers"]
    card = DatasetCard.from_template(
        data,
        template_path=str(find_template("papers")),
        pretty_name=recipe.name,
        description=recipe.description.strip(),
        total=f"{total:,}",
        base_url=report["base_url"],
        query=report["query"],
        hit_count=f"{report['hit_count']:,}" if report["hit_count"] is not None else "unknown",
        crawled_at=report["crawled_at"],
        allowed=", ".join(recipe.licenses),
        git_sha=report["git_sha"],
        hub_repo_id=recipe.hub_repo_id or f"<your-org>/{recipe.name}",
        license_table=markdown_table(["license (SPDX)", "papers"], sorted(report["licenses"].items())),
        year_table=markdown_table(["year", "papers"], sorted(report["years"].items())),
        drops_table=markdown_table(["reason", "papers"], sorted(not_included.items(), key=lambda kv: -kv[1]))
        if not_included
        else "Every listed paper is included.",
        dropped_license_table=markdown_table(
            ["licence (as Europe PMC states it) of papers dropped for it", "papers"],
            sorted(report["dropped_licenses"].items()),
        )
        if report["dropped_licenses"]
        else "",
        recipe_yaml=recipe_yaml.strip(),
    )
    path = out / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(path)
    return path


def run_papers(
    path: str, overrides: dict[str, Any] | None = None, dry: bool = False, push: bool = False
) -> dict[str, Any] | None:
    """The whole command: load the recipe, list (one task), fetch (ranks), write rows + card, push."""
    recipe = load_papers_recipe(path, overrides)
    if dry:
        dry_run(recipe)
        return None
    if push:
        from wildsci.builder.push import check_push

        if not recipe.hub_repo_id:
            raise UserError("--push needs hub_repo_id in the recipe (or --hub_repo_id my-org/name)")
        check_push(recipe.hub_repo_id)
    claim_output_dir(recipe)
    with EuropePMC(recipe.api) as client:
        p = list_papers(recipe, client)
    ranks, parallel = executor_tasks(recipe)
    if recipe.executor.kind == "inprocess":
        fetch_rank(recipe, 0, 1)
    else:
        from wildsci.papers.launch import SubmittedToSlurm, run_ranks

        try:
            run_ranks(recipe, [h["pmcid"] for h in p.fetch], recipe.api.rate / parallel)
        except SubmittedToSlurm as e:
            print(f"wildsci papers: {e}")
            return None
    recipe_yaml = yaml.safe_dump(_plain(recipe), sort_keys=False)
    report = finish(recipe, p, ranks, recipe_yaml)
    print(summary(report, recipe))
    if push:
        from wildsci.builder.push import push_dataset

        url = push_dataset(recipe.output_dir, recipe.hub_repo_id, recipe.private, "wildsci papers: update")
        print(f"pushed: {url}")
    return report


def _plain(recipe: PapersRecipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def summary(report: dict[str, Any], recipe: PapersRecipe) -> str:
    lines = [
        f"wildsci papers: {report['papers']:,} papers in {recipe.output_dir} "
        f"({report['listed']:,} listed of {report['hit_count'] if report['hit_count'] is not None else '?'} hits)",
    ]
    for k, v in sorted(report["drops"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  dropped {k}: {v:,}")
    if report["beyond_max_papers"]:
        lines.append(f"  not fetched (max_papers): {report['beyond_max_papers']:,}")
    lines.append("  licences kept: " + ", ".join(f"{k} {v:,}" for k, v in sorted(report["licenses"].items())))
    if report["drops"].get("fetch_failed"):
        lines.append(f"  {report['drops']['fetch_failed']:,} papers could not be fetched: rerun the same command")
    return "\n".join(lines)
