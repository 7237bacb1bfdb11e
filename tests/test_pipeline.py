"""``wildsci pipeline``: the paper's plan (scripts, job graph, cost) and the demo chain as real Slurm jobs.

The chain test submits the small demo chain (``small: true``: every stage shrunk like ``wildsci demo --small``) to
the one-node Slurm cluster of ``slurm_fixtures``, with GRPO as ``accelerate launch`` of two CPU processes (DDP on
gloo). Its evaluation stage fails on the first submission because a file stands where its output folder goes (a
failure only that stage meets; nothing in the library knows about it), so the report waits behind it; the file is
removed and the same command is rerun, which submits only the evaluation and the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wildsci_fixtures import parquet_bytes

ROOT = Path(__file__).resolve().parents[1]


def wildsci(*args: str, timeout: int = 3000, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "250"}
    proc = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_paper_dry_run_prints_four_scripts_the_graph_and_a_cost_with_named_inputs():
    proc = wildsci("pipeline", "recipes/pipeline/paper.yaml", "--dry-run")
    out = proc.stdout
    for stage in ("build", "grpo", "eval", "report"):
        assert f"#SBATCH --job-name=wildsci-wildsci-paper-{stage}" in out
    assert (
        "--config_file recipes/accelerate/zero3.yaml --num_processes 8" in out and "#SBATCH --gpus-per-node=8" in out
    )
    assert "--resume_from_checkpoint true" in out  # a resubmitted GRPO job resumes
    assert "build -> grpo (afterok) -> eval (afterok) -> report (afterok)" in out
    assert "missing: estimates.build_calls_per_gpu_hour" in out and "missing: estimates.grpo_seconds_per_step" in out
    assert not (ROOT / "runs" / "paper").exists()


def test_a_stated_figure_becomes_gpu_hours_with_its_source():
    proc = wildsci(
        "pipeline", "recipes/pipeline/paper.yaml", "--dry-run",
        "--estimates.grpo_seconds_per_step.value", "36", "--estimates.grpo_seconds_per_step.source", "my H100 run",
    )  # fmt: skip
    row = next(line for line in proc.stdout.splitlines() if line.startswith("│ grpo"))
    # 500 steps x 36 s x 8 GPUs / 3600 s
    assert "│ 40.00" in row and "36.0 s/step (my H100 run)" in row


def test_a_figure_without_its_source_is_refused():
    proc = wildsci(
        "pipeline", "recipes/pipeline/paper.yaml", "--dry-run", "--estimates.grpo_seconds_per_step.value", "36",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "needs a value > 0 and its source" in proc.stderr


@pytest.mark.slow
def test_demo_chain_as_slurm_jobs_fails_fixes_and_resumes(slurm_cluster, embedded_model, tmp_path):
    run = tmp_path / "run"
    (run / "eval").parent.mkdir(parents=True)
    (run / "eval").write_text("in the way\n")  # the evaluation cannot create its output folder
    # two GRPO processes with half the demo's per-device batch each: the same 16 completions per step (~7 GB per
    # rank on the CPU: two fit beside the session's vLLM server when nothing else runs)
    grpo = "[--per_device_train_batch_size, '8']"
    args = ("pipeline", "recipes/pipeline/demo.yaml", "--executor", "slurm", "--small", "true", "--run_dir",
            str(run), "--grpo.resources.processes_per_node", "2", "--grpo.args", grpo, "--wait")  # fmt: skip
    first = wildsci(*args, check=False)
    assert first.returncode == 2, first.stderr[-4000:]
    assert "stage eval failed" in first.stderr and "Traceback" not in first.stderr.split("wildsci: error")[-1]
    status = wildsci("pipeline", "recipes/pipeline/demo.yaml", "--run_dir", str(run), "--small", "true", "--status")
    lines = {ln.split("│")[1].strip(): ln for ln in status.stdout.splitlines() if ln.startswith("│")}
    assert "done" in lines["build"] and "done" in lines["grpo"]
    assert "failed" in lines["eval"] and "blocked" in lines["report"]
    assert "next: stage eval failed" in status.stdout and "blocked behind it: report" in status.stdout
    # two GRPO ranks really ran (DDP on gloo) inside the GRPO job
    grpo_log = next((run / ".wildsci_pipeline" / "logs").glob("grpo-*.out")).read_text()
    assert grpo_log.count("wildsci.grpo") >= 1 and (run / "grpo" / "model.safetensors").is_file()

    (run / "eval").unlink()
    second = wildsci(*args)
    assert "cancelled job(s)" in second.stderr
    assert "build   done before, not resubmitted" in second.stdout
    assert "grpo    done before, not resubmitted" in second.stdout
    assert (run / "report.md").is_file()
    jobs = slurm_cluster.jobcomp()
    by_stage: dict[str, list[dict]] = {}
    for j in jobs:
        name = j.get("Name", "")
        if name.startswith("wildsci-demo-"):
            by_stage.setdefault(name.removeprefix("wildsci-demo-"), []).append(j)
    assert len(by_stage["build"]) == 1 and len(by_stage["grpo"]) == 1  # not redone by the rerun
    # the evaluation is one array task per model (small chain: base + the final save), failed once, then completed
    assert sorted(j["JobState"] for j in by_stage["eval"]) == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    # the first report job waited on the failed evaluation (DependencyNeverSatisfied) until the rerun cancelled it
    assert sorted(j["JobState"] for j in by_stage["report"]) == ["CANCELLED", "COMPLETED"]
    # the dependencies were real: no stage started before the one it depends on had ended (Slurm's own records)
    build, grpo = by_stage["build"][0], by_stage["grpo"][0]
    report = next(j for j in by_stage["report"] if j["JobState"] == "COMPLETED")
    evals = [j for j in by_stage["eval"] if j["JobState"] == "COMPLETED"]
    assert grpo["StartTime"] >= build["EndTime"]
    assert all(j["StartTime"] >= grpo["EndTime"] for j in by_stage["eval"])
    assert report["StartTime"] >= max(j["EndTime"] for j in evals)

    # in process vs Slurm: the same build parquet, the same base-model predictions
    from wildsci import demo

    stages = demo.plan(tmp_path / "inproc", small=True)
    build_args = stages[0].shown[1:]
    wildsci(*build_args)
    assert parquet_bytes(tmp_path / "inproc" / "dataset") == parquet_bytes(run / "dataset")
    eval_args = [a if a != str(tmp_path / "inproc" / "grpo") else str(run / "grpo") for a in stages[2].shown[1:]]
    wildsci(*eval_args)

    def base(path: Path) -> list[dict]:
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        return sorted((r for r in rows if r["model"] == "base"), key=lambda r: (r["task"], str(r["question_id"])))

    slurm_base = base(run / "eval" / "predictions.jsonl")
    assert slurm_base and slurm_base == base(tmp_path / "inproc" / "eval" / "predictions.jsonl")
