"""LLM backends: the OpenAI client against a real HTTP server on 127.0.0.1, the transformers client on a tiny model.

The OpenAI-side tests script real failure modes over real HTTP (500s, garbage bodies, timeouts) and check
that each ends as a counted error, never an exception; the transformers-side tests check the determinism
contract: a request's answer does not depend on its batch neighbours, so a half-cached resumed run equals
an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from wildsci.errors import UserError
from wildsci.llm import BackendConfig, CallCache, ChatRequest, make_client
from wildsci.llm.backends import normalize_choice, request_seed
from wildsci.testing.loopback import LoopbackServer, Reply, echo_handler

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["A", "B", "C"]}, "ok": {"type": "boolean"}},
    "required": ["answer", "ok"],
    "additionalProperties": False,
}


def _msgs(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question number {i}: " + "why is the sky blue? " * (i % 4 + 1)}]


def _openai(srv: LoopbackServer, cache: CallCache | None = None, **kw) -> object:
    cfg = BackendConfig(backend="openai", model="served-model", base_url=srv.url, **kw)
    return make_client(cfg, cache)


# ------------------------------------------------------------------------------------------------ openai
def test_openai_results_in_order_cached_and_seeded(tmp_path):
    with LoopbackServer(echo_handler) as srv:
        cache = CallCache(tmp_path / "calls.sqlite")
        client = _openai(srv, cache, concurrency=4)
        reqs = [ChatRequest(_msgs(i)) for i in range(10)] + [ChatRequest(_msgs(0), sample_index=1)]
        first = client.chat(reqs, desc="test")
        assert all(r.text and r.text.startswith("echo ") and not r.cached for r in first)
        assert cache.stats == {"made": 11, "cached": 0, "failed": 0} and srv.hits == 11
        # every request carried its own seed, derived from its cache key; sample_index changes it
        seeds = {json.dumps(b["messages"]) + str(b["seed"]) for b in srv.requests}
        assert len(seeds) == 11
        assert {b["seed"] for b in srv.requests} == {request_seed(client.key(r)) for r in reqs}
        assert first[0].text != first[10].text
        # a rerun, even from a fresh client on the same cache file, makes no call
        again = _openai(srv, CallCache(tmp_path / "calls.sqlite"), concurrency=4).chat(reqs)
        assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)
        assert [r.finish_reason for r in again] == [r.finish_reason for r in first] == ["stop"] * 11
        assert srv.hits == 11
        body = srv.requests[0]
        assert body["model"] == "served-model" and body["max_tokens"] == 512 and body["temperature"] == 0.7


def test_openai_structured_requests_and_choices():
    with LoopbackServer(echo_handler) as srv:
        client = _openai(srv)
        client.chat([ChatRequest(_msgs(1), json_schema=SCHEMA)])
        rf = srv.requests[-1]["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA and rf["json_schema"]["strict"]
        res = client.chat([ChatRequest(_msgs(i), choices=["Neuroscience", "Microbiology"]) for i in range(6)])
        assert {r.text for r in res} <= {"Neuroscience", "Microbiology"}  # {"choice": ...} unwrapped
        assert srv.requests[-1]["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"]

        vllm = _openai(srv, guided_decoding="vllm")
        vllm.chat([ChatRequest(_msgs(2), json_schema=SCHEMA), ChatRequest(_msgs(3), choices=["A", "B"])])
        bodies = srv.requests[-2:]
        assert {json.dumps(b["structured_outputs"], sort_keys=True) for b in bodies} == {
            json.dumps({"json": SCHEMA}, sort_keys=True),
            json.dumps({"choice": ["A", "B"]}, sort_keys=True),
        }
        legacy = _openai(srv, guided_decoding="vllm_legacy")
        r = legacy.chat([ChatRequest(_msgs(4), choices=["A", "B"])])[0]
        assert srv.requests[-1]["guided_choice"] == ["A", "B"] and r.text in ("A", "B")

        plain = _openai(srv, structured=False)
        plain.chat([ChatRequest(_msgs(5), json_schema=SCHEMA)])
        assert "response_format" not in srv.requests[-1]


def test_normalize_choice_forms():
    ch = ["Neuroscience", "Genetics and genomics"]
    assert normalize_choice('{"choice": "Neuroscience"}', ch) == "Neuroscience"
    assert normalize_choice('"genetics and genomics"', ch) == "Genetics and genomics"
    assert normalize_choice(" Neuroscience.\n", ch) == "Neuroscience"
    assert normalize_choice("Astrology", ch) == "Astrology"


def test_openai_retries_then_succeeds():
    def flaky(body, n):
        if n < 2:
            return Reply(status=503 if n == 0 else 429, headers={"retry-after-ms": "10"})
        return Reply("recovered")

    with LoopbackServer(flaky) as srv:
        res = _openai(srv, max_retries=3).chat([ChatRequest(_msgs(0))])
        assert res[0].text == "recovered" and srv.hits == 3


@pytest.mark.parametrize(
    ("reply", "error_part"),
    [
        (Reply(status=500, headers={"retry-after-ms": "10"}), "HTTP 500 from http://127.0.0.1"),
        (Reply(raw_body=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"}), "non-JSON"),
        (Reply(raw_body=b'{"object": "chat.completion", "choices": []}'), "no choices"),
        (Reply(content=None), "no content"),
        (Reply(status=400), "HTTP 400 from http://127.0.0.1"),
    ],
)
def test_openai_failures_become_counted_errors(tmp_path, reply, error_part):
    with LoopbackServer(lambda body, n: reply) as srv:
        cache = CallCache(tmp_path / "c.sqlite")
        client = _openai(srv, cache, max_retries=1)
        res = client.chat([ChatRequest(_msgs(0)), ChatRequest(_msgs(1))])
        assert all(r.text is None and error_part in r.error for r in res), [r.error for r in res]
        assert cache.stats == {"made": 2, "cached": 0, "failed": 2} and len(cache) == 0  # failures not cached
        hits = srv.hits
        client.chat([ChatRequest(_msgs(0))])
        assert srv.hits > hits  # a rerun retries a failed call


def test_openai_timeout_is_an_error_not_a_hang():
    # the server would answer after 60 s; returning well before that (on any machine load) is the timeout working
    with LoopbackServer(lambda body, n: Reply("late", delay_s=60)) as srv:
        t0 = time.monotonic()
        res = _openai(srv, timeout_s=0.3, max_retries=0).chat([ChatRequest(_msgs(0))])
        assert res[0].text is None and "no answer within 0.3 s from http://127.0.0.1" in res[0].error
        assert time.monotonic() - t0 < 30


def test_openai_concurrency_is_bounded():
    state = {"now": 0, "max": 0}
    cond = threading.Condition()

    def slow(body, n):
        # each request is held until 3 were in flight at once (or 10 s passed): the peak then shows the client's
        # limit, not how fast this machine happened to start the client's threads
        with cond:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            cond.notify_all()
            cond.wait_for(lambda: state["max"] >= 3, timeout=10)
            state["now"] -= 1
        return Reply("ok")

    with LoopbackServer(slow) as srv:
        res = _openai(srv, concurrency=3).chat([ChatRequest(_msgs(i)) for i in range(15)])
        assert all(r.text == "ok" for r in res)
        assert state["max"] == 3


def test_openai_api_key_from_env_only(monkeypatch):
    with LoopbackServer(echo_handler) as srv:
        monkeypatch.delenv("WILDSCI_TEST_KEY", raising=False)
        with pytest.raises(UserError, match="WILDSCI_TEST_KEY"):
            _openai(srv, api_key_env="WILDSCI_TEST_KEY")
        monkeypatch.setenv("WILDSCI_TEST_KEY", "sk-secret-123")
        client = _openai(srv, api_key_env="WILDSCI_TEST_KEY")
        client.chat([ChatRequest(_msgs(0))])
        assert srv.authorizations[-1] == "Bearer sk-secret-123"
        assert "sk-secret" not in repr(client.config)
    with pytest.raises(UserError, match="base_url"):
        make_client(BackendConfig(backend="openai", model="m"), None)


def test_backend_config_rejects_bad_values():
    for bad in (
        {"backend": "vllm"},
        {"concurrency": 0},
        {"top_p": 0.0},
        {"guided_decoding": "outlines"},
        {"dtype": "fp8"},
    ):
        with pytest.raises(ValueError):
            BackendConfig(**bad)


# ------------------------------------------------------------------------------------------ transformers
@pytest.fixture(scope="module")
def tiny_cfg(tiny_model):
    """The tiny model on one torch thread (OpenMP threads spin against each other on a busy 2-core CI box)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield BackendConfig(model="tiny:qwen2", max_new_tokens=12, temperature=0.9, top_p=0.95, batch_size=4)
    torch.set_num_threads(threads)


