"""Stage 4, options: every question gets exactly 10 options A-J, shuffled so that answer letters are balanced.

Why this is its own stage: generators (and questions imported from elsewhere) often give fewer options
than WildSci's 10, and an LLM writes the correct answer first far more often than last. A question with
fewer options is topped up with LLM-written distractors (asked with the question and the correct answer,
so they are plausible but wrong); then options are shuffled with a seed derived from ``(seed, question)``.
The shuffle therefore depends on nothing but the question itself: a resumed run, a sharded run and a
single run put the answer under the same letter.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from wildsci.answers import LETTERS
from wildsci.builder.generate import extract_json
from wildsci.llm.backends import ChatRequest, LLMClient
from wildsci.recipes import check_count
from wildsci.schema import options_dict, options_list

DROP_REASONS = {
    "empty_option": "an option is empty",
    "duplicate_options": "two options have the same text",
    "too_many_options": "more than num_options options",
    "too_few_options": "fewer than num_options options and distractor generation is off",
    "not_enough_distractors": "the LLM did not supply enough new, distinct distractors in max_attempts tries",
    "llm_error": "every distractor call for the question failed",
    "bad_answer_index": "answer_index is missing or outside the options",
}

DISTRACTOR_PROMPT = "\n".join(
    [
        "Here is a multiple-choice science question with its correct answer and the wrong options written so far.",
        "",
        "Question: {question}",
        "",
        "Correct answer: {answer}",
        "",
        "Wrong options so far:",
        "{existing}",
        "",
        "Write {k} more wrong options. Each must be plausible to a non-expert, clearly wrong to an expert, similar "
        "in length and style to the correct answer, and different from every option above. "
        'No "all of the above" or "none of the above".',
        "",
        'Reply with a JSON object only: {{"distractors": ["...", ...]}}',
    ]
)


DISTRACTOR_SOURCES = ("llm", "pool", "llm_then_pool")
#: pool buckets up to this size are shuffled whole (exact, small builds); larger ones are sampled by index
POOL_SHUFFLE_MAX = 512


@dataclass
class OptionsConfig:
    """Option count, distractor generation and the shuffle seed."""

    num_options: int = field(default=10, metadata={"help": "options per question after this stage (WildSci: 10, A-J)"})
    generate_distractors: bool = field(
        default=True, metadata={"help": "ask the LLM for plausible wrong options when a question has fewer"}
    )
    seed: int = field(default=0, metadata={"help": "shuffle seed (combined with each question's text)"})
    max_option_chars: int | None = field(
        default=600,
        metadata={"help": "maxLength of each generated distractor in the JSON schema (null for OpenAI's own API)"},
    )
    max_attempts: int = field(
        default=2, metadata={"help": "distractor requests per question (distinct samples) before it is dropped"}
    )
    distractor_source: str = field(
        default="llm",
        metadata={
            "help": "where missing wrong options come from: llm (written for the question), pool (options of other "
            "questions of this build as the generator wrote them, same field labels first; no LLM call, always "
            "distinct, but off-topic options make a question easier; an executor's sharded build draws from the "
            "whole build's pool, like one build), or llm_then_pool (pool fills what the LLM could not)"
        },
    )

    def __post_init__(self) -> None:
        if not 2 <= self.num_options <= len(LETTERS):
            raise ValueError(f"num_options must be between 2 and {len(LETTERS)}, got {self.num_options}")
        check_count("options.max_attempts", self.max_attempts, 1, 20, "LLM calls per question")
        if self.max_option_chars is not None:
            check_count("options.max_option_chars", self.max_option_chars, 1, 1_000_000, "characters per distractor")
        if self.distractor_source not in DISTRACTOR_SOURCES:
            raise ValueError(
                f"distractor_source must be one of {', '.join(DISTRACTOR_SOURCES)}, got {self.distractor_source!r}"
            )


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def distractor_schema(k: int, max_chars: int | None = None) -> dict:
    item: dict = (
        {"type": "string"} if max_chars is None else {"type": "string", "minLength": 1, "maxLength": max_chars}
    )
    return {
        "type": "object",
        "properties": {"distractors": {"type": "array", "items": item, "minItems": k, "maxItems": k}},
        "required": ["distractors"],
        "additionalProperties": False,
    }


def shuffle_options(question: str, options: list[str], answer_index: int, seed: int) -> tuple[list[str], int]:
    """A permutation seeded by ``(seed, question)`` only; returns the new options and the answer's new index."""
    rng = random.Random(f"{seed}\x00{' '.join(question.split())}")  # str seeds hash with sha512: stable everywhere
    order = list(range(len(options)))
    rng.shuffle(order)
    return [options[i] for i in order], order.index(answer_index)


