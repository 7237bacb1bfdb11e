"""What the page shows: a question, and the verdict on a model's answer (letter, gold, correct, voting class).

The letter comes from :func:`wildsci.answers.extract_answer`, the parser that scored the model during GRPO
training and evaluation, so the demo never disagrees with the numbers in the report. Text from papers and
users is escaped: it shows as typed and cannot inject HTML into the page.
"""

from __future__ import annotations

import html

from questions import Question

from wildsci.answers import LETTERS, extract_answer
from wildsci.schema import VOTING_TYPES

_NO_LETTER = {  # why extract_answer found no letter, in words (a missing letter scores 0, as in training)
    "none": "no answer letter found",
    "ambiguous": "more than one letter given",
    "out_of_range": "a letter beyond the options",
    "unfinished_reasoning": "the reasoning never finished",
}


def esc(text: str) -> str:
    """Escape ``<``/``>``/``&`` so that text from papers or users shows as typed and cannot inject HTML."""
    return html.escape(str(text), quote=False)


def render_question(q: Question | None) -> str:
    if q is None:
        return "*No question selected.*"
    head = " › ".join(x for x in (q.discipline, q.subdomain) if x)
    lines = [f"**{esc(head)}**" if head else "", "", esc(q.text), ""]
    lines += [f"- **{LETTERS[k]}.** {esc(o)}" for k, o in enumerate(q.options)]
    meta = q.where + (f" · id `{q.question_id}`" if q.question_id else "")
    lines += ["", f"<sub>{esc(meta)}</sub>"]
    return "\n".join(lines)


def judge(q: Question, text: str, model: str, finished: bool, n_tokens: int | None = None) -> dict:
    """The structured verdict for one model's answer (what the API returns and the page renders)."""
    e = extract_answer(text, len(q.options))
    res = {
        "model": model,
        "finished": finished,
        "letter": e.letter,
        "extraction": e.status,
        "method": e.method,
        "gold": q.gold,
        "correct": (e.letter == q.gold) if q.gold else None,
        "num_options": len(q.options),
        "voting_type": q.voting_type,
        "voters_correct": sum(v == q.gold for v in q.voting_answers) if q.gold and q.voting_answers else None,
        "voters": len(q.voting_answers) or None,
        "question_id": q.question_id or None,
    }
    if n_tokens is not None:
        res["new_tokens"] = n_tokens
    return res


def render_verdict(res: dict) -> str:
    if not res:
        return ""
    if not res.get("finished"):
        return "*thinking…*"
    if res.get("error"):
        return f"⚠️ {esc(res['error'])}"
    got = f"**{res['letter']}**" if res["letter"] else f"none — {_NO_LETTER.get(res['extraction'], res['extraction'])}"
    parts = [f"Model answer: {got}"]
    if res["gold"]:
        parts.append(f"Gold answer: **{res['gold']}**")
        parts.append("✅ **Correct**" if res["correct"] else "❌ **Incorrect**")
    else:
        parts.append("no gold answer given")
    out = " · ".join(parts)
    if res.get("voting_type"):
        vt = res["voting_type"]
        votes = f" ({res['voters_correct']}/{res['voters']} voters chose the gold answer)" if res["voters"] else ""
        out += f"\n\nVoting class: **{vt}**{votes} — {VOTING_TYPES.get(vt, '')}"
    return out
