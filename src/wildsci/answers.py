"""The one answer parser: model text -> chosen option letter (A-J), or a reason why there is none.

Every consumer (the GRPO reward, every lighteval task, the Space, the voting stage of the dataset
builder) calls :func:`extract_answer`, so a completion that earns reward during training is scored the
same way at evaluation time. Keep it that way: do not write a second parser anywhere.

Design, in order of trust:

1. reasoning blocks (``<think>...</think>``, ``<reasoning>...</reasoning>``) are removed first; an
   unclosed ``<think>`` means the model never finished thinking, so there is no answer;
2. ``\\boxed{X}`` (the format we ask for);
3. explicit answer phrases: ``Answer: C``, ``The answer is (C)``, ``The correct option is D.``,
   ``Option B is correct``, ``I choose E``;
4. a bold lone letter ``**C**``;
5. on the last non-empty line only: a parenthesised letter ``(C)`` or a lone letter ``C`` / ``C.``;
6. a reply that opens with one option (``A. About 9.8 m/s^2 downward``) and lists no other.

The first tier that matches decides. Inside that tier, two *different* letters mean the model hedged
(``\\boxed{A}`` ... ``\\boxed{B}``, ``The answer is A or B``): the result is ``ambiguous`` and scores 0.
This matters for RL: a policy must not be able to collect reward by listing several letters.
A letter beyond the question's option count (``E`` on a 4-option question) is ``out_of_range``.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LETTERS = "ABCDEFGHIJ"

_L = "[A-J]"
# a letter that is a token of its own: not part of a word ("Cell", "DNA"), not "I think" / "A cell".
_LETTER_END = r"(?![A-Za-z0-9'’\-])"
_NOT_PRONOUN_I = r"(?!I\s+(?:think|believe|would|am|guess|will|have|need|can|must|'m|’m)\b)"
_NOT_ARTICLE_A = r"(?!A\s+(?!or\b|and\b|then\b)[a-z])"
_OPEN = r"[\s:=]*(?:\*\*|__|\$)?\s*(?:\\text(?:bf)?\{)?\s*[\(\[]?"
_CLOSE = r"[\)\]]?\}?"
_SECOND = rf"(?:[\)\]]?\s*(?:,|/|&|\bor\b|\band\b|\bthen\b)\s*[\(\[]?({_L}){_LETTER_END})?"

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_BOX_CONTENT = re.compile(
    rf"^\s*(?:\\text(?:bf)?\{{)?\s*(?:(?i:option|choice)\s+)?[\(\[]?({_L})[\)\]]?\}}?{_LETTER_END}"
    rf"(?:\s*(?:,|/|&|\bor\b|\band\b)\s*[\(\[]?({_L}){_LETTER_END})?"
)
_PHRASES = [
    # "Answer: C", "The final answer is (C)", "correct answer is **C**", "answer is option C"
    re.compile(
        rf"(?i:answer)(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*(?:(?i:option|choice|letter)\s*)?"
        rf"{_OPEN}{_NOT_PRONOUN_I}{_NOT_ARTICLE_A}({_L}){_CLOSE}{_LETTER_END}{_SECOND}"
    ),
    # "The correct option is D.", "the best choice is (B)"
    re.compile(
        rf"(?i:correct|right|best|final)\s+(?i:option|choice|letter)(?:\s+(?i:is|would\s+be))?"
        rf"{_OPEN}{_NOT_PRONOUN_I}{_NOT_ARTICLE_A}({_L}){_CLOSE}{_LETTER_END}{_SECOND}"
    ),
    # "Option B is correct", "(B) is the correct answer"
    re.compile(
        rf"(?:(?i:option|choice)\s+)?[\(\[]?({_L})[\)\]]?{_LETTER_END}\s+(?i:is)\s+(?i:the\s+)?"
        rf"(?i:correct|right|best|answer)\b()"
    ),
    # "I choose E", "I would pick option C", "I'll go with (B)"
    re.compile(
        rf"\bI(?:\s+(?i:would|will)|'ll|’ll)?\s+(?i:choose|pick|select|go\s+with)\s+(?:(?i:option|choice)\s+)?"
        rf"[\(\[]?({_L})[\)\]]?{_LETTER_END}{_SECOND}"
    ),
]
_BOLD = re.compile(rf"(?:\*\*|__)\s*[\(\[]?({_L})[\)\]]?(?:[.:)]\s*[^*\n]*)?(?:\*\*|__)")
_PAREN = re.compile(rf"\(({_L})\)")
_LONE = re.compile(rf"^\W*[\(\[]?({_L})[\)\]]?[.:)]?\W*$")
_LEADING = re.compile(rf"^\s*(?:\*\*)?[\(\[]?({_L})(?:[.:)\]]|\*\*)\s+\S", re.MULTILINE)


@dataclass(frozen=True)
class Extraction:
    """What the parser decided. ``letter`` is set only when ``status == "ok"``."""

    letter: str | None
    status: str  # ok | none | ambiguous | out_of_range | unfinished_reasoning
    method: str = ""  # which tier decided: boxed, phrase, bold, paren, lone, leading

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def strip_reasoning(text: str) -> str | None:
    """Remove closed reasoning blocks; ``None`` when a reasoning block was opened and never closed."""
    text = _THINK_BLOCK.sub(" ", text)
    if _THINK_OPEN.search(text):
        return None
    # A closing tag with no opening one (chat templates often put "<think>" in the prompt): keep what follows.
    m = re.search(r"</(?:think|thinking|reasoning)>", text, re.IGNORECASE)
    return text[m.end() :] if m else text


def _decide(letters: list[str], method: str, num_options: int) -> Extraction:
    distinct = sorted(set(letters))
    if len(distinct) > 1:
        return Extraction(None, "ambiguous", method)
    letter = distinct[0]
    if LETTERS.index(letter) >= num_options:
        return Extraction(None, "out_of_range", method)
    return Extraction(letter, "ok", method)


def extract_answer(text: str | None, num_options: int = 10) -> Extraction:
    """Extract the chosen option letter from a model's answer text.

    ``num_options`` is the number of options the question had (2-10); letters beyond it are rejected.
    """
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be between 1 and {len(LETTERS)}, got {num_options}")
    if not text or not text.strip():
        return Extraction(None, "none")
    body = strip_reasoning(text)
    if body is None:
        return Extraction(None, "unfinished_reasoning")

    boxed = [m.group(1) for m in _BOXED.finditer(body)]
    if boxed:
        letters: list[str] = []
        for content in boxed:
            m = _BOX_CONTENT.match(content)
            if m:
                letters.extend(g for g in m.groups() if g)
        if letters:
            return _decide(letters, "boxed", num_options)
        return Extraction(None, "none", "boxed")  # boxed something that is not a letter: no guessing

    for pattern in _PHRASES:
        letters = [g for m in pattern.finditer(body) for g in m.groups() if g]
        if letters:
            return _decide(letters, "phrase", num_options)

    letters = [m.group(1) for m in _BOLD.finditer(body)]
    if letters:
        return _decide(letters, "bold", num_options)

    lines = [ln for ln in body.strip().splitlines() if ln.strip()]
    if lines:
        last = lines[-1]
        m = _LONE.match(last)
        if m:
            return _decide([m.group(1)], "lone", num_options)
        letters = _PAREN.findall(last)
        if letters:
            return _decide(letters, "paren", num_options)
        # "A. About 9.8 m/s^2 downward": the reply opens with an option. Only when no other line opens with an
        # option letter -- a reply that lists several options is not choosing one.
        leading = _LEADING.findall(body)
        if leading and _LEADING.match(lines[0]) and len(leading) == 1:
            return _decide(leading, "leading", num_options)
    return Extraction(None, "none")


def extract_letter(text: str | None, num_options: int = 10) -> str | None:
    """The chosen letter, or ``None`` when the parser cannot decide (see :func:`extract_answer`)."""
    return extract_answer(text, num_options).letter


def letter_for(index: int) -> str:
    """0 -> "A" ... 9 -> "J"."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"option index {index} is outside A-J")
    return LETTERS[index]


