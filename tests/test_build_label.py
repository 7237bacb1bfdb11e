"""Labelling: constrained LLM choice among the 26 subdomains, fallback to the paper's field labels."""

from __future__ import annotations

import json
import re

import pytest

from wildsci.builder.label import DROP_REASONS, LabelConfig, label_rows
from wildsci.llm import BackendConfig, CallCache, make_client
from wildsci.schema import validate_row
from wildsci.taxonomy import load_taxonomy
from wildsci.testing.loopback import LoopbackServer, Reply

# title tag -> what the classifier answers
ANSWERS = {"neuro": "Neuroscience", "micro": "microbiology", "astro": "Astrology", "fail": None}


def _handler(body: dict, n: int) -> Reply:
    tag = re.search(r"Paper title: \[(\w+)\]", body["messages"][-1]["content"]).group(1)
    if ANSWERS[tag] is None:
        return Reply(status=500, headers={"retry-after-ms": "5"})
    return Reply(json.dumps({"choice": ANSWERS[tag]}))


def _row(pid: str, tag: str, labels: list[str], i: int = 0) -> dict:
    return {"paper_id": pid, "title": f"[{tag}] Some paper", "question": f"Question {i} of {pid}?",
            "field_labels": labels}  # fmt: skip


@pytest.fixture
def server():
    with LoopbackServer(_handler) as srv:
        yield srv


def test_llm_labels_with_fallback_and_drops(server, tmp_path):
    client = make_client(
        BackendConfig(backend="openai", model="clf", base_url=server.url, max_retries=0),
        CallCache(tmp_path / "c.sqlite"),
    )
    rows = [
        _row("p1", "neuro", ["physics.optics"], 0),
        _row("p1", "neuro", ["physics.optics"], 1),
        _row("p2", "micro", []),
        _row("p3", "astro", ["astro-ph.EP"]),  # classifier says something outside the taxonomy -> labels
        _row("p4", "fail", ["q-bio.GN"]),  # classifier call fails -> labels
        _row("p5", "astro", []),  # neither works
    ]
    out, drops = label_rows(rows, client, LabelConfig())
    assert drops == {"unlabelable": 1} and set(drops) <= set(DROP_REASONS)
    by = {(r["paper_id"], r["question"]): r for r in out}
    got = {(pid, r["nc_subdomain"], r["label_source"]) for (pid, _), r in by.items()}
    tax = load_taxonomy()
    planetary = tax.match_field_labels(["astro-ph.EP"]).name
    genetics = tax.match_field_labels(["q-bio.GN"]).name
    assert got == {
        ("p1", "Neuroscience", "llm"),
        ("p2", "Microbiology", "llm"),
        ("p3", planetary, "field_labels"),
        ("p4", genetics, "field_labels"),
    }
    for r in out:
        sub = tax.subdomain(r["nc_subdomain"])
        assert (r["discipline"], r["nc_domain"]) == (sub.discipline, sub.nc_domain)
    # one call per paper; the prompt lists all 26 subdomains with descriptions; choices constrained
    assert server.hits == 5
    body = server.requests[0]
    assert all(f"- {s.name}: {s.description}" in body["messages"][-1]["content"] for s in tax.subdomains)
    enum = body["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"]
    assert enum == [s.name for s in tax.subdomains]
    p1 = next(b for b in server.requests if "[neuro]" in b["messages"][-1]["content"])["messages"][-1]["content"]
    assert "Question 1: Question 0 of p1?" in p1 and "Question 2: Question 1 of p1?" in p1


def test_per_question_mode_and_field_labels_only(server):
    client = make_client(BackendConfig(backend="openai", model="clf", base_url=server.url, max_retries=0), None)
    rows = [_row("p1", "neuro", [], 0), _row("p1", "neuro", [], 1)]
    out, _ = label_rows(rows, client, LabelConfig(per_paper=False))
    assert server.hits == 2 and all(r["nc_subdomain"] == "Neuroscience" for r in out)
    out, drops = label_rows(
        [_row("p9", "neuro", ["cond-mat.supr-con"]), _row("p8", "neuro", [])], client, LabelConfig(use_llm=False)
    )
    assert server.hits == 2 and drops == {"unlabelable": 1}
    assert out[0]["label_source"] == "field_labels" and out[0]["discipline"] == "Physics"
    with pytest.raises(ValueError):
        LabelConfig(use_llm=False, fallback_to_field_labels=False)


def test_tiny_model_classifier_always_names_a_subdomain(tiny_model):
    """A real local classifier under the choice grammar: every row gets a valid taxonomy label from the LLM."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        client = make_client(BackendConfig(model="tiny:qwen2", max_new_tokens=24, temperature=0.0), None)
        rows = [_row(f"p{i}", "x", []) for i in range(3)]
        out, drops = label_rows(rows, client, LabelConfig())
    finally:
        torch.set_num_threads(threads)
    assert not drops and all(r["label_source"] == "llm" for r in out)
    for r in out:
        full = {**r, "options": {k: f"o{k}" for k in "ABCDEFGHIJ"}, "answer": "A", "rationale": "",
                "voting_type": "all_aligned", "voting_answers": ["A"] * 8}  # fmt: skip
        assert validate_row(full) == []
