"""One lighteval run: the model's parameters, the command (transformers under accelerate, or LiteLLM against a
vLLM OpenAI server that :mod:`wildsci.serving` starts or attaches to), its environment and the child process.

Why the CLI in a child process rather than lighteval's Python API: see :mod:`wildsci.eval.run`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from wildsci.errors import UserError
from wildsci.eval.config import EvalRecipe, ModelEntry
from wildsci.redact import redact_text
from wildsci.serving import Endpoint, render_command, serve_or_attach, vllm_serve_command


# ------------------------------------------------------------------------------------------- one lighteval run
def _custom_tasks_path(recipe: EvalRecipe) -> Path:
    if recipe.custom_tasks:
        p = Path(recipe.custom_tasks).expanduser()
    else:
        p = Path(__file__).resolve().parents[3] / "eval_tasks" / "wildsci_tasks.py"
    if not p.is_file():
        raise UserError(f"{p}: lighteval tasks file not found -- set custom_tasks to eval_tasks/wildsci_tasks.py")
    return p


def _device(recipe: EvalRecipe) -> str:
    if recipe.device != "auto":
        return recipe.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sampling_parameters(recipe: EvalRecipe) -> dict[str, float]:
    """Every sampling parameter of a request, stated: the recipe's temperature and a neutral value for the rest.

    Why all of them: both backends otherwise fill the gaps from the model's ``generation_config.json`` (vLLM's
    ``--generation-config auto`` default, transformers' ``generate``), e.g. Qwen2.5-Instruct's
    ``repetition_penalty: 1.05`` -- a "greedy" evaluation would not be plain greedy, and two models with different
    configs would be decoded differently. (vLLM servers the kit starts also get ``--generation-config vllm``.)
    """
    return {
        "temperature": recipe.temperature,
        "top_p": 1.0,
        "top_k": 0,  # 0: no top-k cut (vLLM and transformers)
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }


def model_parameters(
    recipe: EvalRecipe, model: ModelEntry, cache_dir: Path, endpoint: Endpoint | None = None
) -> dict[str, Any]:
    """lighteval's ``model_parameters`` for one model (written as YAML: the system prompt contains commas).

    ``max_new_tokens`` is deliberately *not* set here: lighteval 0.13's transformers backend truncates prompts
    to that many tokens when it is, so the budget travels as the tasks' ``generation_size`` instead (the LiteLLM
    backend sends it as ``max_tokens``). For the server backend the API key is never written here: LiteLLM reads
    it from the child's environment (``HOSTED_VLLM_API_KEY``).
    """
    gen = sampling_parameters(recipe)
    params: dict[str, Any] = {"model_name": model.path, "cache_dir": str(cache_dir), "generation_parameters": gen}
    if recipe.system_prompt:
        params["system_prompt"] = recipe.system_prompt
    if recipe.backend == "server":
        if endpoint is None:
            raise ValueError("the server backend needs the model's endpoint")
        params.update(
            model_name=f"{LITELLM_PROVIDER}/{endpoint.served_model}",
            provider=LITELLM_PROVIDER,
            base_url=endpoint.base_url,
            concurrent_requests=recipe.concurrent_requests,
            # known context length: lighteval would otherwise ask litellm's price list, then openrouter.ai
            max_model_length=recipe.max_model_length or endpoint.max_model_len or 4096,
            api_max_retry=SERVER_RETRIES,
            api_retry_sleep=1.0,
            timeout=600.0,
        )
        return params
    device = _device(recipe)
    dtype = recipe.dtype if recipe.dtype != "auto" else ("float32" if device == "cpu" else "bfloat16")
    params["dtype"] = dtype
    params.update(device=device, batch_size=recipe.batch_size)
    if recipe.max_model_length:
        params["max_length"] = recipe.max_model_length
    return params


def launch_settings(recipe: EvalRecipe, model: ModelEntry, out_dir: Path) -> dict[str, Any]:
    """How the model was run, for results.json: backend plus device/dtype/processes, or the server's settings."""
    if recipe.backend == "server":
        where: dict[str, Any] = {"backend": "server", "dtype": recipe.dtype}
        if recipe.base_url:
            return {**where, "base_url": recipe.base_url}
        cmd = recipe.server_command if recipe.server_command is not None else default_server_command(recipe)
        shown = render_command(cmd, model="{model}", port="{port}", host="{host}", python="{python}")
        return {**where, "server_command": redact_text(" ".join(shown))}
    params = model_parameters(recipe, model, out_dir)
    return {
        "backend": recipe.backend,
        "device": params["device"],
        "dtype": params["dtype"],
        "num_processes": recipe.num_processes,
    }