def is_boxed_answer(text: str | None) -> bool:
    """True when the text ends its answer in the requested ``\\boxed{X}`` form (used by the format reward)."""
    if not text:
        return False
    e = extract_answer(text)
    return e.ok and e.method == "boxed"


#: one letter above this share of a policy's answers reads as a collapse onto that letter (training guard, report,
#: benchmarks): with 4 to 10 options a policy that reads the questions stays well below it on balanced gold letters
COLLAPSE_SHARE = 0.40


def letter_share(letters: Mapping[str, float], gold_letters: Mapping[str, float]) -> dict[str, Any]:
    """The most frequent answer letter, its share of the answers, and its excess over that letter's gold share.

    Why: a policy that answers one letter to everything scores that letter's gold share by chance while its format
    reward looks perfect; the excess says how far the answers moved from what the questions ask. Counts or shares
    both work. Empty when no answer could be read (nothing to judge, so nothing is written). Ties go to the earlier
    letter.
    """
    n, n_gold = sum(letters.values()), sum(gold_letters.values())
    if not n:
        return {}
    top = max(sorted(letters), key=lambda k: (letters[k], -LETTERS.index(k) if k in LETTERS else 0))
    share = letters[top] / n
    gold_share = gold_letters.get(top, 0) / n_gold if n_gold else 0.0
    return {"top_letter": top, "top_letter_share": share, "top_letter_excess": share - gold_share}


class LetterWindow:
    """Answer-letter and gold-letter counts pooled over the last ``size`` batches.

    Why one helper: the one-letter guard (a batch = a logged step) and the ``letter_balance`` reward (a batch = a
    reward call) judge the same thing, a letter's share of the answers against its share of the gold letters, over
    a sliding window.
    """

    def __init__(self, size: int) -> None:
        self._batches: deque[tuple[Counter, Counter]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._batches)

    def add(self, letters: Mapping[str, int], gold_letters: Mapping[str, int]) -> tuple[Counter, Counter]:
        """Add one batch's counts; return the window's pooled (answer letters, gold letters)."""
        self._batches.append((Counter(letters), Counter(gold_letters)))
        answered: Counter = Counter()
        gold: Counter = Counter()
        for a, g in self._batches:
            answered.update(a)
            gold.update(g)
        return answered, gold
