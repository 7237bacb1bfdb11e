"""Stage 1, ingest: papers (JSONL / parquet / JATS XML / a folder / a Hub dataset) -> clean text chunks.

Every source row becomes a *paper* ``{paper_id, title, sections: [(heading, text)], license, field_labels}``
and then one or more *chunks* ``{paper_id, chunk_id, title, text, license, field_labels}`` (the contract with
``wildsci.builder.generate``). Only main text is kept: reference lists, acknowledgements, funding, figure and
table captions, citation markers and LaTeX placeholders are removed, because a question generator that sees a
reference list writes questions about author names.

Bad papers never crash the run and are never lost silently: each is counted under a named drop reason
(``not_utf8``, ``bad_json``, ``bad_xml``, ``missing_id``, ``missing_text``, ``missing_license``, ``garbled_text``,
``too_short``, ``duplicate_paper``, ``filtered``), shown in the build summary and the dataset card.
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
from pathlib import Path
from typing import Any

from wildsci.errors import UserError, first_line

# ------------------------------------------------------------------------------------------ config
DEFAULT_DROP_SECTIONS = [
    "references",
    "bibliography",
    "acknowledgment",
    "acknowledgement",
    "funding",
    "author contributions",
    "competing interests",
    "conflict of interest",
    "conflicts of interest",
    "supporting information",
    "supplementary",
    "data availability",
    "code availability",
    "ethics statement",
    "abbreviations",
    "accession numbers",
]


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


@dataclass
class ChunkConfig:
    """How papers are cut into passages that fit the generator's context."""

    max_tokens: int = field(
        default=768,
        metadata={"help": "Longest passage in tokens (the generator prompt adds ~300 tokens of instructions)."},
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer (model ref) used to count tokens; default: the generator's model for the "
            "transformers backend, else words x 1.3."
        },
    )
    min_words: int = field(default=30, metadata={"help": "Passages (and papers) shorter than this are dropped."})
    max_chunks_per_paper: int | None = field(
        default=None, metadata={"help": "Keep at most this many passages per paper (the first ones)."}
    )
    drop_sections: list[str] = field(
        default_factory=lambda: list(DEFAULT_DROP_SECTIONS),
        metadata={"help": "Section headings (case-insensitive substrings) whose text is not main text."},
    )
    max_formula_ratio: float = field(
        default=0.1, metadata={"help": "Passages with more than this fraction of [math] placeholders are dropped."}
    )
    min_letter_ratio: float = field(
        default=0.6,
        metadata={"help": "A paper whose text is less than this fraction letters/spaces is dropped as garbled_text."},
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


# -------------------------------------------------------------------------------------------- JATS
def parse_jats(xml_text: str) -> dict[str, Any]:
    """JATS XML full text -> ``{paper_id, title, license, field_labels, sections}`` (main text only).

    Drops ``<back>`` (references, acknowledgements), ``<fig>``/``<table-wrap>`` (captions), ``<xref>`` citation
    markers, footnotes and formulas' MathML; section titles are kept to filter e.g. "Acknowledgments" in ``<body>``.
    """
    root = ET.fromstring(xml_text)
    for el in root.iter():  # strip namespaces (mml:, xlink:) so paths stay simple
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]

    def text_of(el: ET.Element | None) -> str:
        return " ".join("".join(el.itertext()).split()) if el is not None else ""

    meta = root.find("front/article-meta")
    pid = ""
    if meta is not None:
        for aid in meta.findall("article-id"):
            if aid.get("pub-id-type") in ("doi", "pmcid", "pmid", "publisher-id", None) and (aid.text or "").strip():
                pid = aid.text.strip()
                if aid.get("pub-id-type") == "doi":
                    break
    title = text_of(meta.find("title-group/article-title")) if meta is not None else ""
    lic_el = meta.find("permissions/license") if meta is not None else None
    license_ = ""
    if lic_el is not None:  # xlink:href, or JATS 1.2's <ali:license_ref>, or the licence sentence
        href = next((v for k, v in lic_el.attrib.items() if k.endswith("href")), "")
        ref = lic_el.find("license_ref")
        license_ = _license_from_url(href) or _license_from_url(text_of(ref)) or text_of(lic_el)[:80]
    labels = [text_of(s) for s in root.iter("subject")] if meta is not None else []
    labels += [text_of(k) for k in root.iter("kwd")]

    def strip_non_prose(el: ET.Element) -> None:
        for parent in list(el.iter()):
            for child in list(parent):
                tag = child.tag if isinstance(child.tag, str) else ""
                drop_tags = ("fig", "table-wrap", "fn-group", "fn", "disp-formula", "inline-formula", "ref-list")
                if tag in drop_tags or (tag == "xref" and child.get("ref-type") in ("bibr", "fig", "table", None)):
                    tail = child.tail
                    parent.remove(child)
                    if tail:  # keep the text that followed the removed element
                        prev = list(parent)
                        if prev:
                            prev[-1].tail = (prev[-1].tail or "") + tail
                        else:
                            parent.text = (parent.text or "") + tail

    sections: list[tuple[str, str]] = []
    abstract = meta.find("abstract") if meta is not None else None
    if abstract is not None:
        strip_non_prose(abstract)
        sections.append(("Abstract", "\n\n".join(text_of(p) for p in abstract.iter("p"))))
    body = root.find("body")
    if body is not None:
        strip_non_prose(body)

        def walk(el: ET.Element, heading: str) -> None:
            paras = []
            for child in el:
                if child.tag == "p":
                    paras.append(text_of(child))
                elif child.tag == "sec":
                    if paras:
                        sections.append((heading, "\n\n".join(paras)))
                        paras = []
                    sub = text_of(child.find("title"))
                    walk(child, f"{heading} / {sub}" if heading and sub else sub or heading)
            if paras:
                sections.append((heading, "\n\n".join(paras)))

        walk(body, "")
    return {"paper_id": pid, "title": title, "license": license_, "field_labels": labels, "sections": sections}


