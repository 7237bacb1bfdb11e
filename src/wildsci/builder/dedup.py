"""Stage 8, dedup: near-duplicate removal (MinHash LSH, datasketch) and n-gram decontamination against benchmarks.

Both work on *hashed word n-grams* computed for a whole batch of questions at once with numpy, so the stage
streams at well over 100k questions/minute on 2 cores with memory bounded by the batch size plus the indexes
(see ``bench/nonllm_stages.py``):

- **near duplicates**: word ``shingle_size``-grams of the question -> 32-bit hashes -> ``datasketch.MinHash``
  (``update_batch``) -> ``datasketch.MinHashLSH`` at ``threshold`` Jaccard. The first question in canonical
  order wins, so the result does not depend on how the input was sharded.
- **decontamination**: every benchmark question's word ``ngram``-grams go into one sorted ``uint64`` array per
  benchmark; a generated question sharing ``min_overlap`` n-grams with a benchmark is removed. N-grams found in
  more than ``max_benchmark_frequency`` benchmark questions are boilerplate ("which of the following statements
  best describes") and are ignored, otherwise every question phrased like an exam question would be removed.

Hashes are derived from blake2b of each word (stable across processes, seeds and machines), never from Python's
salted ``hash``, so reruns and shard merges take exactly the same decisions.

Length (~450 lines): the two filters share the n-gram hashing and run as one streaming pass; apart they would
hash every question twice.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH
from tqdm.auto import tqdm

from wildsci.errors import UserError, first_line
from wildsci.recipes import check_count


@dataclass
class DedupConfig:
    """Near-duplicate removal inside the built dataset."""

    enabled: bool = field(default=True, metadata={"help": "Remove near-duplicate questions with MinHash LSH."})
    threshold: float = field(
        default=0.8,
        metadata={"help": "Jaccard similarity (of word shingles) above which two questions are duplicates."},
    )
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations (more = more precise, slower)."})
    shingle_size: int = field(default=3, metadata={"help": "Words per shingle."})

    def __post_init__(self) -> None:
        # checked here, before any LLM call: a bad value would otherwise surface as a datasketch traceback
        # after every call was paid for
        if not 0 < self.threshold <= 1:  # also refuses nan
            raise ValueError(
                f"dedup.threshold is {self.threshold}: a Jaccard similarity in (0, 1] -- e.g. 0.8, not 80"
            )
        check_count("dedup.num_perm", self.num_perm, 16, 8192, "MinHash permutations per question")
        check_count("dedup.shingle_size", self.shingle_size, 1, 64, "words per shingle")


@dataclass
class BenchmarkConfig:
    """A benchmark to decontaminate against: a local JSONL/parquet file or a Hub dataset."""

    name: str = field(metadata={"help": "Short name shown in the report, e.g. mmlu_pro."})
    path: str = field(metadata={"help": "Local .jsonl/.parquet file or Hub dataset id (e.g. TIGER-Lab/MMLU-Pro)."})
    split: str = field(default="test", metadata={"help": "Split to read when 'path' is a Hub id."})
    hub_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question text."})


@dataclass
class DecontamConfig:
    """N-gram overlap decontamination against the benchmarks the trained models are evaluated on."""

    benchmarks: list[BenchmarkConfig] = field(
        default_factory=list, metadata={"help": "Benchmarks whose questions must not leak into the dataset."}
    )
    ngram: int = field(default=8, metadata={"help": "Words per n-gram (open-r1 uses 8; GPT-3 used 13)."})
    min_overlap: int = field(
        default=1, metadata={"help": "A question sharing at least this many n-grams with a benchmark is removed."}
    )
    max_benchmark_frequency: int = field(
        default=5,
        metadata={"help": "N-grams in more than this many benchmark questions are exam boilerplate and ignored."},
    )

    def __post_init__(self) -> None:
        check_count("decontamination.ngram", self.ngram, 1, 64, "words per n-gram")
        if self.ngram < 1 or self.min_overlap < 1 or self.max_benchmark_frequency < 1:
            raise ValueError("decontamination.ngram, min_overlap and max_benchmark_frequency must each be >= 1")


# ------------------------------------------------------------------------------------ hashed n-grams
_WORD = re.compile(r"[0-9a-z]+")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_PRIME = np.uint64(0x100000001B3)  # FNV-1a 64-bit prime: odd, so the rolling combination mixes well


class WordHasher:
    """Stable 64-bit word hashes, memoised (a corpus has far fewer distinct words than tokens)."""

    def __init__(self, max_vocab: int = 1 << 18) -> None:
        self.cache: dict[str, int] = {}
        self.max_vocab = max_vocab

    @staticmethod
    def hash_word(word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")

    def many(self, toks: list[str]) -> np.ndarray:
        """Hashes of a flat word list (one C-level ``map`` over the cache; misses hashed once)."""
        cache = self.cache
        missing = set(toks).difference(cache)
        if len(cache) + len(missing) > self.max_vocab:  # bounded: memory stays flat on endless streams
            cache.clear()
            missing = set(toks)
        for w in missing:
            cache[w] = self.hash_word(w)
        return np.fromiter(map(cache.__getitem__, toks), dtype=np.uint64, count=len(toks))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def tokenize(texts: list[str], hasher: WordHasher) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of a batch of texts, concatenated: ``(flat uint64, lengths int64)``; shared by both checks."""
    toks = [words(t) for t in texts]
    lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
    return hasher.many([w for t in toks for w in t]), lengths


