"""Fetched JATS -> the papers dataset's rows, parquet shards in the Hub layout, and the dataset card.

A row is what :mod:`wildsci.builder.ingest` already reads without any column mapping: ``paper_id``, ``title``,
``abstract``, ``body_sections`` ([{section, text}]), ``subjects`` (its field labels) and ``license`` (the SPDX id
that every built question carries as ``source_license``), plus the identifiers, journal, date, keywords and the
licence as the source stated it (``license_raw``: Europe PMC's term; ``license_jats``: the article's own).
The JATS is parsed by the builder's own :func:`wildsci.builder.jats.parse_jats`, so the papers dataset and a
build from the raw XML see the same main text.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wildsci.builder.jats import parse_jats
from wildsci.papers.config import PapersRecipe
from wildsci.papers.crawl import doc_path, missing_path
from wildsci.papers.licenses import allowed, normalize_license

SCHEMA = pa.schema(
    [
        ("paper_id", pa.string()),
        ("pmcid", pa.string()),
        ("doi", pa.string()),
        ("pmid", pa.string()),
        ("title", pa.string()),
        ("abstract", pa.string()),
        ("body_sections", pa.list_(pa.struct([("section", pa.string()), ("text", pa.string())]))),
        ("journal", pa.string()),
        ("publication_date", pa.string()),
        ("year", pa.int32()),
        ("subjects", pa.list_(pa.string())),
        ("keywords", pa.list_(pa.string())),
        ("license", pa.string()),
        ("license_raw", pa.string()),
        ("license_jats", pa.string()),
        ("source", pa.string()),
    ]
)

_LICENSE_HREF = re.compile(r"<license\b[^>]*?href=\"([^\"]+)\"", re.S)
_LICENSE_REF = re.compile(r"<(?:ali:)?license_ref\b[^>]*>([^<]+)<", re.S)


def _jats_license_statement(xml_text: str, parsed: str) -> str:
    """The licence as the article states it: the licence URL when there is one, else the parser's reading."""
    m = _LICENSE_HREF.search(xml_text) or _LICENSE_REF.search(xml_text)
    return m.group(1).strip() if m else parsed


def _year(hit: dict[str, Any]) -> int | None:
    for value in (hit.get("date", "")[:4], hit.get("year", "")):
        if str(value).isdigit():
            return int(value)
    return None


def build_row(hit: dict[str, Any], xml_bytes: bytes, recipe: PapersRecipe) -> tuple[dict[str, Any] | None, str | None]:
    """One listed paper + its JATS -> ``(row, None)`` or ``(None, drop reason)``."""
    try:
        xml_text = xml_bytes.decode("utf-8")
        paper = parse_jats(xml_text)
    except (UnicodeDecodeError, ET.ParseError):
        return None, "bad_xml"
    abstract = "\n\n".join(t for h, t in paper["sections"] if h == "Abstract" and t.strip())
    body = [{"section": h, "text": t} for h, t in paper["sections"] if h != "Abstract" and t.strip()]
    if not body:
        return None, "no_body_text"
    statement = _jats_license_statement(xml_text, paper["license"])
    lic = normalize_license(hit["license"], statement)
    if not allowed(lic, recipe.licenses):
        return None, "license_not_allowed"
    subjects = [s for s in dict.fromkeys(paper["field_labels"]) if s and not s.startswith("/")]
    row = {
        "paper_id": hit["pmcid"],
        "pmcid": hit["pmcid"],
        "doi": hit.get("doi") or "",
        "pmid": str(hit.get("pmid") or ""),
        "title": paper["title"] or hit.get("title", ""),
        "abstract": abstract,
        "body_sections": body,
        "journal": hit.get("journal", ""),
        "publication_date": hit.get("date", ""),
        "year": _year(hit),
        "subjects": subjects,
        "keywords": [str(k) for k in hit.get("keywords") or []],
        "license": lic,
        "license_raw": hit.get("license", ""),
        "license_jats": statement,
        "source": "Europe PMC",
    }
    return row, None


def shard_name(rank: int, world_size: int) -> str:
    return f"train-{rank:05d}-of-{world_size:05d}.parquet"


def write_rank_rows(recipe: PapersRecipe, papers: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
    """Parse this rank's fetched papers into ``data/train-<rank>-of-<n>.parquet`` (batched: memory stays small);
    returns the rank's counts (rows, drops by reason, licences, years), also saved for :func:`finish`."""
    state = recipe.state_dir
    out = Path(recipe.output_dir) / "data"
    out.mkdir(parents=True, exist_ok=True)
    final = out / shard_name(rank, world_size)
    tmp = out / f".{final.name}.tmp"
    drops: Counter = Counter()
    dropped_licenses: Counter = Counter()
    licenses: Counter = Counter()
    years: Counter = Counter()
    rows = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for hit in papers:
            pmcid = hit["pmcid"]
            if missing_path(state, pmcid).is_file():
                drops["xml_missing"] += 1
                continue
            path = doc_path(state, pmcid)
            if not path.is_file():
                drops["fetch_failed"] += 1
                continue
            try:
                data = gzip.decompress(path.read_bytes())
            except (OSError, EOFError):
                data = b""
            row, reason = build_row(hit, data, recipe)
            if row is None:
                drops[reason] += 1
                if reason == "license_not_allowed":
                    dropped_licenses[hit["license"] or "(none)"] += 1
                continue
            rows += 1
            licenses[row["license"]] += 1
            years[str(row["year"])] += 1
            batch.append(row)
            if len(batch) >= 256:
                writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
                batch = []
        writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
    os.replace(tmp, final)
    stats = {
        "rank": rank,
        "world_size": world_size,
        "papers": len(papers),
        "rows": rows,
        "drops": dict(drops),
        "dropped_licenses": dict(dropped_licenses),
        "licenses": dict(licenses),
        "years": dict(years),
    }
    ranks = state / "ranks"
    ranks.mkdir(parents=True, exist_ok=True)
    (ranks / f"{rank:05d}-of-{world_size:05d}.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats
