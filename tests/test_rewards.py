"""Rewards through the registry (by name) and by dotted path, as GRPOTrainer calls them."""

from __future__ import annotations

import sys
import textwrap

import pytest

from wildsci.errors import UserError
from wildsci.metrics import RolloutCollector, summarize
from wildsci.rewards import REGISTRY, build_rewards, get_reward
from wildsci.schema import options_dict

OPTS10 = options_dict([f"option {i}" for i in range(10)])
OPTS4 = options_dict(["w", "x", "y", "z"])


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def call(fn, texts, golds, options=None, disciplines=None, **extra):
    options = options or [OPTS10] * len(texts)
    return fn(
        prompts=[[{"role": "user", "content": "q"}]] * len(texts),
        completions=[conv(t) for t in texts],
        completion_ids=[[1] * (10 + i) for i in range(len(texts))],
        answer=golds,
        options=options,
        discipline=disciplines or ["Physics"] * len(texts),
        **extra,
    )


def test_registry_names():
    assert {"accuracy", "format"} <= set(REGISTRY)
    assert get_reward("accuracy").__name__ == "accuracy"  # TRL logs rewards/<__name__>/mean
    assert get_reward("format").__name__ == "format"


def test_accuracy_reward_scores_with_the_shared_parser():
    acc = get_reward("accuracy")
    texts = [
        "Reasoning... so \\boxed{C}",  # correct, boxed
        "The correct option is C.",  # correct, phrase
        "\\boxed{D}",  # wrong
        "I am not sure.",  # unparseable
        "The answer is C or D.",  # hedged: ambiguous -> 0 even though C is right
        "<think>C is right",  # unfinished reasoning
    ]
    assert call(acc, texts, ["C"] * len(texts)) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_accuracy_respects_the_option_count():
    acc = get_reward("accuracy")
    # E does not exist on a 4-option question: out of range, not correct
    assert call(acc, ["\\boxed{E}", "\\boxed{B}"], ["E", "B"], options=[OPTS4, OPTS4]) == [0.0, 1.0]


def test_plain_string_completions_work_too():
    acc = get_reward("accuracy")
    out = acc(prompts=["q", "q"], completions=["\\boxed{A}", "\\boxed{B}"], answer=["A", "A"], options=[OPTS10] * 2)
    assert out == [1.0, 0.0]


def test_format_reward_partial_credit():
    fmt = get_reward("format", format_partial_credit=0.25)
    texts = ["\\boxed{A}", "The correct option is D.", "no idea", "\\boxed{A} or \\boxed{B}"]
    assert call(fmt, texts, ["B"] * 4) == [1.0, 0.25, 0.0, 0.0]  # format ignores correctness
    with pytest.raises(UserError, match="format_partial_credit"):
        get_reward("format", format_partial_credit=2.0)


def test_format_after_warmup_pays_format_only_with_the_right_letter_after_the_warmup():
    """TRL hands every reward the TrainerState: the warm-up counts training steps (and survives a resume)."""
    from transformers import TrainerState

    fmt = get_reward("format_after_warmup", format_partial_credit=0.5, format_warmup_steps=3)
    assert fmt.__name__ == "format_after_warmup" and "format_after_warmup" in REGISTRY
    texts = ["\\boxed{B}", "\\boxed{A}", "The correct option is B.", "The correct option is A.", "no idea"]
    golds = ["B"] * 5
    during, after = TrainerState(global_step=2), TrainerState(global_step=3)
    assert call(fmt, texts, golds, trainer_state=during) == [1.0, 1.0, 0.5, 0.5, 0.0]  # any readable answer
    assert call(fmt, texts, golds, trainer_state=after) == [1.0, 0.0, 0.5, 0.0, 0.0]  # only with the right letter
    with pytest.raises(UserError, match="format_warmup_steps"):
        get_reward("format_after_warmup", format_warmup_steps=-1)


def test_letter_balance_penalises_a_letter_beyond_its_gold_share():
    bal = get_reward("letter_balance", letter_balance_window=8)
    assert bal.__name__ == "letter_balance" and "letter_balance" in REGISTRY
    # readable answers A:3 B:1 (shares 0.75, 0.25); gold letters A:1 B:2 C:1 D:1 (0.2, 0.4, ...)
    # A: -(0.75 - 0.2); B: 0.25 - 0.4 is below its gold share -> 0; the unreadable answer -> 0
    texts = ["\\boxed{A}", "\\boxed{A}", "\\boxed{A}", "\\boxed{B}", "no idea"]
    out = call(bal, texts, ["A", "B", "C", "D", "B"], options=[OPTS4] * 5)
    assert out == pytest.approx([-0.55, -0.55, -0.55, 0.0, 0.0])


