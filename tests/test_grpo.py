"""GRPO training through its public entry point: `accelerate launch -m wildsci.grpo --config <recipe>`.

The done-when test trains the tiny random Qwen2 for a few steps on CPU in a real subprocess, then resumes
from a checkpoint. A random model never writes a parseable answer, so accuracy and format rewards are 0 for
every completion and the GRPO gradient would be exactly 0; a dotted-path shaping reward (letter density)
gives the groups variance, which also exercises the dotted-path reward lookup end to end.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from wildsci_fixtures import make_wildsci_dataset

from wildsci.errors import UserError
from wildsci.grpo import check_batch, main, push_model, recipe_dataclasses, resolve_resume
from wildsci.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SHAPING = textwrap.dedent(
    """
    def letter_density(completions, **kwargs):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [sum(ch in "ABCDEFGHIJ" for ch in t) / max(1, len(t)) for t in texts]
    """
)


def tiny_recipe(tmp: Path, model: str, dataset: Path, **over) -> Path:
    recipe = {
        "model_name_or_path": model,
        "dataset_name": str(dataset),
        "output_dir": str(tmp / "out"),
        "reward_funcs": ["accuracy", "format", "shaping_reward:letter_density"],
        "reward_weights": [1.0, 0.5, 1.0],
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_generations": 4,
        "max_completion_length": 12,
        "max_steps": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1.0e-3,
        "lr_scheduler_type": "constant",
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": "none",
        "seed": 0,
        **over,
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "-m", "wildsci.grpo", *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_train_with_accelerate_launch_then_resume(tmp_path, tiny_model, monkeypatch):
    (tmp_path / "shaping_reward.py").write_text(SHAPING)
    data = make_wildsci_dataset(tmp_path / "ds", n_train=32, n_test=8)
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data)
    out = tmp_path / "out"

    run = launch(["--config", str(recipe)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    # parameters changed
    before, after = weights(Path(tiny_model)), weights(out)
    changed = [k for k in after if k in before and not (after[k] == before[k]).all()]
    assert len(changed) > len(after) // 2, f"only {len(changed)}/{len(after)} tensors changed"

    # loss and TRL's metrics were logged; per-discipline metrics written every step
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    recs = read_metrics(out / "wildsci_metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        assert {"loss", "reward", "accuracy", "unparseable_rate", "clipped_ratio", "per_discipline"} <= set(r)
        (disc,) = r["per_discipline"].values()  # one question x 4 rollouts per step
        assert disc["n"] == 4 and "completion_length" in disc
        assert "reward" not in disc  # the dotted-path reward does not report per discipline: omitted, not faked
        assert r["unparseable_rate"] == 1.0  # a random model writes no answer
    disciplines = {d for r in recs for d in r["per_discipline"]}
    assert len(disciplines) >= 2
    # the random model never stops within 12 tokens: the truncation guard fires, loudly
    assert all(any("cut off" in w for w in r["warnings"]) for r in recs)
    assert "WILDSCI WARNING" in run.stderr

    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4  # the final save's step
    card = (out / "README.md").read_text()
    for needle in ("## Recipe", "shaping_reward:letter_density", "## Final metrics", "git SHA", '"trl"', "## Dataset"):
        assert needle in card

    # resume from checkpoint-2: steps 3 and 4 are trained again, from the checkpoint's state
    run2 = launch(["--config", str(recipe), "--resume_from_checkpoint", str(out / "checkpoint-2")], tmp_path)
    assert run2.returncode == 0, run2.stderr[-3000:]
    state2 = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state2["global_step"] == 4
    recs2 = read_metrics(out / "wildsci_metrics.jsonl")
    assert [r["step"] for r in recs2] == [1, 2, 3, 4]  # no duplicated steps after the resume
    assert recs2[:2] == recs[:2]  # what was logged before the checkpoint is kept as it was
    assert f"resuming from {out / 'checkpoint-2'} (global step 2)" in run2.stderr
    assert (run2.stdout + run2.stderr).count("'loss':") == 2  # only steps 3 and 4 ran, not a restart from 0

    # optional push: private by default, final folder only (the Hub is mocked at the HfApi boundary)
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls["create"] = (repo_id, repo_type, private)

        def upload_folder(self, repo_id, folder_path, repo_type, commit_message, ignore_patterns):
            calls["upload"] = (repo_id, folder_path, ignore_patterns)

            class Info:
                commit_url = f"https://huggingface.co/{repo_id}/commit/abc"

            return Info()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_model(out, "someone/wildsci-tiny")
    assert calls["create"] == ("someone/wildsci-tiny", "model", True)
    assert calls["upload"][1] == str(out) and "checkpoint-*" in calls["upload"][2]
    assert url.endswith("/commit/abc")


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("wildsci.grpo: error: "), err
    return last


def test_recipe_problems_are_one_line(tmp_path, capsys):
    data = make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)
    bad_key = tiny_recipe(tmp_path, "tiny:qwen2", data, learning_rat=1e-5)
    assert "unknown key 'learning_rat' -- did you mean 'learning_rate'" in _err(capsys, ["--config", str(bad_key)])
    bad_type = tiny_recipe(tmp_path, "tiny:qwen2", data, num_generations="four")
    assert "'num_generations' must be" in _err(capsys, ["--config", str(bad_type)])
    batch = tiny_recipe(tmp_path, "tiny:qwen2", data, per_device_train_batch_size=6)
    err = _err(capsys, ["--config", str(batch)])
    assert "effective batch (per_device_train_batch_size 6 x 1 processes x gradient_accumulation_steps 1 = 6)" in err
    # command-line overrides are checked too (TrlParser parses them)
    ok = tiny_recipe(tmp_path, "tiny:qwen2", data)
    assert "not divisible by num_generations 3" in _err(capsys, ["--config", str(ok), "--num_generations", "3"])
    assert "command line:" in _err(capsys, ["--config", str(ok), "--max_steps", "many"])
    assert "voting_types ['agreed'] unknown" in _err(capsys, ["--config", str(ok), "--voting_types", "agreed"])


def test_environment_problems_are_one_line(tmp_path, capsys):
    data = make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)
    no_model = tiny_recipe(tmp_path, str(tmp_path / "no-such-model"), data)
    assert "no such model folder" in _err(capsys, ["--config", str(no_model)])
    # a Hub id that is not in the offline cache: unreachable, said before any training starts
    hub = tiny_recipe(tmp_path, "nobody-xyz/not-a-model", data)
    assert "model 'nobody-xyz/not-a-model' is not reachable" in _err(capsys, ["--config", str(hub)])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = tiny_recipe(tmp_path, "tiny:qwen2", data, output_dir=str(blocker / "out"))
    assert "is not writable" in _err(capsys, ["--config", str(unwritable)])
    import datasets

    (tmp_path / "bad/data").mkdir(parents=True)
    datasets.Dataset.from_dict({"question": ["q"], "answer": ["A"]}).to_parquet(
        str(tmp_path / "bad/data/train-0.parquet")
    )
    cols = tiny_recipe(tmp_path, "tiny:qwen2", tmp_path / "bad")
    assert "lacks column(s) options" in _err(capsys, ["--config", str(cols)])
    resume = tiny_recipe(tmp_path, "tiny:qwen2", data, output_dir=str(tmp_path / "fresh"))
    assert "no checkpoint-* folder" in _err(capsys, ["--config", str(resume), "--resume_from_checkpoint"])
    push = tiny_recipe(tmp_path, "tiny:qwen2", data, push_to_hub=True)
    assert "push_to_hub needs hub_model_id" in _err(capsys, ["--config", str(push)])
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert "vllm is not installed" in _err(capsys, ["--config", str(resume), "--use_vllm", "true"])
    # the 8 fixture rows cover the first subdomains only: filtering on astronomy leaves nothing to train on
    filt = tiny_recipe(tmp_path, "tiny:qwen2", data, disciplines=["Astronomy and Planetary Science"])
    assert "no usable rows left (8 rows, 0 after the voting_types/disciplines filters" in _err(
        capsys, ["--config", str(filt)]
    )


def test_check_batch_follows_trl_rules():
    check_batch({"per_device_train_batch_size": 4, "num_generations": 8, "gradient_accumulation_steps": 2}, 1)
    check_batch({"per_device_train_batch_size": 2, "num_generations": 8}, 4)  # 2 x 4 GPUs = 8
    check_batch({"per_device_train_batch_size": 16, "num_generations": 8, "steps_per_generation": 32}, 1)
    with pytest.raises(UserError, match="x 3 processes x gradient_accumulation_steps 1 = 6"):
        check_batch({"per_device_train_batch_size": 2, "num_generations": 4}, 3)
    with pytest.raises(UserError, match="not both"):
        check_batch({"generation_batch_size": 16, "steps_per_generation": 2}, 1)
    with pytest.raises(UserError, match="multiple of per_device_train_batch_size"):
        check_batch({"per_device_train_batch_size": 4, "generation_batch_size": 10}, 1)
    with pytest.raises(UserError, match="at least 2"):
        check_batch({"num_generations": 1}, 1)


def test_resume_argument(tmp_path):
    assert resolve_resume(None, str(tmp_path)) is None and resolve_resume("false", str(tmp_path)) is None
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert resolve_resume("true", str(tmp_path)).endswith("checkpoint-10")
    assert resolve_resume(True, str(tmp_path)).endswith("checkpoint-10")
    assert resolve_resume(str(tmp_path / "checkpoint-2"), str(tmp_path)).endswith("checkpoint-2")
    with pytest.raises(UserError, match="not a checkpoint folder"):
        resolve_resume(str(tmp_path), str(tmp_path))


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "recipes/grpo/*.yaml"))), ids=lambda p: Path(p).name)
def test_shipped_grpo_recipes_parse_completely(path):
    """Beyond `wildsci recipes check`: TRL builds the GRPOConfig (batch rules included) from every recipe."""
    from trl import TrlParser

    data = yaml.safe_load(Path(path).read_text())
    assert Path(path).read_text().lstrip().startswith("#") and "-m wildsci.grpo --config" in Path(path).read_text()
    cpu = ["--use_cpu", "true", "--bf16", "false"]  # GPU recipes: this test machine has no GPU
    script, args, model = TrlParser(recipe_dataclasses()).parse_args_and_config(["--config", path, *cpu])
    assert script.dataset_name == data["dataset_name"] and model.model_name_or_path == data["model_name_or_path"]
    assert args.generation_batch_size % args.num_generations == 0
    assert len(args.reward_weights) == len(script.reward_funcs)


def test_every_shipped_recipe_passes_recipes_check():
    paths = sorted(glob.glob(str(ROOT / "recipes/grpo/*.yaml")) + glob.glob(str(ROOT / "recipes/accelerate/*.yaml")))
    assert len(paths) >= 7  # demo_cpu, qwen2.5-1.5b, qwen2.5-7b + ddp, zero2, zero3, fsdp
    run = subprocess.run(
        [sys.executable, "-m", "wildsci.cli", "recipes", "check", *paths], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(paths)}/{len(paths)} recipes valid" in run.stdout


def test_recipe_dataclasses_document_every_field():
    import dataclasses

    from wildsci.grpo import WildSciGRPOArguments

    assert recipe_dataclasses()[0] is WildSciGRPOArguments
    for f in dataclasses.fields(WildSciGRPOArguments):
        assert f.metadata.get("help"), f"{f.name} has no help"
