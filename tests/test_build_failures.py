"""How ``wildsci build`` fails: one line naming the cause (after the stage table), never a traceback, never a
frozen bar, never a user's file replaced, never a key echoed -- and every bad value refused before the first call.

Each test drives the real CLI (``wildsci.cli.main`` or a subprocess) against a real HTTP server on loopback
(``wildsci.testing.loopback``) scripted into one failure: HTTP 500, a refused connection, a server that stops
answering, one that ignores the structured-output request, a key echoed in an error body.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from build_fake_llm import FakeLLM

from wildsci.cli import main
from wildsci.testing.loopback import LoopbackServer, Reply

TOKEN = "hf_PlantedSecretValue0123456789abcd"


def passage(topic: str) -> str:
    return " ".join(
        f"Measurements of {topic} in sample {k} showed the effect grows with temperature." for k in range(5)
    )


def write_papers(path: Path, n: int = 3) -> Path:
    rows = [
        {"id": f"p-{i}", "title": f"Paper {i}", "abstract": passage(f"topic {i}"), "license": "CC-BY-4.0"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_recipe(tmp: Path, base_url: str, source: Path | None = None, **generator) -> Path:
    recipe = {
        "name": "failure-test",
        "output_dir": str(tmp / "out"),
        "sources": [{"path": str(source or write_papers(tmp / "papers.jsonl"))}],
        "chunking": {"max_tokens": 200, "min_words": 10},
        "generator": {
            "backend": "openai",
            "model": "served-model",
            "base_url": base_url,
            "max_retries": 0,
            "concurrency": 2,
            "timeout_s": 120,  # loopback answers at once; a loaded machine must not turn a slow reply into a drop
            **generator,
        },
        "generate": {"questions_per_chunk": 2},
        "options": {"max_attempts": 1},
        "vote": {"num_votes": 2, "constrained": True, "min_correct_votes": 0},
        "split": {"validation": 0.0, "test": 0.0},
    }
    path = tmp / "recipes" / "data" / "r.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def build(capsys, *args: str) -> tuple[int, str]:
    """``wildsci build ARGS`` in this process: (exit code, everything printed)."""
    rc = main(["build", *args])
    out, err = capsys.readouterr()
    return rc, out + err


def error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("wildsci: error:")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text
    return lines[0]


# --------------------------------------------------------------------------------- a failing server
def test_server_500_names_endpoint_status_and_count_after_the_stage_table(tmp_path, capsys):
    with LoopbackServer(lambda body, n: Reply(status=500, headers={"retry-after-ms": "1"})) as srv:
        rc, text = build(capsys, str(write_recipe(tmp_path, srv.url, max_retries=1)))
    line = error_line(text)
    assert rc == 2
    assert f"6/6 generation calls failed: HTTP 500 from {srv.url}" in line, line
    assert "rerun the same command to resume" in line
    assert "generate" in text and "llm_error=6" in text  # the stage table was printed
    assert "HTTP 500" in text and "(attempt 1 of 2) -- retry in" in text  # each retry shown as it happened
    manifest = json.loads((tmp_path / "out" / ".wildsci_build" / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["retry"] is True  # the rerun recomputes exactly the failed calls


def test_refused_connection_stops_sending_after_a_run_of_failures(tmp_path, capsys):
    with LoopbackServer() as srv:
        url = srv.url
    papers = write_papers(tmp_path / "papers.jsonl", n=12)  # 24 calls; the server is gone
    rc, text = build(capsys, str(write_recipe(tmp_path, url, source=papers, max_retries=2)))
    line = error_line(text)
    assert f"24/24 generation calls failed: no connection to {url} -- is the server up?" in line, line
    assert "calls in a row failed" in text and "the rest of this batch is not sent" in text
    # the stop is seen in what was tried, not in a wall-clock bound (that would depend on the machine's load):
    # 8 calls in a row failed, then no call of this batch is attempted again
    assert text.count("-- call dropped") <= 8 + 2, text.count("-- call dropped")  # + the 2 already in flight


def test_a_server_that_stops_answering_shows_each_timeout(tmp_path, capsys):
    with LoopbackServer(lambda body, n: Reply("late", delay_s=3)) as srv:
        rc, text = build(capsys, str(write_recipe(tmp_path, srv.url, timeout_s=0.5, max_retries=1)))
    assert f"no answer within 0.5 s from {srv.url}: timed out (attempt 1 of 2) -- retry in" in text
    assert "(attempt 2 of 2) -- call dropped" in text
    assert "generation calls failed: no answer within 0.5 s" in error_line(text)


def test_a_server_that_ignores_the_constraint_is_named_with_the_mode_to_use(tmp_path, capsys):
    # FakeLLM answers prose unless the schema comes as response_format -- what vLLM >= 0.12 does with guided_json
    with FakeLLM() as llm:
        papers = write_papers(tmp_path / "papers.jsonl", n=10)
        recipe = write_recipe(tmp_path, llm.base_url, source=papers, guided_decoding="vllm_legacy")
        rc, text = build(capsys, str(recipe))
        sent = llm.requests
    line = error_line(text)
    assert "ignored the structured-output request (guided_decoding: vllm_legacy)" in line, line
    assert "vLLM >= 0.12 ignores vllm_legacy" in line
    assert sent < 20  # stopped early, not after every call


#: how long a build may take to reach its first LLM call on a loaded machine (imports, reading papers):
#: generous, because the tests below measure what happens after that point, not the start-up
START_DEADLINE_S = 600
#: the kit's promise for Ctrl-C is "in seconds"; the bound is generous for a loaded 2-core box and far below the
#: 150 s x 4 attempts the requests in flight would otherwise hold the build
CTRL_C_BOUND_S = 45


def _build_process(recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "wildsci.cli", "build", str(recipe)]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, what: str, proc: subprocess.Popen) -> None:
    """Wait (up to START_DEADLINE_S) for ``condition``; fail naming ``what`` if the build ends or never gets there."""
    deadline = time.monotonic() + START_DEADLINE_S
    while not condition():
        assert proc.poll() is None, f"the build ended before {what}: {proc.stderr.read()[-2000:]}"
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the build did not reach {what} within {START_DEADLINE_S} s")
        time.sleep(0.1)


def test_ctrl_c_with_requests_in_flight_exits_in_seconds_keeping_finished_calls(tmp_path):
    def handler(body, n):
        return Reply("prose") if n < 2 else Reply("late", delay_s=150)

    with LoopbackServer(handler) as srv:
        proc = _build_process(write_recipe(tmp_path, srv.url, timeout_s=200, max_retries=3))
        _wait_for(lambda: srv.hits >= 4, "two answered and two hanging requests", proc)
        time.sleep(0.5)  # the two answers reach the cache
        t0 = time.monotonic()  # measured from the signal: start-up time depends on the machine's load
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=4 * CTRL_C_BOUND_S)
        took = time.monotonic() - t0
    assert took < CTRL_C_BOUND_S, f"{took:.1f} s from Ctrl-C to exit"
    assert proc.returncode == 130 and "interrupted -- rerun the same command to resume" in err
    with sqlite3.connect(tmp_path / "out" / ".wildsci_build" / "llm_cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 2


def test_a_mute_server_is_named_while_the_first_requests_still_wait(tmp_path):
    """Without the notice, a server that accepts requests and never answers shows nothing for timeout_s x attempts."""
    lines: list[str] = []
    with LoopbackServer(lambda body, n: Reply("never", delay_s=3600)) as srv:
        proc = _build_process(write_recipe(tmp_path, srv.url, timeout_s=3000, max_retries=3))
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        _wait_for(lambda: any("no reply yet from" in line for line in lines), "the no-reply notice", proc)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=4 * CTRL_C_BOUND_S)
        reader.join(timeout=30)
    notice = next(line for line in lines if "no reply yet from" in line)
    assert f"served-model: no reply yet from {srv.url}" in notice
    assert "each waits up to timeout_s 3000 s, 4 attempt(s)) -- is the server up and serving this model?" in notice
    assert not any("(attempt 1 of 4)" in line for line in lines)  # said while the first attempts were in flight
    assert proc.returncode == 130


# ---------------------------------------------------------------------------------------- bad input
def _latin1(p: Path) -> None:
    p.write_bytes(b'{"id": "p-0", "title": "caf\xe9", "abstract": "r\xe9sum\xe9 ' + passage("x").encode() + b'"}\n')


@pytest.mark.parametrize(
    ("name", "write", "source_extra", "expected"),
    [
        ("empty", lambda p: p.write_text(""), {}, "the sources held no rows (an empty file?)"),
        ("latin1", _latin1, {}, "ingest: 1/1 dropped as not_utf8: the input is not UTF-8"),
        ("csv", lambda p: p.write_text("id,title\np-0,a\np-1,b\n"), {}, "3/3 dropped as bad_json"),
        (
            "no_text",
            lambda p: p.write_text('{"id": "p-0", "title": "t", "license": "CC0-1.0", "summary": "x"}\n'),
            {},
            "dropped as missing_text: no text column was found",
        ),
        ("where_typo", lambda p: write_papers(p), {"where": {"splt": "dev"}}, "3/3 dropped as filtered"),
    ],
)
def test_input_that_yields_nothing_names_its_cause(tmp_path, capsys, name, write, source_extra, expected):
    src = tmp_path / "papers.jsonl"
    write(src)
    with LoopbackServer() as srv:
        recipe = write_recipe(tmp_path, srv.url, source=src)
        data = yaml.safe_load(recipe.read_text())
        data["sources"][0].update(source_extra)
        recipe.write_text(yaml.safe_dump(data))
        rc, text = build(capsys, str(recipe))
        assert srv.hits == 0
    assert rc == 2 and expected in error_line(text), text[-2000:]
    assert "ingest" in text  # the stage table


def test_a_damaged_parquet_file_is_one_line(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "papers.parquet"
    rows = [{"id": f"p-{i}", "abstract": passage(str(i)), "license": "CC0-1.0"} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), src, row_group_size=10, compression="none")
    raw = bytearray(src.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\xff" * 64  # a page header in the middle, not the footer
    src.write_bytes(bytes(raw))
    with LoopbackServer() as srv:
        rc, text = build(capsys, str(write_recipe(tmp_path, srv.url, source=src)))
    assert rc == 2 and "the parquet file is damaged" in error_line(text), text[-2000:]


# ---------------------------------------------------------------- values refused before the first call
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--generator.temperature", "nan"], "temperature must be in [0, 10]"),
        (["--dedup.threshold", "80"], "dedup.threshold is 80.0: a Jaccard similarity in (0, 1]"),
        (["--chunking.min_letter_ratio", "nan"], "chunking.min_letter_ratio is nan"),
        (["--dry-run", "--generator.backend", "transformers", "--generator.model", "embedded:nope"], "embedded"),
        (["--push", "--hub_repo_id", "me/ds"], "HF_HUB_OFFLINE=1 is set"),
        (["--decontamination.benchmarks", "[{name: gone, path: no-org/no-such-benchmark}]"], "benchmark 'gone'"),
        (["--generator.base_url", "localhost:8000/v1"], "base_url 'localhost:8000/v1' is not an http(s) URL"),
        (["--generate.max_question_chars", "5"], "generate.max_question_chars is 5: it must lie in [10,"),
        (
            [
                "--generator.backend",
                "transformers",
                "--generator.model",
                "tiny:qwen2",
                "--generator.max_new_tokens",
                "4096",
            ],
            "generator.max_new_tokens is 4096: tiny:qwen2 has 2048 positions in all, prompt included",
        ),
        # sizes beyond any sane bound: the number and the bound, when the recipe loads
        (["--generate.questions_per_chunk", "9" * 23], f"questions_per_chunk is {'9' * 23}: it must lie in [1, 64]"),
        (["--vote.num_votes", "100000"], "vote.num_votes is 100000: it must lie in [1, 64]"),
        (["--options.max_attempts", "10000000000"], "options.max_attempts is 10000000000: it must lie in [1, 20]"),
        (["--generator.max_new_tokens", "1" + "0" * 20], "max_new_tokens is 1" + "0" * 20),
        (["--generator.concurrency", "1000000"], "concurrency is 1000000: it must lie in [1, 4096]"),
        (["--chunking.max_tokens", "9" * 30], "chunking.max_tokens is 9"),
        (["--dedup.num_perm", "1000000000"], "dedup.num_perm is 1000000000: it must lie in [16, 8192]"),
        (
            ["--dry-run", "--sources", "[{path: some-org/papers, expected_papers: 1000000000000}]"],
            "passages x 2 questions), above the bound of 1,000,000,000",
        ),
    ],
)
def test_bad_values_are_refused_before_any_call(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with LoopbackServer() as srv:
        rc, text = build(capsys, str(write_recipe(tmp_path, srv.url)), *args)
        assert srv.hits == 0
    assert rc == 2 and expected in error_line(text), text[-2000:]
    assert not (tmp_path / "out" / ".wildsci_build" / "llm_cache.sqlite").exists()


def _junk_config(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text("{not json")


def _no_weights(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))


def _no_tokenizer(folder: Path) -> None:
    import shutil

    from wildsci.models import resolve_model

    shutil.copytree(resolve_model("tiny:qwen2"), folder, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))


def _not_a_causal_lm(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))


@pytest.mark.parametrize(
    ("model", "device", "expected"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", "auto", "the Hub is offline (HF_HUB_OFFLINE=1), so Qwen/Qwen2.5-0.5B-Instruct"),
        ("no-org/no-such-model-anywhere", "cpu", "must be in the local cache"),
        (_junk_config, "auto", "is not a valid JSON file -- point generator.model at a folder written by"),
        (_no_weights, "auto", "has a config but no weights"),
        (_not_a_causal_lm, "auto", "is a vit, not a causal language model"),
        (_no_tokenizer, "auto", "its tokenizer has no vocabulary (tokenizer.json / vocab files missing?)"),
        ("nonsense:foo", "auto", "unknown model scheme 'nonsense:'"),
        ("tiny:qwen2", "cuda:7", "generator.device 'cuda:7' is not on this machine"),
        ("tiny:qwen2", "gpu0", "device 'gpu0' is not a device name"),
    ],
)
def test_a_local_generator_that_cannot_load_is_one_line_before_any_paper_is_read(
    tmp_path, capsys, monkeypatch, model, device, expected
):
    """build checks its local models like GRPO, eval and the Space do (wildsci.models.check_model), up front."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if callable(model):
        model(tmp_path / "model")
        model = str(tmp_path / "model")
    with LoopbackServer() as srv:
        recipe = write_recipe(tmp_path, srv.url)
        args = ["--generator.backend", "transformers", "--generator.model", model, "--generator.device", device]
        rc, text = build(capsys, str(recipe), *args)
    assert rc == 2 and expected in error_line(text), text[-2000:]
    assert "ingest" not in text  # refused before the first stage: no paper read, no model loaded
    assert not (tmp_path / "out").exists()


