"""Evaluation data: where each benchmark comes from, how its rows become one question shape, and option permutations.

Every benchmark the kit evaluates on (the WildSci held-out split, GPQA-Diamond, SuperGPQA, MMLU-Pro, SciEval,
ARC-Challenge) is turned into the same normalized question by its adapter in :mod:`wildsci.eval.adapters`.

This module does not import lighteval: the lighteval glue lives in ``eval_tasks/wildsci_tasks.py`` and the
evaluation matrix in :mod:`wildsci.eval.run`; both read sources through :func:`load_config`.

Where the data comes from (highest priority first):

1. ``WILDSCI_EVAL_<SOURCE>=<file|folder|hub id>`` (plus ``_SPLIT`` / ``_REVISION``), e.g.
   ``WILDSCI_EVAL_MMLU_PRO=../shared/data/benchmarks/mmlu_pro_test.jsonl``;
2. a JSON/YAML file named by ``WILDSCI_EVAL_CONFIG`` (written by ``wildsci eval``; see :class:`EvalDataConfig`);
3. the pinned Hub dataset of :data:`SOURCES`.

A local file is normalized once into ``<cache>/eval_data/<task>/<content hash>/test.jsonl`` (GPQA: next to the
file you decrypted, never in a shared cache) so lighteval loads a plain local dataset whose path changes
whenever the content does -- which keeps lighteval's own response cache honest.

Length (~410 lines): the source table, reading (local files, GPQA's encrypted zip, the Hub), normalization with
its cache, and permutations all work on the same source records; the per-benchmark row adapters are already apart
(:mod:`wildsci.eval.adapters`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wildsci.answers import LETTERS
from wildsci.errors import UserError, first_line
from wildsci.eval.adapters import (
    FORMAT_VERSION,
    OTHER,
    BadRow,
    adapt_arc,
    adapt_gpqa,
    adapt_mmlu_pro,
    adapt_scieval,
    adapt_supergpqa,
    adapt_wildsci,
    normalize,
)

DEFAULT_MAX_NEW_TOKENS = 4096  # room for step-by-step reasoning before the final boxed answer


# ------------------------------------------------------------------------------------ sources and tasks
@dataclass(frozen=True)
class Source:
    """One benchmark dataset: its pinned Hub location and how to read its rows."""

    name: str
    adapter: Callable[[dict], dict]
    hub_repo: str
    hub_subset: str
    hub_split: str
    hub_revision: str | None
    sensitive: bool = False  # GPQA: questions must never be written outside the folder the user decrypted into
    note: str = ""
    card_rows: int | None = None  # rows of the pinned split as its dataset card states (``--dry-run`` offline)

    @property
    def env(self) -> str:
        return f"WILDSCI_EVAL_{self.name.upper()}"


@dataclass(frozen=True)
class TaskSpec:
    """One lighteval task: a source, optionally restricted to a subset of its rows."""

    short: str  # recipe name, e.g. "mmlu_pro_science"
    source: str
    description: str
    subset: Callable[[dict], bool] | None = None

    @property
    def name(self) -> str:
        return f"wildsci:{self.short}"


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "wildsci",
            adapt_wildsci,
            "JustinTX/WildSci",
            "default",
            "train",
            "8890d6697bb48a5deebd7469ccdbcf2559499342",
            note="the published release has only a train split: for a held-out score point WILDSCI_EVAL_WILDSCI "
            "at a dataset built with `wildsci build` (its test split is used)",
        ),
        Source("gpqa_diamond", adapt_gpqa, "Idavidrein/gpqa", "gpqa_diamond", "train",
               "90b8e5be2b1d3d2dbfe016cdab47981150600c4a", sensitive=True, note="gated on the Hub: accept its terms",
               card_rows=198),
        Source("supergpqa", adapt_supergpqa, "m-a-p/SuperGPQA", "default", "train",
               "4430d4458112c7d4497fdcf94d7cc223313d6acf", card_rows=26529),
        Source("mmlu_pro", adapt_mmlu_pro, "TIGER-Lab/MMLU-Pro", "default", "test",
               "3373e0b32277875b8db2aa555a333b78a08477ea", card_rows=12032),
        Source("scieval", adapt_scieval, "OpenDFM/SciEval", "default", "validation",
               "370117e4ee95dd8553f6a053ee00a4932429fe5f", note="multiple-choice rows of the validation split"),
        Source("arc_challenge", adapt_arc, "allenai/ai2_arc", "ARC-Challenge", "test",
               "210d026faf9955653af8916fad021475a3f00453", card_rows=1172),
    )
}  # fmt: skip


def _is_science(q: dict) -> bool:
    return q["discipline"] != OTHER


def _supergpqa_science(q: dict) -> bool:
    return q["subject"].split("/")[0].strip().lower() == "science"


TASKS: dict[str, TaskSpec] = {
    t.short: t
    for t in (
        TaskSpec("wildsci", "wildsci", "held-out split of a WildSci-format dataset, per-discipline scores"),
        TaskSpec("gpqa_diamond", "gpqa_diamond", "GPQA-Diamond (198 questions, 4 options, seeded option order)"),
        TaskSpec("supergpqa", "supergpqa", "SuperGPQA, all 285 disciplines (up to 10 options)"),
        TaskSpec("supergpqa_science", "supergpqa", "SuperGPQA, the 'Science' discipline only", _supergpqa_science),
        TaskSpec("mmlu_pro", "mmlu_pro", "MMLU-Pro, all 14 categories (up to 10 options)"),
        TaskSpec(
            "mmlu_pro_science",
            "mmlu_pro",
            "MMLU-Pro categories with a WildSci discipline: biology, chemistry, physics, health, engineering, "
            "math, computer science",
            _is_science,
        ),
        TaskSpec("scieval", "scieval", "SciEval multiple-choice questions (biology, chemistry, physics)"),
        TaskSpec("arc_challenge", "arc_challenge", "ARC-Challenge (grade-school science, 3-5 options)"),
    )
}

PERM_PREFIX = "wildsci_perm"


def full_task(short: str) -> str | None:
    """The task that asks every question of ``short``'s source (``mmlu_pro`` for ``mmlu_pro_science``), or None."""
    spec = TASKS[short]
    if spec.subset is None:
        return None
    return next((t.short for t in TASKS.values() if t.source == spec.source and t.subset is None), None)