def test_transformers_batch_composition_and_resume_do_not_change_answers(tmp_path, tiny_cfg):
    reqs = [ChatRequest(_msgs(i), sample_index=i % 2) for i in range(7)]
    full_cache = CallCache(tmp_path / "full.sqlite")
    full = make_client(tiny_cfg, full_cache).chat(reqs)
    assert all(r.text is not None and r.finish_reason in ("stop", "length") for r in full)
    assert len({r.text for r in full}) > 3  # sampling really happened

    # a "killed" run that got through every other request, then the rerun of the whole stage
    resumed_cache = CallCache(tmp_path / "resumed.sqlite")
    partial = make_client(tiny_cfg, resumed_cache)
    partial.chat(reqs[::2])
    resumed = make_client(tiny_cfg, resumed_cache).chat(reqs)
    assert [r.text for r in resumed] == [r.text for r in full]
    assert [r.cached for r in resumed] == [i % 2 == 0 for i in range(7)]

    # and a different batch size gives the same answers too
    solo = make_client(BackendConfig(**{**tiny_cfg.__dict__, "batch_size": 1}), None).chat(reqs)
    assert [r.text for r in solo] == [r.text for r in full]


def test_transformers_structured_json_and_choices(tiny_cfg):
    cfg = BackendConfig(**{**tiny_cfg.__dict__, "max_new_tokens": 24})
    client = make_client(cfg, None)
    res = client.chat([ChatRequest(_msgs(i), json_schema=SCHEMA, sample_index=i) for i in range(4)])
    for r in res:  # a random model, held to the grammar, still emits schema-valid JSON
        obj = json.loads(r.text)
        assert obj["answer"] in ("A", "B", "C") and isinstance(obj["ok"], bool) and set(obj) == {"answer", "ok"}
    choices = ["Neuroscience", "Microbiology", "Genetics and genomics"]
    res = client.chat([ChatRequest(_msgs(i), choices=choices, sample_index=i) for i in range(6)])
    assert all(r.text in choices for r in res)