def test_a_plan_beyond_the_call_bound_is_refused_before_the_first_call(tmp_path, capsys, monkeypatch):
    """A real build (not a dry run) counts its passages, then refuses the plan before generating a question."""
    import wildsci.builder.generate as generate

    monkeypatch.setattr(generate, "MAX_PLANNED_CALLS", 5)  # 3 papers x 2 questions = 6 calls
    with LoopbackServer() as srv:
        rc, text = build(capsys, str(write_recipe(tmp_path, srv.url)))
        assert srv.hits == 0
    assert rc == 2 and "the plan makes 6 LLM calls (3 passages x 2 questions), above the bound of 5" in error_line(
        text
    )


# ---------------------------------------------------------------------------------- the user's files
def test_output_dir_with_the_users_files_is_not_touched_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my own notes\n")
    with FakeLLM() as llm:
        recipe = write_recipe(tmp_path, llm.base_url)
        rc, text = build(capsys, str(recipe))
        assert rc == 2 and "already holds files wildsci build did not write (README.md)" in error_line(text)
        assert llm.requests == 0 and (out / "README.md").read_text() == "my own notes\n"
        assert sorted(p.name for p in out.iterdir()) == ["README.md"]
        rc, text = build(capsys, str(recipe), "--overwrite")
    assert rc == 0, text[-2000:]
    assert (out / "README.md").read_text() != "my own notes\n" and list((out / "data").glob("*.parquet"))


