"""Per-discipline GRPO training metrics and the three "silently learns nothing" guards.

The rewards (:mod:`wildsci.rewards`) hand every scored completion to a :class:`RolloutCollector`
(discipline, gold letter, extracted letter, parser status, completion length, reward value). At every
logging step :class:`WildSciMetricsCallback`:

1. gathers the collectors of all processes (each rank only scores its own slice of the batch);
2. adds flat scalars (``wildsci/accuracy``, ``wildsci/<discipline>/accuracy``, ...) to the trainer's log
   dict, so trackio / tensorboard / the console show them next to TRL's own metrics. It must run before
   the reporting callbacks for that: :func:`wildsci.grpo` puts it first in the callback list;
3. appends one JSON object to ``<output_dir>/wildsci_metrics.jsonl`` (format in docs/architecture.md),
   which ``wildsci report`` plots. Keys a step cannot compute are omitted, never faked;
4. checks the guards, logs loud warnings and stores them in the record's ``warnings``:
   ``completions/clipped_ratio`` above 0.5 (answers cut off, so rewards are mostly 0), and
   ``frac_reward_zero_std`` near 1 for several logged steps in a row (every group has identical rewards:
   the GRPO advantage, hence the gradient, is zero), and one answer letter taking more than 40 % of the
   readable answers over a window of logged steps, beyond that letter's share of the gold answers (a
   collapse onto one letter: readable, "formatted", right by chance). Each step's record carries
   ``top_letter``, ``top_letter_share`` and ``top_letter_excess`` (share minus the gold share of that letter).

On resume the JSONL keeps the records up to the checkpoint's step and drops the ones that will be logged again.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from wildsci.answers import COLLAPSE_SHARE, LETTERS, LetterWindow, letter_share

log = logging.getLogger("wildsci.metrics")

NO_DISCIPLINE = ""  # rows of a dataset without a discipline column


def _empty_group() -> dict[str, Any]:
    return {"n": 0, "correct": 0, "unparseable": 0, "boxed": 0, "len_sum": 0, "len_n": 0, "reward": {}}


class RolloutCollector:
    """Accumulates scored completions between two logging steps, on one process.

    Every wildsci reward records the same completions; completion-level statistics (letters, accuracy,
    lengths) are counted once, from the first of our rewards in recipe order (``primary``), while each
    reward's values are summed separately so the weighted per-discipline reward can be formed at the end.
    """

    def __init__(self, reward_names: Sequence[str] = (), primary: str | None = None) -> None:
        self.reward_names = list(reward_names)
        self.primary = primary
        self.reset()

    def reset(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self.letters: Counter = Counter()
        self.gold_letters: Counter = Counter()

    def record(
        self,
        name: str,
        extractions: Sequence[Any],
        golds: Sequence[str],
        disciplines: Sequence[str] | None,
        lengths: Sequence[int] | None,
        values: Sequence[float],
    ) -> None:
        primary = self.primary or name
        if self.primary is None:
            self.primary = name
        discs = list(disciplines) if disciplines is not None else [NO_DISCIPLINE] * len(values)
        for i, (e, gold, disc, value) in enumerate(zip(extractions, golds, discs, values, strict=True)):
            g = self.groups.setdefault(disc or NO_DISCIPLINE, _empty_group())
            s = g["reward"].setdefault(name, [0.0, 0])
            s[0] += float(value)
            s[1] += 1
            if name != primary:
                continue
            g["n"] += 1
            g["correct"] += int(bool(e.ok and e.letter == gold))
            g["unparseable"] += int(not e.ok)
            g["boxed"] += int(bool(e.ok and e.method == "boxed"))
            if lengths is not None:
                g["len_sum"] += int(lengths[i])
                g["len_n"] += 1
            if e.ok:
                self.letters[e.letter] += 1
            if gold:
                self.gold_letters[gold] += 1

    def snapshot(self) -> dict[str, Any]:
        """This process's counts (plain, picklable) and a reset: what gets gathered across processes."""
        snap = {"groups": self.groups, "letters": dict(self.letters), "gold_letters": dict(self.gold_letters)}
        self.reset()
        return snap