@pytest.mark.parametrize("temperature", [0.9, 0.0])
def test_transformers_letter_votes_one_forward_pass_equal_constrained_generate(tiny_cfg, monkeypatch, temperature):
    """The voters' fast path (one forward per distinct prompt) picks what grammar-constrained generate() picks."""
    from wildsci.llm.backends import TransformersClient

    cfg = BackendConfig(**{**tiny_cfg.__dict__, "temperature": temperature})
    letters = list("ABCDEFGHIJ")
    # three prompts of different lengths (left padding), eight votes each, one prompt also free-form
    reqs = [ChatRequest(_msgs(i) * (i + 1), choices=letters, sample_index=k) for i in range(3) for k in range(8)]
    reqs.append(ChatRequest(_msgs(0)))
    calls = []
    fast_client = make_client(cfg, None)
    real_generate = TransformersClient._generate
    monkeypatch.setattr(
        TransformersClient, "_generate", lambda self, p, k, g: calls.append(len(p)) or real_generate(self, p, k, g)
    )
    fast = fast_client.chat(reqs)
    assert calls == [1]  # only the free-form request went through generate()
    monkeypatch.setattr(TransformersClient, "_letter_choice_ids", lambda self, req: None)
    slow = make_client(cfg, None).chat(reqs)
    assert [r.text for r in fast] == [r.text for r in slow]
    assert all(r.text in letters and r.finish_reason == "stop" for r in fast[:-1])
    if temperature > 0:
        assert len({r.text for r in fast[:8]}) > 1  # eight seeded samples of one distribution, not one answer


@pytest.mark.parametrize("temperature", [0.9, 0.0])
def test_transformers_shared_prompt_prefix_is_computed_once_and_changes_nothing(tiny_cfg, monkeypatch, temperature):
    """The generator's batches share a long system prompt + example: run once, copied; same answers as without."""
    from wildsci.llm.backends import TransformersClient

    cfg = BackendConfig(**{**tiny_cfg.__dict__, "temperature": temperature, "max_new_tokens": 16, "batch_size": 8})
    system = "You write rigorous exam questions about cells, stars and alloys. " * 6
    reqs = [
        ChatRequest([{"role": "system", "content": system}, {"role": "user", "content": "passage " * (1 + 3 * i)}])
        for i in range(5)
    ]
    seen = []
    real = TransformersClient._encode_with_shared_prefix

    def spy(self, prompts):
        enc, cache = real(self, prompts)
        seen.append(None if cache is None else cache.get_seq_length())
        return enc, cache

    monkeypatch.setattr(TransformersClient, "_encode_with_shared_prefix", spy)
    shared = make_client(cfg, None).chat(reqs)
    assert seen and all(n is not None and n >= TransformersClient.MIN_SHARED_PREFIX for n in seen)
    monkeypatch.setattr(TransformersClient, "MIN_SHARED_PREFIX", 10**9)
    plain = make_client(cfg, None).chat(reqs)
    assert seen[-1] is None  # the second client padded every prompt in full
    assert [r.text for r in shared] == [r.text for r in plain]
    assert [r.finish_reason for r in shared] == [r.finish_reason for r in plain]


