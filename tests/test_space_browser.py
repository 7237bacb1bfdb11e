"""The Space in a real browser: Playwright drives Debian's headless chromium against ``python space/app.py``.

It picks a question through the discipline / subdomain / question dropdowns, presses "Ask the model" with
side-by-side on, waits for both streamed answers and checks the verdicts shown against the dataset's gold
answer and :func:`wildsci.answers.extract_answer` of the text on the page. A screenshot is saved to
``tests/artifacts/space.png``.

It also looks at what a person sees: the page's emoji (🔬 in the title, 🎲 on a button, ✅ in the status)
must be drawn in colour. Without an emoji font chromium draws them as grey boxes; ``make browser`` installs
chromium and Debian's ``fonts-noto-color-emoji``. Without chromium or playwright the tests skip locally and fail
in CI (``conftest.require``).
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from PIL import Image
from space_harness import known_answers, server
from wildsci_fixtures import assert_png_nontrivial

from wildsci.answers import extract_answer
from wildsci.dataset_io import load_wildsci

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

#: share of saturated pixels in a drawn emoji (measured with Noto Color Emoji: 🔬 0.13, 🎲 0.03, ✅ 0.65);
#: a missing-glyph box or a monochrome fallback glyph is grey or black: 0
MIN_COLOURFUL = 0.01

pytestmark = pytest.mark.browser
__all__ = ["known_answers", "server"]  # fixtures, imported from the harness


@pytest.fixture()
def page(tmp_path):
    require(CHROMIUM.exists(), f"needs Debian chromium at {CHROMIUM} (make browser)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1400},
        )
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(60_000)
            yield pg
        finally:
            ctx.close()


def _choose(page, dropdown_id: str, label: str) -> None:
    page.click(f"#{dropdown_id} input")
    page.click(f"#{dropdown_id} li[role=option][aria-label={label!r}]")


def _emoji_box(page, selector: str, emoji: str) -> dict:
    """The on-page box of the first ``emoji`` drawn inside ``selector`` (a DOM Range over its characters)."""
    box = page.evaluate(
        """([sel, emoji]) => {
            const walker = document.createTreeWalker(document.querySelector(sel), NodeFilter.SHOW_TEXT);
            for (let n = walker.nextNode(); n; n = walker.nextNode()) {
                const i = n.data.indexOf(emoji);
                if (i < 0) continue;
                const r = document.createRange();
                r.setStart(n, i);
                r.setEnd(n, i + emoji.length);
                const b = r.getBoundingClientRect();
                return {x: b.x + window.scrollX, y: b.y + window.scrollY, width: b.width, height: b.height};
            }
            return null;
        }""",
        [selector, emoji],
    )
    assert box and box["width"] > 4 and box["height"] > 4, f"{emoji} not found (or not drawn) in {selector}"
    return box


def _colourful(png: bytes) -> float:
    """Share of pixels with a saturated colour (max-min channel spread over 60)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).mean())


def _verdict_ok(verdict: str, text: str, gold: str) -> None:
    """The verdict on the page says what extract_answer says about the text on the page."""
    e = extract_answer(text, 10)
    assert f"Gold answer: {gold}" in verdict
    if e.letter:
        assert f"Model answer: {e.letter}" in verdict
    else:
        assert "Model answer: none" in verdict
    assert ("Correct" in verdict.replace("Incorrect", "")) == (e.letter == gold)
    assert ("Incorrect" in verdict) == (e.letter != gold)


def test_pick_a_question_ask_and_see_the_verdict_in_chromium(server, page):
    test = load_wildsci(str(server.dataset), split="test")
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#ask-btn")
    assert "WildSci" in page.title()

    _choose(page, "discipline", "Biology")
    page.wait_for_function("document.querySelector('#row input').value !== '0'")
    _choose(page, "subdomain", "Neuroscience")
    row = next(i for i in range(len(test)) if test[i]["nc_subdomain"] == "Neuroscience")
    page.wait_for_function(f"document.querySelector('#row input').value === '{row}'")
    _choose(page, "pick", page.locator("#pick input").input_value())  # the question picker lists it
    view = page.locator("#question-view")
    assert "Biology › Neuroscience" in view.inner_text()
    assert test[row]["question"] in view.inner_text()

    assert page.locator("#compare input").is_checked(), "two different models: side by side is on"
    page.click("#ask-btn")
    page.wait_for_function(
        "['#ft-verdict', '#base-verdict'].every(s => document.querySelector(s).innerText.includes('Gold answer'))"
    )
    gold = test[row]["answer"]
    for side in ("ft", "base"):
        text = page.locator(f"#{side}-text textarea").input_value()
        assert text.strip(), f"no streamed text on the {side} side"
        _verdict_ok(page.locator(f"#{side}-verdict").inner_text(), text, gold)
    verdict = page.locator("#ft-verdict").inner_text()
    assert f"Voting class: {test[row]['voting_type']}" in verdict
    assert re.search(r"answered in [\d.]+ s on cpu", page.locator("#status").inner_text())

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "space.png"), full_page=True)
    assert_png_nontrivial(ARTIFACTS / "space.png")