def _distractor_request(row: dict, options: list[str], k: int, attempt: int, cfg: OptionsConfig) -> ChatRequest:
    correct = options[row["answer_index"]]
    wrong = [o for i, o in enumerate(options) if i != row["answer_index"]]
    prompt = DISTRACTOR_PROMPT.format(
        question=row["question"], answer=correct, existing="\n".join(f"- {o}" for o in wrong) or "(none)", k=k
    )
    return ChatRequest(
        messages=[{"role": "user", "content": prompt}],
        json_schema=distractor_schema(k, cfg.max_option_chars),
        sample_index=attempt,
    )


def _new_distractors(text: str, existing: list[str]) -> list[str]:
    obj, _ = extract_json(text)
    items = obj.get("distractors") if isinstance(obj, dict) else obj if isinstance(obj, list) else None
    if not isinstance(items, list):
        return []
    seen = {_norm(o) for o in existing}
    out = []
    for it in items:
        if not isinstance(it, str | int | float) or isinstance(it, bool):
            continue
        s = str(it).strip()
        if s and _norm(s) not in seen and not s.lower().startswith(("all of the", "none of the")):
            seen.add(_norm(s))
            out.append(s)
    return out


PoolEntry = tuple[str, str]  # (option text, normalised text of the question it came from)


def pool_index(work: list[tuple[dict, list[str]]]) -> tuple[dict[str, list[PoolEntry]], list[PoolEntry]]:
    """Every option of every question, by first field label and overall, sorted (independent of row order).

    Built once per stage: drawing from it costs O(distractors needed) per question, not O(questions).
    """
    by_label: dict[str, set[PoolEntry]] = {}
    for row, opts in work:
        label = (row.get("field_labels") or [""])[0]
        q = _norm(row["question"])
        by_label.setdefault(label, set()).update((o, q) for o in opts)
    every = sorted(set().union(*by_label.values())) if by_label else []
    return {label: sorted(entries) for label, entries in by_label.items()}, every


def fill_from_pool(
    row: dict, opts: list[str], index: tuple[dict[str, list[PoolEntry]], list[PoolEntry]], cfg: OptionsConfig
) -> list[str]:
    """Top ``opts`` up with options of *other* questions: same first field label first, then any, seeded order.

    The draw depends only on ``(seed, question)`` and the set of questions (not their order), so a resumed build
    draws the same distractors. Small buckets are shuffled whole; large ones are sampled by index.
    """
    need = cfg.num_options - len(opts)
    if need <= 0:
        return opts
    by_label, every = index
    own = _norm(row["question"])
    seen = {_norm(o) for o in opts}
    rng = random.Random(f"pool\x00{cfg.seed}\x00{' '.join(row['question'].split())}")
    picked: list[str] = []
    for bucket in (by_label.get((row.get("field_labels") or [""])[0], []), every):
        if len(bucket) <= POOL_SHUFFLE_MAX:
            order: list[int] | Iterator[int] = list(range(len(bucket)))
            rng.shuffle(order)
        else:
            order = (rng.randrange(len(bucket)) for _ in range(need * 32))
        for j in order:
            if len(picked) == need:
                break
            option, source = bucket[j]
            if source != own and _norm(option) not in seen:
                seen.add(_norm(option))
                picked.append(option)
    return opts + picked


