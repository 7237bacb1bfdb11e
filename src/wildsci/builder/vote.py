"""Stages 5-6, vote and filter: N voters answer each question without the paper; the votes classify and filter it.

WildSci's quality signal: a question whose gold answer no voter reaches, while the voters agree on
another letter (``majority_misaligned``), is likely mislabelled; one every voter gets right
(``all_aligned``) teaches little. Voters see exactly what a policy sees at training time -- the shared
prompt (:func:`wildsci.prompts.build_messages`) -- and their answers are read by the shared parser
(:func:`wildsci.answers.extract_answer`), so "a voter got it right" means what "reward 1" means.

Voters are ``num_votes`` samples spread round-robin over the configured voter backends: with two models
and 8 votes, each model answers 4 times (``sample_index`` 0..3 keeps the samples distinct in the cache).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wildsci.answers import LETTERS, extract_answer
from wildsci.llm.backends import ChatRequest, LLMClient
from wildsci.prompts import SYSTEM_PROMPT, build_messages
from wildsci.recipes import check_count
from wildsci.schema import NUM_VOTERS, VOTING_TYPES, options_list, voting_type

DROP_REASONS = {
    "llm_error": "a voter's call failed (a rerun retries it)",
    "unparseable_votes": "fewer than min_parseable_votes voters gave an answer the parser could read",
    "too_easy": "more voters than max_correct_votes chose the gold answer",
    "too_hard": "fewer voters than min_correct_votes chose the gold answer",
    **{f"voting_type_{t}": f"voting type {t} is not in keep_voting_types ({d})" for t, d in VOTING_TYPES.items()},
}


@dataclass
class VoteConfig:
    """Voter count, how voters answer, and which questions the votes keep."""

    num_votes: int = field(default=NUM_VOTERS, metadata={"help": "voters per question (WildSci: 8)"})
    constrained: bool = field(
        default=False,
        metadata={
            "help": "voters must answer with one letter (constrained choice) instead of reasoning freely and "
            "ending in \\boxed{X}; use it for small voters that rarely follow the answer format"
        },
    )
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata={"help": "voters' system prompt ('' = none)"})
    keep_voting_types: list[str] = field(
        default_factory=lambda: [t for t in VOTING_TYPES if t != "unaligned"],
        metadata={
            "help": "voting types to keep (all_aligned, majority_aligned, minority_aligned, majority_misaligned, "
            "unaligned); default drops unaligned: no consensus at all says the question is ill-posed"
        },
    )
    min_correct_votes: int = field(
        default=0, metadata={"help": "drop questions with fewer correct votes (too_hard / likely mislabelled)"}
    )
    max_correct_votes: int | None = field(
        default=None, metadata={"help": "drop questions with more correct votes (too_easy); null = no cap"}
    )
    min_parseable_votes: int = field(
        default=1, metadata={"help": "drop questions where fewer voters gave a readable answer (unparseable_votes)"}
    )

    def __post_init__(self) -> None:
        check_count("vote.num_votes", self.num_votes, 1, 64, "LLM calls per question; WildSci uses 8")
        unknown = [t for t in self.keep_voting_types if t not in VOTING_TYPES]
        if unknown:
            raise ValueError(f"keep_voting_types has unknown types {unknown}; known: {', '.join(VOTING_TYPES)}")
        hi = self.num_votes if self.max_correct_votes is None else self.max_correct_votes
        if not 0 <= self.min_correct_votes <= hi <= self.num_votes:
            raise ValueError(
                f"need 0 <= min_correct_votes <= max_correct_votes <= num_votes, got "
                f"{self.min_correct_votes}, {self.max_correct_votes}, {self.num_votes}"
            )


def voter_plan(num_votes: int, num_clients: int) -> list[tuple[int, int]]:
    """``(client index, sample_index)`` for each voter: round-robin over clients."""
    return [(k % num_clients, k // num_clients) for k in range(num_votes)]


def vote(rows: list[dict], clients: list[LLMClient], cfg: VoteConfig) -> tuple[list[dict], dict[str, int]]:
    """Add ``voting_answers`` (``num_votes`` letters, ``""`` = unreadable) and ``voting_type`` to every row.

    A row where any voter's call failed is dropped as ``llm_error`` (a rerun retries exactly those calls).
    """
    if not clients:
        raise ValueError("vote() needs at least one voter client")
    plan = voter_plan(cfg.num_votes, len(clients))
    n_opts = [len(options_list(r["options"])) for r in rows]
    msgs = [build_messages(r["question"], r["options"], cfg.system_prompt or None) for r in rows]
    votes: list[list[str]] = [[""] * cfg.num_votes for _ in rows]
    failed = [False] * len(rows)
    for c, client in enumerate(clients):
        slots = [(k, s) for k, (ci, s) in enumerate(plan) if ci == c]
        if not slots:
            continue
        reqs, where = [], []
        for i in range(len(rows)):
            choices = list(LETTERS[: n_opts[i]]) if cfg.constrained else None
            for k, s in slots:
                reqs.append(ChatRequest(messages=msgs[i], choices=choices, sample_index=s))
                where.append((i, k))
        results = client.chat(reqs, desc=f"vote ({client.config.model})")
        for (i, k), res in zip(where, results, strict=True):
            if res.text is None:
                failed[i] = True
                continue
            votes[i][k] = extract_answer(res.text, n_opts[i]).letter or ""
    out, drops = [], Counter()
    for i, row in enumerate(rows):
        if failed[i]:
            drops["llm_error"] += 1
            continue
        out.append({**row, "voting_answers": votes[i], "voting_type": voting_type(votes[i], row["answer"])})
    return out, dict(drops)


def filter_by_votes(rows: list[dict], cfg: VoteConfig) -> tuple[list[dict], dict[str, int]]:
    """The difficulty filter: drop unreadable, unkept voting types, too easy and too hard questions, in that order."""
    hi = cfg.num_votes if cfg.max_correct_votes is None else cfg.max_correct_votes
    keep = set(cfg.keep_voting_types)
    out, drops = [], Counter()
    for row in rows:
        votes = row["voting_answers"]
        right = sum(1 for v in votes if v == row["answer"])
        if sum(1 for v in votes if v) < cfg.min_parseable_votes:
            drops["unparseable_votes"] += 1
        elif row["voting_type"] not in keep:
            drops[f"voting_type_{row['voting_type']}"] += 1
        elif right > hi:
            drops["too_easy"] += 1
        elif right < cfg.min_correct_votes:
            drops["too_hard"] += 1
        else:
            out.append(row)
    return out, dict(drops)


def voting_type_counts(rows: list[dict]) -> dict[str, int]:
    """``{voting_type: count}`` over all types (zeros included), for the build report and the card."""
    c = Counter(r["voting_type"] for r in rows)
    return {t: c.get(t, 0) for t in VOTING_TYPES}