def test_emoji_are_drawn_in_colour_not_as_boxes(server, page):
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_selector("#ask-btn")
    page.click("#ask-btn")  # the status line gets its ✅ when the answer is in
    page.wait_for_function("document.querySelector('#status').innerText.includes('answered in')")
    seen = {}
    for selector, emoji in (("h1", "🔬"), ("#random-btn", "🎲"), ("#status", "✅")):
        box = _emoji_box(page, selector, emoji)
        seen[emoji] = _colourful(page.screenshot(clip=box, full_page=True))
    grey = {e: round(v, 3) for e, v in seen.items() if v < MIN_COLOURFUL}
    assert not grey, (
        f"emoji drawn without colour (share of coloured pixels {grey}): the browser has no emoji font -- "
        "install Debian's fonts-noto-color-emoji (make browser)"
    )


def test_correct_and_incorrect_verdicts_as_a_person_sees_them(known_answers, page):
    """Against the app whose finetuned side answers the gold letter and whose base side gives no letter."""
    k = known_answers
    page.goto(k.url, wait_until="domcontentloaded")
    page.wait_for_selector("#ask-btn")
    page.fill("#row input", str(k.row))
    page.press("#row input", "Enter")
    page.wait_for_function(f"document.querySelector('#question-view').innerText.includes('#{k.row}')")
    assert page.locator("#pick input").input_value().startswith(f"#{k.row} · "), "the picker follows the number"
    page.click("#ask-btn")
    page.wait_for_function(
        "['#ft-verdict', '#base-verdict'].every(s => document.querySelector(s).innerText.includes('Gold answer'))"
    )
    ft, base = page.locator("#ft-verdict").inner_text(), page.locator("#base-verdict").inner_text()
    assert f"Model answer: {k.letter} · Gold answer: {k.letter} · ✅ Correct" in ft
    assert f"Model answer: none — no answer letter found · Gold answer: {k.letter} · ❌ Incorrect" in base
    assert page.locator("#ft-text textarea").input_value().endswith(f"Answer: {k.letter}")
    for selector, emoji in (("#ft-verdict", "✅"), ("#base-verdict", "❌")):
        colour = _colourful(page.screenshot(clip=_emoji_box(page, selector, emoji), full_page=True))
        assert colour >= MIN_COLOURFUL, f"{emoji} in {selector} is not drawn in colour ({colour:.3f})"
    page.screenshot(path=str(ARTIFACTS / "space_verdicts.png"), full_page=True)


def test_own_question_and_bad_input_in_chromium(server, page):
    page.goto(server.url, wait_until="domcontentloaded")
    page.get_by_role("tab", name="Your own question").click()
    page.fill("#own-q textarea", "Which gas makes up most of Earth's atmosphere?")
    page.fill("#own-options textarea", "Oxygen")
    page.click("#own-btn")
    page.wait_for_function("document.querySelector('#status').innerText.includes('give 2 to 10 options')")
    assert "one per line (got 1)" in page.locator("#status").inner_text()

    page.fill("#own-options textarea", "A. Oxygen\nB. Nitrogen\nC. Argon")
    _choose(page, "own-gold", "B")
    page.click("#own-btn")
    page.wait_for_function("document.querySelector('#ft-verdict').innerText.includes('Gold answer')")
    text = page.locator("#ft-text textarea").input_value()
    assert extract_answer(text, 3).status != "ok" or extract_answer(text, 3).letter in "ABC"
    _verdict_ok(page.locator("#ft-verdict").inner_text(), text, "B")
