"""Stage 7, label: discipline and subdomain from the taxonomy (``taxonomy.yaml``), by LLM or by the paper's own labels.

The classifier is a constrained choice among the 26 subdomain names (each shown with its description), so
its answer is always a taxonomy entry; discipline and ``nc_domain`` follow from the subdomain. When the
LLM is off, fails, or names something else, the paper's own field labels (arXiv categories, PLOS/eLife
subject terms) are mapped with :meth:`Taxonomy.match_field_labels`. Rows record which one decided in
``label_source`` (``llm`` or ``field_labels``); a row neither can place is dropped as ``unlabelable``.

By default one call labels a whole paper (title plus a few of its questions): every question of a paper
then shares its label, it costs one call per paper instead of one per question, and the result does not
depend on how papers are sharded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from wildsci.llm.backends import ChatRequest, LLMClient
from wildsci.recipes import check_count
from wildsci.taxonomy import Subdomain, load_taxonomy

DROP_REASONS = {
    "unlabelable": "neither the classifier nor the paper's field labels map to a taxonomy subdomain",
}

PROMPT = """Classify the research below into exactly one scientific subdomain from this list.

Subdomains:
{subdomains}

Paper title: {title}
{questions}
Answer with the subdomain name only."""


@dataclass
class LabelConfig:
    """How rows get their discipline / subdomain."""

    use_llm: bool = field(default=True, metadata={"help": "ask the LLM classifier (constrained to the 26 subdomains)"})
    fallback_to_field_labels: bool = field(
        default=True, metadata={"help": "use the paper's own field labels when the classifier is off or fails"}
    )
    per_paper: bool = field(
        default=True, metadata={"help": "one classifier call per paper (true) or per question (false)"}
    )
    questions_in_prompt: int = field(
        default=3, metadata={"help": "per-paper mode: how many of the paper's questions the classifier sees"}
    )

    def __post_init__(self) -> None:
        if not self.use_llm and not self.fallback_to_field_labels:
            raise ValueError("label: use_llm and fallback_to_field_labels are both false -- nothing could label a row")
        check_count("label.questions_in_prompt", self.questions_in_prompt, 0, 100, "questions per classifier prompt")


def subdomain_menu() -> str:
    return "\n".join(f"- {s.name}: {s.description}" for s in load_taxonomy().subdomains)


def _request(title: str, questions: list[str]) -> ChatRequest:
    qs = "".join(f"Question {i + 1}: {q}\n" for i, q in enumerate(questions))
    content = PROMPT.format(subdomains=subdomain_menu(), title=title.strip() or "(untitled)", questions=qs)
    return ChatRequest(
        messages=[{"role": "user", "content": content}], choices=[s.name for s in load_taxonomy().subdomains]
    )


def _apply(row: dict, sub: Subdomain, source: str) -> dict:
    return {
        **row,
        "discipline": sub.discipline,
        "nc_domain": sub.nc_domain,
        "nc_subdomain": sub.name,
        "label_source": source,
    }


def label_rows(rows: list[dict], client: LLMClient | None, cfg: LabelConfig) -> tuple[list[dict], dict[str, int]]:
    """Add ``discipline``, ``nc_domain``, ``nc_subdomain`` (and ``label_source``) to every row that can be placed."""
    tax = load_taxonomy()
    llm_label: dict[int, Subdomain] = {}
    if cfg.use_llm and client is not None and rows:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            gkey = str(r.get("paper_id")) if cfg.per_paper else f"{r.get('paper_id')}\x00{i}"
            groups.setdefault(gkey, []).append(i)
        members = list(groups.values())
        reqs = []
        for idx in members:
            first = rows[idx[0]]
            qs = (
                [rows[i]["question"] for i in idx][: cfg.questions_in_prompt] if cfg.per_paper else [first["question"]]
            )
            reqs.append(_request(str(first.get("title") or ""), qs))
        for idx, res in zip(members, client.chat(reqs, desc="label subdomains"), strict=True):
            if res.text is None:
                continue
            try:
                sub = tax.subdomain(res.text)
            except KeyError:
                continue
            for i in idx:
                llm_label[i] = sub
    out, drops = [], Counter()
    for i, row in enumerate(rows):
        if i in llm_label:
            out.append(_apply(row, llm_label[i], "llm"))
            continue
        sub = tax.match_field_labels(row.get("field_labels") or []) if cfg.fallback_to_field_labels else None
        if sub is None:
            drops["unlabelable"] += 1
        else:
            out.append(_apply(row, sub, "field_labels"))
    return out, dict(drops)
