"""lighteval custom tasks for WildSci: science multiple-choice benchmarks scored with the kit's one answer parser.

Run one task, or the whole suite (``wildsci|0``)::

    lighteval accelerate "model_name=Qwen/Qwen2.5-7B-Instruct,dtype=bfloat16" "wildsci:mmlu_pro_science|0" \\
        --custom-tasks eval_tasks/wildsci_tasks.py
    wildsci-lighteval accelerate model.yaml "wildsci|0" --custom-tasks eval_tasks/wildsci_tasks.py   # also offline

Tasks (all prefixed ``wildsci:`` so they never clash with lighteval's built-ins such as ``mmlu_pro``):
``wildsci:wildsci`` (held-out WildSci split), ``wildsci:gpqa_diamond``, ``wildsci:supergpqa``,
``wildsci:supergpqa_science``, ``wildsci:mmlu_pro``, ``wildsci:mmlu_pro_science``, ``wildsci:scieval``,
``wildsci:arc_challenge``. With ``WILDSCI_EVAL_PERMUTATIONS=K`` every task also gets K copies
``wildsci_perm:<task>:<k>`` whose options are shown in the k-th seeded order (robustness to option order).

What every task shares, and why:

- the prompt is :func:`wildsci.prompts.format_question` -- the exact number of lettered options and an
  instruction naming the last letter (lighteval's built-in MMLU-Pro prompt says "ABCD" for 10 options); the
  system prompt is the model's (``system_prompt`` in the model config; ``wildsci eval`` sets
  :data:`wildsci.prompts.SYSTEM_PROMPT`, the one GRPO trains with);
- option letters are deterministic: the benchmark's own order, GPQA's seeded per-record shuffle, or the k-th
  seeded permutation -- never an unseeded shuffle;
- scoring is :func:`wildsci.answers.extract_answer`, the parser the GRPO reward uses, so a completion that
  earned reward in training is scored the same way here. Metrics: ``acc``, ``extraction_rate`` (share of
  completions the parser could read a letter from) and ``acc:<discipline>`` for the 9 WildSci disciplines and
  ``Other`` (NaN where a task has no question of that discipline);
- Hub datasets are pinned to a revision; any source can be a local file instead (see ``eval_tasks/README.md``).

Importing this file also makes lighteval's response cache weights-aware (see :mod:`wildsci.lighteval_compat`)
and lighteval's built-in task import offline-safe for later in-process use.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from lighteval.metrics.metrics_sample import SampleLevelComputation
from lighteval.metrics.utils.metric_utils import SampleLevelMetric, SampleLevelMetricGrouping
from lighteval.models.model_output import ModelResponse
from lighteval.tasks.lighteval_task import LightevalTaskConfig
from lighteval.tasks.requests import Doc, SamplingMethod

from wildsci.answers import LETTERS, extract_answer
from wildsci.eval.adapters import BadRow, disciplines, normalize
from wildsci.eval.sources import (
    SOURCES,
    TASKS,
    TaskSpec,
    is_local,
    load_config,
    parse_task_name,
    perm_task_name,
    permuted,
    prepare_task,
    read_rows,
)
from wildsci.lighteval_compat import import_builtin_tasks_offline_safe, install_weights_aware_cache
from wildsci.prompts import format_question

logger = logging.getLogger(__name__)
install_weights_aware_cache()
# For the Python API (``Registry(custom_tasks=...)`` in-process): built-ins imported after this stay offline-safe.
import_builtin_tasks_offline_safe()

#: rows the prompt function could not turn into a question, by task and reason (Hub sources; local files are
#: counted when they are prepared)
DROPPED: Counter = Counter()


# ------------------------------------------------------------------------------------------- prompt
def wildsci_prompt(line: dict, task_name: str) -> Doc | None:
    """One dataset row -> one lighteval ``Doc`` in the kit's prompt format (``None`` drops a bad row, counted)."""
    spec, k = parse_task_name(task_name)
    try:
        q = normalize(SOURCES[spec.source].adapter, line)
    except BadRow as e:
        DROPPED[(task_name, str(e))] += 1
        if DROPPED[(task_name, str(e))] in (1, 100, 1000):
            logger.warning(f"{task_name}: dropped {DROPPED[(task_name, str(e))]} row(s) so far: {e}")
        return None
    options, gold, order = permuted(q, k)
    return Doc(
        task_name=task_name,
        query=format_question(q["question"], options),
        choices=list(LETTERS[: len(options)]),
        gold_index=LETTERS.index(gold),
        specific={
            "question_id": q["question_id"],
            "gold": gold,
            "num_options": len(options),
            "discipline": q["discipline"],
            "subject": q["subject"],
            "permutation": -1 if k is None else k,
            "order": order,
        },
    )


# ------------------------------------------------------------------------------------------- metrics
def score_completion(text: str | None, gold: str, num_options: int) -> dict[str, float | str]:
    """The per-sample score: the parser's letter (or ``""``), whether it is the gold letter, whether one was found."""
    e = extract_answer(text or "", num_options)
    return {"pred": e.letter or "", "acc": float(e.ok and e.letter == gold), "extracted": float(e.ok)}


def _completion(model_response: ModelResponse) -> str:
    # The raw text, reasoning included: the parser strips closed <think> blocks itself and treats an unclosed
    # one as "no answer", exactly as the GRPO reward does.
    return model_response.text[0] if model_response.text else ""