def _checked_options(row: dict, cfg: OptionsConfig, can_fill: bool) -> tuple[list[str] | None, str | None]:
    """A question's options as a list, or the drop reason that keeps it out of this stage (and out of the pool)."""
    opts = row.get("options")
    if isinstance(opts, dict):
        opts = options_list(opts)
    opts = [str(o).strip() for o in (opts or [])]
    idx = row.get("answer_index")
    if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < len(opts):
        return None, "bad_answer_index"
    if any(not o for o in opts):
        return None, "empty_option"
    if len({_norm(o) for o in opts}) != len(opts):
        return None, "duplicate_options"
    if len(opts) > cfg.num_options:
        return None, "too_many_options"
    if len(opts) < cfg.num_options and not (cfg.generate_distractors and can_fill):
        return None, "too_few_options"
    return opts, None


def complete_options(
    questions: list[dict], client: LLMClient | None, cfg: OptionsConfig, pool_rows: list[dict] | None = None
) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    """Bring every question to ``num_options`` options and shuffle them.

    Input rows have ``options`` (list) and ``answer_index``; output rows have ``options`` as the A..J struct
    (:func:`wildsci.schema.options_dict`) and ``answer`` (a letter). Returns rows, drops and the answer-letter
    distribution of the kept rows.

    The pool (``distractor_source: pool | llm_then_pool``) holds the options the generator wrote for every question
    that enters this stage, before any LLM distractor is added: ``pool_rows`` (the generated rows of *every* shard
    of a build, :func:`wildsci.builder.state.read_pool`) or, by default, ``questions`` themselves. Why the generated
    options only: they are known once generation is done everywhere, so a sharded build can draw from the whole
    build's pool and put exactly the distractors a single build puts.
    """
    drops: Counter[str] = Counter()
    use_llm = cfg.distractor_source != "pool" and client is not None
    use_pool = cfg.distractor_source != "llm"
    can_fill = client is not None or use_pool
    work: list[tuple[dict, list[str]]] = []
    for row in questions:
        opts, reason = _checked_options(row, cfg, can_fill)
        if reason:
            drops[reason] += 1
        else:
            work.append((row, opts))
    index = None
    if use_pool and cfg.generate_distractors:
        if pool_rows is None:
            index = pool_index(work)
        else:
            checked = ((row, _checked_options(row, cfg, can_fill)[0]) for row in pool_rows)
            index = pool_index([(row, opts) for row, opts in checked if opts is not None])

    errors = Counter()
    for attempt in range(cfg.max_attempts if use_llm else 0):
        short = [i for i, (_, opts) in enumerate(work) if len(opts) < cfg.num_options]
        if not short:
            break
        reqs = [
            _distractor_request(work[i][0], work[i][1], cfg.num_options - len(work[i][1]), attempt, cfg) for i in short
        ]
        results = client.chat(reqs, desc=f"distractors (try {attempt + 1})")
        for i, res in zip(short, results, strict=True):
            row, opts = work[i]
            if res.text is None:
                errors[i] += 1
                continue
            need = cfg.num_options - len(opts)
            work[i] = (row, opts + _new_distractors(res.text, opts)[:need])

    if index is not None:
        work = [(row, fill_from_pool(row, opts, index, cfg)) for row, opts in work]

    out: list[dict] = []
    letters: Counter[str] = Counter()
    for i, (row, opts) in enumerate(work):
        if len(opts) < cfg.num_options:
            drops["llm_error" if use_llm and errors[i] == cfg.max_attempts else "not_enough_distractors"] += 1
            continue
        shuffled, new_idx = shuffle_options(row["question"], opts, row["answer_index"], cfg.seed)
        new = {k: v for k, v in row.items() if k != "answer_index"}
        new["options"] = options_dict(shuffled)
        new["answer"] = LETTERS[new_idx]
        letters[new["answer"]] += 1
        out.append(new)
    distribution = {letter: letters.get(letter, 0) for letter in LETTERS[: cfg.num_options]}
    return out, dict(drops), distribution
