"""On-disk cache of LLM calls: a rerun or a resumed build never repeats a call it already made.

Why sqlite in WAL mode with one commit per call: a build can be SIGKILLed at any moment. sqlite's journal
makes every committed answer durable and every uncommitted one invisible, so the cache is never
half-written, and a rerun picks up exactly the calls that finished. Many processes (shards of a build,
several voters) may share one cache file; WAL lets readers and one writer work at the same time.

Only answers are cached. A call that failed (timeout, HTTP 500 after retries) is not stored, so a rerun
tries it again instead of freezing a transient error into the dataset.

The key hashes everything that changes what the model is asked and how it samples: backend, model
reference, messages, sampling parameters (temperature, top_p, max_new_tokens, seed), the JSON schema or
the constrained choices, and ``sample_index`` (voter k of 8 asks the same prompt as voter k+1). The
endpoint URL and concurrency are deliberately *not* in the key: moving the same model to another server
keeps the cache valid.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT,
    model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CallKey:
    """Everything that changes what a model is asked and how it samples: the identity of one call."""

    backend: str
    model: str
    messages: list[dict[str, str]]
    sampling: dict[str, Any]
    json_schema: dict | None
    choices: list[str] | None
    sample_index: int


def call_key(call: CallKey) -> str:
    """A stable sha256 of one call's inputs (JSON with sorted keys, so dict order never matters)."""
    blob = json.dumps(asdict(call), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """A key -> answer-text store in one sqlite file; safe across threads, processes and SIGKILL.

    ``stats`` counts this process's calls: ``made`` (sent to a model), ``cached`` (answered from disk) and
    ``failed`` (made but not answered; not stored, retried on the next run).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process kills
        self._db.execute(_SCHEMA)
        self.stats: dict[str, int] = {"made": 0, "cached": 0, "failed": 0}

    def key(self, call: CallKey) -> str:
        return call_key(call)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT text FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """Answers for the keys that are cached."""
        return {k: text for k, (text, _) in self.get_entries(keys).items()}

    def get_entries(self, keys: list[str]) -> dict[str, tuple[str, str | None]]:
        """``{key: (text, finish_reason)}`` for the keys that are cached (one query per 500 keys).

        The finish reason is kept so that a cached answer is judged exactly like a fresh one (a completion cut
        at max_new_tokens stays ``truncated_json`` on a rerun).
        """
        found: dict[str, tuple[str, str | None]] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), 500):
                part = uniq[i : i + 500]
                q = f"SELECT key, text, finish_reason FROM calls WHERE key IN ({','.join('?' * len(part))})"
                found.update((k, (t, f)) for k, t, f in self._db.execute(q, part).fetchall())
        return found

    def put(self, key: str, text: str, model: str = "", finish_reason: str | None = None) -> None:
        """Store one answer and commit it at once (autocommit): a kill right after this loses nothing."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, text, finish_reason, model, created) VALUES (?, ?, ?, ?, ?)",
                (key, text, finish_reason, model, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
