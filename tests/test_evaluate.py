"""``wildsci eval``: base + checkpoints x tasks through real lighteval runs, the tables, the plot, permutations.

The matrix runs on the tiny model: ``base`` (random weights) and ``checkpoint-5`` of a training folder (the tiny
model trained to answer ``\\boxed{A}`` to everything -- a pure letter prior; the folder's final save is the same
step and is not evaluated twice). Every number is checked against lighteval's saved details and against what
that policy must score: a letter-A policy is right exactly when the gold letter is A, reads as "A" 100% of the
time under permutations, and picks the same option content only when both permutations put the same option
first.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import require
from eval_helpers import (
    SCIENCE,
    assert_no_leak,
    damaged_parquet,
    decrypt_gpqa,
    gold_texts_from_file,
    gpqa_probes,
    latest_outputs,
    make_slices,
    mixed_mmlu_pro,
    remove_gpqa,
    rescore,
    train_letter_model,
    unwritable_dir,
)
from wildsci_fixtures import assert_png_nontrivial, make_wildsci_dataset

from wildsci.cli import main
from wildsci.eval.adapters import disciplines
from wildsci.eval.config import EvalRecipe, expand_models
from wildsci.eval.run import permutation_summary
from wildsci.eval.sources import permutation
from wildsci.recipes import RecipeError, load_recipe

PRED_KEYS = {"model", "task", "question_id", "discipline", "gold", "pred", "correct", "completion_tokens"}


def write_recipe(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def matrix(shared_data, tmp_path_factory):
    """One ``wildsci eval --permutations 2`` over base + a trained folder x (WildSci split, ARC-Challenge)."""

    tmp = tmp_path_factory.mktemp("matrix")
    slices = make_slices(shared_data, tmp / "slices", n=6)
    ds = make_wildsci_dataset(tmp / "dataset", n_train=8, n_test=6)
    run = tmp / "grpo"
    train_letter_model(run / "checkpoint-5", "A")
    for f in (run / "checkpoint-5").iterdir():  # the final save of a 5-step run: the same model as checkpoint-5
        shutil.copy(f, run / f.name)
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    recipe = write_recipe(
        tmp / "recipe.yaml",
        output_dir=str(tmp / "unused"),
        base="tiny:qwen2",
        trained=str(run),
        tasks=["wildsci", "arc_challenge"],
        sources={  # the sources of tasks this run does not ask for may be missing or damaged (issue 15.11)
            "wildsci": str(ds),
            "arc_challenge": str(slices["arc_challenge"]),
            "scieval": str(tmp / "absent.jsonl"),
            "mmlu_pro": str(damaged_parquet(tmp / "mmlu_pro.parquet", [{"question": "q", "options": ["a", "b"]}])),
        },
        max_samples=6,
        max_new_tokens=8,
        device="cpu",
        dtype="float32",
    )
    out = tmp / "eval"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # see eval_helpers.child_env
        rc = main(["eval", str(recipe), "--permutations", "2", "--output-dir", str(out)])
    assert rc == 0
    return {"out": out, "recipe": recipe, "slices": slices, "dataset": ds}


@pytest.mark.slow
def test_results_json_follows_the_contract(matrix):
    res = json.loads((matrix["out"] / "results.json").read_text())
    assert [(m["name"], m["step"]) for m in res["models"]] == [("base", 0), ("checkpoint-5", 5)]
    assert all(Path(m["path"]).is_dir() for m in res["models"])
    assert res["tasks"] == ["wildsci", "arc_challenge"] and "skipped" not in res
    ran = res["ran_on"]  # what ran where (issue 15.3)
    assert (ran["backend"], ran["device"], ran["dtype"], ran["num_processes"]) == ("transformers", "cpu", "float32", 1)
    assert ran["versions"]["lighteval"] and ran["git_sha"]
    for m in res["models"]:
        for t in res["tasks"]:
            s = res["scores"][m["name"]][t]
            assert set(s) == {"accuracy", "extraction_rate", "n", "per_discipline"} and s["n"] == 6
            assert set(s["per_discipline"]) <= set(disciplines())
            assert sum(d["n"] for d in s["per_discipline"].values()) == 6
            p = res["permutations"][m["name"]][t]
            assert {"k", "accuracy", "consistency", "letter_distribution", "gold_letter_distribution"} <= set(p)
            assert p["k"] == 2
    preds = read_jsonl(matrix["out"] / "predictions.jsonl")
    assert len(preds) == 2 * 2 * 6 and all(set(p) == PRED_KEYS for p in preds)
    assert list((matrix["out"] / ".lighteval_cache").rglob("GENERATIVE.parquet")), "responses are cached for reruns"
    for m in res["models"][1:]:
        assert not any(p.is_dir() for p in Path(m["path"]).iterdir()), "nothing may be written into a checkpoint"
    assert len(read_jsonl(matrix["out"] / "permutation_predictions.jsonl")) == 2 * 2 * 6 * 2


@pytest.mark.slow
def test_scores_match_details_and_the_letter_policy(matrix):
    """lighteval's numbers = predictions.jsonl = independent re-scoring of the details = what the policy must get."""
    import pyarrow.parquet as pq

    out = matrix["out"]
    res = json.loads((out / "results.json").read_text())
    preds = read_jsonl(out / "predictions.jsonl")
    golds = {"arc_challenge": gold_texts_from_file(matrix["slices"]["arc_challenge"])}
    for m in res["models"]:
        details = {}
        for f in (out / "lighteval" / m["name"]).rglob("details_*.parquet"):
            details[f.name.split("|")[0].removeprefix("details_")] = pq.read_table(f).to_pylist()
        for t in res["tasks"]:
            s = res["scores"][m["name"]][t]
            mine = [p for p in preds if p["model"] == m["name"] and p["task"] == t]
            assert s["accuracy"] == pytest.approx(np.mean([p["correct"] for p in mine]))
            for d, v in s["per_discipline"].items():
                sub = [p for p in mine if p["discipline"] == d]
                assert v["n"] == len(sub) and v["accuracy"] == pytest.approx(np.mean([p["correct"] for p in sub]))
            again = rescore(details[f"wildsci:{t}"], golds.get(t))
            assert (again["acc"], again["extraction_rate"]) == pytest.approx((s["accuracy"], s["extraction_rate"]))
            share_a = np.mean([p["gold"] == "A" for p in mine])
            if m["name"] == "checkpoint-5":
                assert s["extraction_rate"] == 1.0 and all(p["pred"] == "A" for p in mine)
                assert s["accuracy"] == pytest.approx(share_a)
            else:
                assert s["extraction_rate"] == 0.0 and all(p["pred"] is None for p in mine)


