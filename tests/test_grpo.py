"""GRPO training through its public entry point: `accelerate launch -m wildsci.grpo --config <recipe>`.

One module-scoped run trains the tiny random Qwen2 for 4 steps on CPU in a real subprocess (trackio logging,
a push to the Hub mocked at the ``HfApi`` boundary, tokens planted in every spelling), then resumes from
checkpoint-2; the small tests below each check one behaviour of that run. A random model never writes a
parseable answer, so accuracy and format rewards are 0 for every completion and the GRPO gradient would be 0;
a dotted-path shaping reward (letter density) gives the groups variance and exercises the dotted-path lookup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from wildsci_fixtures import make_wildsci_dataset

from wildsci.grpo.train import main
from wildsci.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SHAPING = textwrap.dedent(
    """
    def letter_density(completions, **kwargs):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [sum(ch in "ABCDEFGHIJ" for ch in t) / max(1, len(t)) for t in texts]
    """
)
# The Hub at its boundary, in the launched process: HfApi is replaced before anything imports it; what an upload
# would send is copied to $FAKE_HUB_DIR/files and the calls (the token only as a hash) to calls.json.
SITECUSTOMIZE = textwrap.dedent(
    """
    import hashlib, json, os, shutil
    from pathlib import Path

    if os.environ.get("FAKE_HUB_DIR"):
        import huggingface_hub
        from wildsci_fixtures import FakeHfApi

        class RecordingHub(FakeHfApi):
            def upload_folder(self, **kw):
                info = super().upload_folder(**kw)
                dest = Path(os.environ["FAKE_HUB_DIR"])
                calls = [[n, {k: v for k, v in c.items() if k in ("repo_id", "private", "files")}]
                         for n, c in FakeHfApi.calls]
                for rel in calls[-1][1]["files"]:
                    (dest / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(Path(kw["folder_path"]) / rel, dest / "files" / rel)
                token = FakeHfApi.init_kwargs[-1].get("token") or ""
                sha = hashlib.sha256(token.encode()).hexdigest()
                (dest / "calls.json").write_text(json.dumps({"calls": calls, "token_sha256": sha}))
                return info

        huggingface_hub.HfApi = RecordingHub
    """
)
# planted credentials, one per spelling; none may appear in any file or output of the run
TOKENS = {
    "cli": "hf_PlantedCommandLineToken0123456789",
    "cli_dash_equals": "hf_PlantedDashEqualsToken0123456789",
    "yaml": "hf_PlantedRecipeKeyToken0123456789",
    "yaml_env": "PlantedRecipeEnvSecret0123456789",
    "environment": "hf_PlantedEnvironmentToken0123456789",
}


def tiny_recipe(tmp: Path, model: str, dataset: Path, name: str = "recipe.yaml", **over) -> Path:
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
        "gradient_checkpointing": False,
        "report_to": "none",
        "seed": 0,
        **over,
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def launch(args: list[str], tmp: Path, **env_over: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **env_over,
    }
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "-m", "wildsci.grpo", *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=900)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    """4 steps with trackio and a push, then a resume from checkpoint-2 (also pushed); the first run's outputs
    are copied aside before the resume rewrites them."""
    tmp = tmp_path_factory.mktemp("grpo")
    (tmp / "shaping_reward.py").write_text(SHAPING)
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    data = make_wildsci_dataset(tmp / "ds", n_train=32, n_test=8)
    recipe = tiny_recipe(
        tmp,
        "tiny:qwen2",
        data,
        report_to="trackio",
        project="wildsci-test",
        run_name="tiny",
        hub_token=TOKENS["yaml"],
        env={"WILDSCI_TEST_API_KEY": TOKENS["yaml_env"]},
    )
    env = {"TRACKIO_DIR": str(tmp / "trackio"), "HF_TOKEN": TOKENS["environment"]}
    push = ["--push_to_hub", "true", "--hub_model_id", "someuser/x"]
    first = launch(
        ["--config", str(recipe), *push, "--hub_token", TOKENS["cli"]], tmp, FAKE_HUB_DIR=str(tmp / "hub1"), **env
    )
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp / "out"
    shutil.copytree(out, tmp / "first")
    resume = ["--resume_from_checkpoint", str(out / "checkpoint-2"), f"--hub-token={TOKENS['cli_dash_equals']}"]
    second = launch(["--config", str(recipe), *push, *resume], tmp, FAKE_HUB_DIR=str(tmp / "hub2"), **env)
    assert second.returncode == 0, second.stderr[-3000:]
    return SimpleNamespace(tmp=tmp, out=out, first_out=tmp / "first", first=first, second=second, model=tiny_model)


def test_training_changes_the_weights(run):
    before, after = weights(Path(run.model)), weights(run.first_out)
    changed = [k for k in after if k in before and not (after[k] == before[k]).all()]
    assert len(changed) > len(after) // 2, f"only {len(changed)}/{len(after)} tensors changed"


def test_trl_and_wildsci_metrics_are_logged_every_step(run):
    state = json.loads((run.first_out / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    recs = read_metrics(run.first_out / "wildsci_metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for r in recs:
        assert {"loss", "reward", "accuracy", "unparseable_rate", "clipped_ratio", "per_discipline"} <= set(r)
        (disc,) = r["per_discipline"].values()  # one question x 4 rollouts per step
        assert disc["n"] == 4 and "completion_length" in disc
        assert "reward" not in disc  # the dotted-path reward does not report per discipline: omitted, not faked
        assert r["unparseable_rate"] == 1.0  # a random model writes no answer
        assert "top_letter_share" not in r  # no readable answer: no letter share, not a faked 0
    assert len({d for r in recs for d in r["per_discipline"]}) >= 2


def test_truncation_guard_fires_loudly(run):
    # the random model never stops within 12 tokens
    assert all(
        any("cut off" in w for w in r["warnings"]) for r in read_metrics(run.first_out / "wildsci_metrics.jsonl")
    )
    assert "WILDSCI WARNING" in run.first.stderr


def test_final_save_and_model_card(run):
    assert json.loads((run.first_out / "trainer_state.json").read_text())["global_step"] == 4  # the final save's step
    card = (run.first_out / "README.md").read_text()
    for needle in ("## Recipe", "shaping_reward:letter_density", "## Final metrics", "git SHA", '"trl"', "## Dataset"):
        assert needle in card
    # overrides are listed by name with the parsed value; the token flag by name only
    assert "--push_to_hub True --hub_model_id someuser/x --hub_token <redacted>" in card
    assert "hub_token: <redacted>" in card


def test_resume_continues_from_the_checkpoint(run):
    state = json.loads((run.out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    first, second = (
        read_metrics(run.first_out / "wildsci_metrics.jsonl"),
        read_metrics(run.out / "wildsci_metrics.jsonl"),
    )
    assert [r["step"] for r in second] == [1, 2, 3, 4]  # no duplicated steps after the resume
    assert second[:2] == first[:2]  # what was logged before the checkpoint is kept as it was
    assert f"resuming from {run.out / 'checkpoint-2'} (global step 2)" in run.second.stderr
    assert (run.second.stdout + run.second.stderr).count("'loss':") == 2  # only steps 3 and 4 ran


def test_push_is_private_final_folder_only_with_the_given_token(run):
    record = json.loads((run.tmp / "hub1" / "calls.json").read_text())
    (create, c_kw), (upload, u_kw) = record["calls"]
    assert (create, c_kw["repo_id"], c_kw["private"]) == ("create_repo", "someuser/x", True)
    assert upload == "upload_folder" and {"model.safetensors", "README.md", "config.json"} <= set(u_kw["files"])
    assert not [f for f in u_kw["files"] if f.startswith("checkpoint-") or f == "training_args.bin"]
    assert record["token_sha256"] == hashlib.sha256(TOKENS["cli"].encode()).hexdigest()
    second = json.loads((run.tmp / "hub2" / "calls.json").read_text())
    assert second["token_sha256"] == hashlib.sha256(TOKENS["cli_dash_equals"].encode()).hexdigest()


def test_no_token_reaches_any_file_or_output(run):
    """Every file the runs wrote (checkpoints and training_args.bin included), every pushed file, trackio's store,
    and both runs' stdout/stderr: no planted token, in any spelling."""
    mine = {run.tmp / "recipe.yaml"}  # the user's own recipe holds its planted token: that is where it was put
    files = [
        p for p in run.tmp.rglob("*") if p.is_file() and p not in mine and "ds" not in p.relative_to(run.tmp).parts
    ]
    assert any(p.name == "training_args.bin" for p in files) and any("hub1" in p.parts for p in files)
    assert any("trackio" in p.parts for p in files)
    blobs = [(str(p), p.read_bytes()) for p in files]
    blobs += [(f"output {i}", (r.stdout + r.stderr).encode()) for i, r in enumerate((run.first, run.second))]
    leaks = [(where, kind) for where, blob in blobs for kind, tok in TOKENS.items() if tok.encode() in blob]
    assert leaks == []


def test_trackio_store_holds_the_wildsci_curves(run):
    """`trackio show` reads this store: TRL's reward and our per-discipline scalars, every step."""
    code = (
        "import json; from trackio.sqlite_storage import SQLiteStorage; "
        "print(json.dumps(SQLiteStorage.get_logs('wildsci-test', 'tiny'), default=str))"
    )
    env = {**os.environ, "TRACKIO_DIR": str(run.tmp / "trackio")}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    logs = [r for r in json.loads(got.stdout) if "train/wildsci/unparseable_rate" in r]
    assert [r["step"] for r in logs[:4]] == [1, 2, 3, 4]  # the first run (the resumed one appends its 2 steps)
    for r in logs:  # ours beside TRL's, in the same logging step
        assert r["train/wildsci/unparseable_rate"] == 1.0 and "train/reward" in r and "train/loss" in r
        assert [k for k in r if k.startswith("train/wildsci/") and k.endswith("/accuracy")][1:]  # per discipline


# ---------------------------------------------------------------- one-line errors (in process: no training)
def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("wildsci.grpo: error: "), err
    return last


@pytest.fixture
def data(tmp_path, monkeypatch):
    (tmp_path / "shaping_reward.py").write_text(SHAPING)  # the recipes' dotted-path reward resolves before the data
    monkeypatch.syspath_prepend(str(tmp_path))
    return make_wildsci_dataset(tmp_path / "ds", n_train=8, n_test=4)


@pytest.mark.parametrize(
    ("over", "args", "expected"),
    [
        ({"learning_rat": 1e-5}, [], "unknown key 'learning_rat' -- did you mean 'learning_rate'"),
        ({"num_generations": "four"}, [], "'num_generations' must be"),
        (
            {"per_device_train_batch_size": 6},
            [],
            "effective batch (per_device_train_batch_size 6 x 1 processes x gradient_accumulation_steps 1 = 6) is not "
            "divisible by num_generations 4",
        ),
        ({}, ["--num_generations", "3"], "not divisible by num_generations 3"),  # overrides are checked too
        ({}, ["--max_steps", "many"], "command line: argument --max_steps"),
        ({}, ["--max_steps", "0"], "max_steps 0 trains nothing"),
        ({"max_steps": -1, "num_train_epochs": 0}, [], "num_train_epochs 0 trains nothing"),
        ({}, ["--per_device_train_batch_size", "0"], "per_device_train_batch_size 0 means nothing"),
        ({}, ["--num_generations", "1"], "GRPO compares at least 2 completions"),
        ({}, ["--voting_types", "agreed"], "voting_types ['agreed'] unknown"),
        ({}, ["--max_train_samples", "0"], "max_train_samples 0 leaves nothing"),
        ({}, ["--letter_share_threshold", "40"], "letter_share_threshold 40.0"),
        ({}, ["--option_rotations", "11"], "option_rotations 11 -- give 1 (questions as written) to 10"),
        ({}, ["--option_rotations", "4"], "option_rotations 4 needs shuffle_dataset: false"),
        (
            {"shuffle_dataset": False},
            ["--option_rotations", "4"],
            "option_rotations 4: a step holds 1 prompt(s) (per_device_train_batch_size 4 x 1 process(es) x "
            "gradient_accumulation_steps 1 / num_generations 4) -- make it a multiple of 4, e.g. "
            "per_device_train_batch_size 16",
        ),
        ({"eval_strategy": "steps", "eval_steps": 2}, [], "eval_strategy is set but dataset_test_split is not"),
    ],
)
def test_recipe_problems_are_one_line(tmp_path, capsys, data, over, args, expected):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data, **over)
    line = _err(capsys, ["--config", str(recipe), *args])
    assert expected in line and str(recipe) in line
    assert not (tmp_path / "out").exists()


