"""``wildsci demo``: the plan, the skip/resume bookkeeping, a failing stage, and the whole chain at ``--small`` size.

The chain test runs the real commands (``wildsci build``, ``accelerate launch -m wildsci.grpo``, ``wildsci eval``,
``wildsci report``) on the embedded SmolLM2, offline, shrunk through their command-line overrides
(``wildsci.demo.SMALL``); then reruns the demo and checks that nothing but the report is redone.
"""

from __future__ import annotations

import json
import os
import shlex

import pytest
from wildsci_fixtures import assert_png_nontrivial

from wildsci import demo
from wildsci.cli import main


@pytest.fixture(autouse=True)
def _repo_cwd(repo_root, monkeypatch):
    """The demo runs from the checkout root (its recipes are relative paths), as `make demo` does."""
    monkeypatch.chdir(repo_root)


def _fake_recipes(tmp_path, monkeypatch) -> dict[str, str]:
    recipes = {}
    for kind in demo.RECIPES:
        p = tmp_path / "recipes" / kind / "demo.yaml"
        p.parent.mkdir(parents=True)
        p.write_text(f"# {kind}\nname: demo\n")
        recipes[kind] = str(p)
    monkeypatch.setattr(demo, "RECIPES", recipes)
    return recipes


def _touch_outputs(stage: demo.Stage) -> None:
    for p in stage.outputs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")


def test_status_skips_done_reruns_changed_and_resumes(tmp_path, monkeypatch):
    recipes = _fake_recipes(tmp_path, monkeypatch)
    run = tmp_path / "run"
    stages = demo.plan(run)
    state = {"stages": []}
    assert [demo.status(s, state)[0] for s in stages] == ["run"] * 4

    for s in stages[:3]:  # as if the chain had finished
        _touch_outputs(s)
        state["stages"].append({"name": s.name, "fingerprint": s.fingerprint, "status": "done"})
    assert [demo.status(s, state)[0] for s in stages] == ["done", "done", "done", "run"]  # the report always reruns

    # a missing output reruns that stage, and every stage after it (their inputs change on disk)
    stages[2].outputs[0].unlink()
    assert [demo.status(s, state)[0] for s in stages[:3]] == ["done", "done", "run"]
    _touch_outputs(stages[2])
    assert demo.status(stages[2], state, upstream_ran=True) == (
        "run",
        "an earlier stage ran again, so this one's inputs changed",
    )

    # a changed data recipe changes every fingerprint downstream: rebuild, retrain, re-evaluate
    (tmp_path / recipes["build"]).write_text("name: demo2\n")
    changed = demo.plan(run)
    assert [demo.status(s, state)[0] for s in changed[:3]] == ["run"] * 3
    assert "changed since the last run" in demo.status(changed[1], state)[1]

    # GRPO interrupted with a checkpoint on disk (same fingerprint): resume it, with the flag shown to the user
    state["stages"][1]["status"] = "interrupted"
    (run / "grpo" / "checkpoint-2").mkdir(parents=True)
    what, why = demo.status(stages[1], state)
    assert what == "resume" and "checkpoint" in why
    # ... but never resume checkpoints of a different run (another dataset)
    assert demo.status(changed[1], state)[0] == "run"
    # a fresh (not resumed) GRPO run first clears an earlier run's checkpoints, which eval would pick up
    demo._clear_stale(changed[1])
    assert not (run / "grpo" / "checkpoint-2").exists() and (run / "grpo" / "config.json").is_file()
    # --small is another command, hence another fingerprint
    assert demo.plan(run, small=True)[0].fingerprint != stages[0].fingerprint


def test_commands_are_the_documented_ones(tmp_path):
    run = tmp_path / "r"
    build, grpo, ev, report = (shlex.join(s.shown) for s in demo.plan(run))
    assert build == f"wildsci build recipes/data/demo.yaml --output-dir {run}/dataset"
    assert grpo == (
        f"accelerate launch --num_processes 1 --num_cpu_threads_per_process {len(os.sched_getaffinity(0))} "
        f"-m wildsci.grpo --config recipes/grpo/demo_cpu.yaml "
        f"--output_dir {run}/grpo --dataset_name {run}/dataset"
    )
    assert ev == (
        f"wildsci eval recipes/eval/demo.yaml --output-dir {run}/eval --trained {run}/grpo "
        f"--sources.wildsci {run}/dataset"
    )
    assert report == f"wildsci report {run}"
    small = [shlex.join(s.shown) for s in demo.plan(run, small=True)]
    for s, extra in zip(small, (demo.SMALL["build"], demo.SMALL["grpo"], demo.SMALL["eval"]), strict=False):
        assert s.endswith(shlex.join(extra))


