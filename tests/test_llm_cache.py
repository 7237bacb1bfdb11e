"""The on-disk call cache: stable keys, durable commits, SIGKILL safety, sharing across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from wildsci.llm.cache import CallCache, CallKey, call_key

MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "What is 2+2?"}]
SAMPLING = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 16, "seed": 0}


def key(**change) -> str:
    call = {"backend": "openai", "model": "m", "messages": MSGS, "sampling": SAMPLING, "json_schema": None}
    return call_key(CallKey(**{**call, "choices": None, "sample_index": 0, **change}))


def test_key_covers_every_input_and_ignores_dict_order():
    base = key()
    assert base == key(sampling=dict(reversed(list(SAMPLING.items()))))
    variants = [
        key(backend="transformers"),
        key(model="m2"),
        key(messages=MSGS[1:]),
        key(sampling={**SAMPLING, "temperature": 0.0}),
        key(sampling={**SAMPLING, "seed": 1}),
        key(json_schema={"type": "object"}),
        key(choices=["A", "B"]),
        key(sample_index=1),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_key_is_stable_across_versions():
    """A changed key silently repeats every cached (paid) call and reseeds every sample: pin one."""
    assert key() == "891e183c88130ed7a8d953d8c70ad798578fea35ec48b2f15b840f6095c1883f"


def test_put_get_persist_across_instances(tmp_path):
    path = tmp_path / "c.sqlite"
    with CallCache(path) as c:
        k = c.key(CallKey("openai", "m", MSGS, SAMPLING, None, None, 0))
        assert c.get(k) is None
        c.put(k, "four ✓")
        assert c.get(k) == "four ✓"
    with CallCache(path) as c2:
        assert c2.get(k) == "four ✓"
        assert c2.get_many([k, "missing", k]) == {k: "four ✓"}
        c2.put("cut", '{"question": "Why', "m", finish_reason="length")
        assert c2.get_entries(["cut", k]) == {"cut": ('{"question": "Why', "length"), k: ("four ✓", None)}
        assert len(c2) == 2
        assert c2.stats == {"made": 0, "cached": 0, "failed": 0}


def test_sigkill_mid_write_leaves_a_consistent_cache(tmp_path):
    """A writer killed with SIGKILL while committing in a loop: every committed answer survives intact."""
    path = tmp_path / "c.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        from wildsci.llm.cache import CallCache
        c = CallCache({str(path)!r})
        i = 0
        while True:
            c.put(f"k{{i}}", "x" * 2000 + str(i))
            if i == 50:
                print("ready", flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with CallCache(path) as c:
        n = len(c)
        assert n > 50
        got = c.get_many([f"k{i}" for i in range(n)])
        assert len(got) == n  # keys are contiguous: nothing half-written, nothing missing in between
        assert all(v == "x" * 2000 + str(i) for i, v in ((int(k[1:]), v) for k, v in got.items()))
        assert c._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
