"""``wildsci build`` on datatrove's executors, through the CLI: a local process pool and a real Slurm cluster.

The builds run against the deterministic loopback LLM server of the builder tests (``build_fake_llm``), so every
executor's dataset can be compared byte for byte with the in-process build of the same recipe. The Slurm tests run
on the one-node cluster that ``slurm_fixtures`` starts from Debian's packages. Nothing in the library knows it is
tested: a rank is killed with SIGKILL from outside, and a rank fails because its shard folder cannot be created
(a file is in the way), a failure that only that rank meets.

The recipe asks for 4 options and draws the other 6 from the build's pool (``options.distractor_source: pool``, as
the demo does), the case where a shard cannot finish on its own: every shard generates first,
then draws from all shards' questions. A shard-local pool would put other distractors, and the parquet would differ.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from build_fake_llm import FakeLLM, write_recipe
from wildsci_fixtures import parquet_bytes, run_cli

TASKS = 4


def wildsci(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli(*args, check=check, timeout=600)


def attempts(out: Path, phase: str = "build") -> list[dict]:
    path = out / ".wildsci_build" / "executor" / phase / "attempts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The loopback LLM, the recipe and the in-process build's parquet files (the reference for every executor)."""
    tmp = tmp_path_factory.mktemp("cluster")
    with FakeLLM(delay_s=0.02) as llm:
        recipe = write_recipe(
            tmp,
            llm.base_url,
            generate={"questions_per_chunk": 2, "num_options": 4, "min_options": 3},
            options={"max_attempts": 1, "distractor_source": "pool"},
        )
        wildsci("build", str(recipe), "--output-dir", str(tmp / "inprocess"))
        yield tmp, recipe, parquet_bytes(tmp / "inprocess")


def test_local_executor_gives_the_in_process_dataset(reference):
    tmp, recipe, expected = reference
    out = tmp / "local"
    proc = wildsci("build", str(recipe), "--output-dir", str(out), "--executor.kind", "local",
                   "--executor.tasks", str(TASKS), "--executor.workers", "2")  # fmt: skip
    assert parquet_bytes(out) == expected
    assert sorted(a["rank"] for a in attempts(out)) == list(range(TASKS))
    assert "4 of 4 shards to generate" in proc.stderr and "4 of 4 shards to build" in proc.stderr
    assert "Traceback" not in proc.stderr and len(attempts(out, "generate")) == TASKS
    # rerun: every rank has a completion, nothing runs again
    again = wildsci("build", str(recipe), "--output-dir", str(out), "--executor.kind", "local",
                    "--executor.tasks", str(TASKS))  # fmt: skip
    assert "0 of 4 shards to build" in again.stderr and len(attempts(out)) == TASKS
    # a changed recipe does not reuse shards built from the old one, and says so in one line
    changed = wildsci("build", str(recipe), "--output-dir", str(out), "--executor.kind", "local",
                      "--executor.tasks", str(TASKS), "--vote.min_correct_votes", "2")  # fmt: skip
    assert "the recipe changed since the last run: all 4 ranks run again" in changed.stderr
    assert len(attempts(out)) == 2 * TASKS


