"""A bounded load test: 20 concurrent ``gradio_client`` clients on loopback all get answers, no errors.

The Space queues requests (``demo.queue``) and runs at most ``WILDSCI_SPACE_CONCURRENCY`` generations at a
time; the test checks that nobody is dropped or errors while 20 clients wait in that queue, and writes the
wall time to ``tests/artifacts/space_load.json``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from space_harness import SHARED_CONCURRENCY, shared_space

from wildsci.answers import extract_answer
from wildsci.dataset_io import load_wildsci

CLIENTS = 20
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def server():
    return shared_space()  # one server for the Space's API, browser and load tests


def test_20_concurrent_clients_all_get_answers(server):
    from gradio_client import Client

    gold = load_wildsci(str(server.dataset), split="test")["answer"]

    def one(i: int) -> dict:
        t0 = time.perf_counter()
        client = Client(server.url, verbose=False)
        row = i % len(gold)
        text, res, verdict, *_, status = client.predict(row, i % 4 == 0, 8, 1.0, api_name="/ask")
        return {"i": i, "row": row, "text": text, "res": res, "status": status, "s": time.perf_counter() - t0}

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(one, i) for i in range(CLIENTS)]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(timeout=300))
            except Exception as e:  # collected so that the assertion names every failure
                outcomes.append({"error": f"{type(e).__name__}: {e}"})
    wall = time.perf_counter() - t0

    errors = [o["error"] for o in outcomes if "error" in o]
    assert not errors, f"{len(errors)} of {CLIENTS} clients failed: {errors[:3]}"
    for o in outcomes:
        assert o["status"].startswith("✅"), o["status"]
        assert o["res"]["finished"] and o["res"]["gold"] == gold[o["row"]]
        assert o["res"]["letter"] == extract_answer(o["text"], 10).letter
    per_client = sorted(o["s"] for o in outcomes)
    summary = {
        "clients": CLIENTS,
        "concurrency_limit": SHARED_CONCURRENCY,
        "max_new_tokens": 8,
        "wall_s": round(wall, 2),
        "client_s_median": round(per_client[len(per_client) // 2], 2),
        "client_s_max": round(per_client[-1], 2),
        "server_startup_s": round(server.startup_s, 2),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "space_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nSpace load test: {json.dumps(summary)}")