class AnswerScorer(SampleLevelComputation):
    """``acc`` and ``extraction_rate`` from :func:`wildsci.answers.extract_answer`."""

    def compute(self, doc: Doc, model_response: ModelResponse, **kwargs) -> dict[str, float]:
        s = score_completion(_completion(model_response), doc.specific["gold"], doc.specific["num_options"])
        return {"acc": s["acc"], "extraction_rate": s["extracted"]}


class DisciplineScorer(SampleLevelComputation):
    """Per-sample (discipline, correct, chosen letter), aggregated into ``acc:<discipline>`` for every discipline.

    The chosen letter rides along in the saved details, so ``wildsci eval`` reads the letter lighteval scored
    instead of parsing the completion a second time.
    """

    def compute(self, doc: Doc, model_response: ModelResponse, **kwargs) -> dict:
        s = score_completion(_completion(model_response), doc.specific["gold"], doc.specific["num_options"])
        return {"discipline": doc.specific["discipline"], "correct": s["acc"], "pred": s["pred"]}


def discipline_accuracy(items: list[dict]) -> dict[str, float]:
    """Mean accuracy per discipline; every task reports the same keys (NaN when it has no such question) so that
    lighteval's cross-task averages stay well defined."""
    by: dict[str, list[float]] = {}
    for it in items:
        by.setdefault(it["discipline"], []).append(float(it["correct"]))
    return {f"acc:{d}": (float(np.mean(by[d])) if d in by else float("nan")) for d in disciplines()}


answer_metrics = SampleLevelMetricGrouping(
    metric_name=["acc", "extraction_rate"],
    higher_is_better={"acc": True, "extraction_rate": True},
    category=SamplingMethod.GENERATIVE,
    sample_level_fn=AnswerScorer(),
    corpus_level_fn={"acc": np.mean, "extraction_rate": np.mean},
)
discipline_metrics = SampleLevelMetric(
    metric_name="acc_by_discipline",
    higher_is_better=True,
    category=SamplingMethod.GENERATIVE,
    sample_level_fn=DisciplineScorer(),
    corpus_level_fn=discipline_accuracy,
)


# ------------------------------------------------------------------------------------------- task table
def _hub_filter(spec: TaskSpec):
    """Keep the rows of a Hub dataset that belong to the task (bad rows are dropped by the prompt function)."""
    adapter = SOURCES[spec.source].adapter

    def keep(row: dict) -> bool:
        try:
            return spec.subset(normalize(adapter, row))
        except BadRow:
            return True  # let the prompt function count it

    keep.__name__ = f"keep_{spec.short}"
    return keep


def task_config(spec: TaskSpec, name: str, cfg, prepared: dict) -> LightevalTaskConfig:
    """The lighteval config of one task: a prepared local folder, or the pinned Hub dataset."""
    source = SOURCES[spec.source]
    common = dict(
        name=name,
        prompt_function=wildsci_prompt,
        metrics=[answer_metrics, discipline_metrics],
        generation_size=cfg.max_new_tokens,
        stop_sequence=[],
        few_shots_split=None,
        few_shots_select=None,
        version=1,
    )
    if spec.short in prepared:
        p = prepared[spec.short]
        return LightevalTaskConfig(
            hf_repo=str(p.folder), hf_subset="default", hf_avail_splits=["test"], evaluation_splits=["test"], **common
        )
    split = cfg.splits.get(source.name, source.hub_split)
    return LightevalTaskConfig(
        hf_repo=cfg.sources.get(source.name, source.hub_repo),
        hf_subset=source.hub_subset,
        hf_revision=cfg.revisions.get(source.name, source.hub_revision),
        hf_filter=_hub_filter(spec) if spec.subset else None,
        hf_avail_splits=[split],
        evaluation_splits=[split],
        **common,
    )


def build_tasks_table() -> tuple[list[LightevalTaskConfig], dict]:
    """The task configs for the current configuration (env / ``WILDSCI_EVAL_CONFIG``): its ``tasks``, or all.

    Tasks whose source is a local file are prepared now (normalized into a content-addressed folder; limits
    applied), which reads local files only. Hub datasets are left to lighteval, which downloads them when a task
    runs -- nothing here touches the network at import. Limits do not apply to Hub sources: use lighteval's
    ``--max-samples``, or ``wildsci eval``, which downloads and slices them itself.
    """
    cfg = load_config()
    # only the tasks of this run (``tasks`` in the config, set by ``wildsci eval``): a source the run does not use
    # is never read, so it may be missing or damaged without failing the run
    specs = [TASKS[t] for t in cfg.tasks] if cfg.tasks else list(TASKS.values())
    prepared, rows_by_source = {}, {}
    for spec in specs:
        ref = cfg.sources.get(spec.source)
        if not (ref and is_local(ref)):
            continue
        if spec.source not in rows_by_source:
            rows_by_source[spec.source] = read_rows(SOURCES[spec.source], ref, cfg.splits.get(spec.source))
        p = prepare_task(spec, cfg, rows=rows_by_source[spec.source])
        prepared[spec.short] = p
        if p.drops:
            logger.warning(f"{spec.name}: dropped {sum(p.drops.values())} of {p.rows_in} rows: {p.drops}")
    table = [task_config(spec, spec.name, cfg, prepared) for spec in specs]
    for k in range(cfg.permutations):
        table += [task_config(spec, perm_task_name(spec.short, k), cfg, prepared) for spec in specs]
    return table, prepared


TASKS_TABLE, PREPARED = build_tasks_table()
