"""``wildsci build`` against a real vLLM OpenAI server (the CPU build): structured outputs, resume, faults.

The demo recipe on 3 papers (6 generations, 4 votes per question) with the embedded SmolLM2 behind the
session's vLLM server and ``guided_decoding: vllm`` (vLLM's own structured outputs). One build is SIGKILLed
after a few calls and rerun: the server's own request counter (``vllm:request_success_total``) shows that no
call it answered is asked again, and a rebuild from that call cache asks nothing and writes byte-identical
parquet files. ("Resumed equals uninterrupted" is not tested: vLLM is not batch-invariant, so two uninterrupted
builds against one server can differ -- docs/evaluation.md.) A second server, killed mid-build, must stop the
build with one line naming the endpoint.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from vllm_fixtures import cpu_server

from wildsci.builder.config import BuildRecipe
from wildsci.builder.generate import question_schema
from wildsci.recipes import load_recipe
from wildsci.serving import metric_total

ROOT = Path(__file__).resolve().parents[1]
WILDSCI = str(Path(sys.executable).parent / "wildsci")
ANSWERED = "vllm:request_success_total"
pytestmark = pytest.mark.slow


def server_recipe(path: Path, base_url: str, model: str, out: Path, **generator) -> Path:
    """recipes/data/demo.yaml on 3 papers, its one LLM behind ``base_url`` with vLLM's structured outputs."""
    data = yaml.safe_load((ROOT / "recipes" / "data" / "demo.yaml").read_text())
    data.update(output_dir=str(out), max_papers=3)
    data["generator"].pop("batch_size", None)
    data["generator"].update(backend="openai", base_url=base_url, model=model, guided_decoding="vllm", **generator)
    data["vote"]["num_votes"] = 4
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def build(recipe: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [WILDSCI, "build", str(recipe), *extra], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def report(out: Path) -> dict:
    return json.loads((out / "build_report.json").read_text())


@pytest.fixture(scope="module")
def resumed(vllm_server, embedded_model, tmp_path_factory):
    """A build SIGKILLed after 3 answered calls, rerun to the end, then rebuilt from its call cache elsewhere."""
    tmp = tmp_path_factory.mktemp("vllm_build")
    url = vllm_server.base_url
    recipe = server_recipe(tmp / "recipe.yaml", url, embedded_model, tmp / "out", concurrency=1)
    start = metric_total(url, ANSWERED)
    proc = subprocess.Popen(
        [WILDSCI, "build", str(recipe)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 600
    while metric_total(url, ANSWERED) - start < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(2)  # a request in flight at the kill is aborted by the server, not answered
    killed_at = metric_total(url, ANSWERED) - start
    done = build(recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_total = metric_total(url, ANSWERED) - start
    cache = tmp / "out" / ".wildsci_build" / "llm_cache.sqlite"
    rebuild = build(recipe, "--output-dir", str(tmp / "rebuild"), "--cache_path", str(cache))
    assert rebuild.returncode == 0, rebuild.stderr[-3000:]
    return {
        "recipe": recipe,
        "out": tmp / "out",
        "rebuild": tmp / "rebuild",
        "cache": cache,
        "killed_at": killed_at,
        "resumed_total": resumed_total,
        "rebuild_asked": metric_total(url, ANSWERED) - start - resumed_total,
    }


def test_structured_outputs_make_every_generation_schema_valid(resumed):
    cfg = load_recipe(resumed["recipe"], BuildRecipe)
    schema = question_schema(cfg.generate)
    texts = [t for (t,) in sqlite3.connect(resumed["cache"]).execute("SELECT text FROM calls")]
    questions = [json.loads(t) for t in texts if t.lstrip().startswith("{") and '"question"' in t]
    assert len(questions) == 6  # 3 passages x questions_per_chunk 2
    for q in questions:
        jsonschema.validate(q, schema)
    gen = next(s for s in report(resumed["out"])["stages"] if s["name"] == "generate")
    structural = {"llm_error", "not_json", "truncated_json", "missing_fields", "too_few_options", "too_many_options"}
    assert not structural & set(gen["drops"]), gen["drops"]


def test_a_killed_build_resumes_without_asking_the_server_again(resumed):
    calls = report(resumed["out"])["llm_calls"]
    assert resumed["killed_at"] >= 3
    # every call the server answered before the kill came from the cache on the rerun (the one in flight at the
    # kill, if the server finished it, is the only one that can be asked twice: concurrency is 1)
    assert calls["cached"] >= resumed["killed_at"] - 1
    assert resumed["resumed_total"] - (calls["made"] + calls["cached"]) in (0, 1)
    assert calls["made"] == resumed["resumed_total"] - resumed["killed_at"]


def test_a_rebuild_from_the_call_cache_is_byte_identical_and_asks_nothing(resumed):
    assert resumed["rebuild_asked"] == 0
    assert report(resumed["rebuild"])["llm_calls"]["made"] == 0
    files = sorted(p.relative_to(resumed["out"]) for p in (resumed["out"] / "data").glob("*.parquet"))
    assert files
    for f in files:
        assert (resumed["rebuild"] / f).read_bytes() == (resumed["out"] / f).read_bytes(), f


def test_a_server_killed_mid_build_stops_it_in_one_line(embedded_model, tmp_path):
    with cpu_server(embedded_model, tmp_path / "server.log") as server:
        url = server.base_url
        recipe = server_recipe(tmp_path / "recipe.yaml", url, embedded_model, tmp_path / "out", max_retries=1)
        proc = subprocess.Popen(
            [WILDSCI, "build", str(recipe)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 600
        while metric_total(url, ANSWERED) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, "the build ended before the server could be killed"
        os.killpg(server.proc.pid, signal.SIGKILL)  # the server dies as in a crash (its own process group)
        _, err = proc.communicate(timeout=600)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 2, err[-3000:]
    assert last.startswith("wildsci: error:") and f"127.0.0.1:{server.port}" in last, last
    assert "connection" in last.lower(), last
