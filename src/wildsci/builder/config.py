"""``BuildRecipe``: the data recipe (``recipes/data/*.yaml``) for ``wildsci build``.

One nested YAML per dataset. Each stage owns its section's dataclass (``generator`` and ``voters`` are
:class:`wildsci.llm.BackendConfig`; ``generate``/``options``/``vote``/``label`` come from the LLM stages;
``sources``/``chunking``/``dedup``/``decontamination``/``split``/``card`` from the non-LLM stages). Loading goes
through :func:`wildsci.recipes.load_recipe`, so a bad recipe is one line (``file: key: what -- fix``) before
any work starts, and every key can be overridden on the command line (``--generator.model X``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildsci.builder.card import CardConfig
from wildsci.builder.chunk import ChunkConfig
from wildsci.builder.dedup import DecontamConfig, DedupConfig
from wildsci.builder.generate import GenerateConfig
from wildsci.builder.ingest import SourceConfig
from wildsci.builder.label import LabelConfig
from wildsci.builder.options import OptionsConfig
from wildsci.builder.split import SplitConfig
from wildsci.builder.vote import VoteConfig
from wildsci.cluster.config import ExecutorConfig
from wildsci.llm.backends import BackendConfig
from wildsci.recipes import load_recipe

#: keys that change where/how a build is written or published, not what it contains (excluded from the
#: content hash, so e.g. ``--output-dir`` or ``--push`` never invalidates checkpoints)
NON_CONTENT_KEYS = (
    "output_dir",
    "hub_repo_id",
    "private",
    "card",
    "merge_from",
    "cache_path",
    "executor",
    "stop_after",
    "pool_from",
)


@dataclass
class BuildRecipe:
    """A WildSci dataset build: papers -> questions -> votes -> labels -> dedup -> splits -> card -> Hub."""

    name: str = field(metadata={"help": "Dataset name (used in the card title and the commit message)."})
    sources: list[SourceConfig] = field(metadata={"help": "Corpora of papers to read (files, folders, Hub ids)."})
    output_dir: str = field(
        default="runs/dataset", metadata={"help": "Where the dataset folder is written (--output-dir overrides)."}
    )
    hub_repo_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for --push, e.g. my-org/wildsci-mine."}
    )
    private: bool = field(default=True, metadata={"help": "Create the Hub repo private (the safe default)."})
    description: str = field(default="", metadata={"help": "One paragraph for the dataset card."})
    max_papers: int | None = field(
        default=None, metadata={"help": "Use at most this many papers over all sources (quick trial builds)."}
    )
    chunking: ChunkConfig = field(default_factory=ChunkConfig, metadata={"help": "How papers are cut into passages."})
    generator: BackendConfig = field(
        default_factory=BackendConfig, metadata={"help": "The LLM that writes questions (and distractors)."}
    )
    voters: list[BackendConfig] = field(
        default_factory=list,
        metadata={"help": "LLMs that answer each question without the paper (round-robin); empty = the generator."},
    )
    labeler: BackendConfig | None = field(
        default=None, metadata={"help": "LLM that picks the subdomain; null = the generator."}
    )
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "Question generation."})
    options: OptionsConfig = field(default_factory=OptionsConfig, metadata={"help": "10 options A-J, shuffled."})
    vote: VoteConfig = field(default_factory=VoteConfig, metadata={"help": "Voting and the difficulty filter."})
    label: LabelConfig = field(default_factory=LabelConfig, metadata={"help": "Discipline / subdomain labels."})
    dedup: DedupConfig = field(default_factory=DedupConfig, metadata={"help": "MinHash LSH near-duplicate removal."})
    decontamination: DecontamConfig = field(
        default_factory=DecontamConfig, metadata={"help": "N-gram decontamination against benchmarks."}
    )
    split: SplitConfig = field(default_factory=SplitConfig, metadata={"help": "Train/validation/test by paper."})
    card: CardConfig = field(default_factory=CardConfig, metadata={"help": "The dataset card (README.md)."})
    shard: str | None = field(
        default=None,
        metadata={
            "help": "Scale-out: 'i/n' builds only shard i of n (papers hashed by id) up to labelling; merge the "
            "shard folders with merge_from. See docs/scale_out.md."
        },
    )
    merge_from: list[str] = field(
        default_factory=list,
        metadata={"help": "Scale-out: shard output folders to merge, dedup, split and publish as one dataset."},
    )
    stop_after: str | None = field(
        default=None,
        metadata={
            "help": "Scale-out, with shard and a pool recipe: 'generate' stops the shard after generation, so that "
            "every shard can then draw pool distractors from all shards (pool_from). See docs/scale_out.md."
        },
    )
    pool_from: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Scale-out, with shard: the shard folders (all of them, generated with stop_after: generate) "
            "whose generated options make the distractor pool, instead of this shard's own."
        },
    )
    cache_path: str | None = field(
        default=None,
        metadata={"help": "LLM call cache (sqlite); default <output_dir>/.wildsci_build/llm_cache.sqlite."},
    )
    executor: ExecutorConfig = field(
        default_factory=ExecutorConfig,
        metadata={
            "help": "Where the build runs: inprocess (default), local (a process pool) or slurm (an array job), "
            "one task per shard, then the merge. See docs/scale_out.md."
        },
    )

    def __post_init__(self) -> None:
        if not self.sources and not self.merge_from:
            raise ValueError("sources is empty -- list at least one corpus of papers")
        if self.shard is not None:
            self.shard_tuple()  # validates
        if self.shard is not None and self.merge_from:
            raise ValueError("shard and merge_from are exclusive: build the shards first, then merge them")
        if self.stop_after not in (None, "generate"):
            raise ValueError(f"stop_after can only be 'generate' (or null), got {self.stop_after!r}")
        if self.executor.kind != "inprocess" and (
            self.shard is not None or self.merge_from or self.stop_after or self.pool_from
        ):
            raise ValueError(
                "executor.kind local/slurm runs the shards and the merge itself -- drop shard/merge_from/stop_after/"
                "pool_from (they are the low-level interface the executor uses)"
            )
        if (self.stop_after or self.pool_from) and self.shard is None:
            raise ValueError("stop_after and pool_from split a shard's build in two -- they need shard: 'i/n'")
        if self.stop_after and self.pool_from:
            raise ValueError("stop_after: generate comes before pool_from -- run the shard with one, then the other")
        if self.max_papers is not None and self.max_papers < 1:
            raise ValueError("max_papers must be at least 1 (or null)")

    def uses_pool(self) -> bool:
        """The options stage draws distractors from the build's own questions: shards must see each other's."""
        return self.options.generate_distractors and self.options.distractor_source != "llm"

    def shard_tuple(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        try:
            i, n = (int(x) for x in str(self.shard).split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {self.shard!r}") from None
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard {self.shard!r}: need 0 <= i < n")
        return i, n

    def voter_configs(self) -> list[BackendConfig]:
        return list(self.voters) or [self.generator]

    def labeler_config(self) -> BackendConfig:
        return self.labeler or self.generator


def load_build_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> BuildRecipe:
    """Load and check a data recipe (one-line :class:`wildsci.recipes.RecipeError` on any problem)."""
    return load_recipe(path, BuildRecipe, overrides)
