"""Stage 1, ingest: read papers (JSONL / parquet / JATS XML / a folder / a Hub dataset) into clean paper dicts.

Every source row becomes a *paper* ``{paper_id, title, sections: [(heading, text)], license, field_labels}``;
:mod:`wildsci.builder.chunk` then cuts papers into passages. Only main text is kept: reference lists,
acknowledgements, funding, figure and table captions, citation markers and LaTeX placeholders are removed,
because a question generator that sees a reference list writes questions about author names.

Bad papers never crash the run and are never lost silently: each is counted under a named drop reason
(``not_utf8``, ``bad_json``, ``bad_xml``, ``missing_id``, ``missing_text``, ``missing_license``, ``garbled_text``,
``too_short``, ``duplicate_paper``, ``filtered``), shown in the build summary and the dataset card.

Length (~430 lines): one reader per input format plus paper normalisation; they share the drop counting.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import pyarrow.parquet as pq

from wildsci.builder.jats import parse_jats
from wildsci.errors import UserError, first_line

if TYPE_CHECKING:
    from wildsci.builder.chunk import ChunkConfig


# ------------------------------------------------------------------------------------------ config
@dataclass
class SourceConfig:
    """One corpus of papers. Columns are detected automatically; name them when your corpus differs."""

    path: str = field(
        metadata={
            "help": "A JSONL/parquet/XML file, a glob, a folder of such files, or a Hub dataset id "
            "(e.g. 'my-org/nature-communications-papers'). 'builtin:demo' is the demo corpus shipped in the package."
        }
    )
    format: str = field(
        default="auto",
        metadata={"help": "auto | jsonl | parquet | jats | hub. 'auto' decides from the file suffix / Hub id."},
    )
    hub_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name (format: hub)."})
    hub_split: str = field(default="train", metadata={"help": "Hub dataset split to read (format: hub)."})
    revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (commit / tag) to pin."})
    where: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Keep only rows whose column equals the value (or is in the list), e.g. {split: dev}. "
            "Other rows are counted as 'filtered'."
        },
    )
    max_papers: int | None = field(default=None, metadata={"help": "Read at most this many papers (after 'where')."})
    id_column: str | None = field(default=None, metadata={"help": "Paper id column (default: paper_id, id, doi...)."})
    text_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Text columns in reading order (default: abstract, then body_sections / text / body / "
            "full_text). A column may hold plain text, [{section, text}] lists or JATS XML."
        },
    )
    label_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Field-label columns (default: field_labels, field, subfields, categories, disciplines...)."
        },
    )
    license: str | None = field(
        default=None,
        metadata={"help": "Licence for every paper of this source when rows carry none (else: drop missing_license)."},
    )
    expected_papers: int | None = field(
        default=None,
        metadata={"help": "Paper count used by --dry-run when the source cannot be read (e.g. a Hub id offline)."},
    )


# -------------------------------------------------------------------------------------- text utils
ID_KEYS = ("paper_id", "id", "doi", "arxiv_id", "pmcid", "pmid")
LICENSE_KEYS = ("license", "licence", "paper_license", "license_name")
LABEL_KEYS = (
    "field_labels",
    "field",
    "subfields",
    "discipline",
    "disciplines",
    "categories",
    "primary_category",
    "discipline_top",
    "discipline_terms",
    "heading",
    "subjects",
)
TEXT_KEYS = ("abstract", "body_sections", "text", "body", "full_text", "jats", "xml")

_PLACEHOLDER = re.compile(r"\{\{(formula|cite|figure|table|ref):[^}]*\}\}")
_CITE_BRACKET = re.compile(r"\s?\[\d+(?:\s*[,–-]\s*\d+)*\]")
_FIG_PAREN = re.compile(r"\s?\((?:see |cf\. )?(?:Fig\.|Figs\.|Figure|Figures|Table|Tables|Supplementary)\b[^()]*\)")
_DOI_PREFIX = re.compile(r"^10\.\d{4,9}/\S+?\.\d{3}(?=[A-Z])")
_DOI_SUFFIX = re.compile(r"\s*DOI:\s*https?://\S+\s*$")
_REF = re.compile(r"\s?\(?\bREF\b\s?\)?")  # unarXive's resolved-reference placeholder
_SPACES = re.compile(r"[ \t\u00a0]+")


def clean_text(text: str) -> str:
    """Remove what is not prose: citation markers, figure/table pointers, LaTeX placeholders, DOI stamps."""
    text = _PLACEHOLDER.sub(lambda m: "[math]" if m.group(1) == "formula" else "", text)
    text = _CITE_BRACKET.sub("", text)
    text = _REF.sub("", text)
    text = _FIG_PAREN.sub("", text)
    text = _DOI_PREFIX.sub("", text.strip())
    text = _DOI_SUFFIX.sub("", text)
    paras = [_SPACES.sub(" ", p).strip() for p in re.split(r"\n\s*\n|\n", text)]
    return "\n\n".join(p for p in paras if p)


def letter_ratio(text: str) -> float:
    """Fraction of letters and spaces: binary junk, mojibake and formula soup score low."""
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isalpha() or ch.isspace())
    return good / len(text)


def _as_labels(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def in_shard(paper_id: str, shard: tuple[int, int] | None) -> bool:
    """Papers are spread over shards by a hash of their id, so shards do not depend on input order."""
    if shard is None:
        return True
    index, count = shard
    return _stable_hash(f"shard\x00{paper_id}") % count == index


# ----------------------------------------------------------------------------------------- reading
class IngestStats:
    """Counts of papers read and dropped (by reason), shared by every source of a build."""

    def __init__(self, shard: tuple[int, int] | None = None) -> None:
        self.read = 0
        self.drops: Counter[str] = Counter()
        self.shard = shard

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n

    def unreadable(self, key: str, reason: str) -> None:
        """A row that could not even be decoded: counted by the one shard that owns its position."""
        if in_shard(key, self.shard):
            self.read += 1
            self.drop(reason)


def _iter_jsonl(path: Path, stats: IngestStats) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                stats.unreadable(f"{path}#{lineno}", "not_utf8")
                continue
            except json.JSONDecodeError:
                stats.unreadable(f"{path}#{lineno}", "bad_json")
                continue
            if not isinstance(row, dict):
                stats.unreadable(f"{path}#{lineno}", "bad_json")
                continue
            yield row


def _iter_parquet(path: Path, stats: IngestStats) -> Iterator[dict[str, Any]]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise UserError(f"{path}: not a readable parquet file ({first_line(e)[:120]}) -- check the file") from None
    batches = pf.iter_batches(batch_size=256)
    while True:
        try:  # a corrupt page shows only when its batch is read or decoded ("Couldn't deserialize thrift", bad UTF-8)
            rows = next(batches).to_pylist()
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - pyarrow raises OSError or ArrowInvalid, with pages of detail
            raise UserError(
                f"{path}: the parquet file is damaged ({first_line(e)[:120]}) -- re-export or re-download it"
            ) from None
        yield from rows


def _iter_jats(path: Path, stats: IngestStats) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        stats.unreadable(str(path), "not_utf8")
        return
    try:
        paper = parse_jats(text)
    except ET.ParseError:
        stats.unreadable(str(path), "bad_xml")
        return
    paper["paper_id"] = paper["paper_id"] or path.stem
    yield {"__paper__": paper}


def _iter_hub(src: SourceConfig, stats: IngestStats) -> Iterator[dict[str, Any]]:
    try:
        ds = datasets.load_dataset(
            src.path, name=src.hub_config, split=src.hub_split, revision=src.revision, streaming=True
        )
    except Exception as e:
        msg = first_line(e)
        raise UserError(
            f"source {src.path!r}: cannot load it as a Hub dataset ({msg}) -- check the id, your network or "
            "HF_HUB_OFFLINE, or point 'path' at local files"
        ) from None
    for row in ds:
        yield dict(row)


SUFFIX_FORMAT = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".xml": "jats", ".nxml": "jats"}


def _is_hub_id(path: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path)) and "." not in path[:1]


def source_files(src: SourceConfig) -> list[tuple[Path, str]] | None:
    """Local files of a source with their formats; ``None`` when the path is a Hub id."""
    if src.path == "builtin:demo":
        return [(Path(str(resources.files("wildsci").joinpath("data/demo_corpus.jsonl"))), "jsonl")]
    p = Path(src.path).expanduser()
    if p.is_dir():
        # hidden entries are a tool's state, not papers (wildsci papers' .crawl/, a build's .wildsci_build/, .git/)
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.suffix.lower() in SUFFIX_FORMAT
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
    elif p.is_file():
        files = [p]
    elif any(ch in src.path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(src.path, recursive=True) if Path(f).is_file())
    else:
        if src.format in ("auto", "hub") and _is_hub_id(src.path):
            return None
        if src.expected_papers is not None:  # not made yet (e.g. `wildsci papers` output): planned like a Hub id
            return None
        raise UserError(f"source {src.path!r}: no such file or folder -- check the path in the recipe's sources")
    if src.format == "hub":
        return None
    out = []
    for f in files:
        fmt = src.format if src.format != "auto" else SUFFIX_FORMAT.get(f.suffix.lower())
        if fmt is None:
            raise UserError(f"{f}: unknown file type -- use .jsonl, .parquet or .xml, or set the source's format")
        out.append((f, fmt))
    if not out:
        raise UserError(f"source {src.path!r}: no .jsonl/.parquet/.xml files found -- check the path")
    return out


def is_remote(src: SourceConfig) -> bool:
    return source_files(src) is None


def _iter_rows(src: SourceConfig, stats: IngestStats) -> Iterator[dict[str, Any]]:
    files = source_files(src)
    if files is None and src.format != "hub" and not _is_hub_id(src.path):
        raise UserError(
            f"source {src.path!r} does not exist yet -- make it first (a papers dataset: `wildsci papers "
            "recipes/papers/<name>.yaml`), or fix the path in the recipe's sources"
        )
    if files is None:
        yield from _iter_hub(src, stats)
        return
    readers = {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "jats": _iter_jats}
    for f, fmt in files:
        if fmt not in readers:
            raise UserError(f"source {src.path!r}: unknown format {fmt!r} -- use auto, jsonl, parquet, jats or hub")
        yield from readers[fmt](f, stats)


def _matches(row: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, want in where.items():
        have = row.get(key)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def _sections_from_value(value: Any) -> list[tuple[str, str]] | None:
    """A text column may hold a string, JATS XML, or a list of {section|heading|title, text} dicts."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("<") and ("<article" in s[:500] or "<body" in s[:2000]):
            return parse_jats(s)["sections"]
        return [("", value)] if s else []
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict):
                heading = item.get("section") or item.get("heading") or item.get("title") or ""
                out.append((str(heading), str(item.get("text") or "")))
            elif isinstance(item, str):
                out.append(("", item))
        return out
    return None


