"""Voting and the difficulty filter: shared prompt, shared parser, round-robin voters, named drops."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest

from wildsci.answers import LETTERS
from wildsci.builder.vote import DROP_REASONS, VoteConfig, filter_by_votes, vote, voter_plan, voting_type_counts
from wildsci.llm import BackendConfig, CallCache, make_client
from wildsci.prompts import build_messages
from wildsci.schema import options_dict, validate_row
from wildsci.testing.loopback import LoopbackServer, Reply


def _row(case: str, gold: int = 3) -> dict:
    opts = [f"{case} option {i}" + (" (gold)" if i == gold else "") for i in range(10)]
    return {"paper_id": f"p-{case}", "question": f"[{case}] Which option is right?", "options": options_dict(opts),
            "answer": LETTERS[gold], "rationale": "r"}  # fmt: skip


class Voter:
    """A scripted voter: answers by the [case] tag, in free text that the shared parser must read."""

    def __init__(self, name: str):
        self.name, self.lock, self.seen = name, threading.Lock(), Counter()

    def __call__(self, body: dict, n: int) -> Reply:
        user = body["messages"][-1]["content"]
        case = re.search(r"\[(\w+)\]", user).group(1)
        gold = re.search(r"^([A-J])\. .*\(gold\)$", user, re.M).group(1)
        with self.lock:
            self.seen[case] += 1
        if "response_format" in body:  # constrained voting: the enum of letters
            return Reply(json.dumps({"choice": gold}))
        if case == "easy":
            return Reply(f"The enzyme lowers the barrier, so the answer is \\boxed{{{gold}}}.")
        if case == "wrong_consensus":
            return Reply("Answer: J")
        if case == "mixed":  # voter A always right, voter B always wrong
            wrong = "J" if gold != "J" else "A"
            return Reply(f"The correct option is {gold if self.name == 'A' else wrong}.")
        if case == "garbage":
            return Reply("Hmm, it could be many things.")
        return Reply(status=500, headers={"retry-after-ms": "5"})


@pytest.fixture
def voters(tmp_path):
    a, b = Voter("A"), Voter("B")
    with LoopbackServer(a) as sa, LoopbackServer(b) as sb:
        cache = CallCache(tmp_path / "c.sqlite")
        clients = [
            make_client(BackendConfig(backend="openai", model=f"voter-{v.name}", base_url=s.url, max_retries=0), cache)
            for v, s in ((a, sa), (b, sb))
        ]
        yield clients, (a, b), (sa, sb)


def test_vote_round_robin_shared_prompt_and_parser(voters):
    clients, (a, b), (sa, sb) = voters
    rows = [_row("easy"), _row("wrong_consensus", 5), _row("mixed", 0), _row("garbage"), _row("error")]
    out, drops = vote(rows, clients, VoteConfig())
    assert drops == {"llm_error": 1} and set(drops) <= set(DROP_REASONS)
    by = {r["paper_id"]: r for r in out}
    assert by["p-easy"]["voting_answers"] == ["D"] * 8 and by["p-easy"]["voting_type"] == "all_aligned"
    assert by["p-wrong_consensus"]["voting_answers"] == ["J"] * 8
    assert by["p-wrong_consensus"]["voting_type"] == "majority_misaligned"
    # voters alternate A, B, A, B...: 4 of 8 right is not a majority
    assert by["p-mixed"]["voting_answers"] == ["A", "J"] * 4 and by["p-mixed"]["voting_type"] == "minority_aligned"
    assert by["p-garbage"]["voting_answers"] == [""] * 8 and by["p-garbage"]["voting_type"] == "unaligned"
    assert a.seen["easy"] == 4 and b.seen["easy"] == 4  # 8 votes over 2 voters
    # every voter saw exactly the shared prompt, without the paper
    sent = {json.dumps(b["messages"]) for b in sa.requests + sb.requests}
    assert sent == {json.dumps(build_messages(r["question"], r["options"])) for r in rows}
    for r in out:
        assert validate_row({**r, "discipline": "Biology", "nc_domain": "Biological sciences",
                             "nc_subdomain": "Molecular and cell biology"}) == []  # fmt: skip


def test_constrained_voting_and_resume(voters, tmp_path):
    clients, (a, b), (sa, sb) = voters
    rows = [_row("easy", 1), _row("garbage", 6)]
    cfg = VoteConfig(num_votes=4, constrained=True)
    out, drops = vote(rows, clients, cfg)
    assert not drops and [r["voting_answers"] for r in out] == [["B"] * 4, ["G"] * 4]
    enum = sa.requests[-1]["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"]
    assert enum == list(LETTERS)
    hits = sa.hits + sb.hits
    again, _ = vote(rows, clients, cfg)
    assert again == out and sa.hits + sb.hits == hits  # all cached


def test_voter_plan_and_config_checks():
    assert voter_plan(8, 3) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="keep_voting_types"):
        VoteConfig(keep_voting_types=["mostly_right"])
    with pytest.raises(ValueError):
        VoteConfig(min_correct_votes=5, max_correct_votes=3)


def _voted(votes: list[str], gold: str = "C") -> dict:
    from wildsci.schema import voting_type

    return {"question": "q", "answer": gold, "voting_answers": votes, "voting_type": voting_type(votes, gold)}


def test_filter_by_votes_named_drops():
    rows = [
        _voted(["C"] * 8),  # all_aligned: 8 correct
        _voted(["C"] * 6 + ["A", ""]),  # majority_aligned: 6
        _voted(["C"] * 2 + ["A"] * 6),  # minority_aligned: 2
        _voted(["A"] * 7 + [""]),  # majority_misaligned
        _voted(["A", "B", "D", "E", "", "", "", ""]),  # unaligned
        _voted([""] * 8),  # nothing readable
    ]
    kept, drops = filter_by_votes(rows, VoteConfig())
    assert len(kept) == 4 and drops == {"unparseable_votes": 1, "voting_type_unaligned": 1}
    kept, drops = filter_by_votes(rows, VoteConfig(max_correct_votes=7, min_correct_votes=3))
    assert [sum(v == "C" for v in r["voting_answers"]) for r in kept] == [6]
    assert drops == {"unparseable_votes": 1, "voting_type_unaligned": 1, "too_easy": 1, "too_hard": 2}
    kept, drops = filter_by_votes(rows, VoteConfig(keep_voting_types=["majority_aligned"], min_parseable_votes=0))
    assert len(kept) == 1 and drops == {
        "voting_type_all_aligned": 1,
        "voting_type_minority_aligned": 1,
        "voting_type_majority_misaligned": 1,
        "voting_type_unaligned": 2,
    }
    assert set(drops) <= set(DROP_REASONS)
    assert voting_type_counts(rows)["unaligned"] == 2 and sum(voting_type_counts(rows).values()) == 6


def test_tiny_model_constrained_votes_are_always_letters(tiny_model):
    """A real (random) local voter under the letter grammar: every vote is a readable letter."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        client = make_client(BackendConfig(model="tiny:qwen2", max_new_tokens=4, temperature=1.0), None)
        rows = [_row("easy", 2), _row("mixed", 7)]
        out, drops = vote(rows, [client], VoteConfig(num_votes=3, constrained=True))
    finally:
        torch.set_num_threads(threads)
    assert not drops
    assert all(len(r["voting_answers"]) == 3 and all(v in LETTERS for v in r["voting_answers"]) for r in out)
