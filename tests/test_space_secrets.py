"""Planted tokens never leave the Space, and Ctrl-C stops it in seconds.

``python space/app.py`` starts with a token planted in every spelling of the variables that hold one, and with
a dataset that is not in the WildSci format (an error path at start-up). The test drives every endpoint,
good input and bad, then greps everything the Space wrote or served -- stdout and stderr, the page, its config
and API description, every API response -- for the planted values.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from space_harness import SpaceServer, start_space

#: every spelling of a token variable we know of; each gets its own value so a leak names its source
TOKEN_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "HF_HUB_TOKEN",
    "HF_API_TOKEN",
    "hf_token",
    "WILDSCI_SPACE_HF_TOKEN",
    "OPENAI_API_KEY",
)
PLANTED = {name: f"hf_planted{i}Secret{'x' * 12}{i}" for i, name in enumerate(TOKEN_VARIABLES)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Iterator[SpaceServer]:
    from datasets import Dataset

    workdir = tmp_path_factory.mktemp("space-secrets")
    other = workdir / "not-wildsci"
    (other / "data").mkdir(parents=True)
    Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(str(other / "data" / "test-0.parquet"))
    server = start_space(workdir, {**PLANTED, "WILDSCI_SPACE_DATASET": str(other)})
    yield server
    server.stop()


def _leaks(text: str) -> list[str]:
    return [name for name, value in PLANTED.items() if value in text]


def test_planted_tokens_reach_no_page_response_or_log(planted):
    from gradio_client import Client

    seen: list[str] = []
    for path in ("/", "/config", "/gradio_api/info", "/gradio_api/openapi.json"):
        with urllib.request.urlopen(planted.url + path, timeout=30) as r:
            seen.append(r.read().decode("utf-8", "replace"))
    client = Client(planted.url, verbose=False)
    seen.append(str(client.predict(0, True, 8, 1.0, api_name="/ask")))  # no dataset: an error frame
    seen.append(str(client.predict("Which gas?", "Oxygen\nNitrogen", "B", True, 8, 1.0, api_name="/ask_own")))
    seen.append(str(client.predict("Which gas?", "Oxygen", "(none)", False, 8, 0, api_name="/ask_own")))
    seen.append(str(client.predict("All", "All", api_name="/random_question")))
    seen.append(str(client.predict("Which gas?", "Oxygen\nNitrogen", "B", False, 10**6, 0, api_name="/ask_own")))

    # the error paths were really taken, and said so in one line
    assert "no dataset is loaded" in seen[4] and "give 2 to 10 options" in seen[6]
    assert "max_new_tokens must be between 1 and 1024, got 1000000" in seen[8]
    assert "is not in the WildSci format: no question, options column" in seen[1]  # the notice in the page
    log = planted.log.read_text(errors="replace")
    assert "wildsci space: note: Dataset not available" in log and "no question, options column" in log
    assert "Traceback" not in log
    leaks = {f"output {i}": _leaks(s) for i, s in enumerate(seen) if _leaks(s)}
    assert not leaks, f"planted tokens shown: {leaks}"
    assert not _leaks(log), f"planted tokens in the Space's stdout/stderr: {_leaks(log)}"


#: the kit promises "Ctrl-C ends it in seconds": generous for a loaded 2-core box (the Space's shutdown closes
#: uvicorn and Gradio's queue), far below "hangs until killed"; measured from the signal, not from start-up
CTRL_C_BOUND_S = 45


def test_ctrl_c_stops_the_space_in_seconds_without_a_traceback(planted):
    t0 = time.perf_counter()
    planted.proc.send_signal(signal.SIGINT)
    try:
        planted.proc.wait(timeout=4 * CTRL_C_BOUND_S)
    except subprocess.TimeoutExpired:
        planted.proc.kill()
        pytest.fail(f"the Space was still running {4 * CTRL_C_BOUND_S} s after Ctrl-C")
    took = time.perf_counter() - t0
    log = planted.log.read_text(errors="replace")
    assert took < CTRL_C_BOUND_S, f"the Space took {took:.1f} s to stop after Ctrl-C"
    assert planted.proc.returncode == 130 and "wildsci space: interrupted" in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
    assert not _leaks(log)