def derived_tasks(tasks: list[str], limits: dict[str, int]) -> dict[str, str]:
    """``{subset task: full task}`` for the subsets of a run scored from their full task's answers.

    Why: a subset's questions are the full task's, asked with the same prompt, option order and parser, so
    generating them again costs time (SuperGPQA's science subset is a third of it) and buys nothing. Only when
    the full task runs on every question: a sliced full task (``max_samples``) need not contain the subset's slice.
    """
    return {
        t: full for t in tasks if (full := full_task(t)) is not None and full in tasks and limits.get(full) is None
    }


def in_subset(short: str, discipline: str, subject: str) -> bool:
    """Whether a question of the full task belongs to subset task ``short`` (the predicate of its TaskSpec)."""
    return TASKS[short].subset({"discipline": discipline, "subject": subject})


def perm_task_name(short: str, k: int) -> str:
    """``wildsci_perm:<task>:<k>`` -- its own prefix so that ``wildsci|0`` never runs the permuted copies."""
    return f"{PERM_PREFIX}:{short}:{k}"


def parse_task_name(name: str) -> tuple[TaskSpec, int | None]:
    """``wildsci:mmlu_pro`` -> (spec, None); ``wildsci_perm:mmlu_pro:2`` -> (spec, 2); ``mmlu_pro`` -> (spec, None)."""
    base = name.split("|")[0]
    parts = base.split(":")
    if parts[0] == PERM_PREFIX and len(parts) == 3 and parts[2].isdigit():
        short, k = parts[1], int(parts[2])
    elif parts[0] == "wildsci" and len(parts) == 2:
        short, k = parts[1], None
    elif len(parts) == 1:
        short, k = parts[0], None
    else:
        short, k = "", None
    if short not in TASKS:
        raise UserError(f"unknown eval task {name!r} -- known: {', '.join(TASKS)}")
    return TASKS[short], k


# ------------------------------------------------------------------------------------ configuration
@dataclass
class EvalDataConfig:
    """Where each source's data lives and how much of each task to use.

    ``sources``: source name -> local file/folder or Hub id; ``splits``/``revisions``: per source;
    ``limits``: task short name -> number of questions (a deterministic, hash-ordered sample, so the same slice
    is used for every model); ``permutations``: K permuted copies of every task (``wildsci_perm:<task>:<k>``);
    ``max_new_tokens``: the tasks' generation budget (lighteval's transformers backend takes it from the task, not
    from the model's ``generation_parameters``, so it has to live here); ``tasks``: the task short names a run
    uses (``wildsci eval`` sets it) -- only their sources are read, so a source the run does not need can be
    missing or broken; empty means every task.
    """

    sources: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    revisions: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    permutations: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    tasks: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "tasks": self.tasks,
            "sources": self.sources,
            "splits": self.splits,
            "revisions": self.revisions,
            "limits": self.limits,
            "permutations": self.permutations,
            "max_new_tokens": self.max_new_tokens,
        }