def test_missing_model_folder_and_junk_config_are_one_line(tmp_path, capsys, data):
    missing = tiny_recipe(tmp_path, str(tmp_path / "no-such-model"), data)
    assert "no such model folder" in _err(capsys, ["--config", str(missing)])
    junk = tmp_path / "junk-model"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    line = _err(capsys, ["--config", str(tiny_recipe(tmp_path, str(junk), data))])
    assert f"model_name_or_path {str(junk)!r} cannot be loaded" in line and "written by save_pretrained" in line


def test_hub_model_not_cached_offline_is_one_line(tmp_path, capsys, data):
    recipe = tiny_recipe(tmp_path, "nobody-xyz/not-a-model", data)
    line = _err(capsys, ["--config", str(recipe)])
    assert "model_name_or_path 'nobody-xyz/not-a-model' cannot be loaded" in line and "HF_HUB_OFFLINE=1" in line


def test_output_dir_problems_are_one_line(tmp_path, capsys, data):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data, output_dir=str(blocker / "out"))
    assert "is a file, not a folder" in _err(capsys, ["--config", str(recipe)])


def test_dataset_problems_are_one_line(tmp_path, capsys, data):
    import datasets

    (tmp_path / "bad/data").mkdir(parents=True)
    datasets.Dataset.from_dict({"question": ["q"], "answer": ["A"]}).to_parquet(
        str(tmp_path / "bad/data/train-0.parquet")
    )
    cols = tiny_recipe(tmp_path, "tiny:qwen2", tmp_path / "bad")
    assert "lacks column(s) options" in _err(capsys, ["--config", str(cols)])
    # the 8 fixture rows cover the first subdomains only: filtering on astronomy leaves nothing to train on
    filt = tiny_recipe(tmp_path, "tiny:qwen2", data, disciplines=["Astronomy and Planetary Science"])
    line = _err(capsys, ["--config", str(filt)])
    assert "no usable rows left (8 rows, 0 after the voting_types/disciplines filters" in line
    assert not (tmp_path / "out").exists()  # a failed run leaves no empty output folder behind


