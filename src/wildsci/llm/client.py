"""The contract every LLM backend keeps: requests in, results out in the same order, each call cached on disk.

:class:`CachedClient` does what is common to every backend -- cache lookup, de-duplication of identical
requests, the progress bar, result assembly -- so a backend (:mod:`wildsci.llm.local`, :mod:`wildsci.llm.remote`)
only runs the calls the cache could not answer. A failed call is ``ChatResult(text=None, error=...)``, never an
exception: the stages count it as a drop.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tqdm.auto import tqdm

from wildsci.errors import UserError
from wildsci.llm.cache import CallKey, call_key

if TYPE_CHECKING:
    from wildsci.llm.backends import BackendConfig
    from wildsci.llm.cache import CallCache


@dataclass
class ChatRequest:
    """One chat call. ``sample_index`` makes repeated samples of the same prompt distinct cache entries."""

    messages: list[dict[str, str]]
    json_schema: dict | None = None
    choices: list[str] | None = None
    sample_index: int = 0


@dataclass
class ChatResult:
    """``text`` is None when the call failed; ``finish_reason`` is ``length`` when it hit max_new_tokens."""

    text: str | None
    error: str | None = None
    cached: bool = False
    finish_reason: str | None = None


class LLMClient(Protocol):
    config: BackendConfig
    failures: Counter[str]

    def chat(self, requests: list[ChatRequest], desc: str = "") -> list[ChatResult]: ...


def request_seed(key: str) -> int:
    """A 31-bit seed from a cache key (31 bits: every server accepts it)."""
    return int(key[:8], 16) & 0x7FFFFFFF


def choice_schema(choices: list[str]) -> dict:
    """The JSON schema used to ask a server for one of ``choices`` when it has no native choice constraint."""
    return {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": list(choices)}},
        "required": ["choice"],
        "additionalProperties": False,
    }


def normalize_choice(text: str, choices: list[str]) -> str:
    """Map a constrained answer back to the exact choice string; unknown answers are returned stripped.

    Accepts the bare choice, a JSON string (``"Neuroscience"``) or ``{"choice": ...}``, case-insensitively.
    """
    raw = text.strip()
    candidates = [raw]
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("choice"), str):
            candidates.insert(0, obj["choice"])
        elif isinstance(obj, str):
            candidates.insert(0, obj)
    except (json.JSONDecodeError, ValueError):
        pass
    lower = {c.lower(): c for c in choices}
    for cand in candidates:
        c = cand.strip().strip(".").strip()
        if c in choices:
            return c
        if c.lower() in lower:
            return lower[c.lower()]
    return raw


# ------------------------------------------------------------------------------------------- base client
class CachedClient:
    """Cache lookup, de-duplication, progress bar and result assembly; subclasses only run the misses."""

    def __init__(self, config: BackendConfig, cache: CallCache | None):
        self.config = config
        self.cache = cache
        self.stats = cache.stats if cache is not None else {"made": 0, "cached": 0, "failed": 0}
        #: failed calls by cause (``HTTP 500 from http://...``): what a failed build names as its reason
        self.failures: Counter[str] = Counter()
        #: set by a backend that must stop the build (e.g. a server that ignores the constraint): raised by chat()
        self.fatal: str | None = None

    def key(self, req: ChatRequest) -> str:
        """The request's cache key (and, through :func:`request_seed`, its sampling seed)."""
        return call_key(
            CallKey(
                backend=self.config.backend,
                model=self.config.model,
                messages=req.messages,
                sampling=self.config.sampling(),
                json_schema=req.json_schema,
                choices=list(req.choices) if req.choices is not None else None,
                sample_index=req.sample_index,
            )
        )

    def chat(self, requests: list[ChatRequest], desc: str = "") -> list[ChatResult]:
        keys = [self.key(r) for r in requests]
        hits = self.cache.get_entries(keys) if self.cache is not None else {}
        results: list[ChatResult | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in hits:
                text, finish = hits[k]
                results[i] = self._finish(requests[i], text, cached=True, finish_reason=finish)
            else:
                pending.setdefault(k, []).append(i)
        n_cached = len(requests) - sum(len(v) for v in pending.values())
        self.stats["cached"] += n_cached
        if pending:
            jobs = [(k, requests[idx[0]]) for k, idx in pending.items()]
            label = desc or "llm calls"
            with tqdm(total=len(jobs), desc=f"{label} ({n_cached} cached)", unit="call", dynamic_ncols=True) as bar:
                for k, res in self._run(jobs):
                    self.stats["made"] += 1
                    if res.text is None:
                        self.stats["failed"] += 1
                        self.failures[res.error or "unknown error"] += 1
                    elif self.cache is not None:
                        self.cache.put(k, res.text, self.config.model, res.finish_reason)
                    for i in pending[k]:
                        results[i] = (
                            self._finish(requests[i], res.text, finish_reason=res.finish_reason)
                            if res.text is not None
                            else res
                        )
                    bar.update(1)
        if self.fatal:
            raise UserError(self.fatal)
        return [r if r is not None else ChatResult(None, error="internal: no result") for r in results]

    @staticmethod
    def _finish(req: ChatRequest, text: str, cached: bool = False, finish_reason: str | None = None) -> ChatResult:
        if req.choices:
            text = normalize_choice(text, req.choices)
        return ChatResult(text=text, cached=cached, finish_reason=finish_reason)

    def _run(self, jobs: list[tuple[str, ChatRequest]]) -> Iterator[tuple[str, ChatResult]]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
