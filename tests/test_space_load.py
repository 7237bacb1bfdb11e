"""A bounded load test: 20 concurrent ``gradio_client`` clients on loopback against ``python space/app.py``.

The Space queues requests (``demo.queue``) and runs at most ``WILDSCI_SPACE_CONCURRENCY`` generations at a
time. The server logs ``generating (N in flight)`` as each generation starts; the test reads those lines for
the load it sent and checks that the limit was reached and never exceeded (a missing or wrong limit fails),
that nobody was dropped or got an error, and writes the measurements to ``tests/artifacts/space_load.json``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from space_harness import SHARED_CONCURRENCY, server

from wildsci.dataset_io import load_wildsci

__all__ = ["server"]  # the shared-server fixture, imported from the harness

CLIENTS = 20
MAX_NEW_TOKENS = 32  # long enough that a generation outlasts the queue's hand-over to the next request
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IN_FLIGHT = re.compile(r"wildsci space: generating \((\d+) in flight\)")


def test_20_concurrent_clients_are_served_at_the_concurrency_limit(server):
    from gradio_client import Client

    gold = load_wildsci(str(server.dataset), split="test")["answer"]
    log_start = len(server.log.read_bytes())

    # every client connects first, then all ask at once: the queue then holds more requests than the limit however
    # slowly this machine starts 20 clients (on a loaded machine, staggered clients could each find the queue empty)
    start = threading.Barrier(CLIENTS, timeout=300)

    def one(i: int) -> dict:
        client = Client(server.url, verbose=False)
        start.wait()
        t0 = time.perf_counter()
        row = i % len(gold)
        text, res, verdict, *_, status = client.predict(row, i % 4 == 0, MAX_NEW_TOKENS, 1.0, api_name="/ask")
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

    in_flight = [int(n) for n in IN_FLIGHT.findall(server.log.read_bytes()[log_start:].decode(errors="replace"))]
    assert len(in_flight) == CLIENTS, f"expected {CLIENTS} generations in the server log, found {len(in_flight)}"
    peak = max(in_flight)
    assert peak <= SHARED_CONCURRENCY, f"{peak} generations ran at once; the limit is {SHARED_CONCURRENCY}"
    assert peak == SHARED_CONCURRENCY, f"with {CLIENTS} clients waiting only {peak} generations ever ran at once"

    per_client = sorted(o["s"] for o in outcomes)
    summary = {
        "clients": CLIENTS,
        "concurrency_limit": SHARED_CONCURRENCY,
        "peak_in_flight": peak,
        "max_new_tokens": MAX_NEW_TOKENS,
        "wall_s": round(wall, 2),
        "client_s_median": round(per_client[len(per_client) // 2], 2),
        "client_s_max": round(per_client[-1], 2),
        "server_startup_s": round(server.startup_s, 2),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "space_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nSpace load test: {json.dumps(summary)}")