def normalize_paper(row: dict[str, Any], src: SourceConfig) -> tuple[dict[str, Any] | None, str | None]:
    """A source row -> a paper dict, or ``(None, drop_reason)``."""
    if "__paper__" in row:
        paper = row["__paper__"]
    else:
        id_keys = (src.id_column,) if src.id_column else ID_KEYS
        pid = next((str(row[k]).strip() for k in id_keys if row.get(k) not in (None, "")), "")
        sections: list[tuple[str, str]] = []
        text_keys = src.text_columns or TEXT_KEYS
        for k in text_keys:
            got = _sections_from_value(row.get(k))
            if got:
                sections += [("Abstract", t) if k == "abstract" and not h else (h, t) for h, t in got]
        label_keys = src.label_columns or LABEL_KEYS
        labels: list[str] = []
        for k in label_keys:
            labels += [lab for lab in _as_labels(row.get(k)) if lab not in labels]
        license_ = next((str(row[k]).strip() for k in LICENSE_KEYS if row.get(k) not in (None, "")), "")
        title = row.get("title")
        paper = {
            "paper_id": pid,
            "title": " ".join(str(title).split()) if title else "",
            "license": license_,
            "field_labels": labels,
            "sections": sections,
        }
    if not paper["paper_id"]:
        return None, "missing_id"
    if not paper["license"]:
        if not src.license:
            return None, "missing_license"
        paper["license"] = src.license
    if not any(t.strip() for _, t in paper["sections"]):
        return None, "missing_text"
    return paper, None


