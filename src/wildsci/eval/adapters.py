"""Benchmark rows -> the one normalized question shape, one adapter per benchmark, with the discipline maps.

Every benchmark the kit evaluates on is turned into::

    {"question_id", "question", "options": [str, ...], "answer": "C", "discipline", "subject"}

``discipline`` is one of the 9 WildSci taxonomy disciplines (or ``Other``), so WildSci's per-discipline training
signal can be compared with per-discipline benchmark accuracy; ``subject`` keeps the benchmark's own label. A row
that cannot be a question raises :class:`BadRow`, whose message is the drop reason counted in the report.
Each adapter reads both the shipped local files and the Hub rows of its benchmark.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

from wildsci.answers import LETTERS

NORMALIZED_KEY = "wildsci_normalized"  # marks rows that are already in the normalized shape
FORMAT_VERSION = 1  # bump when the normalized shape or an adapter changes: it is part of the content hash
OTHER = "Other"

# ------------------------------------------------------------------------------------ discipline maps
# Benchmark labels -> WildSci taxonomy disciplines (taxonomy.yaml). Unmapped labels become "Other".
_MMLU_PRO = {
    "biology": "Biology",
    "chemistry": "Chemistry",
    "physics": "Physics",
    "health": "Health Sciences",
    "engineering": "Engineering",
    "math": "Mathematics and Computing",
    "computer science": "Mathematics and Computing",
}
_SUPERGPQA_FIELDS = {
    "physics": "Physics",
    "chemistry": "Chemistry",
    "biology": "Biology",
    "mathematics": "Mathematics and Computing",
    "systems science": "Mathematics and Computing",
    "computer science and technology": "Mathematics and Computing",
    "astronomy": "Astronomy and Planetary Science",
    "geology": "Earth and Environmental Sciences",
    "geography": "Earth and Environmental Sciences",
    "geophysics": "Earth and Environmental Sciences",
    "atmospheric science": "Earth and Environmental Sciences",
    "oceanography": "Earth and Environmental Sciences",
    "physical oceanography": "Earth and Environmental Sciences",
    "environmental science and engineering": "Earth and Environmental Sciences",
    "materials science and engineering": "Materials Science",
}
_SUPERGPQA_DISCIPLINES = {"engineering": "Engineering", "medicine": "Health Sciences"}
_SIMPLE = {
    "physics": "Physics",
    "chemistry": "Chemistry",
    "biology": "Biology",
}


def disciplines() -> tuple[str, ...]:
    """The per-discipline keys every task reports: the taxonomy disciplines, then ``Other``."""
    from wildsci.taxonomy import load_taxonomy

    return (*load_taxonomy().disciplines, OTHER)


# ------------------------------------------------------------------------------------ row adapters
class BadRow(ValueError):
    """A row that cannot be a question; the message is the drop reason counted in the report."""


def _opts(values: Iterable[Any]) -> list[str]:
    opts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not 2 <= len(opts) <= len(LETTERS):
        raise BadRow("option_count")
    return opts


def _letter(answer: Any, n: int, index: Any = None) -> str:
    a = str(answer or "").strip().strip("()").upper()
    if len(a) == 1 and a in LETTERS[:n]:
        return a
    if isinstance(index, int) and 0 <= index < n:
        return LETTERS[index]
    raise BadRow("bad_answer")


def _qid(row: dict, *keys: str, text: str = "") -> str:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip():
            return str(v).strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _question(row: dict, *keys: str) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    raise BadRow("no_question")


def _mcq(qid: str, question: str, options: list[str], answer: str, discipline: str, subject: str) -> dict:
    return {
        NORMALIZED_KEY: FORMAT_VERSION,
        "question_id": qid,
        "question": question,
        "options": options,
        "answer": answer,
        "discipline": discipline,
        "subject": subject,
    }


def adapt_wildsci(row: dict) -> dict:
    """A WildSci row (options struct A..J) -- the published dataset or one built by ``wildsci build``."""
    from wildsci.schema import options_list, question_id

    q = _question(row, "question")
    opts = _opts(options_list(row.get("options") or {}))
    disc = str(row.get("discipline") or "").strip() or OTHER
    if disc not in disciplines():
        disc = OTHER
    qid = _qid(row, "question_id") if row.get("question_id") else question_id(str(row.get("paper_id", "")), q)
    return _mcq(qid, q, opts, _letter(row.get("answer"), len(opts)), disc, str(row.get("nc_subdomain") or disc))


def adapt_mmlu_pro(row: dict) -> dict:
    """MMLU-Pro: the shared jsonl (``subject``) or the Hub rows (``category``); up to 10 options."""
    q = _question(row, "question")
    opts = _opts(row.get("options") or [])
    # The option list may contain "N/A" padding in some revisions: keep it (answer letters index the list).
    subject = str(row.get("category") or row.get("subject") or "").strip().lower()
    ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    return _mcq(
        _qid(row, "question_id", "id", text=q), q, opts, ans, _MMLU_PRO.get(subject, OTHER), subject or "unknown"
    )


def adapt_arc(row: dict) -> dict:
    """ARC-Challenge: the shared jsonl (options list) or the Hub rows (``choices: {text, label}``, ``answerKey``)."""
    q = _question(row, "question")
    if isinstance(row.get("choices"), dict):
        labels = [str(x) for x in row["choices"].get("label", [])]
        opts = _opts(row["choices"].get("text", []))
        key = str(row.get("answerKey", "")).strip()
        if key not in labels or len(labels) != len(opts):
            raise BadRow("bad_answer")
        ans = LETTERS[labels.index(key)]
    else:
        opts = _opts(row.get("options") or [])
        ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    return _mcq(_qid(row, "id", text=q), q, opts, ans, OTHER, "ARC-Challenge")


_OPTION_LINE = re.compile(r"^\s*([A-J])[.)]\s+(.*\S)\s*$")


def adapt_scieval(row: dict) -> dict:
    """SciEval multiple-choice: the shared jsonl (options split out) or the Hub rows (options inside the text)."""
    if row.get("type") not in (None, "multiple-choice"):
        raise BadRow("not_multiple_choice")
    subject = str(row.get("subject") or row.get("category") or "").strip().lower()
    if row.get("options"):
        q = _question(row, "question")
        opts = _opts(row["options"])
        ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    else:  # Hub: "question\n\nA. x\nB. y\n...\n\nAnswer:" and answer == ["B"]
        text = _question(row, "question")
        text = re.sub(r"\n\s*Answer:\s*$", "", text.strip())
        lines = text.splitlines()
        opt_lines: list[tuple[str, str]] = []
        while lines and (m := _OPTION_LINE.match(lines[-1])):
            opt_lines.insert(0, (m.group(1), m.group(2)))
            lines.pop()
        if [letter for letter, _ in opt_lines] != list(LETTERS[: len(opt_lines)]):
            raise BadRow("options_not_parsed")
        q = "\n".join(lines).strip()
        if not q:
            raise BadRow("no_question")
        opts = _opts(t for _, t in opt_lines)
        answer = row.get("answer")
        ans = _letter(answer[0] if isinstance(answer, list) and answer else answer, len(opts))
    return _mcq(_qid(row, "id", text=q), q, opts, ans, _SIMPLE.get(subject, OTHER), subject or "unknown")


def _gpqa_order(record_id: str, n: int) -> list[int]:
    """GPQA lists the correct answer first; a seeded shuffle per record gives every letter a fair share."""
    order = list(range(n))
    random.Random(f"gpqa-options:{record_id}").shuffle(order)
    return order


def adapt_gpqa(row: dict) -> dict:
    """GPQA: the shared zip's jsonl (``correct_answer``, ``incorrect_answers``) or the Hub/CSV columns."""
    q = _question(row, "question", "Question")
    if "correct_answer" in row:
        raw = [row.get("correct_answer"), *(row.get("incorrect_answers") or [])]
    else:
        raw = [row.get("Correct Answer")] + [row.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
    if any(r is None or not str(r).strip() for r in raw):
        raise BadRow("option_count")
    qid = _qid(row, "record_id", "Record ID", text=q)
    order = _gpqa_order(qid, len(raw))
    opts = _opts(raw[i] for i in order)
    domain = str(row.get("high_level_domain") or row.get("High-level domain") or "").strip()
    return _mcq(qid, q, opts, LETTERS[order.index(0)], _SIMPLE.get(domain.lower(), OTHER), domain or "unknown")


def adapt_supergpqa(row: dict) -> dict:
    """SuperGPQA: ``options`` (up to 10), ``answer_letter``, ``discipline`` > ``field`` > ``subfield``."""
    q = _question(row, "question")
    opts = _opts(row.get("options") or [])
    ans = _letter(row.get("answer_letter") or row.get("answer"), len(opts))
    disc = str(row.get("discipline") or "").strip()
    fld = str(row.get("field") or "").strip()
    mapped = _SUPERGPQA_FIELDS.get(fld.lower()) or _SUPERGPQA_DISCIPLINES.get(disc.lower(), OTHER)
    return _mcq(_qid(row, "uuid", text=q), q, opts, ans, mapped, f"{disc}/{fld}" if fld else disc or "unknown")


def normalize(adapter: Callable[[dict], dict], row: dict) -> dict:
    """Normalized rows pass through unchanged; anything else goes through the benchmark's adapter."""
    if row.get(NORMALIZED_KEY):
        return row
    return adapter(row)
