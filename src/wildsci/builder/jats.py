"""JATS XML (the PubMed Central / publisher full-text format) -> a paper dict with main-text sections only.

Its own module because JATS is a format of its own (namespaces, nested sections, licence elements); the
ingest stage calls :func:`parse_jats` for ``.xml`` files and for text columns that hold JATS.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any


def parse_jats(xml_text: str) -> dict[str, Any]:
    """JATS XML full text -> ``{paper_id, title, license, field_labels, sections}`` (main text only).

    Drops ``<back>`` (references, acknowledgements), ``<fig>``/``<table-wrap>`` (captions), ``<xref>`` citation
    markers, footnotes and formulas' MathML; section titles are kept to filter e.g. "Acknowledgments" in ``<body>``.
    """
    root = ET.fromstring(xml_text)
    for el in root.iter():  # strip namespaces (mml:, xlink:) so paths stay simple
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]

    def text_of(el: ET.Element | None) -> str:
        return " ".join("".join(el.itertext()).split()) if el is not None else ""

    meta = root.find("front/article-meta")
    pid = ""
    if meta is not None:
        for aid in meta.findall("article-id"):
            if aid.get("pub-id-type") in ("doi", "pmcid", "pmid", "publisher-id", None) and (aid.text or "").strip():
                pid = aid.text.strip()
                if aid.get("pub-id-type") == "doi":
                    break
    title = text_of(meta.find("title-group/article-title")) if meta is not None else ""
    lic_el = meta.find("permissions/license") if meta is not None else None
    license_ = ""
    if lic_el is not None:  # xlink:href, or JATS 1.2's <ali:license_ref>, or the licence sentence
        href = next((v for k, v in lic_el.attrib.items() if k.endswith("href")), "")
        ref = lic_el.find("license_ref")
        license_ = _license_from_url(href) or _license_from_url(text_of(ref)) or text_of(lic_el)[:80]
    labels = [text_of(s) for s in root.iter("subject")] if meta is not None else []
    labels += [text_of(k) for k in root.iter("kwd")]

    def strip_non_prose(el: ET.Element) -> None:
        for parent in list(el.iter()):
            for child in list(parent):
                tag = child.tag if isinstance(child.tag, str) else ""
                drop_tags = ("fig", "table-wrap", "fn-group", "fn", "disp-formula", "inline-formula", "ref-list")
                if tag in drop_tags or (tag == "xref" and child.get("ref-type") in ("bibr", "fig", "table", None)):
                    tail = child.tail
                    parent.remove(child)
                    if tail:  # keep the text that followed the removed element
                        prev = list(parent)
                        if prev:
                            prev[-1].tail = (prev[-1].tail or "") + tail
                        else:
                            parent.text = (parent.text or "") + tail

    sections: list[tuple[str, str]] = []
    abstract = meta.find("abstract") if meta is not None else None
    if abstract is not None:
        strip_non_prose(abstract)
        sections.append(("Abstract", "\n\n".join(text_of(p) for p in abstract.iter("p"))))
    body = root.find("body")
    if body is not None:
        strip_non_prose(body)

        def walk(el: ET.Element, heading: str) -> None:
            paras = []
            for child in el:
                if child.tag == "p":
                    paras.append(text_of(child))
                elif child.tag == "sec":
                    if paras:
                        sections.append((heading, "\n\n".join(paras)))
                        paras = []
                    sub = text_of(child.find("title"))
                    walk(child, f"{heading} / {sub}" if heading and sub else sub or heading)
            if paras:
                sections.append((heading, "\n\n".join(paras)))

        walk(body, "")
    return {"paper_id": pid, "title": title, "license": license_, "field_labels": labels, "sections": sections}


def _license_from_url(url: str) -> str:
    m = re.search(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d\.\d)", url)
    if not m:
        return ""
    kind, version = m.group(2), m.group(3)
    return "CC0-1.0" if kind == "zero" else f"CC-{kind.upper()}-{version}"