def test_plan_resolves_the_model_and_runs_nothing(tmp_path, capsys, embedded_model):
    run = tmp_path / "planned"
    assert main(["demo", "--run-dir", str(run), "--plan"]) == 0
    out = capsys.readouterr().out
    assert f"model: embedded:smollm2-135m-instruct -> {embedded_model}" in out
    for s in demo.plan(run):
        assert f"$ {shlex.join(s.shown)}" in out
    assert out.count("would run (not run yet)") == 3
    assert f"WILDSCI_SPACE_MODEL={run}/grpo WILDSCI_SPACE_DATASET={run}/dataset python space/app.py" in out
    assert not run.exists()


def test_missing_recipe_is_one_line(tmp_path, capsys, monkeypatch):
    recipes = _fake_recipes(tmp_path, monkeypatch)
    monkeypatch.setattr(demo, "RECIPES", {**recipes, "grpo": "recipes/grpo/nope.yaml"})
    assert main(["demo", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "recipe(s) recipes/grpo/nope.yaml not found" in err
    assert not (tmp_path / "r").exists()


def test_failing_stage_stops_with_one_line_and_is_recorded(tmp_path, capfd, monkeypatch):
    recipes = _fake_recipes(tmp_path, monkeypatch)
    (tmp_path / recipes["build"]).write_text("name: demo\nsources: []\nnot_a_key: 1\n")
    run = tmp_path / "r"
    assert main(["demo", "--run-dir", str(run)]) == 2
    out, err = capfd.readouterr()
    assert f"$ wildsci build {recipes['build']} --output-dir {run}/dataset" in out
    assert "not_a_key" in err  # the stage's own one-line error, shown as it happened
    last = err.strip().splitlines()[-1]
    assert last.startswith("wildsci: error: demo stage 'build' failed (exit code 2)")
    assert f"rerun `wildsci demo --run-dir {run}`" in last
    state = json.loads((run / demo.STATE_FILE).read_text())
    assert state["stages"][0]["name"] == "build" and state["stages"][0]["status"] == "failed"
    assert [s["name"] for s in state["stages"]] == ["build"]  # nothing after a failed stage ran


@pytest.mark.slow
def test_small_demo_chain_end_to_end_then_reused(tmp_path, capfd, embedded_model):
    run = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run), "--small"]) == 0
    out, err = capfd.readouterr()
    for s in demo.plan(run, small=True):
        assert f"$ {shlex.join(s.shown)}" in out
    assert f"report: {run}/report.md" in out
    assert f"WILDSCI_SPACE_MODEL={run}/grpo WILDSCI_SPACE_DATASET={run}/dataset python space/app.py" in out

    md = (run / "report.md").read_text()
    for heading in ("## 1. Dataset", "## 2. Training dynamics", "## 3. Response behaviours", "## 4. Generalization"):
        assert heading in md
    assert "missing" not in md.split("## Inputs")[1].split("## 1.")[0], "every stage's output was found"
    assert "could not be drawn" not in md and "## Stage times" in md
    pngs = sorted((run / "plots").glob("*.png"))
    assert {"dataset_stats", "train_reward_accuracy", "eval_accuracy", "eval_letters"} <= {p.stem for p in pngs}
    for p in pngs:
        assert f"(plots/{p.name})" in md
        assert_png_nontrivial(p)
    assert "(eval/accuracy_vs_step.png)" in md  # wildsci eval's own plot, shown in the report
    assert_png_nontrivial(run / "eval" / "accuracy_vs_step.png")
    for name in ("build", "grpo", "eval"):
        assert f"| {name} | done |" in md

    # rerun: every finished stage is reused, only the report is rewritten
    assert main(["demo", "--run-dir", str(run), "--small"]) == 0
    out, _ = capfd.readouterr()
    for name in ("build", "grpo", "eval"):
        assert f"{name}: skipped -- outputs complete" in out
    assert "[4/4] report: always rerun" in out
