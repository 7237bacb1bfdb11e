"""Paper licences: Europe PMC's terms and JATS licence URLs -> SPDX ids, and the recipe's allow-list.

A licence reaches us in two spellings. Europe PMC's search results carry a short, unversioned term in their
``license`` field (``"cc by"``, ``"cc by-nc-nd"``, ``"cc0"``); the article's JATS states the publisher's licence,
usually as a Creative Commons URL that names the version. Questions inherit their paper's licence
(``source_license`` on every built row), so the row keeps the most precise form we have: the SPDX id from the JATS
URL (``CC-BY-4.0``), else the SPDX family of Europe PMC's term (``CC-BY``: the version is not stated), and always
the raw strings next to it. A recipe allows *families* (or exact ids): ``cc by`` allows every CC-BY version and
nothing with NC/ND/SA, which the Europe PMC query ``LICENSE:"cc by"`` alone does not guarantee.
"""

from __future__ import annotations

import re

from wildsci.builder.jats import _license_from_url

_CC_TERMS = ("by", "nc", "nd", "sa")
_CC_TEXT = r"(?:cc|creative commons)[\s_-]+((?:by|nc|nd|sa)(?:[\s_-]+(?:by|nc|nd|sa))*)(?:[\s_-]+\d\.\d)?"


def license_family(text: str | None) -> str:
    """``"cc by-nc"`` / ``"CC BY-NC 4.0"`` / ``"CC-BY-NC-4.0"`` / a creativecommons.org URL -> ``"CC-BY-NC"``;
    ``"cc0"`` / public-domain dedication -> ``"CC0"``; anything else -> ``""`` (unknown: never allowed)."""
    if not text:
        return ""
    low = text.strip().lower()
    if "publicdomain/zero" in low or re.fullmatch(r"cc[\s_-]?0(?:[\s_-]?1\.0)?", low):
        return "CC0"
    url = re.search(r"creativecommons\.org/licenses/([a-z-]+)/", low)
    if url:
        parts = url.group(1).split("-")
    else:
        m = re.fullmatch(_CC_TEXT, low)
        if not m:
            return ""
        parts = re.split(r"[\s_-]+", m.group(1))
    if not parts or parts[0] != "by" or any(p not in _CC_TERMS for p in parts) or len(set(parts)) != len(parts):
        return ""
    return "CC-" + "-".join(p.upper() for p in parts)


def spdx_license(url_or_text: str | None) -> str:
    """The SPDX id a licence URL or id names (``CC-BY-4.0``, ``CC0-1.0``), or ``""`` when it names no version."""
    if not url_or_text:
        return ""
    from_url = _license_from_url(url_or_text.lower())
    if from_url:
        return from_url
    version = re.search(r"[\s_-](\d\.\d)\s*$", url_or_text)
    family = license_family(url_or_text)  # a whole-string match: "CC BY 4.0", not a sentence that mentions one
    if not version or not family:
        return ""
    return "CC0-1.0" if family == "CC0" else f"{family}-{version.group(1)}"


def normalize_license(epmc_term: str | None, jats_license: str | None) -> str:
    """The licence a row carries: the JATS's versioned SPDX id, else the family of either spelling, else ``""``.

    The publisher's JATS wins over Europe PMC's term when both are known (it is the licence on the article itself).
    """
    exact = spdx_license(jats_license) or (spdx_license(epmc_term) if not license_family(jats_license) else "")
    if exact:
        return exact
    family = license_family(jats_license) or license_family(epmc_term)
    return "CC0-1.0" if family == "CC0" else family


def allowed(license_id: str, allow: list[str]) -> bool:
    """Is ``license_id`` (an SPDX id or family) allowed by the recipe's list of families / exact ids?"""
    if not license_id:
        return False
    family = license_family(license_id)
    for entry in allow:
        if entry.strip().upper() == license_id.upper():
            return True
        want = license_family(entry)
        if want and want == family and not re.search(r"\d\.\d", entry):
            return True
    return False