def test_a_killed_rank_is_named_and_only_it_reruns(reference, tmp_path):
    tmp, recipe, expected = reference
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    args = [sys.executable, "-m", "wildsci.cli", "build", str(recipe), "--output-dir", str(out),
            "--executor.kind", "local", "--executor.tasks", str(TASKS), "--executor.workers", "2"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = None
    deadline = time.time() + 120
    while victim is None:  # the first rank that has started generating: SIGKILL its process, mid-way
        assert proc.poll() is None and time.time() < deadline, "no rank started generating"
        for a in attempts(out, "generate"):
            log = out / ".wildsci_build" / "executor" / "generate" / "ranks" / f"{a['rank']:05d}.log"
            if log.is_file() and "ingest:" in log.read_text():
                victim = a
                break
        time.sleep(0.05)
    os.kill(victim["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert f"rank {victim['rank']} killed" in err and "rerun the same command" in err
    assert "Traceback" not in err
    assert attempts(out) == []  # no shard went on before every shard had generated
    before = len(attempts(out, "generate"))
    wildsci(*args[3:])
    rerun = attempts(out, "generate")[before:]
    assert [a["rank"] for a in rerun] == [victim["rank"]]  # only the killed rank generated again
    assert sorted(a["rank"] for a in attempts(out)) == list(range(TASKS))
    assert parquet_bytes(out) == expected


def test_slurm_dry_run_prints_the_sbatch_scripts_and_writes_nothing(reference, slurm_cluster, tmp_path):
    tmp, recipe, _ = reference
    out = tmp_path / "dry"
    proc = wildsci("build", str(recipe), "--output-dir", str(out), "--executor.kind", "slurm",
                   "--executor.tasks", str(TASKS), "--executor.workers", "2", "--dry-run")  # fmt: skip
    assert "#SBATCH --array=0-3%2" in proc.stdout and "launch_pickled_pipeline" in proc.stdout
    assert "#SBATCH --mem-per-cpu=2048M" in proc.stdout and "--partition" not in proc.stdout
    assert "sbatch script for the merge" in proc.stdout and "LLM calls" in proc.stdout
    assert "sbatch script for the shards' generation" in proc.stdout and "--stop_after generate" in proc.stdout
    assert not out.exists()


def test_slurm_executor_gives_the_in_process_dataset(reference, slurm_cluster, tmp_path):
    tmp, recipe, expected = reference
    out = tmp_path / "slurm"
    proc = wildsci("build", str(recipe), "--output-dir", str(out), "--executor.kind", "slurm",
                   "--executor.tasks", str(TASKS), "--executor.workers", "2", "--executor.mem_per_cpu_gb", "1",
                   "--wait")  # fmt: skip
    assert parquet_bytes(out) == expected
    generate_id, build_id, merge_id = proc.stdout.split()
    jobs = {j["JobId"]: j for j in slurm_cluster.jobcomp()}
    generated = [j for j in jobs.values() if j.get("ArrayJobId") == generate_id]
    ranks = [j for j in jobs.values() if j.get("ArrayJobId") == build_id]
    assert len(generated) == len(ranks) == TASKS
    assert all(j["JobState"] == "COMPLETED" for j in [*generated, *ranks])
    # the dependencies were real (Slurm's own records): no shard went on before the last shard had generated,
    # and the merge started only after the last shard ended
    assert min(j["StartTime"] for j in ranks) >= max(j["EndTime"] for j in generated)
    assert jobs[merge_id]["JobState"] == "COMPLETED"
    assert jobs[merge_id]["StartTime"] >= max(j["EndTime"] for j in ranks)
    status = wildsci("build", str(recipe), "--output-dir", str(out), "--status")
    assert "complete: the dataset is in" in status.stdout and "4/4 done" in status.stdout


def test_a_failed_slurm_rank_is_explained_and_fixed_by_a_rerun(reference, slurm_cluster, tmp_path):
    tmp, recipe, expected = reference
    out = tmp_path / "failing"
    # a file where rank 2's shard folder goes: a failure only that rank meets
    blocker = out / ".wildsci_build" / "shards" / f"{2:05d}-of-{TASKS:05d}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way\n")
    args = ("build", str(recipe), "--output-dir", str(out), "--executor.kind", "slurm", "--executor.tasks",
            str(TASKS), "--executor.workers", "2", "--executor.mem_per_cpu_gb", "1")  # fmt: skip
    first = wildsci(*args, "--wait", check=False)
    assert first.returncode == 2, first.stderr[-3000:]
    assert "rank 2 failed" in first.stderr and "is a file" in first.stderr and "Traceback" not in first.stderr
    status = wildsci("build", str(recipe), "--output-dir", str(out), "--status")
    table = re.sub(r"[│\s]+", " ", status.stdout)  # the table's folded cells read as one line
    assert "failed" in table and "is a file" in table and "generate/ranks/00002.log" in table
    assert "blocked" in table and "DependencyNeverSatisfied" in table
    assert "next: fix the cause of rank 2" in table
    blocker.unlink()
    before = len(attempts(out, "generate")), len(attempts(out))
    second = wildsci(*args, "--wait")
    assert "which waited on a failed rank" in second.stderr
    assert [a["rank"] for a in attempts(out, "generate")[before[0] :]] == [2]  # only rank 2 generates again
    assert sorted(a["rank"] for a in attempts(out)[before[1] :]) == list(range(TASKS))
    assert parquet_bytes(out) == expected