# ------------------------------------------------------------------------------------------- secrets
def _every_file_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "spelling",
    [
        ["--generator.api_key_env", TOKEN],
        [f"--generator.api_key_env={TOKEN}"],
        ["yaml"],
    ],
)
def test_a_key_given_instead_of_a_variable_name_is_never_echoed(tmp_path, capsys, spelling):
    with LoopbackServer() as srv:
        recipe = write_recipe(tmp_path, srv.url, **({"api_key_env": TOKEN} if spelling == ["yaml"] else {}))
        rc, text = build(capsys, str(recipe), *([] if spelling == ["yaml"] else spelling))
        assert srv.hits == 0
    assert rc == 2 and "api_key_env must be the NAME of an environment variable" in error_line(text)
    assert TOKEN not in text
    assert TOKEN not in _every_file_text(tmp_path / "out") if (tmp_path / "out").exists() else True


def test_a_key_from_the_environment_reaches_no_output(tmp_path, capsys, monkeypatch):
    """The key travels only in the Authorization header: not in the card, the report, the cache, the checkpoints,
    the log -- even when a server echoes it back in an error body."""
    monkeypatch.setenv("WILDSCI_PLANTED_KEY", TOKEN)
    with FakeLLM() as llm:
        recipe = write_recipe(tmp_path, llm.base_url, api_key_env="WILDSCI_PLANTED_KEY")
        rc, text = build(capsys, str(recipe))
    assert rc == 0, text[-2000:]
    echo = json.dumps({"error": {"message": f"invalid key {TOKEN}"}}).encode()
    with LoopbackServer(lambda body, n: Reply(status=401, raw_body=echo)) as srv:
        rc2, text2 = build(
            capsys, str(recipe), "--output-dir", str(tmp_path / "out2"), "--generator.base_url", srv.url
        )
    assert rc2 == 2 and "HTTP 401" in text2 and "<redacted>" in text2
    outputs = text + text2 + _every_file_text(tmp_path / "out") + _every_file_text(tmp_path / "out2")
    assert (tmp_path / "out" / "README.md").is_file() and TOKEN not in outputs