def test_resume_and_push_problems_are_one_line(tmp_path, capsys, data, monkeypatch):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data)
    assert "no checkpoint-* folder" in _err(capsys, ["--config", str(recipe), "--resume_from_checkpoint"])
    (tmp_path / "not-a-checkpoint").mkdir()
    line = _err(capsys, ["--config", str(recipe), "--resume_from_checkpoint", str(tmp_path / "not-a-checkpoint")])
    assert "is not a checkpoint folder" in line
    assert "push_to_hub needs hub_model_id" in _err(capsys, ["--config", str(recipe), "--push_to_hub", "true"])
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    line = _err(capsys, ["--config", str(recipe), "--push_to_hub", "true", "--hub_model_id", "a/b"])
    assert "push_to_hub needs a Hub token" in line


def _fake_vllm(where: Path, version: str) -> None:
    """An installed distribution named vllm at ``version`` (what TRL's version check reads), nothing more."""
    (where / "vllm").mkdir(parents=True)
    (where / "vllm" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    info = where / f"vllm-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")


def test_vllm_outside_trl_window_or_without_gpu_is_one_line(tmp_path, capsys, data, monkeypatch):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data)
    use = ["--config", str(recipe), "--use_vllm", "true"]
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert "use_vllm is true but vllm is not installed" in _err(capsys, use)
    for version, expected in [("0.99.0", "TRL currently supports vLLM versions from"), ("0.25.0", "needs a CUDA GPU")]:
        site = tmp_path / f"site-{version}"
        _fake_vllm(site, version)
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        assert expected in _err(capsys, use)
        monkeypatch.undo()
        sys.modules.pop("vllm", None)


