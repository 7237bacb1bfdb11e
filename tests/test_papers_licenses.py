"""Licence spellings (Europe PMC terms, JATS URLs, SPDX ids) -> the SPDX id a row carries; the allow-list."""

from __future__ import annotations

import pytest

from wildsci.papers.licenses import allowed, license_family, normalize_license


@pytest.mark.parametrize(
    ("epmc", "jats", "expected"),
    [
        ("cc by", "http://creativecommons.org/licenses/by/4.0/", "CC-BY-4.0"),  # the JATS names the version
        ("cc by", "", "CC-BY"),  # Europe PMC's term alone: the family, no invented version
        ("cc by", "This article is distributed under the terms of the Creative Commons Attribution License", "CC-BY"),
        ("cc0", "https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
        ("cc by", "https://creativecommons.org/licenses/by-nc/4.0/", "CC-BY-NC-4.0"),  # the article's own wins
        ("cc by-nc-nd", None, "CC-BY-NC-ND"),
        (None, "CC BY 4.0", "CC-BY-4.0"),
        ("other", "", ""),
    ],
)
def test_normalize_license(epmc, jats, expected):
    assert normalize_license(epmc, jats) == expected


@pytest.mark.parametrize(
    ("licence", "allow", "ok"),
    [
        ("CC-BY-4.0", ["cc by"], True),
        ("CC-BY", ["cc by"], True),
        ("CC-BY-NC-4.0", ["cc by"], False),  # LICENSE:"cc by" may match it; the allow-list does not
        ("CC-BY-SA-4.0", ["cc by"], False),
        ("CC-BY-3.0", ["CC-BY-4.0"], False),  # an exact id allows that version only
        ("CC0-1.0", ["cc0"], True),
        ("", ["cc by"], False),
    ],
)
def test_allowed(licence, allow, ok):
    assert allowed(licence, allow) is ok


def test_unknown_spellings_have_no_family():
    assert license_family("WHO-OA (not CC)") == "" and license_family("cc by-by") == ""
