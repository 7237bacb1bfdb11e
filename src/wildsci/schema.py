"""The WildSci row schema, compatible with the published ``JustinTX/WildSci`` dataset, plus provenance.

Published columns: ``paper_id, question, options{A..J}, answer, rationale, voting_type,
voting_answers[8], discipline, nc_domain, nc_subdomain``. We add ``question_id`` (a stable hash, used by
dedup, splits and resumption) and provenance: ``source_license``, ``generator_model``, ``recipe_hash``.

``options`` is stored as a struct with one string field per letter A..J so that parquet/`datasets` keep
the letter names; questions with fewer options (benchmarks) leave the tail empty.
"""

from __future__ import annotations

import hashlib
from typing import Any

from wildsci.answers import LETTERS

NUM_OPTIONS = 10
NUM_VOTERS = 8

#: How the voters' answers relate to the gold answer. ``""`` in ``voting_answers`` means "no parseable answer".
VOTING_TYPES = {
    "all_aligned": "every voter chose the gold answer",
    "majority_aligned": "more than half of the voters chose the gold answer, not all",
    "minority_aligned": "some voters, at most half, chose the gold answer",
    "majority_misaligned": "no voter chose the gold answer and more than half agree on one other letter",
    "unaligned": "no voter chose the gold answer and no other letter has a majority",
}

PUBLISHED_COLUMNS = (
    "paper_id",
    "question",
    "options",
    "answer",
    "rationale",
    "voting_type",
    "voting_answers",
    "discipline",
    "nc_domain",
    "nc_subdomain",
)
PROVENANCE_COLUMNS = ("question_id", "source_license", "generator_model", "recipe_hash")
COLUMNS = PUBLISHED_COLUMNS + PROVENANCE_COLUMNS


def features():
    """The ``datasets.Features`` of a WildSci row (imported lazily: the schema module stays light)."""
    from datasets import Features, Sequence, Value

    return Features(
        {
            "paper_id": Value("string"),
            "question": Value("string"),
            "options": {letter: Value("string") for letter in LETTERS},
            "answer": Value("string"),
            "rationale": Value("string"),
            "voting_type": Value("string"),
            "voting_answers": Sequence(Value("string")),
            "discipline": Value("string"),
            "nc_domain": Value("string"),
            "nc_subdomain": Value("string"),
            "question_id": Value("string"),
            "source_license": Value("string"),
            "generator_model": Value("string"),
            "recipe_hash": Value("string"),
        }
    )


def question_id(paper_id: str, question: str) -> str:
    """Stable id of a question: the same paper and question text always give the same id."""
    norm = " ".join(question.lower().split())
    return hashlib.sha256(f"{paper_id}\x00{norm}".encode()).hexdigest()[:16]


def options_list(options: dict[str, str] | list[str]) -> list[str]:
    """Options as a list in letter order, dropping the empty tail of a struct (``{"A": .., "E": ""}``)."""
    if isinstance(options, dict):
        values = [options.get(letter) or "" for letter in LETTERS]
        while values and not values[-1].strip():
            values.pop()
        return values
    return list(options)


def options_dict(options: list[str]) -> dict[str, str]:
    """A list of up to 10 options as the A..J struct (missing letters are empty strings)."""
    if len(options) > NUM_OPTIONS:
        raise ValueError(f"{len(options)} options; WildSci questions have at most {NUM_OPTIONS} (A-J)")
    return {letter: (options[i] if i < len(options) else "") for i, letter in enumerate(LETTERS)}


def voting_type(voting_answers: list[str], gold: str) -> str:
    """Classify the voters' answers against the gold letter (see :data:`VOTING_TYPES`)."""
    n = len(voting_answers)
    if n == 0:
        raise ValueError("voting_answers is empty")
    right = sum(1 for v in voting_answers if v == gold)
    if right == n:
        return "all_aligned"
    if right * 2 > n:
        return "majority_aligned"
    if right > 0:
        return "minority_aligned"
    wrong = [v for v in voting_answers if v]
    if wrong and max(wrong.count(v) for v in set(wrong)) * 2 > n:
        return "majority_misaligned"
    return "unaligned"


def validate_row(row: dict[str, Any], num_voters: int | None = NUM_VOTERS) -> list[str]:
    """Every reason why ``row`` is not a valid WildSci row; an empty list means valid.

    ``num_voters=None`` accepts any number of votes (used for rows that have not been voted on yet).
    """
    reasons: list[str] = []
    missing = [c for c in PUBLISHED_COLUMNS if c not in row]
    if missing:
        reasons.append(f"missing columns: {', '.join(missing)}")
    for col in ("paper_id", "question", "answer", "discipline", "nc_domain", "nc_subdomain"):
        if col in row and (not isinstance(row[col], str) or not row[col].strip()):
            reasons.append(f"{col} must be a non-empty string")
    opts = row.get("options")
    values: list[str] = []
    if isinstance(opts, dict):
        extra = set(opts) - set(LETTERS)
        if extra:
            reasons.append(f"options has keys outside A-J: {sorted(extra)}")
        values = options_list(opts)
        if len(values) != NUM_OPTIONS:
            reasons.append(f"options must have {NUM_OPTIONS} non-empty entries A-J, found {len(values)}")
        if any(not isinstance(v, str) or not v.strip() for v in values):
            reasons.append("options contains an empty option")
        norm = [" ".join(str(v).lower().split()) for v in values]
        if len(set(norm)) != len(norm):
            reasons.append("options contains duplicate options")
    elif "options" in row:
        reasons.append("options must be a mapping A..J -> text")
    ans = row.get("answer")
    if isinstance(ans, str) and ans and (ans not in LETTERS or (values and LETTERS.index(ans) >= len(values))):
        reasons.append(f"answer {ans!r} is not one of the option letters")
    votes = row.get("voting_answers")
    if "voting_answers" in row:
        if not isinstance(votes, list | tuple) or any(not isinstance(v, str) for v in votes):
            reasons.append("voting_answers must be a list of letters ('' for no answer)")
        else:
            if num_voters is not None and len(votes) != num_voters:
                reasons.append(f"voting_answers must have {num_voters} entries, found {len(votes)}")
            bad = [v for v in votes if v and v not in LETTERS]
            if bad:
                reasons.append(f"voting_answers has non-letters: {bad}")
            vt = row.get("voting_type")
            if votes and isinstance(ans, str) and ans in LETTERS and vt != voting_type(list(votes), ans):
                reasons.append(f"voting_type {vt!r} does not match the votes ({voting_type(list(votes), ans)!r})")
    if row.get("voting_type") not in VOTING_TYPES and "voting_type" in row:
        reasons.append(f"voting_type must be one of {sorted(VOTING_TYPES)}")
    disc, sub = row.get("discipline"), row.get("nc_subdomain")
    if isinstance(disc, str) and isinstance(sub, str) and disc and sub:
        from wildsci.taxonomy import load_taxonomy

        tax = load_taxonomy()
        if disc not in tax.disciplines:
            reasons.append(f"discipline {disc!r} is not in the taxonomy")
        else:
            try:
                s = tax.subdomain(sub)
                if s.discipline != disc:
                    reasons.append(f"nc_subdomain {sub!r} belongs to {s.discipline!r}, not {disc!r}")
                elif row.get("nc_domain") != s.nc_domain:
                    reasons.append(f"nc_domain must be {s.nc_domain!r} for {sub!r}")
            except KeyError:
                reasons.append(f"nc_subdomain {sub!r} is not in the taxonomy")
    return reasons