def load_config(environ: dict[str, str] | None = None) -> EvalDataConfig:
    """Read ``WILDSCI_EVAL_CONFIG`` (JSON or YAML) and the per-source ``WILDSCI_EVAL_*`` variables (which win)."""
    env = os.environ if environ is None else environ
    cfg = EvalDataConfig()
    path = env.get("WILDSCI_EVAL_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"WILDSCI_EVAL_CONFIG={path}: no such file -- point it at a JSON or YAML config")
        import yaml

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: invalid config: {str(e).splitlines()[0]} -- fix the JSON/YAML") from None
        unknown = set(data) - set(cfg.to_json())
        if unknown:
            raise UserError(f"{p}: unknown keys {sorted(unknown)} -- valid: {', '.join(cfg.to_json())}")
        cfg = EvalDataConfig(**{k: data[k] for k in data})
    for name in SOURCES:
        key = f"WILDSCI_EVAL_{name.upper()}"
        if env.get(key):
            cfg.sources[name] = env[key]
        if env.get(f"{key}_SPLIT"):
            cfg.splits[name] = env[f"{key}_SPLIT"]
        if env.get(f"{key}_REVISION"):
            cfg.revisions[name] = env[f"{key}_REVISION"]
    if env.get("WILDSCI_EVAL_LIMIT"):
        for short in TASKS:
            cfg.limits.setdefault(short, int(env["WILDSCI_EVAL_LIMIT"]))
    for key, attr in (
        ("WILDSCI_EVAL_PERMUTATIONS", "permutations"),
        ("WILDSCI_EVAL_MAX_NEW_TOKENS", "max_new_tokens"),
    ):
        if env.get(key):
            try:
                setattr(cfg, attr, int(env[key]))
            except ValueError:
                raise UserError(f"{key}={env[key]!r} is not an integer -- set a whole number") from None
    bad = [s for s in list(cfg.sources) + list(cfg.splits) + list(cfg.revisions) if s not in SOURCES]
    if bad:
        raise UserError(f"unknown eval source(s) {sorted(set(bad))} -- known: {', '.join(SOURCES)}")
    bad = [t for t in cfg.limits if t not in TASKS]
    if bad:
        raise UserError(f"unknown eval task(s) in limits: {sorted(bad)} -- known: {', '.join(TASKS)}")
    bad = [t for t in cfg.tasks if t not in TASKS]
    if bad:
        raise UserError(f"unknown eval task(s) in tasks: {sorted(bad)} -- known: {', '.join(TASKS)}")
    return cfg


def is_local(ref: str) -> bool:
    """A file or folder (existing or not) rather than a Hub dataset id (``org/name``), by the rule of
    :func:`wildsci.models.resolve_model`: paths exist, start with ``. / ~``, have a file suffix or != 1 slash."""
    if Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        return True
    return Path(ref).suffix.lower() in (".jsonl", ".json", ".csv", ".parquet")


# ------------------------------------------------------------------------------------ reading rows
def _read_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            # split on "\n" only: some benchmark texts contain U+2028, which str.splitlines() would cut
            for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        raise UserError(f"{path}: line {i} is not valid JSON -- fix or remove that line") from None
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else data.get("data", [])
        if suffix == ".csv":
            return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except (pa.ArrowException, OSError) as e:  # e.g. "Couldn't deserialize thrift": a damaged page
                msg = f"{path}: not a readable parquet file ({first_line(e)}) -- re-download or re-export it"
                raise UserError(msg) from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text -- save it as UTF-8") from None
    raise UserError(f"{path}: unsupported file type {suffix!r} -- use .jsonl, .json, .csv or .parquet")


def read_rows(source: Source, ref: str, split: str | None = None, revision: str | None = None) -> list[dict]:
    """Raw rows of a source from a local file, a WildSci-layout folder, or a Hub dataset (pinned revision)."""
    p = Path(ref).expanduser()
    if p.is_file():
        return _read_file(p)
    if p.is_dir():
        if (p / "data").is_dir():
            from wildsci.dataset_io import load_wildsci

            try:
                return load_wildsci(str(p), split=split or "test").to_list()
            except UserError:
                raise
            except Exception as e:  # datasets/pyarrow raise many types for a damaged or partial folder
                msg = f"{p}: cannot read the dataset ({first_line(e)}) -- rebuild it or point at a file"
                raise UserError(msg) from None
        if (p / "test.jsonl").is_file():
            return _read_file(p / "test.jsonl")
        raise UserError(f"{p}: folder has no data/*.parquet (WildSci layout) or test.jsonl -- point at a file")
    if is_local(ref):
        raise UserError(f"{ref}: no such file or folder -- check {source.env}")
    from datasets import load_dataset

    try:
        ds = load_dataset(ref, source.hub_subset if ref == source.hub_repo else None, split=split or source.hub_split,
                          revision=revision)  # fmt: skip
    except Exception as e:  # datasets raises many types for "not found / offline / gated"
        msg = first_line(e)
        raise UserError(
            f"cannot load {ref!r} for {source.name}: {msg} -- check the id, network or {source.env}"
        ) from None
    return ds.to_list()


@dataclass
class Prepared:
    """A normalized local copy of one task's questions, ready for ``load_dataset(folder)``."""

    folder: Path
    n: int
    rows_in: int
    drops: dict[str, int]
    fingerprint: str


def _sample_key(qid: str) -> str:
    return hashlib.sha256(f"wildsci-eval-sample:{qid}".encode()).hexdigest()


def select(questions: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` questions, chosen by a hash of their id: the same slice for every model and every run."""
    if not limit or limit >= len(questions):
        return questions
    return sorted(questions, key=lambda q: _sample_key(q["question_id"]))[:limit]


def prepare_task(
    spec: TaskSpec, cfg: EvalDataConfig, cache: Path | None = None, rows: list[dict] | None = None
) -> Prepared:
    """Normalize a task's rows into ``<cache>/<task>/<hash>/test.jsonl`` (sensitive sources: beside the source file).

    Bad rows are dropped and counted by reason (``Prepared.drops``); duplicate question ids keep the first row.
    """
    source = SOURCES[spec.source]
    ref = cfg.sources.get(source.name, source.hub_repo)
    if rows is None:
        rows = read_rows(source, ref, cfg.splits.get(source.name), cfg.revisions.get(source.name, source.hub_revision))
    drops: Counter = Counter()
    questions, seen = [], set()
    for row in rows:
        try:
            q = normalize(source.adapter, row)
        except BadRow as e:
            drops[str(e)] += 1
            continue
        if spec.subset is not None and not spec.subset(q):
            continue  # not part of this task: not a drop
        if q["question_id"] in seen:
            drops["duplicate_id"] += 1
            continue
        seen.add(q["question_id"])
        questions.append(q)
    questions = select(questions, cfg.limits.get(spec.short))
    if not questions:
        raise UserError(f"{spec.name}: no usable questions in {ref} (drops: {dict(drops)}) -- check the file")
    blob = "\n".join(json.dumps(q, sort_keys=True, ensure_ascii=False) for q in questions) + "\n"
    fp = hashlib.sha256(f"{FORMAT_VERSION}\n{spec.short}\n{blob}".encode()).hexdigest()[:16]
    if source.sensitive and Path(ref).expanduser().exists():
        base = Path(ref).expanduser().resolve()
        base = (base if base.is_dir() else base.parent) / ".wildsci_eval"
    else:
        base = Path(cache) if cache else data_cache_dir()
    folder = base / spec.short / fp
    target = folder / "test.jsonl"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".test.jsonl.{os.getpid()}.tmp"
        tmp.write_text(blob, encoding="utf-8")
        os.replace(tmp, target)
    return Prepared(folder, len(questions), len(rows), dict(drops), fp)


def data_cache_dir() -> Path:
    from wildsci.models import cache_dir

    return Path(os.environ.get("WILDSCI_EVAL_DATA_CACHE", cache_dir() / "eval_data")).expanduser()


# ------------------------------------------------------------------------------------ permutations
def permutation(question_id: str, n: int, k: int) -> list[int]:
    """The k-th seeded order of a question's ``n`` options: ``order[i]`` is the original index shown at letter i."""
    order = list(range(n))
    random.Random(f"wildsci-perm:{question_id}:{k}").shuffle(order)
    return order


def permuted(q: dict, k: int | None) -> tuple[list[str], str, list[int]]:
    """Options, gold letter and order for permutation ``k`` (``None``: the question's own order)."""
    n = len(q["options"])
    order = list(range(n)) if k is None else permutation(q["question_id"], n, k)
    gold = order.index(LETTERS.index(q["answer"]))
    return [q["options"][i] for i in order], LETTERS[gold], order
