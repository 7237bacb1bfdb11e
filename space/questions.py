"""The questions the Space asks: a browsable WildSci split, and questions users type (checked against limits).

A dataset that is not in the WildSci format (no ``question``/``options`` columns) is refused when it is
loaded, in one line naming what is missing, instead of failing later on the first question shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from config import ALL, MAX_LISTED, SpaceConfig

from wildsci.answers import LETTERS
from wildsci.dataset_io import load_wildsci
from wildsci.errors import UserError
from wildsci.schema import options_list
from wildsci.taxonomy import load_taxonomy

#: columns the Space cannot do without; the others (answer, voting, taxonomy, id) are shown when present
REQUIRED_COLUMNS = ("question", "options")


@dataclass
class Question:
    text: str
    options: list[str]
    gold: str | None = None
    voting_type: str | None = None
    voting_answers: list[str] = field(default_factory=list)
    discipline: str = ""
    subdomain: str = ""
    question_id: str = ""
    where: str = "your question"


class QuestionBank:
    """One split of a WildSci-format dataset, indexed by discipline and subdomain."""

    def __init__(self, ds, ref: str, split: str):
        self.ds, self.ref, self.split = ds, ref, split
        self.disc = list(ds["discipline"]) if "discipline" in ds.column_names else [""] * len(ds)
        self.sub = list(ds["nc_subdomain"]) if "nc_subdomain" in ds.column_names else [""] * len(ds)

    @classmethod
    def load(cls, ref: str, split: str) -> QuestionBank:
        """Load ``split`` ('' = the first of test, validation, train that exists). Raises :class:`UserError`."""
        dsd = load_wildsci(ref)
        if split and split not in dsd:
            have = ", ".join(dsd)
            raise UserError(f"dataset {ref!r} has no split {split!r} (has {have}) -- set WILDSCI_SPACE_SPLIT")
        split = split or next((s for s in ("test", "validation", "train") if s in dsd), next(iter(dsd)))
        ds = dsd[split]
        missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
        if missing:
            raise UserError(
                f"dataset {ref!r} split {split!r} is not in the WildSci format: no {', '.join(missing)} column "
                f"(has {', '.join(ds.column_names[:8])}) -- point WILDSCI_SPACE_DATASET at a `wildsci build` output"
            )
        if len(ds) == 0:
            raise UserError(f"dataset {ref!r} split {split!r} is empty")
        return cls(ds, ref, split)

    def __len__(self) -> int:
        return len(self.ds)

    def disciplines(self) -> list[str]:
        tax, present = load_taxonomy().disciplines, set(self.disc)
        return [ALL] + [d for d in tax if d in present] + sorted(present - set(tax) - {""})

    def subdomains(self, discipline: str) -> list[str]:
        rows = self.rows(discipline, ALL)
        present = {self.sub[i] for i in rows}
        order = [s.name for s in load_taxonomy().subdomains]
        return [ALL] + [s for s in order if s in present] + sorted(present - set(order) - {""})

    def rows(self, discipline: str, subdomain: str) -> list[int]:
        return [
            i
            for i in range(len(self.ds))
            if discipline in (ALL, "", None, self.disc[i]) and subdomain in (ALL, "", None, self.sub[i])
        ]

    def choices(self, rows: list[int], include: int | None = None) -> list[tuple[str, int]]:
        shown = rows[:MAX_LISTED]
        if include is not None and include not in shown:
            shown = [include] + shown
        return [(f"#{i} · {_short(self.ds[i]['question'], 90)}", i) for i in shown]

    def question(self, i: int) -> Question:
        r = self.ds[i]
        return Question(
            text=r["question"],
            options=options_list(r["options"]),
            gold=r.get("answer") or None,
            voting_type=r.get("voting_type") or None,
            voting_answers=list(r.get("voting_answers") or []),
            discipline=r.get("discipline", ""),
            subdomain=r.get("nc_subdomain", ""),
            question_id=r.get("question_id") or "",
            where=f"{self.ref} · {self.split} #{i}",
        )


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


_OPTION_LABEL = re.compile(r"^\s*(?:[A-J][.):]|\([A-J]\))\s+")


def parse_own_question(question: str, options_text: str, gold: str, cfg: SpaceConfig) -> Question:
    """A typed question, checked against the limits. Raises :class:`UserError` with what to fix."""
    question = str(question or "").strip()  # str(): values sent through the API are not always strings
    if not question:
        raise UserError("type a question first")
    if len(question) > cfg.max_question_chars:
        raise UserError(f"the question has {len(question)} characters; the limit is {cfg.max_question_chars}")
    # Options one per line; a leading "A." / "(B)" label is dropped because the prompt letters them itself.
    opts = [_OPTION_LABEL.sub("", ln).strip() for ln in str(options_text or "").splitlines() if ln.strip()]
    if not 2 <= len(opts) <= len(LETTERS):
        raise UserError(f"give 2 to {len(LETTERS)} options, one per line (got {len(opts)})")
    for k, o in enumerate(opts):
        if len(o) > cfg.max_option_chars:
            raise UserError(f"option {LETTERS[k]} has {len(o)} characters; the limit is {cfg.max_option_chars}")
    norm = [" ".join(o.lower().split()) for o in opts]
    if len(set(norm)) != len(norm):
        raise UserError("two options are the same -- every option must be different")
    gold = str(gold or "").strip().upper()
    if gold in ("", "(NONE)", "NONE"):
        gold = ""
    elif gold not in LETTERS[: len(opts)]:
        raise UserError(f"the correct answer {gold!r} is not one of the option letters A-{LETTERS[len(opts) - 1]}")
    return Question(text=question, options=opts, gold=gold or None)
