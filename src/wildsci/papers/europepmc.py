"""Europe PMC's REST API, politely: one rate for all threads, retries with backoff that honour ``Retry-After``.

Two endpoints are used, as documented on https://europepmc.org/RestfulWebService:

- ``GET {base}/search?query=...&resultType=core&format=json&pageSize=N&cursorMark=C``: one page of hits;
  ``hitCount`` is the total, ``nextCursorMark`` the next page's cursor (absent, or equal to the cursor sent, at
  the end of the results), ``resultList.result`` the hits (``pmcid``, ``doi``, ``title``, ``journalInfo``,
  ``firstPublicationDate``, ``license``, ``isOpenAccess``/``inEPMC`` as ``"Y"``/``"N"``, ``fullTextIdList``...).
- ``GET {base}/{PMCID}/fullTextXML``: the article's JATS XML (open-access subset only; 404 when there is none).

Why httpx and not Europe PMC's client libraries: the kit needs only these two calls, and its own retry/backoff
rules (shown per attempt) and rate, shared across threads, matter more than coverage of the API.
"""

from __future__ import annotations

import email.utils
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from tqdm.auto import tqdm

from wildsci.errors import UserError, first_line
from wildsci.papers.config import ApiConfig

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class RateLimiter:
    """At most ``rate`` starts per second across every thread of the process (requests are spaced evenly)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


@dataclass
class Response:
    """What a finished request gave: the HTTP status (after retries) and the body."""

    status: int
    body: bytes


class RequestFailed(Exception):
    """Retries exhausted (429/5xx every time) or the connection kept failing: the paper is retried on a rerun."""


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _say(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


class EuropePMC:
    """A client for the two endpoints. Thread-safe: the fetch threads of one rank share it (and its rate)."""

    def __init__(self, cfg: ApiConfig, rate: float | None = None, say: Callable[[str], None] = _say) -> None:
        self.cfg = cfg
        self.limiter = RateLimiter(rate or cfg.rate)
        self.say = say
        self.requests = 0
        self._http = httpx.Client(
            timeout=cfg.timeout_s,
            headers={"User-Agent": cfg.user_agent},
            limits=httpx.Limits(max_connections=cfg.concurrency, max_keepalive_connections=cfg.concurrency),
            follow_redirects=True,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EuropePMC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ requests
    def get(self, path: str, params: dict[str, Any] | None = None, what: str = "") -> Response:
        """GET with the rate limit; 429/5xx/connection errors are retried with backoff, each attempt shown.

        Returns the final response (2xx or another 4xx, e.g. 404); raises :class:`RequestFailed` when retries run
        out. ``Retry-After`` (seconds or a date) sets the wait when the server sends it, capped at max_backoff_s.
        """
        url = f"{self.cfg.base_url.rstrip('/')}/{path.lstrip('/')}"
        what = what or path
        attempts = self.cfg.max_retries + 1
        for attempt in range(1, attempts + 1):
            self.limiter.wait()
            self.requests += 1
            wait: float | None = None
            try:
                r = self._http.get(url, params=params)
                if r.status_code not in RETRY_STATUS:
                    return Response(r.status_code, r.content)
                problem = f"HTTP {r.status_code}"
                wait = _retry_after(r.headers.get("Retry-After"))
                if wait is not None:
                    problem += f", Retry-After {r.headers.get('Retry-After')}"
            except httpx.TransportError as e:  # refused, reset, timed out, truncated transfer
                problem = f"{type(e).__name__}: {first_line(e)}"
            if attempt == attempts:
                raise RequestFailed(f"{what}: {problem} (gave up after {attempts} attempts)")
            if wait is None:
                wait = self.cfg.backoff_s * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
            wait = min(wait, self.cfg.max_backoff_s)
            self.say(f"{what}: {problem} -- attempt {attempt}/{attempts}, retrying in {wait:.1f} s")
            time.sleep(wait)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------ endpoints
    def search_pages(self, query: str, cursor: str = "*") -> Iterator[tuple[str, dict[str, Any], str | None]]:
        """``(cursor sent, page JSON, next cursor or None)`` for every page from ``cursor`` on."""
        while True:
            params = {
                "query": query,
                "resultType": "core",
                "format": "json",
                "pageSize": self.cfg.page_size,
                "cursorMark": cursor,
            }
            r = self.get("search", params, what="search")
            if r.status != 200:
                raise UserError(
                    f"Europe PMC search answered HTTP {r.status} ({r.body[:160].decode('utf-8', 'replace')!r}) "
                    "-- check the query in the recipe"
                )
            try:
                page = json.loads(r.body)
            except ValueError:
                page = None
            if not isinstance(page, dict):
                raise UserError("Europe PMC search answered something that is not a JSON object -- retry later")
            nxt = page.get("nextCursorMark")
            results = (page.get("resultList") or {}).get("result") or []
            done = not nxt or nxt == cursor or not results
            yield cursor, page, None if done else nxt
            if done:
                return
            cursor = nxt

    def hit_count(self, query: str) -> int:
        """How many hits the query has (one request with pageSize=1)."""
        params = {"query": query, "resultType": "idlist", "format": "json", "pageSize": 1, "cursorMark": "*"}
        r = self.get("search", params, what="search")
        if r.status != 200:
            raise UserError(f"Europe PMC search answered HTTP {r.status} -- check the query in the recipe")
        try:
            return int(json.loads(r.body).get("hitCount", 0))
        except ValueError:
            raise UserError("Europe PMC search answered something that is not JSON -- retry later") from None

    def full_text_xml(self, pmcid: str) -> Response:
        return self.get(f"{pmcid}/fullTextXML", what=pmcid)
