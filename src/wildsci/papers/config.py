"""The ``papers`` recipe: which papers to list on Europe PMC, how politely to fetch them, where the rows go.

One nested YAML per corpus (``recipes/papers/*.yaml``). Values that make no sense (a rate of 0, a page of 5,000, a
date range that ends before it starts) are refused here, as one line naming the key, before any request is sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildsci.cluster.config import ExecutorConfig
from wildsci.papers.licenses import license_family
from wildsci.recipes import load_recipe

#: Europe PMC's REST root (https://europepmc.org/RestfulWebService)
EUROPE_PMC = "https://www.ebi.ac.uk/europepmc/webservices/rest"
#: the largest pageSize the search endpoint serves (Europe PMC's RESTful Web Service page)
MAX_PAGE_SIZE = 1000


@dataclass
class ApiConfig:
    """How the crawler talks to Europe PMC: a rate for the whole crawl, a few connections, retries with backoff."""

    base_url: str = field(default=EUROPE_PMC, metadata={"help": "Europe PMC REST root (a loopback URL in tests)."})
    rate: float = field(
        default=5.0,
        metadata={
            "help": "Requests per second for the whole crawl (all ranks together); at most max_rate "
            "(docs/build.md, Getting papers: where the limit of 10 comes from)."
        },
    )
    max_rate: float = field(
        default=10.0,
        metadata={
            "help": "The most requests per second the kit sends (10, the per-IP limit the API guides give); raise it "
            "only for a server of your own, e.g. the tests' loopback Europe PMC."
        },
    )
    concurrency: int = field(default=4, metadata={"help": "Connections open at once per rank."})
    page_size: int = field(default=1000, metadata={"help": "Search results per page (1-1000)."})
    timeout_s: float = field(default=60.0, metadata={"help": "Seconds to wait for one response."})
    max_retries: int = field(default=5, metadata={"help": "Retries of a request on 429, 5xx or a broken connection."})
    backoff_s: float = field(
        default=1.0, metadata={"help": "First retry wait; doubles each attempt (Retry-After wins)."}
    )
    max_backoff_s: float = field(default=120.0, metadata={"help": "Longest wait between two attempts."})
    user_agent: str = field(
        default="wildsci-kit papers crawler",
        metadata={
            "help": "User-Agent header: add how to reach you (e.g. 'wildsci-kit papers crawler; you@lab.org'), so "
            "the provider can write to you instead of blocking."
        },
    )

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"api.base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.max_rate > 0:
            raise ValueError(f"api.max_rate must be > 0, got {self.max_rate!r}")
        if not (self.rate > 0):  # also refuses nan
            raise ValueError(f"api.rate must be > 0 requests per second, got {self.rate!r}")
        if self.rate > self.max_rate:
            raise ValueError(
                f"api.rate {self.rate} is above api.max_rate {self.max_rate} (the per-IP limit API guides give, "
                "docs/build.md) -- lower it"
            )
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"api.concurrency must be a whole number >= 1, got {self.concurrency!r}")
        if not isinstance(self.page_size, int) or not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"api.page_size must be 1-{MAX_PAGE_SIZE} (Europe PMC's maximum), got {self.page_size!r}")
        if not (self.timeout_s > 0):
            raise ValueError(f"api.timeout_s must be > 0, got {self.timeout_s!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"api.max_retries must be a whole number >= 0, got {self.max_retries!r}")
        if not (self.backoff_s >= 0) or not (self.max_backoff_s >= self.backoff_s):
            raise ValueError("api.backoff_s must be >= 0 and api.max_backoff_s >= api.backoff_s")


@dataclass
class PapersRecipe:
    """A corpus of open-access full texts from Europe PMC, written as a papers dataset ``wildsci build`` reads."""

    name: str = field(metadata={"help": "Dataset name (card title)."})
    output_dir: str = field(metadata={"help": "Where the papers dataset goes (README.md + data/*.parquet)."})
    journal: str | None = field(
        default=None, metadata={"help": 'Journal as Europe PMC names it in JOURNAL:"..." (e.g. "Nat Commun").'}
    )
    licenses: list[str] = field(
        default_factory=lambda: ["cc by"],
        metadata={
            "help": "Licences allowed, as Europe PMC terms (cc by, cc by-sa, cc0 ...) or SPDX ids (CC-BY-4.0). "
            "Sent in the query (LICENSE:...) and checked again on every paper: others are counted and dropped."
        },
    )
    # a YAML date (2020-01-01 unquoted) loads as a date, a quoted one as a string: both are accepted
    from_date: str | dt.date | None = field(
        default=None, metadata={"help": "First publication date, YYYY-MM-DD (inclusive)."}
    )
    to_date: str | dt.date | None = field(
        default=None, metadata={"help": "Last publication date, YYYY-MM-DD (inclusive)."}
    )
    extra_query: str | None = field(
        default=None,
        metadata={"help": "More Europe PMC search syntax ANDed to the query (e.g. 'PUB_TYPE:\"research-article\"')."},
    )
    query: str | None = field(
        default=None,
        metadata={"help": "The whole Europe PMC query, used as is (then journal/licenses/dates only filter rows)."},
    )
    description: str = field(default="", metadata={"help": "One paragraph for the dataset card."})
    max_papers: int | None = field(default=None, metadata={"help": "Fetch at most this many papers (a first run)."})
    hub_repo_id: str | None = field(default=None, metadata={"help": "Hub dataset repo for --push (my-org/name)."})
    private: bool = field(default=True, metadata={"help": "Create the Hub repo private."})
    api: ApiConfig = field(default_factory=ApiConfig, metadata={"help": "Rates, retries, page size."})
    work_dir: str | None = field(
        default=None,
        metadata={"help": "Listing and fetched XML (resumable state); default <output_dir>/.crawl."},
    )
    executor: ExecutorConfig = field(
        default_factory=ExecutorConfig,
        metadata={
            "help": "Where the fetch ranks run (kind: inprocess | local | slurm; tasks: ranks), as in data recipes. "
            "api.rate is shared: each of the ranks running at once gets rate / workers."
        },
    )

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name is empty -- give the dataset a name")
        if not self.licenses:
            raise ValueError("licenses is empty -- list the licences papers may have (e.g. [cc by])")
        for lic in self.licenses:
            if not license_family(lic):
                raise ValueError(
                    f"licenses: {lic!r} is not a Creative Commons licence the kit knows -- use Europe PMC's terms "
                    "(cc by, cc by-sa, cc by-nc, cc0 ...) or SPDX ids (CC-BY-4.0)"
                )
        for key in ("from_date", "to_date"):
            value = getattr(self, key)
            if value is not None:
                try:
                    value = dt.date.fromisoformat(str(value)).isoformat()
                except ValueError:
                    raise ValueError(f"{key} must be a date YYYY-MM-DD, got {value!r}") from None
                setattr(self, key, value)
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError(f"from_date {self.from_date} is after to_date {self.to_date} -- swap them")
        if not self.query and not self.journal:
            raise ValueError("give journal (or a whole query) -- the kit does not crawl all of Europe PMC")
        if self.max_papers is not None and (not isinstance(self.max_papers, int) or self.max_papers < 1):
            raise ValueError(f"max_papers must be a whole number >= 1 (or null), got {self.max_papers!r}")

    @property
    def state_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.output_dir) / ".crawl"

    def search_query(self) -> str:
        """The Europe PMC query: journal, open access, licences and publication dates as fielded search."""
        if self.query:
            return self.query
        parts = [f'JOURNAL:"{self.journal}"', "OPEN_ACCESS:y"]
        terms = sorted({_epmc_term(lic) for lic in self.licenses})
        lic = " OR ".join(f'LICENSE:"{t}"' for t in terms)
        parts.append(f"({lic})" if len(terms) > 1 else lic)
        if self.from_date or self.to_date:
            parts.append(f"FIRST_PDATE:[{self.from_date or '1000-01-01'} TO {self.to_date or '3000-12-31'}]")
        if self.extra_query:
            parts.append(f"({self.extra_query})")
        return " AND ".join(parts)


def _epmc_term(lic: str) -> str:
    """``CC-BY-NC-4.0`` / ``cc by-nc`` -> Europe PMC's ``cc by-nc``; ``CC0-1.0`` -> ``cc0``."""
    family = license_family(lic)
    if family == "CC0":
        return "cc0"
    return "cc " + family[3:].lower()


def load_papers_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> PapersRecipe:
    """Load and check a papers recipe (one-line :class:`wildsci.recipes.RecipeError` on any problem)."""
    return load_recipe(path, PapersRecipe, overrides)