@pytest.mark.slow
def test_permutations_expose_the_letter_prior(matrix):
    res = json.loads((matrix["out"] / "results.json").read_text())
    perm_preds = read_jsonl(matrix["out"] / "permutation_predictions.jsonl")
    for t in res["tasks"]:
        letter = res["permutations"]["checkpoint-5"][t]
        mine = [p for p in perm_preds if p["model"] == "checkpoint-5" and p["task"] == t]
        qids = sorted({p["question_id"] for p in mine})
        n_opts = {p["question_id"]: len(p["order"]) for p in mine}
        # always "A": the same content only when both orders put the same original option first
        same_first = [permutation(q, n_opts[q], 0)[0] == permutation(q, n_opts[q], 1)[0] for q in qids]
        assert letter["consistency"] == pytest.approx(np.mean(same_first))
        assert letter["letter_distribution"]["A"] == 1.0 and sum(letter["letter_distribution"].values()) == 1.0
        gold_share_a = np.mean([p["gold"] == "A" for p in mine])
        assert letter["accuracy"] == pytest.approx(gold_share_a)
        assert letter["gold_letter_distribution"]["A"] == pytest.approx(gold_share_a)
        for p in mine:  # the gold letter points at the same content as the unpermuted gold
            assert p["order"] == permutation(p["question_id"], len(p["order"]), p["permutation"])
        base = res["permutations"]["base"][t]
        assert base["consistency"] == 0.0 and base["letter_distribution"] == {}
    table = (matrix["out"] / "results.md").read_text()
    assert "## Robustness to option order" in table and "| checkpoint-5 | arc_challenge | 2 |" in table