def test_gpu_recipe_vllm_settings_are_checked_before_launch(tmp_path, capsys):
    """The 8-GPU recipe's vLLM keys (colocate) on this machine: vLLM missing, outside TRL's window, or no CUDA -- one
    line, before any model is fetched (the CPU and precision guards let it through: --use_cpu, ZeRO's fp32 copy
    allowed explicitly)."""
    recipe = ROOT / "recipes/grpo/qwen2.5-7b-instruct.yaml"
    over = ["--bf16", "false", "--use_cpu", "true", "--allow_half_precision_optimizer", "true"]
    line = _err(capsys, ["--config", str(recipe), *over, "--output_dir", str(tmp_path / "out")])
    assert "use_vllm" in line and any(s in line for s in ("not installed", "supports vLLM", "needs a CUDA GPU"))
    assert not (tmp_path / "out").exists()


def test_gpu_recipe_on_a_machine_without_cuda_is_refused_with_the_reason(tmp_path, capsys):
    """use_cpu false means a GPU run: without CUDA it would train on the CPU at a fraction of the speed, silently."""
    import torch

    recipe = ROOT / "recipes/grpo/qwen2.5-1.5b-instruct.yaml"
    line = _err(capsys, ["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert "this recipe trains on a GPU (use_cpu is false) but CUDA cannot be used" in line
    if torch.version.cuda is None:  # this kit's CPU install
        assert f"the installed torch {torch.__version__} is built without CUDA" in line
    assert "set use_cpu: true" in line


def test_half_precision_weights_without_deepspeed_or_fsdp_are_refused(tmp_path, capsys, data):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data, dtype="bfloat16")
    line = _err(capsys, ["--config", str(recipe)])
    assert "dtype bfloat16 without DeepSpeed or FSDP" in line and "allow_half_precision_optimizer" in line
    seven_b = ROOT / "recipes/grpo/qwen2.5-7b-instruct.yaml"  # launched without its zero3.yaml
    cpu = ["--use_cpu", "true", "--bf16", "false"]  # past the device guard (this machine has no GPU)
    line = _err(capsys, ["--config", str(seven_b), *cpu, "--output_dir", str(tmp_path / "out7")])
    assert "dtype bfloat16 without DeepSpeed or FSDP" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--learning_rate", "-1"], "learning_rate -1.0 -- give a positive rate"),
        (["--temperature", "0"], "temperature 0.0 -- give a positive temperature"),
        (["--top_p", "1.5"], "top_p 1.5 -- give a share in (0, 1]"),
        (["--beta", "-0.1"], "beta -0.1 -- give 0"),
        (["--weight_decay", "-1"], "weight_decay -1.0"),
        (["--save_total_limit", "0"], "save_total_limit 0"),
        (["--reward_weights", "1", "2"], "reward_weights has 2 entries for 3 reward_funcs"),
        (["--plan_device", "h100-8gb"], "plan_device 'h100-8gb' unknown"),
    ],
)
def test_values_are_refused_before_any_model_or_data_loads(tmp_path, capsys, data, monkeypatch, args, expected):
    """Each value is refused in one line with the data and the model out of reach: loading either would fail."""
    import wildsci.grpo.data as grpo_data
    import wildsci.models as models

    def never(*a, **k):
        raise AssertionError("loaded before the value was checked")

    monkeypatch.setattr(models, "resolve_model", never)
    monkeypatch.setattr(grpo_data, "load_wildsci", never)
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data)
    assert expected in _err(capsys, ["--config", str(recipe), *args])