def _license_from_url(url: str) -> str:
    m = re.search(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)", url)
    if not m:
        return ""
    kind, version = m.group(2), m.group(3)
    return "CC0-1.0" if kind == "zero" else f"CC-{kind.upper()}-{version}"


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
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]}) -- check the file") from None
    for batch in pf.iter_batches(batch_size=256):
        yield from batch.to_pylist()


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
    import datasets

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


def _source_files(src: SourceConfig) -> list[tuple[Path, str]] | None:
    """Local files of a source with their formats; ``None`` when the path is a Hub id."""
    if src.path == "builtin:demo":
        from importlib import resources

        return [(Path(str(resources.files("wildsci").joinpath("data/demo_corpus.jsonl"))), "jsonl")]
    p = Path(src.path).expanduser()
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIX_FORMAT)
    elif p.is_file():
        files = [p]
    elif any(ch in src.path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(src.path, recursive=True) if Path(f).is_file())
    else:
        if src.format in ("auto", "hub") and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", src.path) and "." not in src.path[:1]:
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
    return _source_files(src) is None


def _iter_rows(src: SourceConfig, stats: IngestStats) -> Iterator[dict[str, Any]]:
    files = _source_files(src)
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


# ---------------------------------------------------------------------------------------- chunking
class TokenCounter:
    """Counts tokens with a real tokenizer when one is given, else approximates words x 1.3 (and says so)."""

    def __init__(self, tokenizer_ref: str | None = None) -> None:
        self.tokenizer = None
        self.exact = False
        if tokenizer_ref:
            from transformers import AutoTokenizer

            from wildsci.models import resolve_model

            try:
                self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(tokenizer_ref))
                self.exact = True
            except Exception:  # offline / unknown model: fall back to the word estimate
                self.tokenizer = None

    def __call__(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return int(len(text.split()) * 1.3) + 1

    def describe(self) -> str:
        return "tokenizer" if self.exact else "words x 1.3 (no tokenizer)"


_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])")


def chunk_paper(
    paper: dict[str, Any], cfg: ChunkConfig, count_tokens: TokenCounter, drops: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """Greedily pack paragraphs (then sentences, then words) into passages of at most ``cfg.max_tokens``.

    Passages that are mostly formulas (``[math]`` placeholders) are dropped as ``formula_heavy_passage``: without the
    formulas no answerable question can be written from them. Short passages count as ``too_short_passage``.
    """
    drops = drops if drops is not None else Counter()
    units: list[str] = []
    for _heading, text in main_text_sections(paper, cfg):
        for para in text.split("\n\n"):
            if count_tokens(para) <= cfg.max_tokens:
                units.append(para)
                continue
            for sent in _SENT.split(para):
                if count_tokens(sent) <= cfg.max_tokens:
                    units.append(sent)
                else:  # one enormous "sentence" (tables flattened into text): cut by words
                    words = sent.split()
                    step = max(1, int(cfg.max_tokens / 1.5))
                    units += [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for unit in units:
        n = count_tokens(unit)
        if current and size + n > cfg.max_tokens:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(unit)
        size += n
    if current:
        chunks.append("\n\n".join(current))
    # a short tail is merged into the previous passage rather than dropped, when it fits
    if len(chunks) >= 2 and len(chunks[-1].split()) < cfg.min_words:
        merged = chunks[-2] + "\n\n" + chunks[-1]
        if count_tokens(merged) <= cfg.max_tokens * 1.2:
            chunks[-2:] = [merged]
    out = []
    for k, text in enumerate(chunks):
        words = text.split()
        if len(words) < cfg.min_words:
            drops["too_short_passage"] += 1
            continue
        if sum(1 for w in words if "[math]" in w) > cfg.max_formula_ratio * len(words):
            drops["formula_heavy_passage"] += 1
            continue
        out.append(
            {
                "paper_id": paper["paper_id"],
                "chunk_id": f"{paper['paper_id']}#{k:03d}",
                "title": paper["title"],
                "text": text,
                "license": paper["license"],
                "field_labels": list(paper["field_labels"]),
            }
        )
        if cfg.max_chunks_per_paper and len(out) >= cfg.max_chunks_per_paper:
            break
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


def ingest(
    sources: list[SourceConfig],
    cfg: ChunkConfig,
    tokenizer: str | None = None,
    shard: tuple[int, int] | None = None,
    max_papers: int | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read every source and chunk it. Returns ``(chunks, stages)``.

    ``stages`` are two build-report entries ``{"name", "in", "out", "drops"}``: ``ingest`` (rows read -> papers
    kept, paper-level drops) and ``chunk`` (papers -> passages, passage-level drops).
    """
    from tqdm.auto import tqdm

    stats = IngestStats(shard)
    counter = TokenCounter(cfg.tokenizer or tokenizer)
    chunk_drops: Counter[str] = Counter()
    chunks: list[dict[str, Any]] = []
    papers = 0
    bar = tqdm(desc="ingest", unit="paper", disable=not progress)
    for paper in iter_papers(sources, cfg, stats, shard=shard, max_papers=max_papers):
        papers += 1
        got = chunk_paper(paper, cfg, counter, chunk_drops)
        chunks += got
        bar.update(1)
    bar.close()
    stages = [
        {"name": "ingest", "in": stats.read, "out": papers, "drops": dict(stats.drops)},
        {"name": "chunk", "in": papers, "out": len(chunks), "drops": dict(chunk_drops), "tokens": counter.describe()},
    ]
    return chunks, stages