def test_transformers_greedy_and_too_long_prompt(tiny_cfg):
    cfg = BackendConfig(**{**tiny_cfg.__dict__, "temperature": 0.0})
    client = make_client(cfg, None)
    too_long = ChatRequest([{"role": "user", "content": "word " * 2100}])
    a, long_, b = client.chat([ChatRequest(_msgs(1)), too_long, ChatRequest(_msgs(1), sample_index=1)])
    assert long_.text is None and "exceeds the model's 2048 positions" in long_.error
    assert a.text is not None and a.error is None and a.text == b.text  # greedy: samples agree


def test_sigkill_mid_stage_then_rerun_makes_only_missing_calls(tmp_path):
    """Kill a client process mid-stage; the rerun asks only what was never answered and equals a clean run."""
    killed = threading.Event()

    def handler(body, n):
        if n >= 10:  # from the 11th request on, hold the answer until the client is killed: it cannot finish first
            killed.wait(timeout=120)
        return Reply(echo_handler(body, n).content, delay_s=0.05)

    with LoopbackServer(handler) as srv:
        script = textwrap.dedent(
            f"""
            from wildsci.llm import BackendConfig, CallCache, ChatRequest, make_client
            cfg = BackendConfig(backend="openai", model="m", base_url={srv.url!r}, concurrency=2)
            reqs = [ChatRequest([{{"role": "user", "content": f"q{{i}}"}}]) for i in range(40)]
            make_client(cfg, CallCache({str(tmp_path / "c.sqlite")!r})).chat(reqs)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 600  # the child's start-up (imports) is slow on a loaded machine
            while srv.hits < 10 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert srv.hits >= 10 and proc.poll() is None, "the client never got 10 requests in flight"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            killed.set()
        cache = CallCache(tmp_path / "c.sqlite")
        answered = len(cache)
        assert 0 < answered < 40
        cfg = BackendConfig(backend="openai", model="m", base_url=srv.url, concurrency=2)
        reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}]) for i in range(40)]
        resumed = make_client(cfg, cache).chat(reqs)
        assert cache.stats["made"] == 40 - answered and cache.stats["cached"] == answered
        clean = make_client(cfg, CallCache(tmp_path / "clean.sqlite")).chat(reqs)
        assert [r.text for r in resumed] == [r.text for r in clean]


def test_guided_decoding_is_part_of_a_remote_calls_key_only():
    """Switching how a constraint is sent must not replay answers made under the other mode (an old server ignored
    one of them); the endpoint is transport and stays out; the local backend has one mode, so its keys do not move."""
    req = ChatRequest(_msgs(0), json_schema=SCHEMA)

    def key(**kw):
        return make_client(BackendConfig(**kw), None).key(req)

    remote = {"backend": "openai", "model": "m", "base_url": "http://a/v1"}
    assert key(**remote) != key(**remote, guided_decoding="vllm") != key(**remote, guided_decoding="vllm_legacy")
    assert key(**remote) == key(**{**remote, "base_url": "http://b:9000/v1"})
    assert key(**remote, structured=False) == key(**remote, structured=False, guided_decoding="vllm")
    local = {"model": "tiny:qwen2"}
    assert key(**local) == key(**local, guided_decoding="vllm")


def test_the_local_client_checks_its_model_and_device_before_loading(tmp_path):
    """A caller that skips the build's preflight (a cluster task, a script) still gets one line, not a traceback."""
    import torch

    from wildsci.errors import UserError

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(UserError, match=r"device 'cuda:7' is not on this machine"):
        make_client(BackendConfig(model="tiny:qwen2", device="cuda:7"), None).chat([ChatRequest(_msgs(0))])
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(UserError, match="is not a valid JSON file"):
        make_client(BackendConfig(model=str(tmp_path)), None).chat([ChatRequest(_msgs(0))])
