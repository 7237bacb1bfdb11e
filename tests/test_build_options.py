"""Options stage: 10 options A-J, distractors from the LLM when short, seeded shuffle, balanced letters."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

import pytest

from wildsci.answers import LETTERS
from wildsci.builder.options import DROP_REASONS, OptionsConfig, complete_options, shuffle_options
from wildsci.llm import BackendConfig, CallCache, make_client
from wildsci.schema import options_list
from wildsci.testing.loopback import LoopbackServer, Reply

BASE = ["a lower activation energy", "a higher temperature only", "a change of solvent", "a larger vessel"]


def _row(name: str, options: list[str] | None = None, answer_index: int = 0) -> dict:
    return {
        "paper_id": f"p-{name}",
        "question": f"[{name}] What makes an enzyme-catalysed reaction faster?",
        "options": list(BASE if options is None else options),
        "answer_index": answer_index,
        "rationale": "r",
    }


class DistractorServer:
    """Answers distractor requests according to the [case] tag in the question; counts calls per case."""

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: dict, n: int) -> Reply:
        text = body["messages"][-1]["content"]
        case = re.search(r"\[(\w+)\]", text).group(1)
        k = int(re.search(r"Write (\d+) more wrong options", text).group(1))
        with self.lock:
            self.calls[case] += 1
            attempt = self.calls[case]
        if case == "fill":
            return Reply(json.dumps({"distractors": [f"distractor {case} {i}" for i in range(k)]}))
        if case == "two_tries":  # first try: duplicates and blanks, one new; second: the rest
            if attempt == 1:
                return Reply(json.dumps({"distractors": [BASE[1].upper(), "", "fresh one"] + ["fresh one"] * (k - 3)}))
            return Reply(json.dumps({"distractors": [f"second try {i}" for i in range(k)]}))
        if case == "garbage":
            return Reply("I would rather not.")
        return Reply(status=500, headers={"retry-after-ms": "5"})


@pytest.fixture
def llm(tmp_path):
    handler = DistractorServer()
    with LoopbackServer(handler) as srv:
        cfg = BackendConfig(backend="openai", model="opt", base_url=srv.url, max_retries=0)
        yield make_client(cfg, CallCache(tmp_path / "c.sqlite")), handler, srv


def test_options_completed_shuffled_and_reasons_counted(llm):
    client, handler, srv = llm
    full = [f"full option {i}" for i in range(10)]
    rows = [
        _row("ten", full, answer_index=3),
        _row("fill", answer_index=1),
        _row("two_tries", answer_index=2),
        _row("garbage"),
        _row("error"),
        _row("empty", BASE[:3] + ["  "]),
        _row("dup", BASE + ["A Lower  activation energy"]),
        _row("eleven", full + ["one more"]),
        _row("badidx", BASE, answer_index=7),
    ]
    kept, drops, letters = complete_options(rows, client, OptionsConfig(max_attempts=2))
    assert drops == {
        "not_enough_distractors": 1,
        "llm_error": 1,
        "empty_option": 1,
        "duplicate_options": 1,
        "too_many_options": 1,
        "bad_answer_index": 1,
    }
    assert set(drops) <= set(DROP_REASONS)
    by = {r["paper_id"]: r for r in kept}
    assert set(by) == {"p-ten", "p-fill", "p-two_tries"}
    for pid, correct in (("p-ten", "full option 3"), ("p-fill", BASE[1]), ("p-two_tries", BASE[2])):
        r = by[pid]
        opts = options_list(r["options"])
        assert set(r["options"]) == set(LETTERS) and len(opts) == 10 and len(set(opts)) == 10
        assert r["options"][r["answer"]] == correct and "answer_index" not in r
    assert "fresh one" in options_list(by["p-two_tries"]["options"])
    assert handler.calls == {"fill": 1, "two_tries": 2, "garbage": 2, "error": 2}
    assert sum(letters.values()) == 3 and set(letters) == set(LETTERS)
    # a distractor request shows the question, the correct answer and the existing wrong options
    req = next(b for b in srv.requests if "[fill]" in b["messages"][-1]["content"])["messages"][-1]["content"]
    assert f"Correct answer: {BASE[1]}" in req and f"- {BASE[0]}" in req and "Write 6 more" in req
    schema = next(b for b in srv.requests if "[fill]" in b["messages"][-1]["content"])["response_format"]
    items = schema["json_schema"]["schema"]["properties"]["distractors"]
    assert items["minItems"] == items["maxItems"] == 6 and items["items"]["maxLength"] == 600


def test_without_llm_short_questions_are_dropped():
    rows = [_row("short"), _row("ten", [f"o{i}" for i in range(10)])]
    kept, drops, _ = complete_options(rows, None, OptionsConfig())
    assert len(kept) == 1 and drops == {"too_few_options": 1}
    kept, drops, _ = complete_options(rows[:1], None, OptionsConfig(num_options=4))
    assert len(kept) == 1 and kept[0]["options"]["E"] == "" and kept[0]["options"]["D"]  # 4 options, empty tail


def _labelled(name: str, label: str, options: list[str]) -> dict:
    return {**_row(name, options), "field_labels": [label]}


def test_pool_distractors_fill_from_other_questions_same_label_first():
    rows = [_labelled("a", "Ecology", ["sun", "rain", "wind"])]
    rows += [_labelled(f"eco{i}", "Ecology", [f"eco {i}.{j}" for j in range(4)]) for i in range(2)]
    rows += [_labelled(f"phy{i}", "Optics", [f"phy {i}.{j}" for j in range(4)]) for i in range(3)]
    cfg = OptionsConfig(distractor_source="pool")
    kept, drops, _ = complete_options(rows, None, cfg)  # no LLM client at all
    assert drops == {} and len(kept) == len(rows)
    first = next(r for r in kept if "[a]" in r["question"])
    opts = options_list(first["options"])
    assert len(opts) == 10 and len({o.lower() for o in opts}) == 10 and first["options"][first["answer"]] == "sun"
    assert sum(o.startswith("eco ") for o in opts) == 7  # 8 same-label options exist; 7 are needed
    # deterministic: the order of the questions does not change what a question draws
    again, _, _ = complete_options(rows[::-1], None, cfg)
    assert sorted(json.dumps(r, sort_keys=True) for r in kept) == sorted(json.dumps(r, sort_keys=True) for r in again)
    # too small a pool is a counted drop, not a short question
    kept, drops, _ = complete_options(rows[:2], None, cfg)
    assert kept == [] and drops == {"not_enough_distractors": 2}


def test_pool_distractors_sample_large_pools_without_own_options():
    rows = [_labelled(f"q{i}", f"L{i % 3}", [f"own {i}.{j}" for j in range(3)]) for i in range(3000)]
    kept, drops, _ = complete_options(rows, None, OptionsConfig(distractor_source="pool"))
    assert drops == {} and len(kept) == 3000
    for r in kept[::97]:
        i = int(r["question"].split("]")[0][2:])
        opts = options_list(r["options"])
        assert len({o.lower() for o in opts}) == 10 and sum(o.startswith(f"own {i}.") for o in opts) == 3
        label = f"L{i % 3}"
        assert all(int(o.split()[1].split(".")[0]) % 3 == int(label[1]) for o in opts)  # same label first


def test_llm_then_pool_fills_what_the_llm_could_not(llm):
    client, handler, _ = llm
    rows = [_labelled("garbage", "Ecology", list(BASE))]
    rows.append(_labelled("fill", "Ecology", list(BASE[:2]) + [f"own {k}" for k in range(6)]))
    kept, drops, _ = complete_options(rows, client, OptionsConfig(distractor_source="llm_then_pool", max_attempts=1))
    assert drops == {}
    garbage = next(r for r in kept if "[garbage]" in r["question"])
    pooled = set(options_list(garbage["options"])) - set(BASE)
    # the pool holds what the generator wrote, not another question's LLM distractors (known only per shard)
    assert len(pooled) == 6 and all(o.startswith("own ") for o in pooled)
    assert handler.calls["garbage"] == 1 and handler.calls["fill"] == 1  # one LLM try each, then the pool


def test_shuffle_depends_only_on_seed_and_question():
    opts = [f"o{i}" for i in range(10)]
    a = shuffle_options("Why?  Because.", opts, 0, seed=0)
    assert a == shuffle_options("Why? Because.", opts, 0, seed=0)  # whitespace-normalised
    assert a != shuffle_options("Why? Because.", opts, 0, seed=1)
    rows = [_row(f"q{i}", [f"o{j}" for j in range(10)]) for i in range(30)]
    one, _, _ = complete_options(rows, None, OptionsConfig())
    rev, _, _ = complete_options(rows[::-1], None, OptionsConfig())
    assert sorted(json.dumps(r, sort_keys=True) for r in one) == sorted(json.dumps(r, sort_keys=True) for r in rev)


def test_answer_letters_are_balanced():
    """Generators put the answer first; after the shuffle every letter holds about a tenth of the answers."""
    rows = [_row(f"q{i}", [f"opt {i} {j}" for j in range(10)], answer_index=0) for i in range(2000)]
    kept, drops, letters = complete_options(rows, None, OptionsConfig())
    assert not drops and sum(letters.values()) == 2000
    chi2 = sum((c - 200) ** 2 / 200 for c in letters.values())
    assert chi2 < 27.9, letters  # chi-square, 9 degrees of freedom, p = 0.001
    assert Counter(r["answer"] for r in kept) == Counter(letters)


def test_a_shard_drawing_from_the_whole_pool_puts_what_one_build_puts():
    rows = [_labelled(f"q{i}", f"L{i % 2}", [f"own {i}.{j}" for j in range(3)]) for i in range(12)]
    cfg = OptionsConfig(distractor_source="pool")
    whole, _, _ = complete_options(rows, None, cfg)
    shards = [rows[0::3], rows[1::3], rows[2::3]]
    sharded = [r for shard in shards for r in complete_options(shard, None, cfg, pool_rows=rows)[0]]
    key = lambda r: r["question"]  # noqa: E731
    assert sorted(sharded, key=key) == sorted(whole, key=key)
    # a shard's own pool draws other options: why an executor's shards all generate before any draws
    own = [r for shard in shards for r in complete_options(shard, None, cfg)[0]]
    assert sorted(own, key=key) != sorted(whole, key=key)
