"""Question generation: every way an LLM answer can be wrong is a named, counted drop.

The LLM is a real OpenAI-compatible HTTP server on 127.0.0.1 whose answer depends on the chunk it is
shown, so each case travels the real path: prompt -> HTTP -> openai client -> cache -> validation.
One test runs the embedded SmolLM2-135M under the xgrammar JSON grammar on real paper abstracts.
"""

from __future__ import annotations

import json
import re

import pytest

from wildsci.builder.generate import (
    DROP_REASONS,
    GenerateConfig,
    build_request_messages,
    extract_json,
    generate_questions,
    question_schema,
    validate_question,
)
from wildsci.llm import BackendConfig, CallCache, ChatRequest, make_client
from wildsci.schema import question_id
from wildsci.testing.loopback import LoopbackServer, Reply

OPTS = [f"Option number {i} about enzyme kinetics" for i in range(10)]


def q(**over) -> str:
    obj = {"question": "Which change most increases the reaction rate?", "options": OPTS, "answer": "C",
           "rationale": "Because of the rate law."}  # fmt: skip
    obj.update(over)
    return json.dumps(obj)


# case name -> (reply content, finish_reason, expected drop reason or None for valid)
CASES = {
    "valid_letter": (q(), "stop", None),
    "valid_index": (q(answer=4), "stop", None),
    "valid_text": (q(answer=OPTS[7]), "stop", None),
    "valid_fenced": ("Sure!\n```json\n" + q() + "\n```", "stop", None),
    "valid_prose": ("Here is the question: " + q() + " Hope it helps.", "stop", None),
    "valid_labels": (q(options=[f"{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(OPTS)]), "stop", None),
    "not_json": ("I am sorry, I cannot write a question about this.", "stop", "not_json"),
    "not_object": ('["a", "b"]', "stop", "not_json"),
    "truncated": (q()[:80], "length", "truncated_json"),
    "truncated_unflagged": (q()[:120], "stop", "truncated_json"),
    "missing_options": (json.dumps({"question": "Why?", "answer": "A", "rationale": ""}), "stop", "missing_fields"),
    "missing_answer": (json.dumps({"question": "Why?", "options": OPTS}), "stop", "missing_fields"),
    "empty_question": (q(question="  "), "stop", "empty_question"),
    "empty_option": (q(options=OPTS[:4] + [""] + OPTS[5:]), "stop", "empty_option"),
    "punct_option": (q(options=OPTS[:4] + [", "] + OPTS[5:]), "stop", "empty_option"),
    "three_options": (q(options=OPTS[:3], answer="A"), "stop", "too_few_options"),
    "eleven_options": (q(options=OPTS + ["An eleventh option"]), "stop", "too_many_options"),
    "duplicate_options": (q(options=OPTS[:9] + [OPTS[2].upper() + "  "]), "stop", "duplicate_options"),
    "placeholders": (q(options=list("ABCDEFGHIJ")), "stop", "placeholder_option"),
    "answer_letter_out": (q(options=OPTS[:5], answer="H"), "stop", "answer_not_in_options"),
    "answer_index_out": (q(answer=10), "stop", "answer_not_in_options"),
    "answer_text_out": (q(answer="Something else entirely"), "stop", "answer_not_in_options"),
    "all_above": (q(options=OPTS[:9] + ["All of the above"]), "stop", "all_or_none_of_the_above"),
    "refers_paper": (
        q(question="According to the study, which change increases the rate?"),
        "stop",
        "refers_to_paper",
    ),
    "http_500": (None, "stop", "llm_error"),
}


def _chunk(name: str) -> dict:
    return {
        "paper_id": f"paper-{name}",
        "chunk_id": f"paper-{name}#0",
        "title": f"A study of {name}",
        "text": f"CASE[{name}] Enzymes speed up reactions by lowering activation energy.",
        "license": "CC-BY-4.0",
        "field_labels": ["q-bio.BM"],
    }


def _handler(body: dict, n: int) -> Reply:
    m = re.search(r"CASE\[(\w+)\]", body["messages"][-1]["content"])
    content, finish, _ = CASES[m.group(1)]
    if content is None:
        return Reply(status=500, headers={"retry-after-ms": "5"})
    return Reply(content, finish_reason=finish)


@pytest.fixture
def server():
    with LoopbackServer(_handler) as srv:
        yield srv


def test_every_case_is_kept_or_dropped_with_its_reason(server, tmp_path):
    client = make_client(
        BackendConfig(backend="openai", model="gen", base_url=server.url, max_retries=1),
        CallCache(tmp_path / "c.sqlite"),
    )
    chunks = [_chunk(name) for name in CASES] + [{**_chunk("valid_letter"), "paper_id": "p-empty", "text": "  "}]
    kept, drops = generate_questions(chunks, client, GenerateConfig(reject_paper_references=True))
    expected: dict[str, int] = {}
    for _, _, reason in CASES.values():
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    expected["empty_chunk"] = 1
    assert drops == expected
    assert set(drops) <= set(DROP_REASONS)
    valid = {name for name, (_, _, r) in CASES.items() if r is None}
    assert {k["paper_id"] for k in kept} == {f"paper-{n}" for n in valid}
    by_case = {k["paper_id"].removeprefix("paper-"): k for k in kept}
    assert by_case["valid_letter"]["answer_index"] == 2
    assert by_case["valid_index"]["answer_index"] == 4
    assert by_case["valid_text"]["answer_index"] == 7
    assert by_case["valid_labels"]["options"] == OPTS  # "A. " prefixes removed
    row = by_case["valid_fenced"]
    assert row["options"] == OPTS and row["rationale"] == "Because of the rate law."
    assert row["question_id"] == question_id("paper-valid_fenced", row["question"])
    assert row["license"] == "CC-BY-4.0" and row["field_labels"] == ["q-bio.BM"] and row["generator_model"] == "gen"
    assert row["chunk_id"] == "paper-valid_fenced#0" and row["title"] == "A study of valid_fenced"
    # structured output was requested with the question schema
    assert server.requests[0]["response_format"]["json_schema"]["schema"] == question_schema(GenerateConfig())


def test_rerun_is_fully_cached_and_identical(server, tmp_path):
    cfg = BackendConfig(backend="openai", model="gen", base_url=server.url, max_retries=0)
    chunks = [_chunk(n) for n in ("valid_letter", "valid_index", "not_json", "three_options")]
    first = generate_questions(chunks, make_client(cfg, CallCache(tmp_path / "c.sqlite")), GenerateConfig())
    hits = server.hits
    cache = CallCache(tmp_path / "c.sqlite")
    second = generate_questions(chunks, make_client(cfg, cache), GenerateConfig())
    assert second == first and server.hits == hits and cache.stats["made"] == 0 and cache.stats["cached"] == 4


def test_questions_per_chunk_samples_and_duplicates(server, tmp_path):
    client = make_client(BackendConfig(backend="openai", model="gen", base_url=server.url), None)
    kept, drops = generate_questions([_chunk("valid_letter")], client, GenerateConfig(questions_per_chunk=3))
    # the scripted server ignores the sample index, so samples 2 and 3 repeat sample 1
    assert len(kept) == 1 and drops == {"duplicate_question": 2}
    assert len({json.dumps(r) for r in server.requests}) == 3  # three distinct requests (distinct seeds)


def test_prompt_and_schema_shape():
    cfg = GenerateConfig(num_options=4, min_options=4, extra_instructions="Use SI units.", max_chunk_chars=50)
    msgs = build_request_messages({"title": "T", "text": "x" * 500}, cfg)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert "exactly 4 options" in msgs[-1]["content"] and "- Use SI units." in msgs[-1]["content"]
    assert "x" * 50 in msgs[-1]["content"] and "x" * 51 not in msgs[-1]["content"]
    example = json.loads(msgs[2]["content"])  # the worked example obeys the same rules
    parsed, reason = validate_question(msgs[2]["content"], cfg)
    assert (
        reason is None
        and len(example["options"]) == 4
        and parsed["options"][parsed["answer_index"]].startswith("The colony with heat-tolerant algae bleaches later")
    )
    schema = question_schema(cfg)
    assert schema["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]
    assert schema["properties"]["options"]["minItems"] == 4 and schema["required"] == [
        "question", "options", "answer", "rationale"
    ]  # fmt: skip
    assert "minLength" not in question_schema(GenerateConfig(max_question_chars=None))["properties"]["question"]
    patterned = question_schema(GenerateConfig(text_patterns=True, max_question_chars=1000, max_option_chars=40))
    q_re = re.compile(patterned["properties"]["question"]["pattern"])
    o_re = re.compile(patterned["properties"]["options"]["items"]["pattern"])
    assert q_re.match("Why do corals bleach in a heatwave?") and not q_re.match("Corals bleach in a heatwave.")
    assert not q_re.match("x" * 200 + "?")  # capped at PATTERN_MAX_CHARS whatever max_question_chars says
    assert o_re.match("A warmer ocean") and o_re.match("(2) both") and not o_re.match("B") and not o_re.match("x" * 41)
    assert [m["role"] for m in build_request_messages({"text": "t"}, GenerateConfig(few_shot=False))] == [
        "system", "user"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        GenerateConfig(min_options=5, num_options=4)


def test_dedupe_options_keeps_the_question_when_only_distractors_repeat():
    cfg = GenerateConfig(dedupe_options=True)
    repeated = OPTS[:8] + [OPTS[5], OPTS[6].lower()]
    parsed, reason = validate_question(q(options=repeated, answer=OPTS[7]), cfg)
    assert reason is None and parsed["options"] == OPTS[:8] and parsed["answer_index"] == 7
    assert validate_question(q(options=OPTS[:9] + [OPTS[2]]), cfg) == (None, "duplicate_options")  # the answer
    few = OPTS[:3] + [OPTS[0]] * 7
    assert validate_question(q(options=few, answer="B"), cfg) == (None, "too_few_options")
    assert validate_question(q(options=repeated), GenerateConfig())[1] == "duplicate_options"
    numbers = [str(n) for n in range(1, 11)]
    assert validate_question(q(options=numbers, answer="D"), cfg)[0]["options"][3] == "4"  # numbers are real options


def test_extract_json_tells_truncated_from_garbage():
    assert extract_json('{"a": [1, 2]}') == ({"a": [1, 2]}, None)
    assert extract_json('{"a": "unterminated') == (None, "truncated_json")
    assert extract_json('{"a": 1} trailing {"b": ') == ({"a": 1}, None)  # the first complete object wins
    assert extract_json("no braces at all") == (None, "not_json")
    assert extract_json("{not: json}") == (None, "not_json")


@pytest.mark.slow
def test_embedded_smollm2_emits_parseable_questions_under_the_grammar(embedded_model, shared_data, tmp_path):
    """SmolLM2-135M + xgrammar on two real abstracts, through generate_questions: every answer that finished is
    schema-shaped JSON; nothing is lost without a reason."""
    import torch

    rows = [json.loads(line) for line in (shared_data / "papers" / "abstracts_permissive.jsonl").open()]
    rows = [r for r in rows if r["split"] == "dev"][:2]
    chunks = [
        {"paper_id": r["id"], "chunk_id": r["id"], "title": r["title"], "text": r["abstract"], "license": r["license"]}
        for r in rows
    ]
    gen = GenerateConfig(  # the shipped recipes' settings, shortened for a fast test
        num_options=4, min_options=4, max_option_chars=60, max_question_chars=150, text_patterns=True
    )
    cfg = BackendConfig(max_new_tokens=300, temperature=0.7, batch_size=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 135M model on a busy CPU: one thread avoids OpenMP spin contention
    try:
        client = make_client(cfg, CallCache(tmp_path / "c.sqlite"))
        kept, drops = generate_questions(chunks, client, gen)
        raw = client.chat(
            [ChatRequest(build_request_messages(c, gen), json_schema=question_schema(gen)) for c in chunks]
        )
    finally:
        torch.set_num_threads(threads)
    assert all(r.cached for r in raw) and len(kept) + sum(drops.values()) == 2
    possible = {"truncated_json", "empty_option", "duplicate_options", "refers_to_paper", "all_or_none_of_the_above"}
    assert set(drops) <= possible
    for res in raw:
        if res.finish_reason == "stop":
            obj = json.loads(res.text)
            assert set(obj) == {"question", "options", "answer", "rationale"} and len(obj["options"]) == 4
            assert obj["answer"] in "ABCD" and all(2 <= len(o) <= 60 for o in obj["options"])
            assert obj["question"][0].isupper() and obj["question"].endswith("?")  # text_patterns, grammar-held
    assert any(r.finish_reason == "stop" for r in raw)