def test_checkpoints_expand_in_step_order(tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-x", "checkpoint-7", ""):
        (run / name).mkdir(parents=True, exist_ok=True)
        if name != "checkpoint-7":  # a checkpoint still being written (no config.json) is left out
            (run / name / "config.json").write_text("{}")
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    r = load_recipe(write_recipe(tmp_path / "r.yaml", output_dir="x", base="tiny:qwen2", trained=str(run)), EvalRecipe)
    got = [(m.name, m.step) for m in expand_models(r)]
    assert got == [("base", 0), ("checkpoint-2", 2), ("checkpoint-10", 10), ("final", 12)]
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
    assert [m.name for m in expand_models(r)] == ["base", "checkpoint-2", "checkpoint-10"]


def test_permutation_summary_by_hand():
    """Two questions, K=2: one answered consistently (same content), one not; letters counted over answers."""
    recs = {
        0: [
            {"question_id": "q1", "pred": "A", "gold": "A", "correct": True, "_order": [0, 1, 2]},
            {"question_id": "q2", "pred": "B", "gold": "C", "correct": False, "_order": [0, 1, 2]},
        ],
        1: [
            {"question_id": "q1", "pred": "B", "gold": "B", "correct": True, "_order": [2, 0, 1]},
            {"question_id": "q2", "pred": None, "gold": "A", "correct": False, "_order": [2, 0, 1]},
        ],
    }
    s = permutation_summary(recs)
    assert s["k"] == 2 and s["n"] == 2 and s["accuracy"] == 0.5 and s["consistency"] == 0.5
    assert s["letter_distribution"] == pytest.approx({"A": 1 / 3, "B": 2 / 3, "C": 0.0})
    assert s["gold_letter_distribution"] == pytest.approx({"A": 0.5, "B": 0.25, "C": 0.25})


@pytest.mark.slow
def test_markdown_and_plot(matrix):
    table = (matrix["out"] / "results.md").read_text()
    assert "| model | step | wildsci (n=6) | arc_challenge (n=6) |" in table
    for name, step in (("base", 0), ("checkpoint-5", 5)):
        assert f"| {name} | {step} | " in table
    assert "## wildsci: accuracy per discipline" in table
    assert_png_nontrivial(matrix["out"] / "accuracy_vs_step.png")


@pytest.mark.slow
def test_rerun_resumes_without_running_lighteval_again(matrix):
    out = matrix["out"]
    logs = {p: p.stat().st_mtime for p in (out / "lighteval").rglob("lighteval.log")}
    before = json.loads((out / "results.json").read_text())
    assert main(["eval", str(matrix["recipe"]), "--permutations", "2", "--output-dir", str(out)]) == 0
    assert {p: p.stat().st_mtime for p in logs} == logs, "finished models must not be evaluated again"
    assert json.loads((out / "results.json").read_text()) == before


@pytest.mark.slow
def test_gpqa_runs_without_leaving_questions_behind(shared_data, tmp_path, repo_root, monkeypatch):
    """GPQA through ``wildsci eval``: scores kept, question text nowhere in the outputs, repo or caches."""
    require((shared_data / "benchmarks" / "gpqa_diamond.zip").is_file(), "gpqa_diamond.zip not in the shared data")
    from wildsci.models import cache_dir

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    start = time.time()
    gpqa = decrypt_gpqa(shared_data, tmp_path / "secret")
    model = train_letter_model(tmp_path / "letter", "A")
    recipe = write_recipe(
        tmp_path / "recipe.yaml",
        output_dir=str(tmp_path / "eval"),
        base=str(model),
        tasks=["gpqa_diamond"],
        sources={"gpqa_diamond": str(gpqa)},
        max_samples=8,
        max_new_tokens=8,
        device="cpu",
    )
    try:
        assert main(["eval", str(recipe)]) == 0
        probes = gpqa_probes(gpqa)
    finally:
        remove_gpqa(gpqa)
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    preds = read_jsonl(tmp_path / "eval" / "predictions.jsonl")
    s = res["scores"]["base"]["gpqa_diamond"]
    assert s["n"] == 8 and s["extraction_rate"] == 1.0
    assert s["accuracy"] == pytest.approx(np.mean([p["gold"] == "A" for p in preds]))
    assert not list((tmp_path / "eval").rglob("details_*.parquet")), "GPQA details must not be kept"
    assert_no_leak(probes, [tmp_path / "eval", repo_root])
    recent = [p for p in (cache_dir(), Path.home() / ".cache" / "huggingface") if p.is_dir()]
    for root in recent:  # anything written to the shared caches during this test
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_mtime >= start and f.stat().st_size < 50_000_000:
                text = " ".join(f.read_bytes().decode("utf-8", errors="ignore").split())
                assert not any(p in text for p in probes), f"GPQA text in {f}"


def test_recipe_errors_are_one_line(tmp_path, capsys):
    bad = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path), base="tiny:qwen2", taks=["mmlu_pro"])
    assert main(["eval", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"wildsci: error: {bad}: unknown key 'taks' -- did you mean 'tasks'?"
    bad = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path), base="tiny:qwen2", tasks=["mmlu"])
    with pytest.raises(RecipeError, match="unknown task 'mmlu'"):
        load_recipe(bad, EvalRecipe)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = load_recipe(
        write_recipe(tmp_path / "r.yaml", output_dir="x", base="tiny:qwen2", trained=str(empty)), EvalRecipe
    )
    with pytest.raises(Exception, match="no config.json and no checkpoint"):
        expand_models(r)


