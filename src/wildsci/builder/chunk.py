"""Stage 2, chunk: cut each paper's main text into passages that fit the generator's context.

A passage ``{paper_id, chunk_id, title, text, license, field_labels}`` is the contract with
:mod:`wildsci.builder.generate`. :func:`read_and_chunk` streams the papers of :mod:`wildsci.builder.ingest` through
:func:`chunk_paper` and returns both stages' build-report entries.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from wildsci.builder.ingest import IngestStats, SourceConfig, iter_papers, main_text_sections
from wildsci.models import resolve_model
from wildsci.recipes import check_count

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

    def __post_init__(self) -> None:
        check_count("chunking.max_tokens", self.max_tokens, 16, 1_048_576, "tokens per passage")
        if self.min_words < 1:
            raise ValueError("chunking.min_words must be >= 1")
        if self.max_chunks_per_paper is not None and self.max_chunks_per_paper < 1:
            raise ValueError("chunking.max_chunks_per_paper must be >= 1 (or null for all)")
        for name in ("max_formula_ratio", "min_letter_ratio"):
            if not 0 <= getattr(self, name) <= 1:  # also refuses nan
                raise ValueError(f"chunking.{name} is {getattr(self, name)}: a fraction in [0, 1]")


# ---------------------------------------------------------------------------------------- chunking
class TokenCounter:
    """Counts tokens with a real tokenizer when one is given, else approximates words x 1.3 (and says so)."""

    def __init__(self, tokenizer_ref: str | None = None) -> None:
        self.tokenizer = None
        self.exact = False
        if tokenizer_ref:
            from transformers import AutoTokenizer

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


def read_and_chunk(
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
    stats = IngestStats(shard)
    counter = TokenCounter(cfg.tokenizer or tokenizer)
    chunk_drops: Counter[str] = Counter()
    chunks: list[dict[str, Any]] = []
    papers = 0
    with tqdm(desc="ingest", unit="paper", disable=not progress) as bar:  # closed on errors too: no torn line
        for paper in iter_papers(sources, cfg, stats, shard=shard, max_papers=max_papers):
            papers += 1
            chunks += chunk_paper(paper, cfg, counter, chunk_drops)
            bar.update(1)
    stages = [
        {"name": "ingest", "in": stats.read, "out": papers, "drops": dict(stats.drops)},
        {"name": "chunk", "in": papers, "out": len(chunks), "drops": dict(chunk_drops), "tokens": counter.describe()},
    ]
    return chunks, stages
