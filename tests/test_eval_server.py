"""``wildsci eval`` with ``backend: server``: lighteval's LiteLLM backend against a real vLLM OpenAI server.

The session's vLLM CPU server (``vllm_fixtures``) serves the embedded SmolLM2 in float32; the same questions go
through the transformers backend (lighteval ``accelerate``, float32 on CPU) and the greedy answers are compared
question by question. One test lets ``wildsci eval`` start (and stop) a server of its own, as the paper recipe
does on a GPU; the failure tests check that a server that cannot answer stops the run with one line naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from eval_helpers import latest_outputs, make_slices
from vllm_fixtures import SERVER_ARGS, vllm_python

from wildsci.answers import extract_answer
from wildsci.cli import main
from wildsci.eval.config import EvalRecipe, ModelEntry
from wildsci.eval.launch import _command, default_server_command, model_parameters
from wildsci.recipes import RecipeError, load_recipe
from wildsci.serving import CPU_COMMAND, CPU_ENV, free_port, get_json, metric_total

ROOT = Path(__file__).resolve().parents[1]
N = 6  # questions per task: small, CPU decoding is the cost
ANSWERED = "vllm:request_success_total"  # the server's own count of requests it answered
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


@pytest.fixture(scope="module")
def both_backends(vllm_server, slices, tmp_path_factory):
    """The same questions through the server backend (the session's vLLM server) and the transformers backend,
    with the server's own count of the requests it answered during its run."""
    tmp = tmp_path_factory.mktemp("both")
    served = _recipe(tmp / "server.yaml", tmp / "server", slices, backend="server", base_url=vllm_server.base_url)
    local = _recipe(tmp / "tf.yaml", tmp / "tf", slices, backend="transformers", device="cpu", dtype="float32")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # see eval_helpers.child_env
        before = metric_total(vllm_server.base_url, ANSWERED)
        assert main(["eval", str(served)]) == 0
        answered = metric_total(vllm_server.base_url, ANSWERED) - before
        assert main(["eval", str(local)]) == 0
    runs = {}
    for name in ("server", "tf"):
        _, details = latest_outputs(tmp / name / "lighteval" / "base")
        runs[name] = {
            "preds": predictions(tmp / name),
            "results": json.loads((tmp / name / "results.json").read_text()),
            "details": {
                (t.split(":")[1].split("|")[0], r["doc"]["specific"]["question_id"]): r
                for t in details
                for r in details[t]
            },  # fmt: skip
        }
    return {"answered": answered, **runs}


@pytest.mark.slow
def test_the_server_backend_asks_each_question_once(both_backends):
    """One request per question, counted by the server itself: lighteval 0.13's LiteLLM client builds every split's
    prompts from the *whole* question set (``for doc in dataset`` in ``greedy_until``), so questions that fell into
    two splits (tasks with different generation settings) would be generated once per split."""
    assert both_backends["answered"] == 2 * N


@pytest.mark.slow
def test_server_backend_keeps_the_kits_contract(both_backends, record_property):
    """Same questions and prompts, the same parser and scoring on each backend's text, generated token ids kept.

    Not asserted: that the two backends' greedy texts agree. Both decode greedily in float32, but with different
    kernels (vLLM's CPU ops vs torch; the transformers backend pads a batch), and where two tokens are near-tied
    the paths part -- how often depends on the CPU's kernels (one machine agreed on 11 of 12 texts, others on 4 of
    12, with every answer equal). Text and answer agreement are recorded as numbers instead
    (``record_property``: in the JUnit XML, and printed).
    """
    a, b = both_backends["server"], both_backends["tf"]
    assert set(a["preds"]) == set(b["preds"]) and len(a["preds"]) == 2 * N  # the same questions
    for key in a["details"]:
        assert a["details"][key]["doc"]["query"] == b["details"][key]["doc"]["query"]  # the same prompt
    for run in (a, b):
        for key, row in run["details"].items():  # the same parser: each answer is the kit's reading of its text
            text, pred = row["model_response"]["text"][0], run["preds"][key]
            e = extract_answer(text, row["doc"]["specific"]["num_options"])
            assert pred["pred"] == (e.letter or None)  # what score_completion records
            assert pred["correct"] == (e.ok and e.letter == pred["gold"])
        for task in ("arc_challenge", "mmlu_pro_science"):  # the same scoring: the mean of the rows
            mine = [p["correct"] for (t, _), p in run["preds"].items() if t == task]
            assert run["results"]["scores"]["base"][task]["accuracy"] == pytest.approx(sum(mine) / len(mine))
            assert run["results"]["scores"]["base"][task]["n"] == N
    # generated token ids kept through LiteLLM (the transformers backend counts its batch padding too)
    assert all(0 < r["completion_tokens"] <= MAX_NEW_TOKENS for r in a["preds"].values())
    same_text = [
        k
        for k in a["details"]
        if a["details"][k]["model_response"]["text"] == b["details"][k]["model_response"]["text"]
    ]
    assert all(a["preds"][k]["pred"] == b["preds"][k]["pred"] for k in same_text)  # same text, same answer
    same_answer = sum(a["preds"][k]["pred"] == b["preds"][k]["pred"] for k in a["preds"])
    record_property("greedy_text_agreement", f"{len(same_text)}/{2 * N}")
    record_property("answer_agreement", f"{same_answer}/{2 * N}")
    print(f"server vs transformers: {len(same_text)}/{2 * N} greedy texts identical, {same_answer}/{2 * N} answers")


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
    assert "--generation-config vllm" in text.splitlines()[0]  # plain greedy: not the model's sampling defaults
    port = int(text.splitlines()[0].split("--port ")[1].split()[0])
    assert get_json(f"http://127.0.0.1:{port}/health", timeout=2)[0] == 0  # stopped with the model's run
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["scores"]["base"]["arc_challenge"]["n"] == 2


@pytest.mark.slow
def test_a_server_of_another_model_is_refused_before_anything_runs(vllm_server, slices, tmp_path, capsys):
    """The session's server serves SmolLM2; a recipe whose base is the tiny Qwen2 must not score it as 'base'."""
    r = _recipe(tmp_path / "r.yaml", tmp_path / "out", slices, base="tiny:qwen2", backend="server",
                base_url=vllm_server.base_url)  # fmt: skip
    assert main(["eval", str(r)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{vllm_server.base_url} serves {vllm_server.model}, not " in err
    assert "set base to the model that server serves" in err
    assert not (tmp_path / "out" / "lighteval").exists()


#: Sampling defaults like Qwen2.5-Instruct's generation_config.json (which asks for repetition_penalty 1.05),
#: stronger so that a request that does not state its own would show them.
TUNED = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.3}


@pytest.fixture(scope="module")
def tuned_server(embedded_model, tmp_path_factory):
    """A vLLM CPU server of SmolLM2 whose generation_config.json asks for sampling, served the way vLLM serves by
    default (``--generation-config auto``: the model's config becomes the server's default sampling), logging
    every request's SamplingParams."""
    from vllm_fixtures import cpu_server

    folder = tmp_path_factory.mktemp("tuned") / "smollm2-tuned"
    folder.mkdir()
    for f in Path(embedded_model).iterdir():
        if f.name != "generation_config.json":
            (folder / f.name).symlink_to(f)
    config = json.loads((Path(embedded_model) / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **TUNED}))
    server = cpu_server(
        str(folder), folder.parent / "server.log", ["--generation-config", "auto", "--enable-log-requests"]
    )
    with server:
        yield server


@pytest.mark.slow
def test_requests_state_the_recipes_sampling_not_the_models_defaults(tuned_server, slices, tmp_path):
    """What the server samples with (its own log of each request's SamplingParams) is the recipe's plain greedy
    decoding, although the server's defaults come from a generation_config.json that asks for sampling."""
    log = tuned_server.log_path
    assert "Default vLLM sampling parameters have been overridden" in log.read_text()  # the defaults are not neutral
    r = _recipe(tmp_path / "r.yaml", tmp_path / "out", slices, base=tuned_server.model, backend="server",
                base_url=tuned_server.base_url, tasks=["arc_challenge"], max_samples=5, max_new_tokens=8)  # fmt: skip
    start = len(log.read_text())
    assert main(["eval", str(r)]) == 0
    logged = re.findall(
        r"Received request \S+: params: SamplingParams\((.*?)\), lora_request", log.read_text()[start:]
    )
    assert len(logged) == 5  # one request per question
    want = {"temperature": "0.0", "top_p": "1.0", "top_k": "0", "min_p": "0.0", "repetition_penalty": "1.0",
            "presence_penalty": "0.0", "frequency_penalty": "0.0", "max_tokens": "8"}  # fmt: skip
    for params in logged:
        got = dict(re.findall(r"(\w+)=([^,]+)", params))
        assert {k: got.get(k) for k in want} == want, params


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
