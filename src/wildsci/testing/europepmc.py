"""A loopback server that answers like Europe PMC's REST API, and real papers turned into JATS to serve.

The server speaks the two endpoints ``wildsci papers`` uses, in the response shapes Europe PMC documents
(https://europepmc.org/RestfulWebService; ``resultType=core`` hits with ``pmcid``, ``doi``, ``journalInfo``,
``firstPublicationDate``, ``license``, ``isOpenAccess``/``inEPMC``/``hasPDF`` as ``"Y"``/``"N"``,
``fullTextIdList``; pages chained by ``nextCursorMark``, the last page answering with the cursor it was sent):

- ``GET /search?query&resultType&format=json&pageSize&cursorMark`` -> ``{hitCount, nextCursorMark, resultList}``
- ``GET /{PMCID}/fullTextXML`` -> the article's JATS, or 404

Each article can be scripted to fail the way real servers do (``behaviour``): ``missing`` (404), ``truncated``
(the XML cut in half, served as a complete 200 response), ``429`` (once, with ``Retry-After``), ``500`` (once, then
the document), ``down`` (503 every time). ``hold_after=N`` blocks every document request after N documents were
served, so a test can kill the crawler at a known point. The server counts what it *served* per PMCID: the
resumability tests assert that no document is served twice.

The documents: :func:`jats_from_row` writes JATS 1.2 XML from a real full-text row of ``shared/data/papers``
(PLOS / eLife: title, abstract, sections, disciplines, licence URL and statement). Why a converter and not a
package's real JATS files: the one PyPI package found that ships real PMC ``.nxml`` files (pubmed_parser 0.5.1,
eight files) is a 57 MB wheel that installs top-level ``data``, ``tests``, ``docs`` and ``scripts`` packages into
site-packages; the rows here are real papers' text and licences, and the converter is a few lines anyone can read.
The PMCIDs are assigned by the converter (``PMC9000000 + row index``); DOIs, titles and text are the papers' own.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape, quoteattr

JATS_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.2 20190208//EN" '
    '"JATS-archivearticle1.dtd">\n'
)


def _paras(text: str) -> str:
    return "".join(f"<p>{escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def jats_from_row(row: dict[str, Any], pmcid: str) -> str:
    """A PLOS/eLife full-text row of ``shared/data/papers`` -> JATS XML (front matter, abstract, body sections)."""
    subjects = "".join(
        f"<subject>{escape(s)}</subject>" for s in row.get("discipline_terms") or row.get("heading") or []
    )
    heading = escape(row.get("article_type") or "research-article")
    lic_url = row.get("license_url")
    lic_attr = f" xlink:href={quoteattr(lic_url)}" if lic_url else ""
    lic_ref = f"<ali:license_ref>{escape(lic_url)}</ali:license_ref>" if lic_url else ""
    lic_text = escape(row.get("license_text") or row.get("license") or "")
    body = []
    for sec in row.get("body_sections") or []:
        title = f"<title>{escape(sec.get('section') or '')}</title>" if sec.get("section") else ""
        body.append(f"<sec>{title}{_paras(sec.get('text') or '')}</sec>")
    abstract = f"<abstract>{_paras(row['abstract'])}</abstract>" if row.get("abstract") else ""
    return (
        JATS_HEAD
        + '<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML" '
        f'xmlns:ali="http://www.niso.org/schemas/ali/1.0/" article-type="{heading}">'
        f"<front><journal-meta><journal-title-group><journal-title>{escape(row.get('journal') or '')}"
        "</journal-title></journal-title-group></journal-meta><article-meta>"
        f'<article-id pub-id-type="pmcid">{pmcid}</article-id>'
        f'<article-id pub-id-type="doi">{escape(row.get("doi") or "")}</article-id>'
        f'<article-categories><subj-group subj-group-type="heading"><subject>{heading}</subject></subj-group>'
        f'<subj-group subj-group-type="Discipline">{subjects}</subj-group></article-categories>'
        f"<title-group><article-title>{escape(row.get('title') or '')}</article-title></title-group>"
        f'<pub-date pub-type="epub"><year>{escape(str(row.get("year") or ""))}</year></pub-date>'
        f"<permissions><license{lic_attr}>{lic_ref}<license-p>{lic_text}</license-p></license></permissions>"
        f"{abstract}</article-meta></front><body>{''.join(body)}</body></article>\n"
    )


def epmc_license_term(spdx_or_text: str) -> str | None:
    """How Europe PMC's ``license`` field spells a row's licence (``CC-BY-4.0`` -> ``cc by``); ``None``: not CC."""
    from wildsci.papers.licenses import license_family

    family = license_family(spdx_or_text.split(" (")[0])
    if not family:
        return None
    return "cc0" if family == "CC0" else "cc " + family[3:].lower()


@dataclass
class Article:
    """One paper the server knows: its search-result fields, its JATS (``None``: no full text) and a behaviour."""

    pmcid: str
    doi: str
    title: str
    journal: str
    date: str
    license: str | None
    xml: bytes | None
    open_access: bool = True
    keywords: list[str] = field(default_factory=list)
    behaviour: str = "ok"  # ok | missing | truncated | 429 | 500 | down (503 every time)

    def core(self, n: int) -> dict[str, Any]:
        """The article as a ``resultType=core`` hit."""
        hit: dict[str, Any] = {
            "id": str(40000000 + n),
            "source": "MED",
            "pmid": str(40000000 + n),
            "doi": self.doi,
            "title": self.title,
            "authorString": "",
            "journalInfo": {"journal": {"title": self.journal, "isoabbreviation": self.journal}},
            "pubYear": self.date[:4],
            "firstPublicationDate": self.date,
            "isOpenAccess": "Y" if self.open_access else "N",
            "inEPMC": "Y" if self.pmcid and self.open_access else "N",
            "inPMC": "Y" if self.pmcid else "N",
            "hasPDF": "Y" if self.pmcid else "N",
        }
        if self.pmcid:
            hit["pmcid"] = self.pmcid
            hit["fullTextIdList"] = {"fullTextId": [self.pmcid]}
        if self.license:
            hit["license"] = self.license
        if self.keywords:
            hit["keywordList"] = {"keyword": list(self.keywords)}
        return hit


def articles_from_rows(rows: list[dict[str, Any]], first_pmcid: int = 9000000) -> list[Article]:
    """Real full-text rows -> articles whose JATS the server serves (PMCIDs assigned in row order)."""
    out = []
    for i, row in enumerate(rows):
        pmcid = f"PMC{first_pmcid + i}"
        year = str(row.get("year") or "2020")
        out.append(
            Article(
                pmcid=pmcid,
                doi=row.get("doi") or "",
                title=row.get("title") or "",
                journal=row.get("journal") or "",
                date=f"{year}-06-15",
                license=epmc_license_term(row.get("license") or ""),
                xml=jats_from_row(row, pmcid).encode("utf-8"),
                keywords=list(row.get("discipline_top") or []),
            )
        )
    return out


def load_rows(path: str | Path, n: int | None = None) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if n is not None and len(rows) >= n:
                break
    return rows


def _cursor(offset: int) -> str:
    return "AoI" + base64.b64encode(f"offset:{offset}".encode()).decode()


def _offset(cursor: str) -> int | None:
    if cursor == "*":
        return 0
    try:
        return int(base64.b64decode(cursor[3:]).decode().split(":")[1])
    except (ValueError, IndexError):
        return None


class EuropePMCServer:
    """``with EuropePMCServer(articles) as srv: ... srv.url ...``; ``srv.served[pmcid]`` counts documents sent."""

    def __init__(self, articles: list[Article], retry_after: str = "1", hold_after: int | None = None) -> None:
        self.articles = articles
        self.by_id = {a.pmcid: a for a in articles if a.pmcid}
        self.retry_after = retry_after
        self.hold_after = hold_after
        self.served: dict[str, int] = {}
        self.attempts: dict[str, list[float]] = {}
        self.searches: list[dict[str, str]] = []
        self.held = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._failed_once: set[str] = set()
        server = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                u = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(u.query).items()}
                parts = [p for p in u.path.split("/") if p]
                if parts and parts[-1] == "search":
                    status, body, headers = server._search(params)
                elif len(parts) >= 2 and parts[-1] == "fullTextXML":
                    status, body, headers = server._full_text(parts[-2])
                else:
                    status, body, headers = 404, b"not found", {}
                if status is None:
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    ctype = "application/json" if parts and parts[-1] == "search" else "application/xml"
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpd = _Server(("127.0.0.1", 0), _H)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/europepmc/webservices/rest"
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ endpoints
    def _search(self, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.searches.append(params)
        offset = _offset(params.get("cursorMark", "*"))
        if offset is None:
            return 400, json.dumps({"errCode": 400, "errMsg": "invalid cursorMark"}).encode(), {}
        size = int(params.get("pageSize", 25))
        page = self.articles[offset : offset + size]
        cursor = params.get("cursorMark", "*")
        nxt = _cursor(offset + len(page)) if page else cursor  # Solr cursors: the last page echoes its cursor
        if params.get("resultType") == "idlist":
            results = [{"id": str(40000000 + offset + i), "source": "MED"} for i in range(len(page))]
        else:
            results = [a.core(offset + i) for i, a in enumerate(page)]
        body = {
            "version": "6.9",
            "hitCount": len(self.articles),
            "nextCursorMark": nxt,
            "request": {**params},
            "resultList": {"result": results},
        }
        return 200, json.dumps(body).encode(), {}

    def _full_text(self, pmcid: str) -> tuple[int | None, bytes, dict[str, str]]:
        with self._lock:
            self.attempts.setdefault(pmcid, []).append(time.monotonic())
            hold = self.hold_after is not None and sum(self.served.values()) >= self.hold_after
            if hold:
                self.held += 1
        if hold:
            self._release.wait()
            return 503, b"", {}  # the crawler is dead by now: nothing is served
        a = self.by_id.get(pmcid)
        if a is None or a.xml is None or a.behaviour == "missing":
            return 404, b"", {}
        with self._lock:
            first = pmcid not in self._failed_once
            if a.behaviour == "down":
                return 503, b"Service Unavailable", {}
            if a.behaviour in ("429", "500") and first:
                self._failed_once.add(pmcid)
                if a.behaviour == "429":
                    return 429, b"Too Many Requests", {"Retry-After": self.retry_after}
                return 500, b"Internal Server Error", {}
            self.served[pmcid] = self.served.get(pmcid, 0) + 1
        body = a.xml[: len(a.xml) // 2] if a.behaviour == "truncated" else a.xml
        return 200, body, {}

    def release(self) -> None:
        """Stop holding document requests (held ones answer 503) and serve normally from now on."""
        self.hold_after = None
        self._release.set()

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> EuropePMCServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EuropePMCServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
