"""``wildsci eval`` with ``backend: server``: lighteval's LiteLLM backend against a real vLLM OpenAI server.

The session's vLLM CPU server (``vllm_fixtures``) serves the embedded SmolLM2 in float32; the same questions go
through the transformers backend (lighteval ``accelerate``, float32 on CPU) and the greedy answers are compared
question by question. One test lets ``wildsci eval`` start (and stop) a server of its own, as the paper recipe
does on a GPU; the failure tests check that a server that cannot answer stops the run with one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from eval_helpers import latest_outputs, make_slices
from vllm_fixtures import SERVER_ARGS, vllm_python

from wildsci.cli import main
from wildsci.eval.config import EvalRecipe, ModelEntry
from wildsci.eval.launch import _command, default_server_command, model_parameters
from wildsci.recipes import RecipeError, load_recipe
from wildsci.serving import CPU_COMMAND, CPU_ENV, free_port, get_json

ROOT = Path(__file__).resolve().parents[1]
N = 6  # questions per task: small, CPU decoding is the cost
MAX_NEW_TOKENS = 48


def write_recipe(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def predictions(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines() if x.strip()]
    return {(r["task"], r["question_id"]): r for r in rows}


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory):
    return make_slices(shared_data, tmp_path_factory.mktemp("slices"), n=N)


def _recipe(path: Path, out: Path, slices: dict, **fields) -> Path:
    base = {
        "output_dir": str(out),
        "base": "embedded:smollm2-135m-instruct",
        "tasks": ["arc_challenge", "mmlu_pro_science"],
        "sources": {"arc_challenge": str(slices["arc_challenge"]), "mmlu_pro": str(slices["mmlu_pro"])},
        "max_samples": N,
        "max_new_tokens": MAX_NEW_TOKENS,
    }
    return write_recipe(path, **{**base, **fields})


@pytest.mark.slow
def test_server_backend_scores_like_the_transformers_backend(vllm_server, slices, tmp_path, monkeypatch):
    """Same prompts, parser and contract; greedy answers equal question by question.

    Both backends decode greedily in float32, but not with the same kernels (vLLM's CPU ops vs torch, and the
    transformers backend pads a batch): where two tokens are near-tied the paths can part. Measured on these
    12 questions: every extracted answer equal, 11 texts identical, one where vLLM ended (EOS) at token 18 and
    transformers went on, after the same answer letter. So answers and accuracy must match exactly and texts
    on all but a couple of questions.
    """
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see eval_helpers.child_env
    served = _recipe(
        tmp_path / "server.yaml", tmp_path / "server", slices, backend="server", base_url=vllm_server.base_url
    )
    local = _recipe(
        tmp_path / "tf.yaml", tmp_path / "tf", slices, backend="transformers", device="cpu", dtype="float32"
    )
    assert main(["eval", str(served)]) == 0
    assert main(["eval", str(local)]) == 0
    a, b = predictions(tmp_path / "server"), predictions(tmp_path / "tf")
    assert set(a) == set(b) and len(a) == 2 * N
    assert {k: a[k]["pred"] for k in a} == {k: b[k]["pred"] for k in b}
    # generated token ids kept through LiteLLM (the transformers backend counts its batch padding too)
    assert all(0 < r["completion_tokens"] <= MAX_NEW_TOKENS for r in a.values())
    res_a = json.loads((tmp_path / "server" / "results.json").read_text())
    res_b = json.loads((tmp_path / "tf" / "results.json").read_text())
    for task in ("arc_challenge", "mmlu_pro_science"):
        assert res_a["scores"]["base"][task] == res_b["scores"]["base"][task]
    texts = []
    for run in ("server", "tf"):
        _, details = latest_outputs(tmp_path / run / "lighteval" / "base")
        texts.append(
            {
                (t, r["doc"]["specific"]["question_id"]): r["model_response"]["text"][0]
                for t in details
                for r in details[t]
            }
        )
    same = sum(texts[0][k] == texts[1][k] for k in texts[0])
    assert len(texts[0]) == 2 * N and same >= 2 * N - 2, f"only {same}/{2 * N} greedy texts identical"


@pytest.mark.slow
def test_requests_the_server_refuses_stop_the_run_in_one_line(vllm_server, slices, tmp_path, capsys):
    """A budget over the server's context (4096) is refused by vLLM with HTTP 400 on every request: the run
    stops naming the endpoint and the status, instead of scoring empty answers."""
    r = _recipe(tmp_path / "r.yaml", tmp_path / "out", slices, backend="server", base_url=vllm_server.base_url)
    assert main(["eval", str(r), "--max_new_tokens", "5000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("wildsci: error: lighteval failed on base") and vllm_server.base_url in err
    assert "HTTP 400" in err and "failed after 3 tries" in err
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.slow
def test_eval_starts_and_stops_a_server_per_model(embedded_model, slices, tmp_path):
    r = _recipe(
        tmp_path / "r.yaml",
        tmp_path / "out",
        slices,
        backend="server",
        server_command=[*CPU_COMMAND, *SERVER_ARGS],
        server_python=vllm_python(),
        server_env=CPU_ENV,
        max_samples=2,
    )
    assert main(["eval", str(r), "--tasks", "[arc_challenge]"]) == 0
    log = tmp_path / "out" / "lighteval" / "base" / "server.log"
    text = log.read_text()
    assert text.startswith("$ ") and embedded_model in text.splitlines()[0]
    port = int(text.splitlines()[0].split("--port ")[1].split()[0])
    assert get_json(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 0  # stopped with the model's run
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["scores"]["base"]["arc_challenge"]["n"] == 2


def test_lighteval_vllm_backend_is_refused_in_one_line(tmp_path, capsys):
    r = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "o"), base="tiny:qwen2", backend="vllm")
    assert main(["eval", str(r)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vLLM 0.10.0-0.10.1" in err and "use backend: server" in err


def test_attaching_to_nothing_is_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "o"), base="tiny:qwen2", backend="server")
    assert main(["eval", str(r), "--base_url", url, "--tasks", "[arc_challenge]", "--missing_sources", "skip"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{url}/models: nothing answered" in err


def test_server_settings_are_checked(tmp_path):
    def load(**fields):
        return load_recipe(write_recipe(tmp_path / "r.yaml", output_dir="o", base="tiny:qwen2", **fields), EvalRecipe)

    with pytest.raises(RecipeError, match="unset 'trained', or unset base_url"):
        load(backend="server", base_url="http://h:8000/v1", trained=str(tmp_path))
    with pytest.raises(RecipeError, match="need backend: server"):
        load(base_url="http://h:8000/v1")
    with pytest.raises(RecipeError, match="must start with http"):
        load(backend="server", base_url="h:8000")
    with pytest.raises(RecipeError, match="must name an environment variable"):
        load(backend="server", api_key_env="sk-live-123")


def test_paper_recipe_serves_each_model_with_vllm(tmp_path):
    """paper.yaml: `hf auth login`, backend server; its model file is one lighteval's LiteLLM config accepts and
    holds no key; the default server command carries the recipe's GPU settings."""
    from wildsci.lighteval_compat import prepare_litellm
    from wildsci.serving import Endpoint

    prepare_litellm()  # lighteval 0.13 cannot import its LiteLLM backend with LiteLLM >= 1.109 otherwise
    from lighteval.models.endpoints.litellm_model import LiteLLMModelConfig

    path = ROOT / "recipes" / "eval" / "paper.yaml"
    header = path.read_text()
    assert "hf auth login" in header and "huggingface-cli" not in header
    paper = load_recipe(path, EvalRecipe)
    assert paper.backend == "server" and {"gpqa_diamond", "supergpqa", "mmlu_pro", "wildsci"} <= set(paper.tasks)
    model = ModelEntry("base", "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", 0)
    ep = Endpoint("http://127.0.0.1:8123/v1", "Qwen/Qwen2.5-7B-Instruct", 32768)
    params = model_parameters(paper, model, tmp_path / "cache", ep)
    cfg = LiteLLMModelConfig(**params)
    assert cfg.model_name == "hosted_vllm/Qwen/Qwen2.5-7B-Instruct" and cfg.base_url == ep.base_url
    assert cfg.max_model_length == 8192 and "api_key" not in params
    assert "max_new_tokens" not in params["generation_parameters"]  # the budget is the tasks' generation_size
    cmd = default_server_command(paper)
    assert cmd[:3] == ["vllm", "serve", "{model}"] and cmd[cmd.index("--max-model-len") + 1] == "8192"
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.85"
    lighteval_cmd = _command(paper, tmp_path / "m.yaml", ["wildsci:gpqa_diamond"], tmp_path / "out")
    assert lighteval_cmd[1:5] == ["-m", "wildsci.lighteval_compat", "endpoint", "litellm"]
