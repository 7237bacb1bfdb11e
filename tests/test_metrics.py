"""Per-discipline metrics JSONL, trainer-log scalars, the two guards, resume truncation, multi-process merge."""

from __future__ import annotations

import json
import logging

import pytest
from transformers import TrainerControl, TrainerState

from wildsci.answers import extract_answer
from wildsci.metrics import (
    Guards,
    RolloutCollector,
    WildSciMetricsCallback,
    merge_snapshots,
    read_metrics,
    summarize,
)

CONTRACT_KEYS = {
    "step", "epoch", "loss", "reward", "reward_std", "accuracy", "format_rate", "unparseable_rate",
    "completion_length", "clipped_ratio", "frac_reward_zero_std", "learning_rate", "per_discipline", "letters",
    "gold_letters", "top_letter", "top_letter_share", "top_letter_excess", "warnings",
}  # fmt: skip


def trl_logs(**over):
    logs = {
        "loss": 0.01,
        "grad_norm": 0.5,
        "learning_rate": 1e-5,
        "reward": 0.75,
        "reward_std": 0.3,
        "frac_reward_zero_std": 0.25,
        "completions/mean_length": 42.0,
        "completions/clipped_ratio": 0.1,
        "epoch": 0.5,
    }
    logs.update(over)
    return logs


def feed(collector, texts, golds, discs, name="accuracy", values=None):
    ex = [extract_answer(t) for t in texts]
    vals = values if values is not None else [float(e.ok and e.letter == g) for e, g in zip(ex, golds, strict=True)]
    collector.record(name, ex, golds, discs, [len(t) for t in texts], vals)


def make_cb(tmp_path, **kw):
    collector = RolloutCollector(["accuracy"], primary="accuracy")
    cb = WildSciMetricsCallback(collector, tmp_path / "wildsci_metrics.jsonl", ["accuracy"], [1.0], **kw)
    return collector, cb


def state(step):
    s = TrainerState()
    s.global_step = step
    return s


def test_jsonl_record_follows_the_contract(tmp_path):
    collector, cb = make_cb(tmp_path)
    cb.on_train_begin(None, state(0), TrainerControl())
    feed(collector, ["\\boxed{A}", "The correct option is B.", "??", "\\boxed{C}"], ["A", "A", "B", "C"],
         ["Physics", "Physics", "Biology", "Chemistry"])  # fmt: skip
    logs = trl_logs()
    cb.on_log(None, state(1), TrainerControl(), logs=logs)
    (rec,) = read_metrics(tmp_path / "wildsci_metrics.jsonl")
    assert set(rec) == CONTRACT_KEYS
    assert rec["step"] == 1 and rec["loss"] == 0.01 and rec["completion_length"] == 42.0
    assert rec["clipped_ratio"] == 0.1 and rec["frac_reward_zero_std"] == 0.25
    assert rec["accuracy"] == 0.5 and rec["format_rate"] == 0.5 and rec["unparseable_rate"] == 0.25
    phys = rec["per_discipline"]["Physics"]
    assert phys == {"n": 2, "accuracy": 0.5, "unparseable_rate": 0.0, "reward": 0.5, "completion_length": 16.5}
    assert rec["per_discipline"]["Biology"]["unparseable_rate"] == 1.0
    assert rec["letters"] == {"A": 1, "B": 1, "C": 1} and rec["gold_letters"] == {"A": 2, "B": 1, "C": 1}
    # a tie goes to the earliest letter; its excess is over its share of the gold letters (A: 1/3 - 2/4)
    assert rec["top_letter"] == "A" and rec["top_letter_share"] == pytest.approx(1 / 3)
    assert rec["top_letter_excess"] == pytest.approx(1 / 3 - 1 / 2)
    assert rec["warnings"] == []
    # the trainer's loggers (trackio/tensorboard) get the same numbers as flat scalars
    assert logs["wildsci/accuracy"] == 0.5 and logs["wildsci/Physics/accuracy"] == 0.5
    assert logs["wildsci/Biology/unparseable_rate"] == 1.0
    assert logs["wildsci/letter_share/B"] == pytest.approx(1 / 3) and "wildsci/top_letter_share" in logs


