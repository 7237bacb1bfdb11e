"""Loader for ``taxonomy.yaml``: 9 disciplines, 26 subdomains. The YAML file is the one source of truth."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class Subdomain:
    name: str
    discipline: str
    nc_domain: str
    description: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    disciplines: tuple[str, ...]
    subdomains: tuple[Subdomain, ...]

    def subdomain(self, name: str) -> Subdomain:
        for s in self.subdomains:
            if s.name.lower() == name.strip().lower():
                return s
        raise KeyError(f"unknown subdomain {name!r}; see src/wildsci/taxonomy.yaml")

    def subdomains_of(self, discipline: str) -> list[Subdomain]:
        return [s for s in self.subdomains if s.discipline == discipline]

    def match_field_labels(self, labels: list[str] | tuple[str, ...]) -> Subdomain | None:
        """Map a paper's own field labels (arXiv categories, PLOS subject terms) to a subdomain.

        The longest matching keyword wins so that ``astro-ph.EP`` maps to planetary science, not astrophysics.
        """
        best: tuple[int, Subdomain] | None = None
        for label in labels:
            low = str(label).lower()
            for s in self.subdomains:
                for kw in s.keywords:
                    if kw in low and (best is None or len(kw) > best[0]):
                        best = (len(kw), s)
        return best[1] if best else None


@cache
def load_taxonomy() -> Taxonomy:
    raw = yaml.safe_load(resources.files("wildsci").joinpath("taxonomy.yaml").read_text(encoding="utf-8"))
    subs = []
    for d in raw["disciplines"]:
        for s in d["subdomains"]:
            subs.append(
                Subdomain(
                    name=s["name"],
                    discipline=d["name"],
                    nc_domain=d["nc_domain"],
                    description=s["description"],
                    keywords=tuple(k.lower() for k in s.get("keywords", [])),
                )
            )
    return Taxonomy(disciplines=tuple(d["name"] for d in raw["disciplines"]), subdomains=tuple(subs))