@pytest.mark.parametrize("kind", ["data", "eval"])
def test_a_recipe_of_another_kind_names_its_command(tmp_path, capsys, kind):
    path = sorted((ROOT / "recipes" / kind).glob("*.yaml"))[0]
    line = _err(capsys, ["--config", str(path)])
    assert f"this is {'an' if kind == 'eval' else 'a'} {kind} recipe, not a grpo recipe" in line
    assert f"wildsci {'build' if kind == 'data' else 'eval'} RECIPE" in line
    copy = tmp_path / "elsewhere.yaml"  # stored outside recipes/<kind>/: told apart by its keys
    copy.write_text(path.read_text())
    assert f"this is {'an' if kind == 'eval' else 'a'} {kind} recipe" in _err(capsys, ["--config", str(copy)])


def test_failed_training_removes_the_output_folder_it_created(tmp_path, data, monkeypatch):
    (tmp_path / "boom.py").write_text("def reward(completions, **kw):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data, reward_funcs=["accuracy", "boom:reward"], reward_weights=[1, 1])
    with pytest.raises(RuntimeError, match="boom"):
        main(["--config", str(recipe)])
    assert not (tmp_path / "out").exists()


def test_error_line_under_accelerate_names_itself_the_cause(tmp_path, data):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data)
    got = launch(["--config", str(recipe), "--max_steps", "0"], tmp_path)
    assert got.returncode != 0
    (line,) = [x for x in got.stderr.splitlines() if x.startswith("wildsci.grpo: error:")]
    assert "max_steps 0 trains nothing" in line and "accelerate's report below only repeats the command" in line


