"""GRPO reward functions for WildSci multiple-choice questions, found by name or by dotted path.

Every reward here scores a completion with the one answer parser (:func:`wildsci.answers.extract_answer`),
so what earns reward in training is exactly what counts as correct at evaluation time.

- ``accuracy``: 1 when the extracted letter is the gold letter, 0 when it is wrong, 0 when nothing can be
  parsed (an ambiguous "A or B" is unparseable: a policy must not collect reward by listing letters).
- ``format``: 1 for a ``\\boxed{X}`` answer, ``format_partial_credit`` for an answer the parser can read in
  any other form (``The correct option is D.``), 0 otherwise. Why partial credit: a small instruct model
  (SmolLM2-135M) never boxes out of the box, so a boxed-only reward is 0 for every completion of every
  group, the GRPO advantage is 0 and nothing is learned. Partial credit gives the groups variance first
  (readable vs unreadable), then the gap to 1 pulls the policy towards the requested format.
- ``format_after_warmup``: the format reward for the first ``format_warmup_steps`` training steps, then
  format credit only with the right letter. Why: format credit that any letter can earn, kept for the whole
  run, pays a policy for answering one letter to everything (readable, boxed, right by chance); after the
  warm-up has taught the format, the credit only follows correct answers.
- ``letter_balance``: minus the excess of a completion's letter over its gold share, pooled over the last
  ``letter_balance_window`` reward calls (this one included): ``-(share of L among readable answers - share of L
  among the gold letters)`` when positive, else 0; unreadable answers get 0. Why: once a policy answers one letter
  to every question, every group scores the same, the advantage is 0 and nothing moves it back, so the collapse
  has to be stopped before it happens. The penalty is 0 for a policy that answers every question right (its
  letters are the gold letters), so it changes nothing about what the best policy is; it only takes away the
  reward of the one-letter shortcut. The window lives in the process: a resumed run starts it empty.

Rewards follow TRL's signature: ``f(prompts, completions, completion_ids, **dataset_columns) -> list[float]``.
Each reward logs the letter it extracted to TRL's completions table (``log_extra``) and hands the
per-completion outcome to a :class:`wildsci.metrics.RolloutCollector`, which turns it into per-discipline
training metrics. A reward given as ``my_pkg.my_module:my_reward`` is any TRL-style callable; it is used
as-is (its values count in TRL's reward, but the per-discipline reward is then omitted, not guessed).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from wildsci.answers import Extraction, LetterWindow, extract_answer
from wildsci.errors import UserError
from wildsci.schema import NUM_OPTIONS, options_list

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """A TRL completion is a string (standard format) or a list of messages (conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list | tuple):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    return str(completion)


def _num_options(options: Any) -> int:
    if options is None:
        return NUM_OPTIONS
    n = len(options_list(options))
    return n if 1 <= n <= NUM_OPTIONS else NUM_OPTIONS


def extract_all(completions: Sequence[Any], options: Sequence[Any] | None) -> list[Extraction]:
    """The parser's decision for every completion (``options`` gives each question's option count)."""
    opts = options if options is not None else [None] * len(completions)
    return [extract_answer(completion_text(c), _num_options(o)) for c, o in zip(completions, opts, strict=True)]


def accuracy_score(e: Extraction, gold: str | None) -> float:
    return 1.0 if e.ok and gold and e.letter == gold else 0.0


def format_score(e: Extraction, partial_credit: float) -> float:
    if not e.ok:
        return 0.0
    return 1.0 if e.method == "boxed" else partial_credit


#: a per-completion score: (parser decision, gold letter, training step) -> reward
Score = Callable[[Extraction, str | None, int], float]
#: a per-call score: (parser decisions, gold letters, training step) -> one reward per completion
BatchScore = Callable[[list[Extraction], list[str | None], int], list[float]]


def _each(score: Score) -> BatchScore:
    return lambda extractions, golds, step: [score(e, g, step) for e, g in zip(extractions, golds, strict=True)]


def _make(name: str, score: BatchScore, collector=None) -> RewardFunc:
    """Wrap a score into a TRL reward function that also logs letters and feeds metrics."""

    def reward(completions, answer=None, options=None, discipline=None, completion_ids=None, **kwargs) -> list[float]:
        if answer is None:
            raise UserError(
                f"reward {name!r} needs the dataset column 'answer' -- keep it in the dataset (it is a WildSci column)"
            )
        extractions = extract_all(completions, options)
        state = kwargs.get("trainer_state")  # TRL passes the TrainerState: the step survives a resume
        step = state.global_step if state is not None else 0
        values = score(extractions, list(answer), step)
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:
            log_extra(f"{name}_letter", [e.letter or f"<{e.status}>" for e in extractions])
        if collector is not None:
            lengths = [len(ids) for ids in completion_ids] if completion_ids is not None else None
            collector.record(name, extractions, list(answer), discipline, lengths, values)
        return values

    reward.__name__ = name
    reward.__qualname__ = name
    return reward