def _command(recipe: EvalRecipe, model_yaml: Path, tasks: list[str], out: Path) -> list[str]:
    spec = ",".join(f"{t}|0" for t in tasks)
    backend = ["endpoint", "litellm"] if recipe.backend == "server" else ["accelerate"]
    cli = ["-m", "wildsci.lighteval_compat", *backend, str(model_yaml)]
    cli += [spec, "--custom-tasks", str(_custom_tasks_path(recipe)), "--output-dir", str(out), "--save-details"]
    if recipe.backend == "transformers" and recipe.num_processes > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(recipe.num_processes), *cli]
    return [sys.executable, *cli]


def _child_env(config_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    # The recipe is the one source of truth: WILDSCI_EVAL_* variables from the caller's shell would override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSCI_EVAL_") or k == "WILDSCI_EVAL_DATA_CACHE"}
    env["WILDSCI_EVAL_CONFIG"] = str(config_file)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["COLUMNS"] = "400"  # lighteval's rich tracebacks wrap at 80 columns off a terminal: keep the error whole
    env.update(extra or {})
    return env


def run_lighteval(
    recipe: EvalRecipe,
    model: ModelEntry,
    tasks: list[str],
    out: Path,
    config_file: Path,
    cache_dir: Path,
    env: dict[str, str] | None = None,
    endpoint: Endpoint | None = None,
) -> None:
    """One lighteval CLI run of ``tasks`` (full names) on one model; its log goes to ``out/lighteval.log``.

    With the server backend, ``endpoint`` is the model's running server. A request that still fails after its
    retries stops the run (:mod:`wildsci.lighteval_compat`; stock lighteval would score it as an empty answer),
    and the error names the endpoint and the server's answer.
    """
    out.mkdir(parents=True, exist_ok=True)
    model_yaml = out / "model.yaml"
    params = model_parameters(recipe, model, cache_dir, endpoint)
    model_yaml.write_text(yaml.safe_dump({"model_parameters": params}))
    cmd = _command(recipe, model_yaml, tasks, out)
    log = out / "lighteval.log"
    child_env = _child_env(config_file, env)
    if recipe.backend == "server":
        child_env.update(_server_client_env(recipe))
    with open(log, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env)
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "EndpointError:" in ln), lines[-1] if lines else "")
        raise UserError(f"lighteval failed on {model.name} (exit {proc.returncode}): {last[:400]} -- see {log}")


# ------------------------------------------------------------------------------------------- server backend
#: LiteLLM's provider for vLLM's OpenAI-compatible server (no OpenAI-only parameters such as logprobs).
LITELLM_PROVIDER = "hosted_vllm"
#: lighteval's LiteLLM client retries with exponential back-off; a dead server should fail in seconds.
SERVER_RETRIES = 3


def default_server_command(recipe: EvalRecipe) -> list[str]:
    """``vllm serve {model}`` with the recipe's parallelism, memory, dtype and context settings."""
    return vllm_serve_command(
        dtype=recipe.dtype,
        tensor_parallel_size=recipe.tensor_parallel_size,
        data_parallel_size=recipe.data_parallel_size,
        gpu_memory_utilization=recipe.gpu_memory_utilization,
        max_model_len=recipe.max_model_length,
    )


def server_api_key(recipe: EvalRecipe) -> str | None:
    """The server's API key, read from the environment variable ``api_key_env`` names (never from the recipe)."""
    if not recipe.api_key_env:
        return None
    key = os.environ.get(recipe.api_key_env)
    if not key:
        raise UserError(
            f"api_key_env is {recipe.api_key_env!r} but that environment variable is not set -- export it "
            "(the key is read from the environment only)"
        )
    return key


def _server_client_env(recipe: EvalRecipe) -> dict[str, str]:
    """The lighteval child's environment for LiteLLM: the key (from the environment only), no network look-ups."""
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    key = server_api_key(recipe)
    if key:
        env["HOSTED_VLLM_API_KEY"] = key
    return env


@contextlib.contextmanager
def model_endpoint(recipe: EvalRecipe, model: ModelEntry, log_dir: Path) -> Iterator[Endpoint | None]:
    """The server backend's endpoint for one model: attach to ``base_url``, or start a server on the model's
    weights for the duration of the block (its log: ``log_dir/server.log``); ``None`` for other backends."""
    if recipe.backend != "server":
        yield None
        return
    key = server_api_key(recipe)
    env = dict(recipe.server_env)
    if key:
        env["VLLM_API_KEY"] = key  # vLLM reads it from the environment: it never appears on a command line
    with serve_or_attach(
        model.path,
        names=[model.ref],
        base_url=recipe.base_url,
        api_key=key,
        command=recipe.server_command if recipe.server_command is not None else default_server_command(recipe),
        env=env,
        python=recipe.server_python,
        startup_timeout=recipe.server_startup_timeout,
        log_path=log_dir / "server.log",
    ) as endpoint:
        yield endpoint