def test_letter_balance_is_zero_for_a_policy_that_answers_every_question_right():
    bal = get_reward("letter_balance", letter_balance_window=4)
    for golds in (["A", "A", "C", "B"], ["A", "D", "D", "A"], ["B", "B", "B", "B"]):
        assert call(bal, [f"\\boxed{{{g}}}" for g in golds], golds, options=[OPTS4] * 4) == [0.0] * 4


def test_letter_balance_pools_the_last_window_of_calls():
    """One call of all-A answers to A questions is right; the same answers after calls on B questions are not."""
    bal = get_reward("letter_balance", letter_balance_window=2)
    call(bal, ["\\boxed{B}"] * 2, ["B", "B"], options=[OPTS4] * 2)
    # window: answers B2 A2 (A share 0.5), gold B2 A2 (A share 0.5) -> 0
    assert call(bal, ["\\boxed{A}"] * 2, ["A", "A"], options=[OPTS4] * 2) == [0.0, 0.0]
    call(bal, ["\\boxed{A}"] * 2, ["B", "B"], options=[OPTS4] * 2)
    # window (last 2 calls): answers A:4 (share 1), gold B:2 A:2 (A share 0.5) -> -(1 - 0.5)
    assert call(bal, ["\\boxed{A}"] * 2, ["A", "A"], options=[OPTS4] * 2) == [-0.5, -0.5]
    with pytest.raises(UserError, match="letter_balance_window"):
        get_reward("letter_balance", letter_balance_window=0)


def test_rewards_log_the_extracted_letter():
    logged: dict[str, list] = {}
    acc = get_reward("accuracy")
    call(acc, ["\\boxed{B}", "hmm"], ["B", "C"], log_extra=lambda col, vals: logged.setdefault(col, []).extend(vals))
    assert logged == {"accuracy_letter": ["B", "<none>"]}


def test_rewards_feed_the_collector_once_per_completion():
    collector = RolloutCollector(["accuracy", "format"], primary="accuracy")
    funcs = build_rewards(["accuracy", "format"], [1.0, 0.5], collector, format_partial_credit=0.5)
    texts = ["\\boxed{A}", "The correct option is B.", "?", "\\boxed{C}"]
    golds = ["A", "A", "A", "C"]
    discs = ["Physics", "Physics", "Biology", "Biology"]
    for f in funcs:
        call(f, texts, golds, disciplines=discs)
    s = summarize(
        {"groups": collector.groups, "letters": collector.letters, "gold_letters": collector.gold_letters},
        ["accuracy", "format"],
        [1.0, 0.5],
    )
    assert s["accuracy"] == 0.5 and s["format_rate"] == 0.5 and s["unparseable_rate"] == 0.25
    phys, bio = s["per_discipline"]["Physics"], s["per_discipline"]["Biology"]
    assert phys["n"] == 2 and bio["n"] == 2  # counted once although two rewards saw them
    assert phys["reward"] == pytest.approx((1 + 0) / 2 + 0.5 * (1 + 0.5) / 2)
    assert bio["reward"] == pytest.approx((0 + 1) / 2 + 0.5 * (0 + 1) / 2)
    assert phys["completion_length"] == pytest.approx((10 + 11) / 2)
    assert s["letters"] == {"A": 1, "B": 1, "C": 1} and s["gold_letters"] == {"A": 3, "C": 1}


def test_dotted_path_rewards(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(
        textwrap.dedent(
            """
            def brevity(completions, **kwargs):
                return [1.0 / (1 + len(c[0]["content"])) for c in completions]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for ref in ("my_rewards_mod:brevity", "my_rewards_mod.brevity"):
        f = get_reward(ref)
        assert call(f, ["ab", ""], ["A", "A"]) == [1 / 3, 1.0]
    with pytest.raises(UserError, match="no callable"):
        get_reward("my_rewards_mod:missing")
    with pytest.raises(UserError, match="cannot import"):
        get_reward("no_such_module_xyz:f")
    with pytest.raises(UserError, match="unknown reward 'acuracy'"):
        get_reward("acuracy")
    sys.modules.pop("my_rewards_mod", None)


def test_build_rewards_checks_weights_and_duplicates():
    with pytest.raises(UserError, match="reward_weights has 1 entries for 2"):
        build_rewards(["accuracy", "format"], [1.0])
    with pytest.raises(UserError, match="twice"):
        build_rewards(["accuracy", "accuracy"])
    with pytest.raises(UserError, match="empty"):
        build_rewards([])
    assert [f.__name__ for f in build_rewards(["format", "accuracy"], [0.2, 1.0])] == ["format", "accuracy"]


def test_missing_answer_column_is_one_clear_error():
    with pytest.raises(UserError, match="column 'answer'"):
        get_reward("accuracy")(prompts=["q"], completions=["\\boxed{A}"])