def test_error_lines_never_show_a_token(tmp_path, capsys, data):
    recipe = tiny_recipe(tmp_path, "tiny:qwen2", data, hub_token=TOKENS["yaml"])
    line = _err(capsys, ["--config", str(recipe), "--hub_token", TOKENS["cli"], "--num_generations", TOKENS["cli"]])
    assert "num_generations" in line and TOKENS["cli"] not in line


@pytest.mark.parametrize("path", sorted((ROOT / "recipes/grpo").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_pass_our_checks_and_name_real_rewards(path):
    """Every shipped recipe parses through the entry point's own parse (our __post_init__ checks included) and
    its rewards resolve, one weight each."""
    from wildsci.grpo.train import parse
    from wildsci.recipes import load_yaml
    from wildsci.rewards import build_rewards

    text = path.read_text()
    assert text.lstrip().startswith("#") and "-m wildsci.grpo --config" in text
    cpu = ["--config", str(path), "--use_cpu", "true", "--bf16", "false"]  # this test machine has no GPU
    script, args, model = parse(cpu, load_yaml(path), str(path))
    assert len(build_rewards(script.reward_funcs, args.reward_weights)) == len(script.reward_funcs)


def test_recipe_dataclasses_document_every_field():
    import dataclasses

    from wildsci.grpo import GRPOConfig, WildSciGRPOArguments, recipe_dataclasses

    assert recipe_dataclasses()[:2] == (WildSciGRPOArguments, GRPOConfig)
    for f in dataclasses.fields(WildSciGRPOArguments):
        assert f.metadata.get("help"), f"{f.name} has no help"


def test_option_rotations_ask_each_question_k_times_in_a_row_with_its_gold_letter_moving(data):
    """TRL walks the rows in order when shuffle_dataset is false: k consecutive rows = one question's k orders."""
    from wildsci.dataset_io import load_wildsci
    from wildsci.grpo.config import WildSciGRPOArguments
    from wildsci.grpo.data import prepare_dataset
    from wildsci.schema import options_list

    raw = load_wildsci(str(data), split="train")
    ds = prepare_dataset(raw, WildSciGRPOArguments(dataset_name=str(data), option_rotations=4), "x", seed=0)
    assert len(ds) == 4 * len(raw)
    gold_text = {r["question_id"]: options_list(r["options"])[ord(r["answer"]) - 65] for r in raw}
    for i in range(0, len(ds), 4):
        group = ds.select(range(i, i + 4))
        assert len(set(group["question_id"])) == 1  # one question, four rows in a row
        assert len(set(group["answer"])) == 4  # its gold letter differs in each
        for r in group:  # and the gold letter still names the gold option, which the prompt lists under it
            text = options_list(r["options"])[ord(r["answer"]) - 65]
            assert text == gold_text[r["question_id"]] and f"{r['answer']}. {text}" in r["prompt"][-1]["content"]
    assert ds["question_id"][::4] != raw["question_id"]  # questions shuffled once (TRL will not shuffle them)