def test_rows_lost_later_to_calls_that_failed_earlier_name_the_endpoint():
    """A server killed mid-build: a few generation calls fail (dropped as llm_error), the questions that made it
    then starve a later stage -- the line must still name the failed calls, not only the later stage."""
    from collections import Counter

    from wildsci.builder.console import failure_reason

    stages = [
        {"name": "generate", "in": 6, "out": 2, "drops": {"llm_error": 4}},
        {"name": "options", "in": 2, "out": 0, "drops": {"not_enough_distractors": 2}},
    ]
    line = failure_reason(stages, Counter({"no connection to http://127.0.0.1:9/v1": 4}))
    assert line.startswith("options: 2/2 dropped as not_enough_distractors after 4 LLM calls failed")
    assert "no connection to http://127.0.0.1:9/v1" in line and "rerun the same command to resume" in line
    assert failure_reason(stages, Counter()).endswith("see the stage table above")  # no failed call: no blame


def test_a_missing_pool_shard_is_refused_before_any_call(tmp_path, capsys):
    asked: list[int] = []

    def answer(body, n):
        asked.append(n)
        return Reply(status=500)

    with LoopbackServer(answer) as srv:
        recipe = write_recipe(tmp_path, srv.url)
        rc, text = build(capsys, str(recipe), "--shard", "0/2", "--options.distractor_source", "pool",
                         "--pool_from", f"[{tmp_path / 'shard1'}]")  # fmt: skip
    line = error_line(text)
    assert rc == 2 and asked == []
    assert f"pool_from: {tmp_path / 'shard1'} has not finished generating" in line and "stop_after: generate" in line
