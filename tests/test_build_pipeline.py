"""``wildsci build`` end to end through the CLI: every stage, every drop reason, resume after SIGKILL, shards.

The LLM is a deterministic OpenAI-compatible server on loopback (tests/build_fake_llm.py) so that the real
pipeline (openai backend, call cache, checkpoints, parquet, card) runs in seconds; the embedded-model builds
of the shipped recipes are the ``slow`` tests at the bottom.
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

import pytest
from build_fake_llm import FakeLLM, write_recipe
from wildsci_fixtures import parquet_bytes
from wildsci_fixtures import run_cli as wildsci

from wildsci.schema import validate_row


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    with FakeLLM() as llm:
        recipe = write_recipe(tmp, llm.base_url)
        proc = wildsci("build", str(recipe))
        report = json.loads((tmp / "out" / "build_report.json").read_text())
        (tmp / "first_report.json").write_text(json.dumps(report))
        (tmp / "first_parquet").mkdir()
        for name, data in parquet_bytes(tmp / "out").items():
            (tmp / "first_parquet" / name).write_bytes(data)
        again = wildsci("build", str(recipe))
        yield tmp, recipe, proc, again, report


def test_build_every_stage_and_drop_reason(full_build):
    from datasets import load_dataset

    tmp, _, proc, _, report = full_build
    out = tmp / "out"
    assert [s["name"] for s in report["stages"]] == [
        "ingest",
        "chunk",
        "generate",
        "options",
        "vote",
        "filter",
        "label",
        "validate",
        "dedup_decontaminate",
    ]
    expected = {
        # ingest
        "missing_id",
        "missing_text",
        "missing_license",
        "garbled_text",
        "too_short",
        "duplicate_paper",
        "filtered",
        "not_utf8",
        "bad_json",
        # chunk
        "formula_heavy_passage",
        # generate
        "not_json",
        "truncated_json",
        "too_few_options",
        "too_many_options",
        "answer_not_in_options",
        "duplicate_options",
        "empty_option",
        "refers_to_paper",
        "llm_error",
        # label, dedup, decontamination
        "unlabelable",
        "near_duplicate",
        "contaminated_tinybench",
    }
    assert expected <= set(report["drops"]), expected - set(report["drops"])
    assert {"too_easy", "too_hard"} & set(report["drops"])  # the difficulty filter removed something
    for st in report["stages"][2:]:
        assert st["in"] - sum(st["drops"].values()) == st["out"], st  # every row accounted for
    # the summary table lists every reason
    for reason in expected:
        assert reason in proc.stderr
    # the dataset: Hub layout, schema-valid rows, splits grouped by paper
    ds = load_dataset(str(out))
    assert set(ds) == {"train", "validation", "test"} and all(len(ds[s]) for s in ds)
    papers = {s: set(ds[s]["paper_id"]) for s in ds}
    assert not (papers["train"] & papers["test"]) and not (papers["train"] & papers["validation"])
    for split in ds.values():
        for row in split:
            assert validate_row(row) == [], row
    assert sum(report["splits"].values()) == sum(len(ds[s]) for s in ds) == report["stages"][-1]["out"]
    assert sum(report["letter_distribution"].values()) == sum(report["splits"].values())
    assert report["decontamination"]["tinybench"]["removed"] >= 1
    assert report["llm_calls"]["made"] > 0
    # the 6-option question got 4 LLM distractors in the options stage and has 10 options A-J
    options_rows = [json.loads(x) for x in (out / ".wildsci_build" / "options.jsonl").read_text().splitlines()]
    six = [r for r in options_rows if r["paper_id"] == "p-6opts"]
    assert six and all(sum(1 for v in r["options"].values() if v) == 10 for r in six)
    assert any("Unrelated claim" in v for r in six for v in r["options"].values())


def test_rerun_is_fully_cached_and_identical(full_build):
    tmp, recipe, _, again, first = full_build
    report = json.loads((tmp / "out" / "build_report.json").read_text())
    # failed calls (HTTP 500) are never cached, so a rerun retries exactly those; everything else is read back
    failed = first["stages"][2]["drops"]["llm_error"]
    assert failed == 2 and report["llm_calls"]["made"] == failed, report["llm_calls"]
    assert report["llm_calls"]["cached"] > 0
    assert "options: " in again.stderr and "(from checkpoint)" in again.stderr  # downstream stages reused
    for key in ("drops", "splits", "per_subdomain", "letter_distribution"):
        assert report[key] == first[key]
    first = {f.name: f.read_bytes() for f in sorted((tmp / "first_parquet").glob("*.parquet"))}
    assert first and parquet_bytes(tmp / "out") == first  # rewritten byte for byte


def test_kill_and_resume_gives_the_same_dataset(full_build, tmp_path):
    full_tmp, _, _, _, full_report = full_build
    with FakeLLM(delay_s=0.03) as llm:
        recipe = write_recipe(tmp_path, llm.base_url, data_dir=full_tmp)
        cache = tmp_path / "out" / ".wildsci_build" / "llm_cache.sqlite"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "wildsci.cli", "build", str(recipe)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed_at = 0
        deadline = time.time() + 600  # start-up (imports, reading papers) is slow on a loaded machine
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if cache.exists():
                try:
                    with sqlite3.connect(cache, timeout=5) as db:
                        killed_at = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if killed_at >= 60:  # mid-vote: generation done, part of the votes cached
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
        assert not (tmp_path / "out" / "build_report.json").exists()
        with sqlite3.connect(cache) as db:
            cached_before = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        wildsci("build", str(recipe))
    resumed = json.loads((tmp_path / "out" / "build_report.json").read_text())
    # no call was repeated: what the killed run cached plus what the rerun made is what one full run makes
    assert resumed["llm_calls"]["made"] + cached_before == full_report["llm_calls"]["made"]
    assert resumed["llm_calls"]["cached"] > 0 and cached_before > 0
    # and the dataset is byte-identical (parquet) to the uninterrupted build
    assert parquet_bytes(tmp_path / "out") == parquet_bytes(full_tmp / "out")


def test_two_shards_merged_equal_one_run(full_build, tmp_path):
    full_tmp, _, _, _, _ = full_build
    with FakeLLM() as llm:
        recipe = write_recipe(tmp_path, llm.base_url, data_dir=full_tmp)
        for i in (0, 1):
            wildsci("build", str(recipe), "--shard", f"{i}/2", "--output-dir", str(tmp_path / f"shard{i}"))
        shard_rows = [len((tmp_path / f"shard{i}" / "shard_rows.jsonl").read_text().splitlines()) for i in (0, 1)]
        assert all(shard_rows), shard_rows  # both shards got papers
        # a missing shard is one clear error line
        bad = wildsci(
            "build",
            str(recipe),
            "--merge_from",
            f"[{tmp_path / 'shard0'}]",
            "--output-dir",
            str(tmp_path / "merged"),
            check=False,
        )
        assert bad.returncode == 2 and "shards [1] of 2 are missing" in bad.stderr
        wildsci(
            "build",
            str(recipe),
            "--merge_from",
            f"[{tmp_path / 'shard0'}, {tmp_path / 'shard1'}]",
            "--output-dir",
            str(tmp_path / "merged"),
        )
    assert parquet_bytes(tmp_path / "merged") == parquet_bytes(full_tmp / "out")
    merged = json.loads((tmp_path / "merged" / "build_report.json").read_text())
    full = json.loads((full_tmp / "out" / "build_report.json").read_text())
    for key in ("drops", "splits", "per_subdomain", "letter_distribution", "voting_types", "recipe_hash"):
        assert merged[key] == full[key], key


def test_push_from_the_cli_is_one_commit(full_build, tmp_path, monkeypatch):
    """``wildsci build ... --push`` (in-process, mocked ``HfApi`` boundary): the built folder goes up in one commit."""
    import shutil

    import huggingface_hub
    from wildsci_fixtures import FakeHfApi

    from wildsci.cli import main

    full_tmp, recipe, _, _, _ = full_build
    shutil.copytree(full_tmp / "out", tmp_path / "out")
    FakeHfApi.reset()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token_never_printed")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rc = main(["build", str(recipe), "--output-dir", str(tmp_path / "out"), "--push", "--hub_repo_id", "me/fake"])
    assert rc == 0
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]
    assert FakeHfApi.calls[0][1]["private"] is True and FakeHfApi.calls[1][1]["repo_id"] == "me/fake"
    assert "data/train-00000-of-00001.parquet" in FakeHfApi.calls[1][1]["files"]
    assert not any(".wildsci_build" in f for f in FakeHfApi.calls[1][1]["files"])


def test_bad_recipe_is_one_line_before_any_work(tmp_path):
    recipe = write_recipe(tmp_path, "http://127.0.0.1:9/v1", generate={"questions_per_chunk": "two"})
    proc = wildsci("build", str(recipe), check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "generate.questions_per_chunk" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    proc = wildsci(
        "build",
        str(recipe),
        "--generate.questions_per_chunk",
        "1",
        "--sources",
        f"[{{path: {tmp_path / 'missing.jsonl'}}}]",
        check=False,
    )
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = wildsci("build", str(recipe), "--generate.questions_per_chunk", "1", "--push", check=False)
    assert proc.returncode == 2 and "hub_repo_id" in proc.stderr


def test_dry_run_prints_the_plan_and_generates_nothing(tmp_path):
    recipe = write_recipe(tmp_path, "http://127.0.0.1:9/v1")
    proc = wildsci("build", str(recipe), "--dry-run")
    assert "generate" in proc.stdout and "vote" in proc.stdout and "nothing was generated" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_shipped_recipes_check_and_dry_run(repo_root):
    recipes = sorted((repo_root / "recipes" / "data").glob("*.yaml"))
    assert {p.name for p in recipes} >= {"demo.yaml", "abstracts_dev.yaml", "wildsci_nc.yaml"}
    proc = wildsci("recipes", "check", *map(str, recipes), cwd=repo_root)
    assert f"{len(recipes)}/{len(recipes)} recipes valid" in proc.stdout
    for name in ("demo.yaml", "wildsci_nc.yaml"):
        header = (repo_root / "recipes" / "data" / name).read_text().split("\n\n")[0]
        assert f"wildsci build recipes/data/{name}" in header  # the exact command is in the header
    nc = wildsci("build", "recipes/data/wildsci_nc.yaml", "--dry-run", cwd=repo_root)
    assert "estimated" in nc.stdout and "Qwen2.5-32B-Instruct" in nc.stdout
    demo = wildsci("build", "recipes/data/demo.yaml", "--dry-run", cwd=repo_root)
    assert "builtin:demo" in demo.stdout and " 26 " in demo.stdout
    options_row = next(line for line in demo.stdout.splitlines() if "options (distractors" in line)
    assert "│     0 │" in options_row  # pool distractors: no LLM call


def _embedded_build_is_valid(out: Path, proc: subprocess.CompletedProcess) -> dict:
    from datasets import load_dataset

    report = json.loads((out / "build_report.json").read_text())
    assert report["llm_calls"]["made"] > 0 and "generate" in proc.stderr
    ds = load_dataset(str(out))
    assert sum(len(d) for d in ds.values()) == sum(report["splits"].values()) > 0
    for split in ds.values():
        for row in split:
            assert validate_row(row) == [], row
            assert row["generator_model"] == "embedded:smollm2-135m-instruct"
            assert row["question"].endswith("?") and len({o for o in row["options"].values() if o}) == 10
    assert (out / "README.md").read_text().startswith("---\n")
    for st in report["stages"][2:]:
        assert st["in"] - sum(st["drops"].values()) == st["out"], st  # every row accounted for
    return report


@pytest.mark.slow
def test_demo_recipe_builds_with_the_embedded_model(embedded_model, repo_root, tmp_path):
    """The shipped demo recipe, real SmolLM2-135M on CPU (8 of its 26 passages): a schema-valid Hub-layout dataset."""
    out = tmp_path / "demo"
    proc = wildsci(
        "build", "recipes/data/demo.yaml", "--output-dir", str(out), "--max_papers", "8", cwd=repo_root, timeout=900
    )
    report = _embedded_build_is_valid(out, proc)
    gen = next(st for st in report["stages"] if st["name"] == "generate")
    assert gen["in"] == 16 and gen["out"] >= 6, gen  # measured: ~75% of 4-option questions are valid


@pytest.mark.slow
def test_abstracts_dev_recipe_builds_from_real_abstracts(embedded_model, repo_root, shared_data, tmp_path):
    """The real-abstracts recipe (dev split only), 12 papers: valid rows, decontaminated against real benchmarks."""
    out = tmp_path / "abstracts"
    proc = wildsci(
        "build",
        "recipes/data/abstracts_dev.yaml",
        "--output-dir",
        str(out),
        "--max_papers",
        "12",
        cwd=repo_root,
        timeout=900,
    )
    report = _embedded_build_is_valid(out, proc)
    assert set(report["decontamination"]) >= {"mmlu_pro", "arc_challenge", "sciq", "scieval"}
    dev_ids = {
        json.loads(line)["id"]
        for line in (shared_data / "papers" / "abstracts_permissive.jsonl").open()
        if json.loads(line)["split"] == "dev"
    }
    from datasets import load_dataset

    ds = load_dataset(str(out))
    assert {p for d in ds.values() for p in d["paper_id"]} <= dev_ids  # the heldout abstracts are never read