def main_text_sections(paper: dict[str, Any], cfg: ChunkConfig) -> list[tuple[str, str]]:
    drop = [d.lower() for d in cfg.drop_sections]
    out = []
    for heading, text in paper["sections"]:
        if any(d in heading.lower() for d in drop):
            continue
        cleaned = clean_text(text)
        if cleaned:
            out.append((heading, cleaned))
    return out


def _row_key(row: dict[str, Any], src: SourceConfig) -> str | None:
    if "__paper__" in row:
        return row["__paper__"].get("paper_id") or None
    keys = (src.id_column,) if src.id_column else ID_KEYS
    return next((str(row[k]).strip() for k in keys if row.get(k) not in (None, "")), None)


def iter_papers(
    sources: Iterable[SourceConfig],
    cfg: ChunkConfig,
    stats: IngestStats,
    shard: tuple[int, int] | None = None,
    max_papers: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Valid, de-duplicated papers of all sources (in source order), counting every drop.

    With ``shard``, every shard still reads and validates every row (cheap next to the LLM stages), so
    ``max_papers`` and duplicate detection are global, but a row is *counted* (read or dropped) and *yielded*
    only by the shard that owns it (its paper id, or its position when it has none): shards add up exactly to
    a single build.
    """
    seen: set[str] = set()
    total = 0
    for src in sources:
        kept = 0
        for n, row in enumerate(_iter_rows(src, stats)):
            if (src.max_papers is not None and kept >= src.max_papers) or (
                max_papers is not None and total >= max_papers
            ):
                break
            mine = in_shard(_row_key(row, src) or f"{src.path}#{n}", shard)
            stats.read += mine
            reason = None
            paper = None
            if src.where and not _matches(row, src.where):
                reason = "filtered"
            else:
                paper, reason = normalize_paper(row, src)
            if paper is not None:
                text = " ".join(t for _, t in main_text_sections(paper, cfg))
                if paper["paper_id"] in seen:
                    reason = "duplicate_paper"
                elif text.count("\ufffd") > 0.001 * len(text) or letter_ratio(text) < cfg.min_letter_ratio:
                    reason = "garbled_text"
                elif len(text.split()) < cfg.min_words:
                    reason = "too_short"
            if reason is not None:
                if mine:
                    stats.drop(reason)
                continue
            seen.add(paper["paper_id"])
            kept += 1
            total += 1
            if mine:
                yield paper