def merge_snapshots(snaps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    letters: Counter = Counter()
    gold: Counter = Counter()
    for snap in snaps:
        letters.update(snap["letters"])
        gold.update(snap["gold_letters"])
        for disc, g in snap["groups"].items():
            m = groups.setdefault(disc, _empty_group())
            for k in ("n", "correct", "unparseable", "boxed", "len_sum", "len_n"):
                m[k] += g[k]
            for name, (total, n) in g["reward"].items():
                s = m["reward"].setdefault(name, [0.0, 0])
                s[0] += total
                s[1] += n
    return {"groups": groups, "letters": letters, "gold_letters": gold}


def summarize(
    merged: dict[str, Any], reward_names: Sequence[str], reward_weights: Sequence[float] | None
) -> dict[str, Any]:
    """Counts -> the JSONL's collector-side keys (accuracy, format_rate, ..., per_discipline, letters)."""
    groups = merged["groups"]
    n = sum(g["n"] for g in groups.values())
    if n == 0:
        return {}
    weights = dict(zip(reward_names, reward_weights or [1.0] * len(reward_names), strict=False))
    out: dict[str, Any] = {
        "accuracy": sum(g["correct"] for g in groups.values()) / n,
        "format_rate": sum(g["boxed"] for g in groups.values()) / n,
        "unparseable_rate": sum(g["unparseable"] for g in groups.values()) / n,
    }
    per: dict[str, dict[str, Any]] = {}
    for disc, g in sorted(groups.items()):
        if disc == NO_DISCIPLINE or g["n"] == 0:
            continue
        d: dict[str, Any] = {
            "n": g["n"],
            "accuracy": g["correct"] / g["n"],
            "unparseable_rate": g["unparseable"] / g["n"],
        }
        # The total reward needs every reward's value; a dotted-path reward does not report to us.
        if reward_names and all(g["reward"].get(r, [0, 0])[1] for r in reward_names):
            d["reward"] = sum(weights[r] * g["reward"][r][0] / g["reward"][r][1] for r in reward_names)
        if g["len_n"]:
            d["completion_length"] = g["len_sum"] / g["len_n"]
        per[disc] = d
    if per:
        out["per_discipline"] = per
    out["letters"] = {k: merged["letters"][k] for k in LETTERS if merged["letters"].get(k)}
    out["gold_letters"] = {k: merged["gold_letters"][k] for k in LETTERS if merged["gold_letters"].get(k)}
    out.update(letter_share(out["letters"], out["gold_letters"]))
    return out


def flat_scalars(summary: dict[str, Any], prefix: str = "wildsci/") -> dict[str, float]:
    """The summary as flat scalar names for trackio / tensorboard (``wildsci/Physics/accuracy``)."""
    keys = ("accuracy", "format_rate", "unparseable_rate", "top_letter_share", "top_letter_excess")
    flat = {f"{prefix}{k}": summary[k] for k in keys if k in summary}
    n = sum(summary.get("letters", {}).values())
    for letter, count in summary.get("letters", {}).items():
        flat[f"{prefix}letter_share/{letter}"] = count / n
    for disc, d in summary.get("per_discipline", {}).items():
        for k, v in d.items():
            flat[f"{prefix}{disc}/{k}"] = v
    return flat


def _gather_all(obj: Any) -> list[Any]:
    """Every process's ``obj`` (a list of one when training runs on a single process)."""
    from accelerate import PartialState

    if PartialState().num_processes > 1:
        from accelerate.utils import gather_object

        return gather_object([obj])
    return [obj]


# name in the JSONL -> key in the trainer's (TRL's) log dict
TRAINER_KEYS = {
    "loss": "loss",
    "reward": "reward",
    "reward_std": "reward_std",
    "completion_length": "completions/mean_length",
    "clipped_ratio": "completions/clipped_ratio",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "learning_rate": "learning_rate",
}
RECORD_ORDER = (
    "step epoch loss reward reward_std accuracy format_rate unparseable_rate completion_length clipped_ratio "
    "frac_reward_zero_std learning_rate per_discipline letters gold_letters top_letter top_letter_share "
    "top_letter_excess warnings"
).split()


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(v) or math.isinf(v) else float(v)


class Guards:
    """The three warnings; state carries across logging steps (the zero-std streak, the letter window)."""

    #: the one-letter guard judges from this many readable answers in its window (fewer: a few rollouts of one
    #: question agree by chance)
    MIN_LETTER_ANSWERS = 20

    def __init__(
        self,
        clipped_threshold: float = 0.5,
        zero_std_threshold: float = 0.95,
        zero_std_patience: int = 3,
        max_completion_length: int | None = None,
        letter_share_threshold: float = COLLAPSE_SHARE,
        letter_share_window: int = 8,
    ) -> None:
        self.clipped_threshold = clipped_threshold
        self.zero_std_threshold = zero_std_threshold
        self.zero_std_patience = zero_std_patience
        self.max_completion_length = max_completion_length
        self.letter_share_threshold = letter_share_threshold
        self.letter_window = LetterWindow(letter_share_window)
        self.streak = 0

    def one_letter(self, step: int, record: dict[str, Any]) -> str | None:
        """A letter above the threshold share of the window's readable answers and beyond its gold share, or None."""
        if "letters" not in record:
            return None  # a step without rewards (reused generation batch) neither adds to nor clears the window
        letters, gold = self.letter_window.add(record["letters"], record.get("gold_letters", {}))
        n = sum(letters.values())
        pooled = letter_share(dict(letters), dict(gold))
        if n < self.MIN_LETTER_ANSWERS or pooled["top_letter_share"] <= self.letter_share_threshold:
            return None
        if pooled["top_letter_excess"] <= 0:
            return None  # the gold letters are that skewed themselves: answering them is no collapse
        top, share = pooled["top_letter"], pooled["top_letter_share"]
        return (
            f"step {step}: {share:.0%} of the {n} readable answers of the last {len(self.letter_window)} logged steps "
            f"are {top} ({pooled['top_letter_excess']:+.0%} over its share of the gold letters); the policy is "
            "collapsing onto one letter and earns accuracy by chance (greedy answers will be that letter almost "
            "everywhere) -- ask each question under several option orders per step (option_rotations), add a KL "
            "term (beta) or lower the learning rate; see the letters histogram in wildsci_metrics.jsonl"
        )

    def check(self, step: int, record: dict[str, Any]) -> list[str]:
        warnings = []
        clipped = record.get("clipped_ratio")
        if clipped is not None and clipped > self.clipped_threshold:
            limit = f" ({self.max_completion_length} tokens)" if self.max_completion_length else ""
            warnings.append(
                f"step {step}: {clipped:.0%} of completions were cut off at max_completion_length{limit}; truncated "
                "answers get no reward, so the run learns little -- raise max_completion_length or ask for shorter "
                "reasoning"
            )
        zero = record.get("frac_reward_zero_std")
        if zero is not None:
            self.streak = self.streak + 1 if zero >= self.zero_std_threshold else 0
            if self.streak >= self.zero_std_patience:
                warnings.append(
                    f"step {step}: {zero:.0%} of prompt groups had identical rewards for {self.streak} logged steps "
                    "in a row; the GRPO advantage is 0, so nothing is learned -- add a shaping reward (format), raise "
                    "num_generations or temperature, or use questions of suitable difficulty"
                )
        collapse = self.one_letter(step, record)
        if collapse:
            warnings.append(collapse)
        return warnings


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``wildsci_metrics.jsonl`` (for the report and the model card)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def final_summary(records: Sequence[dict[str, Any]], fraction: float = 0.1) -> dict[str, Any]:
    """Mean of each scalar over the last ``fraction`` of logged steps (one GRPO step is a noisy handful of groups)."""
    recs = [r for r in records if "reward" in r or "accuracy" in r]
    if not recs:
        return {}
    tail = recs[-max(1, round(len(recs) * fraction)) :]
    out: dict[str, Any] = {"steps": [tail[0]["step"], tail[-1]["step"]]}
    for key in RECORD_ORDER:
        vals = [r[key] for r in tail if _number(r.get(key)) is not None and key not in ("step",)]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out


class WildSciMetricsCallback(TrainerCallback):
    """Writes ``wildsci_metrics.jsonl``, adds per-discipline scalars to the logs, runs the guards."""

    def __init__(
        self,
        collector: RolloutCollector,
        path: str | Path,
        reward_names: Sequence[str],
        reward_weights: Sequence[float] | None = None,
        guards: Guards | None = None,
        gather: Callable[[Any], list[Any]] = _gather_all,
    ) -> None:
        self.collector = collector
        self.path = Path(path)
        self.reward_names = list(reward_names)
        self.reward_weights = list(reward_weights) if reward_weights is not None else None
        self.guards = guards or Guards()
        self.gather = gather
        self.all_warnings: list[str] = []
        self.last_record: dict[str, Any] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.collector.reset()
        if not state.is_world_process_zero:
            return
        # Resume: keep what was logged up to the checkpoint, drop what is about to be logged again.
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)
        self.all_warnings = [w for r in kept for w in r.get("warnings", [])]

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        # Every rank reaches on_log at the same steps, so the collective gather is safe here.
        merged = merge_snapshots(self.gather(self.collector.snapshot()))
        summary = summarize(merged, self.reward_names, self.reward_weights)
        is_eval = any(k.startswith("eval_") for k in logs)
        logs.update(flat_scalars(summary, prefix="eval_wildsci/" if is_eval else "wildsci/"))
        if is_eval:
            return
        record: dict[str, Any] = {"step": state.global_step}
        if _number(logs.get("epoch")) is not None:
            record["epoch"] = float(logs["epoch"])
        for name, key in TRAINER_KEYS.items():
            v = _number(logs.get(key))
            if v is not None:
                record[name] = v
        record.update(summary)
        if len(record) <= 2 and "loss" not in record:
            return  # the end-of-training summary (train_runtime, ...): not a logging step
        warnings = self.guards.check(state.global_step, record)
        for w in warnings:
            log.warning("WILDSCI WARNING: %s", w)
        self.all_warnings.extend(warnings)
        record["warnings"] = warnings
        record = {k: record[k] for k in RECORD_ORDER if k in record}
        self.last_record = record
        if state.is_world_process_zero:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