def test_missing_sources_skip_or_fail(tmp_path, capsys):
    r = write_recipe(
        tmp_path / "r.yaml",
        output_dir=str(tmp_path / "out"),
        base="tiny:qwen2",
        tasks=["scieval"],
        sources={"scieval": str(tmp_path / "absent.jsonl")},
    )
    assert main(["eval", str(r)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wildsci: error: task scieval: source") and err.endswith("or set missing_sources: skip")
    assert main(["eval", str(r), "--missing_sources", "skip"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no task left to run" in err and "absent.jsonl not found" in err


def test_demo_and_paper_recipes_load():
    for name in ("demo", "paper"):
        r = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "eval" / f"{name}.yaml", EvalRecipe)
        assert r.tasks and r.output_dir
    paper = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "eval" / "paper.yaml", EvalRecipe)
    assert paper.backend == "server" and {"gpqa_diamond", "supergpqa", "mmlu_pro", "wildsci"} <= set(paper.tasks)


def test_backend_model_files_and_commands(tmp_path):
    """The multi-process transformers path builds what lighteval accepts (the server path: test_eval_server.py)."""
    from lighteval.models.transformers.transformers_model import TransformersModelConfig

    from wildsci.eval.config import ModelEntry
    from wildsci.eval.launch import _command, model_parameters

    model = ModelEntry("base", "x", str(tmp_path), 0)
    cpu = load_recipe(
        write_recipe(tmp_path / "r.yaml", output_dir="x", base="tiny:qwen2", num_processes=2, device="cuda"),
        EvalRecipe,
    )
    params = model_parameters(cpu, model, tmp_path / "cache")
    TransformersModelConfig(**params)
    assert params["dtype"] == "bfloat16" and params["system_prompt"].startswith("You are a careful scientist")
    cmd = _command(cpu, tmp_path / "m.yaml", ["wildsci:mmlu_pro"], tmp_path / "out")
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"] and "accelerate" in cmd[5:]


@pytest.mark.parametrize("kind", ["absent", "misspelt"])
def test_a_device_that_is_not_there_is_refused_before_anything_runs(tmp_path, capsys, kind):
    """cuda:<one past the last device> is absent on any machine (no skip on GPU machines); gpu0 is no device name."""
    import torch

    device = f"cuda:{torch.cuda.device_count()}" if kind == "absent" else "gpu0"
    message = f"device {device!r} is not on this machine" if kind == "absent" else "device 'gpu0' is not a device name"
    out = tmp_path / "out"
    r = write_recipe(tmp_path / "r.yaml", output_dir=str(out), base="tiny:qwen2", tasks=["wildsci"], device="cpu")
    assert main(["eval", str(r), "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and ("use cpu or auto" in err or "cuda:N" in err)
    assert not out.exists(), "nothing is written when the device is refused"


@pytest.mark.slow
def test_planted_tokens_reach_no_output_of_wildsci_eval(tmp_path, capfd, monkeypatch):
    """Credentials in the environment (HF, OpenAI, a server key) appear in no file ``wildsci eval`` writes (results,
    predictions, results.md, lighteval's logs and details, the run state) and in nothing it prints."""
    planted = {
        "HF_TOKEN": "hf_" + "Plant3dHfT0ken" * 2,
        "HUGGING_FACE_HUB_TOKEN": "hf_" + "Plant3dHubT0k" * 2,
        "OPENAI_API_KEY": "sk-" + "plant3dOpenAIkey" * 2,
        "WILDSCI_EVAL_API_KEY": "plant3d-server-key-0123456789",
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ds = make_wildsci_dataset(tmp_path / "dataset", n_train=2, n_test=2)
    out = tmp_path / "out"
    r = write_recipe(
        tmp_path / "r.yaml",
        output_dir=str(out),
        base="tiny:qwen2",
        tasks=["wildsci"],
        sources={"wildsci": str(ds)},
        max_samples=2,
        max_new_tokens=4,
        device="cpu",
        dtype="float32",
    )
    assert main(["eval", str(r)]) == 0
    printed = "".join(capfd.readouterr())
    files = [p for p in out.rglob("*") if p.is_file()]
    assert (out / "results.json").is_file() and any(p.name == "lighteval.log" for p in files)
    for value in planted.values():
        assert value not in printed
        for p in files:
            assert value.encode() not in p.read_bytes(), f"{p.relative_to(out)} holds a planted credential"


@pytest.fixture(scope="module")
def subsets(shared_data, tmp_path_factory):
    """One ``wildsci eval`` of mmlu_pro and mmlu_pro_science on 3 science + 3 other questions, one row twice."""
    tmp = tmp_path_factory.mktemp("subsets")
    src, distinct = mixed_mmlu_pro(shared_data, tmp / "mmlu_pro.jsonl")
    recipe = write_recipe(
        tmp / "recipe.yaml",
        output_dir=str(tmp / "eval"),
        base="tiny:qwen2",
        tasks=["mmlu_pro", "mmlu_pro_science"],
        sources={"mmlu_pro": str(src)},
        max_new_tokens=8,
        device="cpu",
        dtype="float32",
    )
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setenv("OMP_NUM_THREADS", "1")  # see eval_helpers.child_env
        assert main(["eval", str(recipe)]) == 0
    out = tmp / "eval"
    res = json.loads((out / "results.json").read_text())
    return {"out": out, "distinct": distinct, "stderr": err.getvalue(), "res": res}


@pytest.mark.slow
def test_a_subset_is_scored_from_its_full_tasks_answers(subsets):
    """mmlu_pro_science is never generated: its rows are mmlu_pro's answers to its questions, its scores the means."""
    res, out = subsets["res"], subsets["out"]
    _, details = latest_outputs(out / "lighteval" / "base")
    assert {name.split("|")[0] for name in details} == {"wildsci:mmlu_pro"}, "the subset must not be generated again"
    assert res["derived"] == {"mmlu_pro_science": "mmlu_pro"}
    preds = read_jsonl(out / "predictions.jsonl")
    full = {p["question_id"]: p for p in preds if p["task"] == "mmlu_pro"}
    sub = {p["question_id"]: p for p in preds if p["task"] == "mmlu_pro_science"}
    science = {str(r["id"]) for r in subsets["distinct"] if r["subject"] in SCIENCE}
    assert len(full) == 6 and set(sub) == science
    assert all({**sub[q], "task": "mmlu_pro"} == full[q] for q in sub)
    score = res["scores"]["base"]["mmlu_pro_science"]
    assert score["n"] == 3 and score["accuracy"] == pytest.approx(np.mean([sub[q]["correct"] for q in sub]))
    assert "mmlu_pro_science is scored from the mmlu_pro answers" in subsets["stderr"]


@pytest.mark.slow
def test_repeated_rows_are_counted_and_reported(subsets):
    """Two identical rows are one question (same id): never silently, but in the log, results.json and results.md."""
    res, out = subsets["res"], subsets["out"]
    assert res["scores"]["base"]["mmlu_pro"]["n"] == 6
    assert res["dropped"]["mmlu_pro"] == {"duplicate_id": 1}
    assert "wildsci eval: task mmlu_pro: 1 row(s) left out (duplicate_id: 1)" in subsets["stderr"]
    assert "- mmlu_pro: duplicate_id: 1" in (out / "results.md").read_text()


def test_an_output_folder_that_cannot_be_written_is_refused_first(tmp_path, capsys):
    """Refused in one line before any model resolves or data is read (the model and source here do not exist)."""
    out = unwritable_dir(tmp_path) / "eval"
    r = write_recipe(tmp_path / "r.yaml", output_dir=str(out), base="no-such-org/no-such-model", tasks=["wildsci"],
                     sources={"wildsci": str(tmp_path / "absent")}, device="cpu")  # fmt: skip
    assert main(["eval", str(r)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"output_dir {out} cannot be written" in err and "choose another" in err


@pytest.mark.slow
def test_the_matrix_reuses_a_run_made_with_model_index(shared_data, tmp_path, monkeypatch):
    """A per-model run (``--model_index``, one task of a cluster array job) is the run the matrix would make: the
    matrix run after it evaluates nothing again (model_index is not part of the run's key)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see eval_helpers.child_env
    slices = make_slices(shared_data, tmp_path / "slices", n=2)
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "eval"), base="tiny:qwen2",
                          tasks=["arc_challenge"], sources={"arc_challenge": str(slices["arc_challenge"])},
                          max_new_tokens=4, device="cpu", dtype="float32")  # fmt: skip
    assert main(["eval", str(recipe), "--model_index", "0"]) == 0
    log = tmp_path / "eval" / "lighteval" / "base" / "lighteval.log"
    stamp = log.stat().st_mtime_ns
    assert main(["eval", str(recipe)]) == 0
    assert log.stat().st_mtime_ns == stamp, "the matrix must reuse the per-model run"
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["scores"]["base"]["arc_challenge"]["n"] == 2
