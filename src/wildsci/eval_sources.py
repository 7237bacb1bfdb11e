"""Evaluation data: where each benchmark comes from, how its rows become one question shape, and option permutations.

Every benchmark the kit evaluates on (the WildSci held-out split, GPQA-Diamond, SuperGPQA, MMLU-Pro, SciEval,
ARC-Challenge) is turned into the same normalized question::

    {"question_id", "question", "options": [str, ...], "answer": "C", "discipline", "subject"}

``discipline`` is one of the 9 WildSci taxonomy disciplines (or ``Other``), so WildSci's per-discipline training
signal can be compared with per-discipline benchmark accuracy; ``subject`` keeps the benchmark's own label.

This module does not import lighteval: the lighteval glue lives in ``eval_tasks/wildsci_tasks.py`` and the
evaluation matrix in :mod:`wildsci.evaluate`; both read sources through :func:`load_config`.

Where the data comes from (highest priority first):

1. ``WILDSCI_EVAL_<SOURCE>=<file|folder|hub id>`` (plus ``_SPLIT`` / ``_REVISION``), e.g.
   ``WILDSCI_EVAL_MMLU_PRO=../shared/data/benchmarks/mmlu_pro_test.jsonl``;
2. a JSON/YAML file named by ``WILDSCI_EVAL_CONFIG`` (written by ``wildsci eval``; see :class:`EvalDataConfig`);
3. the pinned Hub dataset of :data:`SOURCES`.

A local file is normalized once into ``<cache>/eval_data/<task>/<content hash>/test.jsonl`` (GPQA: next to the
file you decrypted, never in a shared cache) so lighteval loads a plain local dataset whose path changes
whenever the content does -- which keeps lighteval's own response cache honest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildsci.answers import LETTERS
from wildsci.errors import UserError, first_line

NORMALIZED_KEY = "wildsci_normalized"  # marks rows that are already in the normalized shape
FORMAT_VERSION = 1  # bump when the normalized shape or an adapter changes: it is part of the content hash
OTHER = "Other"
DEFAULT_MAX_NEW_TOKENS = 4096  # room for step-by-step reasoning before the final boxed answer

# ------------------------------------------------------------------------------------ discipline maps
# Benchmark labels -> WildSci taxonomy disciplines (taxonomy.yaml). Unmapped labels become "Other".
_MMLU_PRO = {
    "biology": "Biology",
    "chemistry": "Chemistry",
    "physics": "Physics",
    "health": "Health Sciences",
    "engineering": "Engineering",
    "math": "Mathematics and Computing",
    "computer science": "Mathematics and Computing",
}
_SUPERGPQA_FIELDS = {
    "physics": "Physics",
    "chemistry": "Chemistry",
    "biology": "Biology",
    "mathematics": "Mathematics and Computing",
    "systems science": "Mathematics and Computing",
    "computer science and technology": "Mathematics and Computing",
    "astronomy": "Astronomy and Planetary Science",
    "geology": "Earth and Environmental Sciences",
    "geography": "Earth and Environmental Sciences",
    "geophysics": "Earth and Environmental Sciences",
    "atmospheric science": "Earth and Environmental Sciences",
    "oceanography": "Earth and Environmental Sciences",
    "physical oceanography": "Earth and Environmental Sciences",
    "environmental science and engineering": "Earth and Environmental Sciences",
    "materials science and engineering": "Materials Science",
}
_SUPERGPQA_DISCIPLINES = {"engineering": "Engineering", "medicine": "Health Sciences"}
_SIMPLE = {
    "physics": "Physics",
    "chemistry": "Chemistry",
    "biology": "Biology",
}


def disciplines() -> tuple[str, ...]:
    """The per-discipline keys every task reports: the taxonomy disciplines, then ``Other``."""
    from wildsci.taxonomy import load_taxonomy

    return (*load_taxonomy().disciplines, OTHER)


# ------------------------------------------------------------------------------------ row adapters
class BadRow(ValueError):
    """A row that cannot be a question; the message is the drop reason counted in the report."""


def _opts(values: Iterable[Any]) -> list[str]:
    opts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not 2 <= len(opts) <= len(LETTERS):
        raise BadRow("option_count")
    return opts


def _letter(answer: Any, n: int, index: Any = None) -> str:
    a = str(answer or "").strip().strip("()").upper()
    if len(a) == 1 and a in LETTERS[:n]:
        return a
    if isinstance(index, int) and 0 <= index < n:
        return LETTERS[index]
    raise BadRow("bad_answer")


def _qid(row: dict, *keys: str, text: str = "") -> str:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip():
            return str(v).strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _question(row: dict, *keys: str) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v.strip()
    raise BadRow("no_question")


def _mcq(qid: str, question: str, options: list[str], answer: str, discipline: str, subject: str) -> dict:
    return {
        NORMALIZED_KEY: FORMAT_VERSION,
        "question_id": qid,
        "question": question,
        "options": options,
        "answer": answer,
        "discipline": discipline,
        "subject": subject,
    }


def adapt_wildsci(row: dict) -> dict:
    """A WildSci row (options struct A..J) -- the published dataset or one built by ``wildsci build``."""
    from wildsci.schema import options_list, question_id

    q = _question(row, "question")
    opts = _opts(options_list(row.get("options") or {}))
    disc = str(row.get("discipline") or "").strip() or OTHER
    if disc not in disciplines():
        disc = OTHER
    qid = _qid(row, "question_id") if row.get("question_id") else question_id(str(row.get("paper_id", "")), q)
    return _mcq(qid, q, opts, _letter(row.get("answer"), len(opts)), disc, str(row.get("nc_subdomain") or disc))


def adapt_mmlu_pro(row: dict) -> dict:
    """MMLU-Pro: the shared jsonl (``subject``) or the Hub rows (``category``); up to 10 options."""
    q = _question(row, "question")
    opts = _opts(row.get("options") or [])
    # The option list may contain "N/A" padding in some revisions: keep it (answer letters index the list).
    subject = str(row.get("category") or row.get("subject") or "").strip().lower()
    ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    return _mcq(
        _qid(row, "question_id", "id", text=q), q, opts, ans, _MMLU_PRO.get(subject, OTHER), subject or "unknown"
    )


def adapt_arc(row: dict) -> dict:
    """ARC-Challenge: the shared jsonl (options list) or the Hub rows (``choices: {text, label}``, ``answerKey``)."""
    q = _question(row, "question")
    if isinstance(row.get("choices"), dict):
        labels = [str(x) for x in row["choices"].get("label", [])]
        opts = _opts(row["choices"].get("text", []))
        key = str(row.get("answerKey", "")).strip()
        if key not in labels or len(labels) != len(opts):
            raise BadRow("bad_answer")
        ans = LETTERS[labels.index(key)]
    else:
        opts = _opts(row.get("options") or [])
        ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    return _mcq(_qid(row, "id", text=q), q, opts, ans, OTHER, "ARC-Challenge")


_OPTION_LINE = re.compile(r"^\s*([A-J])[.)]\s+(.*\S)\s*$")


def adapt_scieval(row: dict) -> dict:
    """SciEval multiple-choice: the shared jsonl (options split out) or the Hub rows (options inside the text)."""
    if row.get("type") not in (None, "multiple-choice"):
        raise BadRow("not_multiple_choice")
    subject = str(row.get("subject") or row.get("category") or "").strip().lower()
    if row.get("options"):
        q = _question(row, "question")
        opts = _opts(row["options"])
        ans = _letter(row.get("answer"), len(opts), row.get("answer_index"))
    else:  # Hub: "question\n\nA. x\nB. y\n...\n\nAnswer:" and answer == ["B"]
        text = _question(row, "question")
        text = re.sub(r"\n\s*Answer:\s*$", "", text.strip())
        lines = text.splitlines()
        opt_lines: list[tuple[str, str]] = []
        while lines and (m := _OPTION_LINE.match(lines[-1])):
            opt_lines.insert(0, (m.group(1), m.group(2)))
            lines.pop()
        if [letter for letter, _ in opt_lines] != list(LETTERS[: len(opt_lines)]):
            raise BadRow("options_not_parsed")
        q = "\n".join(lines).strip()
        if not q:
            raise BadRow("no_question")
        opts = _opts(t for _, t in opt_lines)
        answer = row.get("answer")
        ans = _letter(answer[0] if isinstance(answer, list) and answer else answer, len(opts))
    return _mcq(_qid(row, "id", text=q), q, opts, ans, _SIMPLE.get(subject, OTHER), subject or "unknown")


def _gpqa_order(record_id: str, n: int) -> list[int]:
    """GPQA lists the correct answer first; a seeded shuffle per record gives every letter a fair share."""
    order = list(range(n))
    random.Random(f"gpqa-options:{record_id}").shuffle(order)
    return order


def adapt_gpqa(row: dict) -> dict:
    """GPQA: the shared zip's jsonl (``correct_answer``, ``incorrect_answers``) or the Hub/CSV columns."""
    q = _question(row, "question", "Question")
    if "correct_answer" in row:
        raw = [row.get("correct_answer"), *(row.get("incorrect_answers") or [])]
    else:
        raw = [row.get("Correct Answer")] + [row.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
    if any(r is None or not str(r).strip() for r in raw):
        raise BadRow("option_count")
    qid = _qid(row, "record_id", "Record ID", text=q)
    order = _gpqa_order(qid, len(raw))
    opts = _opts(raw[i] for i in order)
    domain = str(row.get("high_level_domain") or row.get("High-level domain") or "").strip()
    return _mcq(qid, q, opts, LETTERS[order.index(0)], _SIMPLE.get(domain.lower(), OTHER), domain or "unknown")


def adapt_supergpqa(row: dict) -> dict:
    """SuperGPQA: ``options`` (up to 10), ``answer_letter``, ``discipline`` > ``field`` > ``subfield``."""
    q = _question(row, "question")
    opts = _opts(row.get("options") or [])
    ans = _letter(row.get("answer_letter") or row.get("answer"), len(opts))
    disc = str(row.get("discipline") or "").strip()
    fld = str(row.get("field") or "").strip()
    mapped = _SUPERGPQA_FIELDS.get(fld.lower()) or _SUPERGPQA_DISCIPLINES.get(disc.lower(), OTHER)
    return _mcq(_qid(row, "uuid", text=q), q, opts, ans, mapped, f"{disc}/{fld}" if fld else disc or "unknown")


def normalize(adapter: Callable[[dict], dict], row: dict) -> dict:
    """Normalized rows pass through unchanged; anything else goes through the benchmark's adapter."""
    if row.get(NORMALIZED_KEY):
        return row
    return adapter(row)


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
               "90b8e5be2b1d3d2dbfe016cdab47981150600c4a", sensitive=True, note="gated on the Hub: accept its terms"),
        Source("supergpqa", adapt_supergpqa, "m-a-p/SuperGPQA", "default", "train",
               "4430d4458112c7d4497fdcf94d7cc223313d6acf"),
        Source("mmlu_pro", adapt_mmlu_pro, "TIGER-Lab/MMLU-Pro", "default", "test",
               "3373e0b32277875b8db2aa555a333b78a08477ea"),
        Source("scieval", adapt_scieval, "OpenDFM/SciEval", "default", "validation",
               "370117e4ee95dd8553f6a053ee00a4932429fe5f", note="multiple-choice rows of the validation split"),
        Source("arc_challenge", adapt_arc, "allenai/ai2_arc", "ARC-Challenge", "test",
               "210d026faf9955653af8916fad021475a3f00453"),
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
