"""``wildsci eval RECIPE --dry-run`` (:mod:`wildsci.eval.plan`): generations, tokens and hours before anything runs.

Nothing may start: no server, no model, no network, no output folder. Every number is either counted (local
files, an earlier run's predictions) or stated with its source (the pinned Hub split's dataset card, the recipe's
throughput); a missing input is named instead of guessed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from eval_helpers import mixed_mmlu_pro

from wildsci.cli import main

ROOT = Path(__file__).resolve().parents[1]


def write_recipe(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def table(out: str) -> dict[str, str]:
    """{task: its table line} of a printed plan."""
    lines = out.split("\n\n")[1].splitlines()[1:]
    return {ln.split()[0]: ln for ln in lines}


def test_paper_plan_is_for_8_gpus_and_generates_no_task_twice(capsys):
    out_dir = ROOT / "runs" / "qwen2.5-7b-grpo" / "eval"
    existed = out_dir.exists()
    assert main(["eval", str(ROOT / "recipes" / "eval" / "paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    generated = [t for t, ln in rows.items() if " yes, " in ln]
    assert sorted(generated) == ["gpqa_diamond", "mmlu_pro", "supergpqa", "wildsci"]
    assert "no: supergpqa's answers" in rows["supergpqa_science"]
    assert "no: mmlu_pro's answers" in rows["mmlu_pro_science"]
    assert "26,529" in rows["supergpqa"] and "dataset card" in rows["supergpqa"]
    assert "time on 8 GPU(s)" in out and "h / T" in out  # no throughput stated: the hours as a function of it
    missing = out.split("missing from this estimate:")[1]
    assert "question count of wildsci" in missing and "plan_tokens_per_second" in missing
    assert out_dir.exists() == existed, "--dry-run writes nothing"


def test_plan_in_hours_from_counted_questions_and_a_stated_throughput(shared_data, tmp_path, capsys):
    src, distinct = mixed_mmlu_pro(shared_data, tmp_path / "mmlu_pro.jsonl")
    recipe = write_recipe(
        tmp_path / "r.yaml",
        output_dir=str(tmp_path / "eval"),
        base="Qwen/Qwen2.5-7B-Instruct",  # never resolved: the plan loads nothing
        tasks=["mmlu_pro", "mmlu_pro_science"],
        sources={"mmlu_pro": str(src)},
        permutations=2,
        max_new_tokens=100,
        backend="server",
        data_parallel_size=8,
        plan_tokens_per_second=0.001,
        plan_throughput_source="a test figure",
    )
    assert main(["eval", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    n = len(distinct)  # the repeated row is one question
    assert rows["mmlu_pro"].split()[1] == str(n) and "counted in" in rows["mmlu_pro"]
    assert f"per model: {n * 3} generations, at most {n * 3 * 100:,} generated tokens" in out
    hours = n * 3 * 100 / (8 * 0.001) / 3600
    assert f"time on 8 GPU(s): at most {hours:.3g} h of generation at 0 tokens/s per GPU (a test figure)" in out
    assert "requests in flight: 8 (1 per GPU)" in out
    assert "missing from this estimate" not in out
    assert not (tmp_path / "eval").exists()


def test_an_earlier_runs_answer_lengths_replace_the_bound(shared_data, tmp_path, capsys):
    src, distinct = mixed_mmlu_pro(shared_data, tmp_path / "mmlu_pro.jsonl")
    (tmp_path / "eval").mkdir()
    rows = [{"task": "mmlu_pro", "completion_tokens": k} for k in (10, 20, 30)]
    (tmp_path / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "eval"), base="tiny:qwen2",
                          tasks=["mmlu_pro"], sources={"mmlu_pro": str(src)}, max_new_tokens=4096)  # fmt: skip
    assert main(["eval", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"order\(s\)\s+20\s+counted in", table(out)["mmlu_pro"])  # the measured mean, no "max"
    assert f"per model: {len(distinct)} generations, {len(distinct) * 20:,} generated tokens" in out


def test_a_throughput_without_its_source_is_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "o"), base="tiny:qwen2",
                          plan_tokens_per_second=2500)  # fmt: skip
    assert main(["eval", str(recipe), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan_throughput_source" in err
