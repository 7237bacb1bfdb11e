"""Stage 10, card: the dataset card (``README.md``) rendered from ``dataset_cards/<template>.md`` with Jinja.

The YAML metadata is built with the same ``datasets`` helpers that ``Dataset.push_to_hub`` uses
(``MetadataConfigs`` for ``configs``/``data_files``, ``DatasetInfosDict`` for ``dataset_info`` with features,
splits, ``num_examples`` and byte sizes), so the Hub viewer, ``load_dataset(repo_id)`` and a later
``push_to_hub`` all agree with what ``wildsci build`` wrote. The body holds everything a reviewer asks for:
per-discipline/subdomain and per-stage statistics with every drop reason, answer-letter balance,
voting classes, the decontamination report, source licences, the exact recipe, package versions and git SHA.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from wildsci.errors import UserError
from wildsci.provenance import REPO_ROOT, markdown_table
from wildsci.schema import features


@dataclass
class CardConfig:
    """What goes into the dataset card besides the statistics."""

    template: str = field(
        default="wildsci", metadata={"help": "dataset_cards/<template>.md, or a path to a Jinja markdown template."}
    )
    pretty_name: str | None = field(default=None, metadata={"help": "Human-readable name (default: the recipe name)."})
    license: str | None = field(
        default=None,
        metadata={
            "help": "Hub licence id of the dataset (cc-by-4.0, cc-by-nc-4.0, ...); default: derived from the "
            "source papers' licences (the most restrictive wins)."
        },
    )
    language: list[str] = field(default_factory=lambda: ["en"], metadata={"help": "Languages of the questions."})
    tags: list[str] = field(
        default_factory=lambda: ["science", "multiple-choice", "synthetic", "wildsci"],
        metadata={"help": "Hub tags."},
    )


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def dataset_license(source_licenses: dict[str, int]) -> str:
    """The most restrictive Creative Commons terms among the sources, as a Hub licence id.

    Questions written from a CC-BY-NC paper inherit NC; SA inherits SA; ND, unknown and non-CC licences make
    the result ``other`` so that a human decides (the card lists every source licence).
    """
    terms: set[str] = set()
    for lic in source_licenses:
        low = lic.lower()
        if "cc0" in low or "public domain" in low or "metadata cc0" in low:
            continue
        if not low.startswith("cc-by") and not low.startswith("cc by"):
            return "other"
        if "-nd" in low or " nd" in low:
            return "other"
        if "-nc" in low or " nc" in low:
            terms.add("nc")
        if "-sa" in low or " sa" in low:
            terms.add("sa")
        terms.add("by")
    if not terms:
        return "cc0-1.0"
    return "cc-" + "-".join(t for t in ("by", "nc", "sa") if t in terms) + "-4.0"


def find_template(name: str) -> Path:
    candidates = [Path(name), Path("dataset_cards") / f"{name}.md", REPO_ROOT / "dataset_cards" / f"{name}.md"]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"card template {name!r} not found (looked for dataset_cards/{name}.md) -- fix card.template")


def card_metadata(out_dir: Path, cfg: CardConfig, pretty_name: str, source_licenses: dict[str, int]):
    """``DatasetCardData`` exactly as ``push_to_hub`` would write it for the parquet files in ``out_dir/data``."""
    files = sorted((out_dir / "data").glob("*.parquet"))
    order = {"train": 0, "validation": 1, "test": 2}
    by_split: dict[str, list[Path]] = {}
    for f in sorted(files, key=lambda f: (order.get(f.name.split("-")[0], 9), f.name)):
        by_split.setdefault(f.name.split("-")[0], []).append(f)
    info = DatasetInfo(features=features(), splits=SplitDict(), download_size=0, dataset_size=0)
    total = 0
    for split, paths in by_split.items():
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        nbytes = sum(pq.read_table(p).nbytes for p in paths)
        info.splits.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=rows))
        info.download_size += sum(p.stat().st_size for p in paths)
        info.dataset_size += nbytes
        total += rows
    info.size_in_bytes = info.download_size + info.dataset_size
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=cfg.license or dataset_license(source_licenses),
        language=list(cfg.language),
        task_categories=["question-answering", "text-generation"],
        task_ids=["multiple-choice-qa"],
        size_categories=[size_category(total)],
        tags=list(cfg.tags),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    configs = {"default": {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in by_split]}}
    MetadataConfigs(configs).to_dataset_card_data(data)
    return data


def render_card(
    out_dir: str | Path, report: dict[str, Any], recipe_yaml: str, cfg: CardConfig, name: str, description: str = ""
) -> Path:
    """Write ``out_dir/README.md`` from the template and the build report; returns its path."""
    out = Path(out_dir)
    licenses = report.get("source_licenses", {})
    data = card_metadata(out, cfg, cfg.pretty_name or name, licenses)
    total = sum(report.get("splits", {}).values())
    stage_rows = []
    for st in report.get("stages", []):
        drops = ", ".join(f"{k}: {v}" for k, v in sorted(st.get("drops", {}).items(), key=lambda kv: -kv[1]))
        stage_rows.append([st["name"], st.get("in", ""), st.get("out", ""), drops or "-"])
    letters = report.get("letter_distribution", {})
    n_letters = sum(letters.values()) or 1
    deco = report.get("decontamination", {})
    card = DatasetCard.from_template(
        data,
        template_path=str(find_template(cfg.template)),
        pretty_name=cfg.pretty_name or name,
        description=description.strip(),
        hub_repo_id=report.get("hub_repo_id") or f"<your-org>/{name}",
        total=total,
        splits_table=markdown_table(["split", "questions"], [[k, v] for k, v in report.get("splits", {}).items()]),
        discipline_table=markdown_table(
            ["discipline", "questions", "share"],
            [[k, v, f"{v / max(total, 1):.1%}"] for k, v in sorted(report.get("per_discipline", {}).items())],
        ),
        subdomain_table=markdown_table(
            ["subdomain", "questions"], [[k, v] for k, v in sorted(report.get("per_subdomain", {}).items())]
        ),
        stages_table=markdown_table(["stage", "in", "out", "drops (reason: count)"], stage_rows),
        drops_table=markdown_table(
            ["drop reason", "count"],
            [[k, v] for k, v in sorted(report.get("drops", {}).items(), key=lambda kv: -kv[1])],
        ),
        letter_table=markdown_table(
            ["answer letter", "questions", "share"], [[k, v, f"{v / n_letters:.1%}"] for k, v in letters.items()]
        ),
        voting_table=markdown_table(
            ["voting type", "questions"], [[k, v] for k, v in report.get("voting_types", {}).items()]
        ),
        decontamination_table=markdown_table(
            ["benchmark", "questions checked", "removed", "benchmark questions", "n-grams indexed"],
            [
                [k, v.get("checked", 0), v.get("removed", 0), v.get("benchmark_questions", ""), v.get("ngrams", "")]
                for k, v in deco.items()
            ],
        )
        if deco
        else "No benchmark was configured for decontamination.",
        license_table=markdown_table(["source licence", "papers"], [[k, v] for k, v in sorted(licenses.items())]),
        recipe_yaml=recipe_yaml.strip(),
        recipe_hash=report.get("recipe_hash", ""),
        command=report.get("command", ""),
        generator=report.get("generator", ""),
        voters=report.get("voters", []),
        num_votes=report.get("num_votes", ""),
        llm_calls=report.get("llm_calls", {}),
        versions_table=markdown_table(["package", "version"], [[k, v] for k, v in report.get("versions", {}).items()]),
        git_sha=report.get("git_sha", "unknown"),
        built_at=report.get("built_at", ""),
    )
    path = out / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(path)
    return path