def make_accuracy_reward(collector=None, **_: Any) -> RewardFunc:
    """1 correct / 0 wrong / 0 unparseable."""
    return _make("accuracy", _each(lambda e, gold, _step: accuracy_score(e, gold)), collector)


def make_format_reward(collector=None, format_partial_credit: float = 0.5, **_: Any) -> RewardFunc:
    """1 for ``\\boxed{X}``, ``format_partial_credit`` for any other parseable answer, 0 otherwise."""
    if not 0.0 <= format_partial_credit <= 1.0:
        raise UserError(f"format_partial_credit must be between 0 and 1, got {format_partial_credit}")
    return _make("format", _each(lambda e, _gold, _step: format_score(e, format_partial_credit)), collector)


def make_format_after_warmup_reward(
    collector=None, format_partial_credit: float = 0.5, format_warmup_steps: int = 8, **_: Any
) -> RewardFunc:
    """The format reward until step ``format_warmup_steps``; from then on format credit only for the right letter."""
    if not 0.0 <= format_partial_credit <= 1.0:
        raise UserError(f"format_partial_credit must be between 0 and 1, got {format_partial_credit}")
    if format_warmup_steps < 0:
        raise UserError(f"format_warmup_steps must be 0 or more, got {format_warmup_steps}")

    def score(e: Extraction, gold: str | None, step: int) -> float:
        if step >= format_warmup_steps and not accuracy_score(e, gold):
            return 0.0
        return format_score(e, format_partial_credit)

    return _make("format_after_warmup", _each(score), collector)


def make_letter_balance_reward(collector=None, letter_balance_window: int = 8, **_: Any) -> RewardFunc:
    """Minus the excess of each answer's letter over its gold share, over the last ``letter_balance_window`` calls."""
    if letter_balance_window < 1:
        raise UserError(f"letter_balance_window must be at least 1 reward call, got {letter_balance_window}")
    window = LetterWindow(letter_balance_window)

    def score(extractions: list[Extraction], golds: list[str | None], _step: int) -> list[float]:
        answered, gold = window.add(Counter(e.letter for e in extractions if e.ok), Counter(g for g in golds if g))
        n, n_gold = sum(answered.values()), sum(gold.values())
        if not n or not n_gold:
            return [0.0] * len(extractions)
        excess = {k: answered[k] / n - gold[k] / n_gold for k in answered}
        return [-max(0.0, excess[e.letter]) if e.ok else 0.0 for e in extractions]

    return _make("letter_balance", score, collector)


#: name -> factory(collector=..., **options) returning a TRL reward function.
REGISTRY: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": make_accuracy_reward,
    "format": make_format_reward,
    "format_after_warmup": make_format_after_warmup_reward,
    "letter_balance": make_letter_balance_reward,
}


def load_dotted(ref: str) -> RewardFunc:
    """``my_pkg.my_module:my_reward`` (or ``my_pkg.my_module.my_reward``) -> the callable."""
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise UserError(
            f"reward {ref!r} is neither a registered name ({', '.join(REGISTRY)}) nor a dotted path "
            "like my_pkg.my_module:my_reward"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"reward {ref!r}: cannot import {module_name!r} ({e}) -- check PYTHONPATH") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise UserError(f"reward {ref!r}: {module_name!r} has no callable {attr!r}")
    return func


def get_reward(ref: str, collector=None, **options: Any) -> RewardFunc:
    """A reward function by registry name or dotted path (registered rewards get ``options``)."""
    if ref in REGISTRY:
        return REGISTRY[ref](collector=collector, **options)
    if "." in ref or ":" in ref:
        return load_dotted(ref)
    raise UserError(
        f"unknown reward {ref!r} -- use one of {', '.join(REGISTRY)} or a dotted path my_pkg.my_module:my_reward"
    )


def build_rewards(
    refs: Sequence[str], weights: Sequence[float] | None = None, collector=None, **options: Any
) -> list[RewardFunc]:
    """Reward functions in recipe order; checks that ``weights`` (GRPOConfig.reward_weights) match them."""
    if not refs:
        raise UserError("reward_funcs is empty -- name at least one reward, e.g. [accuracy, format]")
    if weights is not None and len(weights) != len(refs):
        raise UserError(
            f"reward_weights has {len(weights)} entries for {len(refs)} reward_funcs {list(refs)} -- give one weight "
            "per reward"
        )
    if len(set(refs)) != len(refs):
        raise UserError(f"reward_funcs lists a reward twice: {list(refs)} -- use reward_weights to weigh it instead")
    return [get_reward(ref, collector=collector, **options) for ref in refs]