def test_keys_a_step_cannot_compute_are_omitted(tmp_path):
    collector, cb = make_cb(tmp_path)
    cb.on_train_begin(None, state(0), TrainerControl())
    # a step that reused an earlier generation batch: no rewards were computed, TRL logged only the loss
    cb.on_log(None, state(1), TrainerControl(), logs={"loss": 0.2, "learning_rate": 1e-5, "epoch": 0.1})
    # the end-of-training summary is not a logging step
    cb.on_log(None, state(1), TrainerControl(), logs={"train_runtime": 3.0, "train_loss": 0.1, "epoch": 0.1})
    (rec,) = read_metrics(tmp_path / "wildsci_metrics.jsonl")
    assert rec == {"step": 1, "epoch": 0.1, "loss": 0.2, "learning_rate": 1e-5, "warnings": []}


def test_clipped_ratio_guard(tmp_path):
    collector, cb = make_cb(tmp_path, guards=Guards(max_completion_length=128))
    cb.on_train_begin(None, state(0), TrainerControl())
    cb.on_log(None, state(1), TrainerControl(), logs=trl_logs(**{"completions/clipped_ratio": 0.8}))
    cb.on_log(None, state(2), TrainerControl(), logs=trl_logs(**{"completions/clipped_ratio": 0.5}))
    r1, r2 = read_metrics(tmp_path / "wildsci_metrics.jsonl")
    assert len(r1["warnings"]) == 1 and "80% of completions were cut off" in r1["warnings"][0]
    assert "128 tokens" in r1["warnings"][0]
    assert r2["warnings"] == []  # 0.5 is not "more than half"


def test_zero_std_guard_needs_several_steps_in_a_row(tmp_path, caplog):
    collector, cb = make_cb(tmp_path, guards=Guards(zero_std_patience=3))
    cb.on_train_begin(None, state(0), TrainerControl())
    seq = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    # attach caplog's handler to the logger itself: other tests' imports (lighteval, transformers) reconfigure
    # logging, and propagation to the root logger is not something this test is about
    logger = logging.getLogger("wildsci.metrics")
    logger.addHandler(caplog.handler)
    was_disabled, logger.disabled = logger.disabled, False  # a logging.config call elsewhere may have disabled it
    try:
        with caplog.at_level("WARNING", logger="wildsci.metrics"):
            for i, z in enumerate(seq, start=1):
                cb.on_log(None, state(i), TrainerControl(), logs=trl_logs(frac_reward_zero_std=z))
    finally:
        logger.removeHandler(caplog.handler)
        logger.disabled = was_disabled
    warned = [bool(r["warnings"]) for r in read_metrics(tmp_path / "wildsci_metrics.jsonl")]
    assert warned == [False, False, False, False, False, True, True]
    assert "identical rewards for 3 logged steps" in cb.all_warnings[0]
    assert any("WILDSCI WARNING" in m for m in caplog.messages)


def test_resume_keeps_records_up_to_the_checkpoint(tmp_path):
    collector, cb = make_cb(tmp_path)
    cb.on_train_begin(None, state(0), TrainerControl())
    for step in (1, 2, 3, 4):
        cb.on_log(None, state(step), TrainerControl(), logs=trl_logs(**{"completions/clipped_ratio": 0.9}))
    collector2, cb2 = make_cb(tmp_path)
    cb2.on_train_begin(None, state(2), TrainerControl())  # resumed from checkpoint-2
    assert [r["step"] for r in read_metrics(tmp_path / "wildsci_metrics.jsonl")] == [1, 2]
    assert len(cb2.all_warnings) == 2  # warnings of the kept steps still reach the model card


def test_multi_process_merge_is_count_weighted(tmp_path):
    """Each rank scores its own slice; the callback gathers counts, not per-rank averages."""
    rank0, rank1 = RolloutCollector(["accuracy"]), RolloutCollector(["accuracy"])
    feed(rank0, ["\\boxed{A}"] * 3, ["A"] * 3, ["Physics"] * 3)
    feed(rank1, ["\\boxed{B}"], ["A"], ["Physics"])
    other = rank1.snapshot()
    cb = WildSciMetricsCallback(rank0, tmp_path / "m.jsonl", ["accuracy"], gather=lambda snap: [snap, other])
    cb.on_log(None, state(1), TrainerControl(), logs=trl_logs())
    (rec,) = read_metrics(tmp_path / "m.jsonl")
    assert rec["per_discipline"]["Physics"]["n"] == 4
    assert rec["accuracy"] == pytest.approx(0.75)  # not (1.0 + 0.0) / 2
    assert rec["letters"] == {"A": 3, "B": 1} and rec["gold_letters"] == {"A": 4}