def ngram_hashes(
    texts: list[str], n: int, hasher: WordHasher, tokens: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all word n-grams of a batch of texts: ``(hashes uint64, owner index int64)``.

    A text shorter than ``n`` words contributes one n-gram made of all its words, so short questions are still
    checked. Vectorised over the batch: one concatenated word array, ``n`` shifted multiply-adds, and a mask
    for windows that would cross from one text into the next.
    """
    flat, lengths = tokens if tokens is not None else tokenize(texts, hasher)
    if flat.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    owner = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(flat.size) - starts[owner]
    # window length per text: n, or the whole text when it is shorter than n
    win = np.minimum(lengths, n)[owner]
    valid = pos + win <= lengths[owner]
    acc = np.zeros(flat.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(min(n, flat.size)):
            shifted = np.zeros(flat.size, dtype=np.uint64)
            shifted[: flat.size - k] = flat[k:]
            use = k < win
            acc = np.where(use, acc * _PRIME + shifted, acc)
    return acc[valid], owner[valid]


# --------------------------------------------------------------------------------- near duplicates
def _identity(x: int) -> int:
    return x


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (the pre-mix of datasketch's ``affine32`` scheme)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


class NearDupIndex:
    """Streaming near-duplicate detector: ``check_batch(keys, texts)`` -> for each text, duplicate or not.

    Signatures are datasketch ``MinHash`` values (see :meth:`signatures`); the band/row split comes from
    ``datasketch.MinHashLSH`` for the configured threshold, weighted towards recall (``weights=(0.2, 0.8)``), and
    every LSH candidate is then *verified* by its estimated Jaccard similarity, so the extra candidates cost no
    false drops. The index is a sorted ``uint64`` array of band hashes plus the kept signatures (~0.6 kB per kept
    question) instead of MinHashLSH's dict-of-lists storage, whose Python objects cost ~2.5 kB per question and
    make the garbage collector crawl past 100k questions. A question is a duplicate when it is similar to an
    earlier *kept* question (MinHashLSH's query-then-insert semantics).
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.2, 0.8))
        self.bands, self.rows = lsh.b, lsh.r
        self.template = MinHash(num_perm=cfg.num_perm, hashfunc=_identity)
        self.hasher = WordHasher()
        self.index = np.zeros(0, dtype=np.uint64)  # sorted band hashes of kept questions
        self.owner = np.zeros(0, dtype=np.uint32)  # kept-question number of each index entry
        self.sig_parts: list[np.ndarray] = []  # kept signatures, one array per batch (never re-copied)
        self.part_starts: list[int] = []
        self.kept = 0

    def signatures(self, texts: list[str], tokens: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """(n, num_perm) uint32 MinHash signatures of the texts' shingles, computed for the whole batch at once.

        Bit-for-bit what ``datasketch.MinHash(hashfunc=identity).update_batch(shingle_hashes)`` gives with its
        default ``affine32`` scheme (MurmurHash3 fmix, then ``a*h+b mod 2^32`` with the template's permutations;
        checked by tests/test_build_dedup.py), but one numpy pass per batch instead of one object per question.
        """
        hashes, owner = ngram_hashes(texts, self.cfg.shingle_size, self.hasher, tokens)
        sig = np.full((len(texts), self.cfg.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if hashes.size == 0:
            return sig
        hv = fmix32((hashes >> np.uint64(32)).astype(np.uint32))
        a, b = (np.asarray(x, dtype=np.uint32) for x in self.template.permutations)
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        with np.errstate(over="ignore"):  # (num_perm, shingles) layout: contiguous rows, ~20x faster than (S, P)
            phv = np.multiply.outer(a, hv)
            phv += b[:, None]
        sig[owner[starts]] = np.minimum.reduceat(phv, starts, axis=1).T
        return sig

    def band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """(n, bands) uint64: each band's ``rows`` values folded into one hash, salted by the band number."""
        used = sig[:, : self.bands * self.rows].reshape(len(sig), self.bands, self.rows)
        acc = np.arange(1, self.bands + 1, dtype=np.uint64)[None, :].repeat(len(sig), 0) * np.uint64(
            0x9E3779B97F4A7C15
        )
        with np.errstate(over="ignore"):
            for k in range(self.rows):
                acc = (acc ^ used[:, :, k]) * _PRIME
        return acc

    def _kept_sig(self, c: int) -> np.ndarray:
        part = bisect.bisect_right(self.part_starts, c) - 1
        return self.sig_parts[part][c - self.part_starts[part]]

    def _similar(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float((a == b).mean()) >= self.cfg.threshold

    def check_batch(
        self, keys: list[str], texts: list[str], tokens: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[bool]:
        if not texts:
            return []
        sig = self.signatures(texts, tokens)
        bh = self.band_hashes(sig)
        lo = np.searchsorted(self.index, bh, side="left")
        hi = np.searchsorted(self.index, bh, side="right")
        has_cand = (hi > lo).any(axis=1)
        batch_bands: dict[int, list[int]] = {}
        out: list[bool] = []
        new_rows: list[int] = []
        for i in range(len(texts)):
            dup = False
            if has_cand[i]:  # candidates among earlier batches
                cands = {int(self.owner[k]) for b in range(self.bands) for k in range(lo[i, b], hi[i, b])}
                dup = any(self._similar(sig[i], self._kept_sig(c)) for c in cands)
            if not dup:  # candidates earlier in this batch
                row = bh[i].tolist()
                cands = {j for h in row for j in batch_bands.get(h, ())}
                dup = any(self._similar(sig[i], sig[j]) for j in cands)
            out.append(dup)
            if not dup:
                for h in bh[i].tolist():
                    batch_bands.setdefault(h, []).append(i)
                new_rows.append(i)
        if new_rows:
            rows = np.asarray(new_rows)
            ids = np.arange(self.kept, self.kept + len(rows), dtype=np.uint32)
            keys_new = bh[rows].ravel()
            owners_new = np.repeat(ids, self.bands)
            order = np.argsort(keys_new, kind="stable")  # sort the batch only, then merge it in (one copy)
            at = np.searchsorted(self.index, keys_new[order])
            self.index = np.insert(self.index, at, keys_new[order])
            self.owner = np.insert(self.owner, at, owners_new[order])
            self.part_starts.append(self.kept)
            self.sig_parts.append(sig[rows])
            self.kept += len(rows)
        return out


# --------------------------------------------------------------------------------- decontamination
def _read_benchmark(b: BenchmarkConfig) -> Iterator[str]:
    p = Path(b.path).expanduser()
    if p.is_file():
        if p.suffix == ".parquet":
            for batch in pq.ParquetFile(p).iter_batches(columns=[b.question_column], batch_size=4096):
                yield from (str(q) for q in batch.column(0).to_pylist() if q)
            return
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    q = json.loads(line).get(b.question_column)
                    if q:
                        yield str(q)
        return
    if p.suffix in (".jsonl", ".parquet", ".json") or str(b.path).startswith((".", "/", "~")):
        raise UserError(f"benchmark {b.name!r}: file {b.path} not found -- fix decontamination.benchmarks[].path")
    try:
        ds = datasets.load_dataset(b.path, name=b.hub_config, split=b.split)
    except Exception as e:
        msg = first_line(e)
        raise UserError(
            f"benchmark {b.name!r} ({b.path}): cannot load it ({msg}) -- check the id/split, your network or "
            "HF_HUB_OFFLINE, or point 'path' at a local file"
        ) from None
    if b.question_column not in ds.column_names:
        raise UserError(
            f"benchmark {b.name!r}: no column {b.question_column!r} (has {', '.join(ds.column_names)}) -- "
            "set question_column"
        )
    yield from (str(q) for q in ds[b.question_column] if q)


class Decontaminator:
    """Sorted arrays of benchmark n-gram hashes; ``check_batch`` names the benchmark a question overlaps."""

    def __init__(self, cfg: DecontamConfig, batch_size: int = 4096) -> None:
        self.cfg = cfg
        self.hasher = WordHasher()
        self.index: dict[str, np.ndarray] = {}
        self.report: dict[str, dict[str, int]] = {}
        for b in cfg.benchmarks:
            parts: list[np.ndarray] = []
            n_items = 0
            batch: list[str] = []
            for q in _read_benchmark(b):
                batch.append(q)
                if len(batch) >= batch_size:
                    parts.append(self._unique_per_item(batch))
                    n_items += len(batch)
                    batch = []
            if batch:
                parts.append(self._unique_per_item(batch))
                n_items += len(batch)
            allh = np.concatenate(parts) if parts else np.zeros(0, np.uint64)
            uniq, counts = np.unique(allh, return_counts=True)
            self.index[b.name] = uniq[counts <= cfg.max_benchmark_frequency]
            self.report[b.name] = {
                "checked": 0,
                "removed": 0,
                "benchmark_questions": n_items,
                "ngrams": int(self.index[b.name].size),
                "boilerplate_ngrams_ignored": int((counts > cfg.max_benchmark_frequency).sum()),
            }

    def _unique_per_item(self, texts: list[str]) -> np.ndarray:
        h, owner = ngram_hashes(texts, self.cfg.ngram, self.hasher)
        # one count per (item, n-gram): frequency = number of benchmark questions containing the n-gram
        order = np.lexsort((h, owner))
        h, owner = h[order], owner[order]
        first = np.r_[True, (h[1:] != h[:-1]) | (owner[1:] != owner[:-1])] if h.size else np.zeros(0, bool)
        return h[first]

    def check_batch(self, texts: list[str], tokens: tuple[np.ndarray, np.ndarray] | None = None) -> list[str | None]:
        """For each text, the first benchmark it overlaps with (``None`` when clean); updates the report."""
        h, owner = ngram_hashes(texts, self.cfg.ngram, self.hasher, tokens)
        result: list[str | None] = [None] * len(texts)
        pending = np.ones(len(texts), dtype=bool)
        for name, idx in self.index.items():
            self.report[name]["checked"] += int(pending.sum())
            if idx.size and h.size:
                pos = np.searchsorted(idx, h)
                hit = idx[np.minimum(pos, idx.size - 1)] == h
                counts = np.bincount(owner[hit], minlength=len(texts))
                flagged = (counts >= self.cfg.min_overlap) & pending
                for i in np.flatnonzero(flagged):
                    result[i] = name
                self.report[name]["removed"] += int(flagged.sum())
                pending &= ~flagged
        return result


# ------------------------------------------------------------------------------------- the stage
def dedup_text(row: dict[str, Any]) -> str:
    return row["question"]


class DedupDecontam:
    """The stage as a streaming filter: ``check(keys, texts)`` -> per text ``None`` (keep) or its drop reason.

    Each batch is tokenized once for both checks; state (the near-duplicate index) carries across batches.
    """

    def __init__(
        self, dedup: DedupConfig, decontam: DecontamConfig, decontaminator: Decontaminator | None = None
    ) -> None:
        self.deco = decontaminator or (Decontaminator(decontam) if decontam.benchmarks else None)
        self.near = NearDupIndex(dedup) if dedup.enabled else None
        self.hasher = WordHasher()

    @property
    def report(self) -> dict[str, dict[str, int]]:
        return self.deco.report if self.deco else {}

    def check(self, keys: list[str], texts: list[str]) -> list[str | None]:
        flat, lengths = tokenize(texts, self.hasher)
        reasons: list[str | None] = [None] * len(texts)
        if self.deco:
            for i, c in enumerate(self.deco.check_batch(texts, (flat, lengths))):
                if c is not None:
                    reasons[i] = f"contaminated_{c}"
        if self.near:
            keep = np.array([r is None for r in reasons], dtype=bool)
            idx = np.flatnonzero(keep)
            tokens = (flat[np.repeat(keep, lengths)], lengths[keep])
            dups = self.near.check_batch([keys[i] for i in idx], [texts[i] for i in idx], tokens)
            for i, d in zip(idx, dups, strict=True):
                if d:
                    reasons[i] = "near_duplicate"
        return reasons


def dedup_and_decontaminate(
    rows: Iterable[dict[str, Any]],
    dedup: DedupConfig,
    decontam: DecontamConfig,
    decontaminator: Decontaminator | None = None,
    batch_size: int = 2048,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, dict[str, int]]]:
    """Drop benchmark-contaminated questions (``contaminated_<benchmark>``) then near duplicates (``near_duplicate``).

    Rows are processed in the order given (the pipeline sorts them canonically first). Returns
    ``(kept, drops, decontamination_report)``.
    """
    stage = DedupDecontam(dedup, decontam, decontaminator)
    drops: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    with tqdm(desc="dedup+decontam", unit="q", disable=not progress) as bar:

        def flush() -> None:
            reasons = stage.check([r["question_id"] for r in batch], [dedup_text(r) for r in batch])
            for r, reason in zip(batch, reasons, strict=True):
                if reason is None:
                    kept.append(r)
                else:
                    drops[reason] += 1
            bar.update(len(batch))
            batch.clear()

        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return kept, dict(drops), stage.report