def test_a_rank_with_nothing_scored_changes_no_count(tmp_path):
    """A rank whose slice held no scored completion sends an empty snapshot; the merge must neither drop the
    other ranks' counts nor invent a group for it."""
    rank0, idle = RolloutCollector(["accuracy"]), RolloutCollector(["accuracy"])
    feed(rank0, ["\\boxed{A}", "\\boxed{B}"], ["A", "A"], ["Physics", "Biology"])
    alone = merge_snapshots([rank0.snapshot()])
    feed(rank0, ["\\boxed{A}", "\\boxed{B}"], ["A", "A"], ["Physics", "Biology"])
    both = merge_snapshots([idle.snapshot(), rank0.snapshot()])
    assert both == alone and set(both["groups"]) == {"Physics", "Biology"}
    assert summarize(merge_snapshots([idle.snapshot()]), ["accuracy"], None) == {}  # nothing scored: no keys


def guard_run(tmp_path, answers, golds, steps=10):
    """The callback over ``steps`` logged steps of 4 rollouts each, answers and golds cycling through the lists."""
    collector, cb = make_cb(tmp_path, guards=Guards(letter_share_threshold=0.4, letter_share_window=8))
    cb.on_train_begin(None, state(0), TrainerControl())
    for step in range(1, steps + 1):
        rollouts = [4 * step + k for k in range(4)]
        texts = [f"\\boxed{{{answers[r % len(answers)]}}}" for r in rollouts]
        feed(collector, texts, [golds[r % len(golds)] for r in rollouts], ["Physics"] * 4)
        cb.on_log(None, state(step), TrainerControl(), logs=trl_logs())
    return read_metrics(tmp_path / "wildsci_metrics.jsonl")


def test_one_letter_guard_fires_on_a_policy_that_answers_one_letter(tmp_path):
    recs = guard_run(tmp_path, answers=["D"], golds=["A", "B", "C", "D"])
    fired = [r["step"] for r in recs if any("collapsing onto one letter" in w for w in r["warnings"])]
    assert fired == list(range(5, 11))  # from the 5th step on, the window holds 20 readable answers
    assert "100% of the 20 readable answers of the last 5 logged steps are D (+75% over" in recs[4]["warnings"][0]
    assert recs[0]["top_letter"] == "D" and recs[0]["top_letter_share"] == 1.0
    assert recs[0]["top_letter_excess"] == pytest.approx(0.75)


def test_one_letter_guard_stays_quiet_on_a_balanced_policy(tmp_path):
    recs = guard_run(tmp_path, answers=["A", "B", "C", "D", "B", "A", "D", "C"], golds=["A", "B", "C", "D"])
    assert all(r["warnings"] == [] for r in recs)
    assert max(r["top_letter_share"] for r in recs) <= 0.5


def test_one_letter_guard_accepts_answers_that_follow_skewed_gold_letters(tmp_path):
    """Questions whose gold letter is mostly D: a policy answering them right is not collapsing."""
    golds = ["D", "D", "D", "A"]
    recs = guard_run(tmp_path, answers=golds, golds=golds)
    assert all(r["warnings"] == [] for r in recs) and recs[-1]["top_letter_share"] == 0.75


def test_only_main_process_writes(tmp_path):
    collector, cb = make_cb(tmp_path)
    s = state(1)
    s.is_world_process_zero = False
    cb.on_train_begin(None, s, TrainerControl())
    cb.on_log(None, s, TrainerControl(), logs=trl_logs())
    assert not (tmp_path / "wildsci_metrics.jsonl").exists()
    assert cb.last_record is not None and json.dumps(cb.last_record)


def test_final_summary_averages_the_last_logged_steps():
    from wildsci.metrics import final_summary

    recs = [{"step": i, "reward": float(i), "accuracy": i / 20, "per_discipline": {}} for i in range(1, 21)]
    recs.append({"step": 21, "loss": 0.1})  # a step without rewards (reused generation) is not part of it
    s = final_summary(recs)
    assert s["steps"] == [19, 20] and s["reward"] == 19.5 and s["accuracy"] == pytest.approx(0.975)
    assert final_summary([]) == {}
