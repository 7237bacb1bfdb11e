"""``wildsci eval``: base model + trained checkpoints x benchmark tasks, through real lighteval runs.

One recipe (``recipes/eval/*.yaml``, :class:`EvalRecipe`) names a base model, a trained model folder (its
``checkpoint-*`` subfolders expand to one model each, with their step), the tasks of
``eval_tasks/wildsci_tasks.py`` and where their data lives. For every model, ``wildsci eval`` runs the
lighteval CLI (``python -m wildsci.lighteval_compat accelerate ...``, or ``... endpoint litellm ...`` against
the model's vLLM OpenAI server with ``backend: server``) in a child process and then reads lighteval's own
results and per-sample details. It writes, as docs/architecture.md specifies:

- ``results.json``: models, tasks, per-task accuracy / extraction rate / n / per-discipline accuracy, and with
  ``--permutations K`` the option-order robustness of every model on every task;
- ``predictions.jsonl``: one line per model x task x question (``model, task, question_id, discipline, gold,
  pred, correct, completion_tokens``); ``permutation_predictions.jsonl`` holds the permuted copies;
- ``results.md`` (the tables) and ``accuracy_vs_step.png`` (accuracy vs training step, one line per task),
  drawn by :mod:`wildsci.report.evaluation` (``wildsci eval`` calls it after :func:`run_eval`).

Why the CLI in a child process rather than lighteval's Python API: each model gets a fresh process, so its
memory (and with ``backend: server`` the model's server) is released before the next checkpoint loads; the
numbers come from exactly the command users run by hand; and ``num_processes > 1`` runs it under ``accelerate
launch`` for data-parallel evaluation on several GPUs. The price is lighteval's start-up (~20 s on a small
CPU) per model.

Resuming: a model whose run finished (same weights, tasks, data and settings) is not evaluated again; its
saved lighteval outputs are read instead. lighteval's response cache (``<output_dir>/.lighteval_cache``)
keys on the weights too (:mod:`wildsci.lighteval_compat`), so a retrained checkpoint is never served stale
answers.

GPQA's questions must not be published: its tasks run in a separate lighteval call whose outputs, response
cache and ``datasets`` cache live in a temporary folder that is deleted afterwards; only question ids, letters
and scores are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from wildsci.answers import LETTERS
from wildsci.errors import UserError
from wildsci.eval_sources import (
    SOURCES,
    TASKS,
    EvalDataConfig,
    data_cache_dir,
    disciplines,
    is_local,
    normalize,
    perm_task_name,
    prepare_task,
    read_rows,
)
from wildsci.prompts import SYSTEM_PROMPT
from wildsci.recipes import load_recipe, recipe_hash
from wildsci.redact import redact_text
from wildsci.serving import Endpoint, render_command, serve_or_attach, vllm_serve_command

DEFAULT_TASKS = ["wildsci", "gpqa_diamond", "supergpqa", "mmlu_pro"]
RUN_STATE = "wildsci_run.json"


@dataclass
class EvalRecipe:
    """An evaluation matrix: which models, which tasks, which data, and how to generate."""

    output_dir: str = field(metadata={"help": "where results.json, predictions.jsonl, results.md and the plot go"})
    base: str = field(
        metadata={"help": "the model before training: Hub id, local folder or embedded:smollm2-135m-instruct"}
    )
    trained: str | None = field(
        default=None,
        metadata={
            "help": "the trained model: a folder whose checkpoint-* subfolders are evaluated one by one, or a Hub id"
        },
    )
    base_name: str = field(default="base", metadata={"help": "name of the base model in tables and plots"})
    tasks: list[str] = field(
        default_factory=lambda: list(DEFAULT_TASKS),
        metadata={"help": f"tasks of eval_tasks/wildsci_tasks.py, without the 'wildsci:' prefix: {', '.join(TASKS)}"},
    )
    sources: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": f"data per source ({', '.join(SOURCES)}): a local file/folder or a Hub id; "
            "unset sources use the pinned Hub dataset"
        },
    )
    splits: dict[str, str] = field(
        default_factory=lambda: {"wildsci": "test"},
        metadata={"help": "split per source (the WildSci held-out split is 'test' in datasets built by the kit)"},
    )
    missing_sources: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "'skip' leaves out (and reports) tasks whose local source file is missing"},
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "questions per task: a fixed hash-ordered sample, the same for every model (null: all)"},
    )
    task_samples: dict[str, int] = field(
        default_factory=dict, metadata={"help": "per-task override of max_samples, e.g. {gpqa_diamond: 198}"}
    )
    permutations: int = field(
        default=0,
        metadata={"help": "ask every question under K seeded option orders and report consistency (0: off)"},
    )
    max_new_tokens: int = field(default=4096, metadata={"help": "generation budget per answer (tokens)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0: greedy)"})
    backend: Literal["transformers", "server", "vllm"] = field(
        default="transformers",
        metadata={
            "help": "transformers (lighteval accelerate; CPU or GPU) or server (a vLLM OpenAI server per model, "
            "scored by lighteval endpoint litellm; GPU, much faster). 'vllm' (lighteval's in-process vLLM) is refused"
        },
    )
    device: str = field(default="auto", metadata={"help": "transformers backend: cpu, cuda or auto"})
    dtype: str = field(
        default="auto", metadata={"help": "float32, bfloat16, float16 or auto (bfloat16 on GPU, float32 on CPU)"}
    )
    batch_size: int = field(default=8, metadata={"help": "transformers backend: prompts per generation batch"})
    num_processes: int = field(
        default=1, metadata={"help": "transformers backend: data-parallel processes under accelerate launch (GPUs)"}
    )
    max_model_length: int | None = field(
        default=None, metadata={"help": "context length (prompt + answer); null: the model's own"}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "server backend: GPUs per model replica"})
    data_parallel_size: int = field(default=1, metadata={"help": "server backend: model replicas"})
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "server backend: share of GPU memory vLLM may use"}
    )
    server_command: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "server backend: the command that serves one model, with {model} {port} {host} {python} "
            "placeholders (null: `vllm serve {model}` with the tensor/data parallel, memory, dtype and length "
            "settings above). Any environment works, e.g. [/opt/vllm/bin/python, -m, "
            "vllm.entrypoints.openai.api_server, --model, '{model}', --port, '{port}']"
        },
    )
    server_env: dict[str, str] = field(
        default_factory=dict, metadata={"help": "server backend: extra environment for the server, e.g. VLLM_*"}
    )
    server_python: str | None = field(
        default=None, metadata={"help": "server backend: fills {python} in server_command (default: this Python)"}
    )
    server_startup_timeout: float = field(
        default=1200.0, metadata={"help": "server backend: seconds to wait for the server's /health"}
    )
    base_url: str | None = field(
        default=None,
        metadata={
            "help": "server backend: attach to this running OpenAI-compatible server (its /v1 URL) instead of "
            "starting one; it must serve the base model, and 'trained' must be unset"
        },
    )
    api_key_env: str | None = field(
        default=None,
        metadata={"help": "server backend: name of the environment variable holding the server's API key"},
    )
    concurrent_requests: int = field(default=8, metadata={"help": "server backend: requests in flight at once"})
    system_prompt: str | None = field(
        default=SYSTEM_PROMPT,
        metadata={"help": "system prompt (default: the one GRPO trains with; null for chat templates without one)"},
    )
    response_cache: bool = field(
        default=True,
        metadata={"help": "reuse lighteval's cached answers across runs (keyed by weights, settings and data)"},
    )
    custom_tasks: str | None = field(
        default=None, metadata={"help": "path of the lighteval tasks file (default: eval_tasks/wildsci_tasks.py)"}
    )

    def __post_init__(self):
        for t in self.tasks:
            if t.removeprefix("wildsci:") not in TASKS:
                raise ValueError(f"unknown task {t!r} in 'tasks' -- known: {', '.join(TASKS)}")
        self.tasks = [t.removeprefix("wildsci:") for t in self.tasks]
        for key in list(self.sources) + list(self.splits):
            if key not in SOURCES:
                raise ValueError(f"unknown source {key!r} -- known: {', '.join(SOURCES)}")
        for key in self.task_samples:
            if key not in TASKS:
                raise ValueError(f"unknown task {key!r} in 'task_samples' -- known: {', '.join(TASKS)}")
        if self.permutations < 0 or self.max_new_tokens < 1 or self.batch_size < 1 or self.num_processes < 1:
            raise ValueError("permutations must be >= 0 and max_new_tokens, batch_size, num_processes >= 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError("max_samples must be >= 1 (or null for every question)")
        if self.backend == "vllm":
            raise ValueError(
                "backend 'vllm' (lighteval's in-process vLLM) cannot run: lighteval 0.13 needs vLLM 0.10.0-0.10.1, "
                "which predates transformers 5 -- use backend: server (a vLLM OpenAI server + lighteval's LiteLLM "
                "backend; see docs/evaluation.md)"
            )
        if self.backend != "server" and (self.base_url or self.server_command):
            raise ValueError(f"base_url and server_command need backend: server (backend is {self.backend!r})")
        if self.base_url and self.trained:
            raise ValueError(
                "base_url attaches to one running server, which serves one model: unset 'trained', or unset "
                "base_url to let wildsci eval start a server per checkpoint"
            )
        if self.base_url and not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https:// (e.g. .../v1)")
        if self.server_startup_timeout <= 0 or self.concurrent_requests < 1:
            raise ValueError("server_startup_timeout must be > 0 and concurrent_requests >= 1")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):
            raise ValueError("api_key_env must name an environment variable (e.g. VLLM_API_KEY), not hold a value")


@dataclass
class ModelEntry:
    name: str
    ref: str  # as written in the recipe
    path: str  # what lighteval loads: a local folder or a Hub id
    step: int | None


# ------------------------------------------------------------------------------------------- models
def _step_of(folder: Path) -> int | None:
    state = folder / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text())["global_step"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


def expand_models(recipe: EvalRecipe) -> list[ModelEntry]:
    """The base model (step 0), then every ``checkpoint-N`` of the trained folder (step N), then its final save.

    The final save is listed only when its step is not already one of the checkpoints (or is unknown).
    """
    from wildsci.models import resolve_model

    models = [ModelEntry(recipe.base_name, recipe.base, resolve_model(recipe.base), 0)]
    if recipe.trained:
        p = Path(recipe.trained).expanduser()
        if p.is_dir():
            ckpts = sorted(
                (c for c in p.glob("checkpoint-*") if c.is_dir() and re.fullmatch(r"checkpoint-\d+", c.name)),
                key=lambda c: int(c.name.split("-")[1]),
            )
            for c in ckpts:
                if (c / "config.json").is_file():
                    models.append(ModelEntry(c.name, str(c), str(c.resolve()), int(c.name.split("-")[1])))
            if (p / "config.json").is_file():
                step = _step_of(p)
                if step is None or step not in {m.step for m in models[1:]}:
                    models.append(ModelEntry("final" if ckpts else "trained", str(p), str(p.resolve()), step))
            if len(models) == 1:
                raise UserError(
                    f"{p}: no config.json and no checkpoint-*/config.json -- point 'trained' at a training output_dir"
                )
        else:
            models.append(ModelEntry("trained", recipe.trained, resolve_model(recipe.trained), None))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UserError(f"model names collide ({names}) -- set base_name to something else")
    return models


# ------------------------------------------------------------------------------------------- data
def _data_config(recipe: EvalRecipe, tmp: Path) -> tuple[EvalDataConfig, list[str], dict[str, str]]:
    """Resolve sources, skip missing ones if asked, and slice Hub sources locally when a sample size is set.

    Returns (config, tasks to run, {task: why it was skipped}).
    """
    cfg = EvalDataConfig(
        sources=dict(recipe.sources),
        splits=dict(recipe.splits),
        limits={t: n for t in recipe.tasks if (n := recipe.task_samples.get(t, recipe.max_samples))},
        permutations=recipe.permutations,
        max_new_tokens=recipe.max_new_tokens,
    )
    tasks, skipped = [], {}
    for t in recipe.tasks:
        src = TASKS[t].source
        ref = cfg.sources.get(src)
        if ref and is_local(ref) and not Path(ref).expanduser().exists():
            if recipe.missing_sources == "skip":
                skipped[t] = f"source {ref} not found"
                continue
            raise UserError(f"task {t}: source {ref} not found -- fix 'sources.{src}' or set missing_sources: skip")
        tasks.append(t)
    cfg.tasks = list(tasks)  # lighteval's task file then reads only these tasks' sources
    for t in tasks:  # a damaged local file fails here, in one line, before any model loads
        if (ref := cfg.sources.get(TASKS[t].source)) and is_local(ref):
            prepare_task(TASKS[t], cfg)
    # Hub sources with a sample size: lighteval cannot slice them, so normalize the whole source locally once.
    for src in sorted({TASKS[t].source for t in tasks if t in cfg.limits}):
        ref = cfg.sources.get(src, SOURCES[src].hub_repo)
        if is_local(ref):
            continue
        source = SOURCES[src]
        rows = read_rows(source, ref, cfg.splits.get(src), source.hub_revision if ref == source.hub_repo else None)
        normalized, bad = [], Counter()
        for row in rows:
            try:
                normalized.append(normalize(source.adapter, row))
            except ValueError as e:
                bad[str(e)] += 1
        base = tmp if source.sensitive else data_cache_dir() / "hub"
        out = base / f"{src}-{hashlib.sha256(json.dumps(normalized).encode()).hexdigest()[:16]}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file():
            out.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in normalized), encoding="utf-8")
        cfg.sources[src] = str(out)
    return cfg, tasks, skipped


# ------------------------------------------------------------------------------------------- one lighteval run
def _custom_tasks_path(recipe: EvalRecipe) -> Path:
    if recipe.custom_tasks:
        p = Path(recipe.custom_tasks).expanduser()
    else:
        p = Path(__file__).resolve().parents[2] / "eval_tasks" / "wildsci_tasks.py"
    if not p.is_file():
        raise UserError(f"{p}: lighteval tasks file not found -- set custom_tasks to eval_tasks/wildsci_tasks.py")
    return p


def _device(recipe: EvalRecipe) -> str:
    if recipe.device != "auto":
        return recipe.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> None:
    """Refuse a device this machine does not have: running on the CPU instead would be a silent wrong answer
    to "how fast / on what did this run", and results.json records the device as asked."""
    if device in ("auto", "cpu"):
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count()
        if not index.isdigit() and index != "":
            raise UserError(f"device {device!r} is not a device name -- use cpu, cuda, cuda:N or auto")
        if count == 0 or (index and int(index) >= count):
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise UserError(f"device {device!r} is not on this machine ({have}) -- use device: cpu or auto")
        return
    if kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise UserError("device 'mps' is not available on this machine -- use device: cpu or auto")
        return
    raise UserError(f"device {device!r} is not a device name -- use cpu, cuda, cuda:N, mps or auto")


def model_parameters(
    recipe: EvalRecipe, model: ModelEntry, cache_dir: Path, endpoint: Endpoint | None = None
) -> dict[str, Any]:
    """lighteval's ``model_parameters`` for one model (written as YAML: the system prompt contains commas).

    ``max_new_tokens`` is deliberately *not* set here: lighteval 0.13's transformers backend truncates prompts
    to that many tokens when it is, so the budget travels as the tasks' ``generation_size`` instead (the LiteLLM
    backend sends it as ``max_tokens``). For the server backend the API key is never written here: LiteLLM reads
    it from the child's environment (``HOSTED_VLLM_API_KEY``).
    """
    gen = {"temperature": recipe.temperature}
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


def _api_key(recipe: EvalRecipe) -> str | None:
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
    key = _api_key(recipe)
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
    key = _api_key(recipe)
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


# ------------------------------------------------------------------------------------------- reading outputs
def read_lighteval_outputs(out: Path) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """(aggregated results per full task name, detail rows per full task name) of the latest run in ``out``."""
    import pyarrow.parquet as pq

    results_files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not results_files:
        raise UserError(f"{out}: lighteval wrote no results file -- see {out / 'lighteval.log'}")
    results = json.loads(results_files[-1].read_text(encoding="utf-8"))["results"]
    stamp = results_files[-1].stem.removeprefix("results_")
    details: dict[str, list[dict]] = {}
    for f in out.rglob(f"details_*_{stamp}.parquet"):
        name = f.name.removeprefix("details_").removesuffix(f"_{stamp}.parquet")
        details[name] = pq.read_table(f).to_pylist()
    return results, details


def _record(model: str, task: str, row: dict) -> dict:
    """One ``predictions.jsonl`` line from one lighteval detail row (the metric values lighteval computed)."""
    spec = row["doc"]["specific"]
    metric = row["metric"]
    resp = row["model_response"]
    tokens = resp.get("output_tokens") or [[]]
    return {
        "model": model,
        "task": task,
        "question_id": spec["question_id"],
        "discipline": spec["discipline"],
        "gold": spec["gold"],
        "pred": metric["acc_by_discipline"].get("pred") or None,
        "correct": bool(metric["acc"]),
        "completion_tokens": len(tokens[0] or []),
        "_extracted": bool(metric["extraction_rate"]),
        "_permutation": spec.get("permutation", -1),
        "_order": spec.get("order"),
    }


def task_scores(result: dict, records: list[dict]) -> dict[str, Any]:
    """results.json's score block for one model x task: lighteval's aggregates plus per-discipline n."""
    n_by = Counter(r["discipline"] for r in records)
    per = {
        d: {"accuracy": float(result[f"acc:{d}"]), "n": n_by[d]}
        for d in disciplines()
        if n_by.get(d) and f"acc:{d}" in result
    }
    return {
        "accuracy": float(result["acc"]),
        "extraction_rate": float(result["extraction_rate"]),
        "n": len(records),
        "per_discipline": per,
    }


def permutation_summary(records_by_k: dict[int, list[dict]]) -> dict[str, Any]:
    """Accuracy, consistency and chosen-vs-gold letter shares over K permuted copies of one task.

    Consistency: the share of questions whose chosen option *content* (mapped back through each permutation) is
    the same under all K orders; a question with any unreadable answer counts as inconsistent.
    """
    k = len(records_by_k)
    by_q: dict[str, list[dict]] = {}
    for recs in records_by_k.values():
        for r in recs:
            by_q.setdefault(r["question_id"], []).append(r)
    total = sum(len(v) for v in by_q.values())
    consistent = 0
    for recs in by_q.values():
        contents = {r["_order"][LETTERS.index(r["pred"])] if r["pred"] else None for r in recs}
        consistent += int(len(recs) == k and None not in contents and len(contents) == 1)
    n_letters = max((len(r["_order"]) for v in by_q.values() for r in v), default=0)
    chosen = Counter(r["pred"] for v in by_q.values() for r in v if r["pred"])
    gold = Counter(r["gold"] for v in by_q.values() for r in v)
    n_chosen = sum(chosen.values())
    return {
        "k": k,
        "accuracy": sum(r["correct"] for v in by_q.values() for r in v) / total if total else 0.0,
        "consistency": consistent / len(by_q) if by_q else 0.0,
        "letter_distribution": {c: chosen[c] / n_chosen for c in LETTERS[:n_letters]} if n_chosen else {},
        "gold_letter_distribution": {c: gold[c] / total for c in LETTERS[:n_letters]} if total else {},
        "n": len(by_q),
    }


# ------------------------------------------------------------------------------------------- one model
def _run_key(recipe: EvalRecipe, model: ModelEntry, tasks: list[str], cfg: EvalDataConfig) -> str:
    from wildsci.lighteval_compat import weights_fingerprint

    data_fp = {}
    for src in sorted({TASKS[t].source for t in tasks}):
        ref = cfg.sources.get(src)
        if ref and Path(ref).expanduser().is_file():
            data_fp[src] = hashlib.sha256(Path(ref).expanduser().read_bytes()).hexdigest()[:16]
        elif ref and Path(ref).expanduser().is_dir():
            files = sorted(Path(ref).expanduser().rglob("*.parquet")) + sorted(Path(ref).expanduser().rglob("*.jsonl"))
            data_fp[src] = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        else:
            data_fp[src] = ref or SOURCES[src].hub_revision or ""
    settings = {k: v for k, v in asdict(recipe).items() if k not in ("output_dir", "base", "trained", "base_name")}
    blob = {
        "weights": weights_fingerprint(model.path),
        "tasks": tasks,
        "cfg": cfg.to_json(),
        "data": data_fp,
        "settings": settings,
    }
    return recipe_hash(blob)


def evaluate_model(
    recipe: EvalRecipe, model: ModelEntry, tasks: list[str], cfg: EvalDataConfig, out_dir: Path, config_file: Path
) -> tuple[dict[str, dict], list[dict]]:
    """Run (or reuse) lighteval for one model; returns (results per full task name, prediction records)."""
    run_dir = out_dir / "lighteval" / model.name
    key = _run_key(recipe, model, tasks, cfg)
    state_file = run_dir / RUN_STATE
    if state_file.is_file():
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if state.get("key") == key:
            return state["results"], state["records"]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    open_tasks = [t for t in tasks if not SOURCES[TASKS[t].source].sensitive]
    secret_tasks = [t for t in tasks if SOURCES[TASKS[t].source].sensitive]

    def names(group: list[str]) -> list[str]:
        return [TASKS[t].name for t in group] + [perm_task_name(t, k) for k in range(cfg.permutations) for t in group]

    results: dict[str, dict] = {}
    records: list[dict] = []

    def collect(out: Path) -> None:
        res, details = read_lighteval_outputs(out)
        for full, rows in details.items():
            base = full.split("|")[0]
            results[base] = res.get(full, {})
            short = base.split(":")[1]
            records.extend(_record(model.name, short, r) for r in rows)

    cache = out_dir / ".lighteval_cache" if recipe.response_cache else run_dir / "cache"
    run_dir.mkdir(parents=True, exist_ok=True)
    with model_endpoint(recipe, model, run_dir) as endpoint:  # server backend: one server per model
        if open_tasks:
            run_lighteval(recipe, model, names(open_tasks), run_dir, config_file, cache, endpoint=endpoint)
            collect(run_dir)
            if not recipe.response_cache:
                shutil.rmtree(run_dir / "cache", ignore_errors=True)
        if secret_tasks:
            with tempfile.TemporaryDirectory(prefix="wildsci-eval-sensitive-") as tmp:
                t = Path(tmp)
                env = {"HF_DATASETS_CACHE": str(t / "datasets")}
                run_lighteval(recipe, model, names(secret_tasks), t / "out", config_file, t / "cache", env, endpoint)
                collect(t / "out")
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps({"key": key, "results": results, "records": records}), encoding="utf-8")
    return results, records


# ------------------------------------------------------------------------------------------- outputs
def ran_on(recipe: EvalRecipe, model: ModelEntry, out_dir: Path) -> dict[str, Any]:
    """What ran where, for results.json: backend, device and dtype as given to lighteval, kit commit, versions."""
    from wildsci.provenance import git_sha, package_versions

    return {**launch_settings(recipe, model, out_dir), "git_sha": git_sha(), "versions": package_versions()}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- entry point
def run_eval(recipe_path: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """``wildsci eval RECIPE [--permutations K] [--output-dir DIR] [--key value ...]``; returns results.json's path."""
    from tqdm import tqdm

    overrides = dict(overrides or {})
    recipe: EvalRecipe = load_recipe(recipe_path, EvalRecipe, overrides)
    if recipe.backend == "transformers":
        check_device(recipe.device)
    out_dir = Path(recipe.output_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    models = expand_models(recipe)
    with tempfile.TemporaryDirectory(prefix="wildsci-eval-") as tmp:
        cfg, tasks, skipped = _data_config(recipe, Path(tmp))
        if not tasks:
            raise UserError(f"{recipe_path}: no task left to run ({skipped}) -- check 'sources'")
        config_file = out_dir / "eval_config.json"
        config_file.write_text(json.dumps(cfg.to_json(), indent=1), encoding="utf-8")
        for t, why in skipped.items():
            print(f"wildsci eval: skipping task {t}: {why}", file=sys.stderr)
        res: dict[str, Any] = {
            "models": [{"name": m.name, "path": m.path, "step": m.step} for m in models],
            "tasks": tasks,
            "scores": {},
        }
        perms: dict[str, dict] = {}
        preds, perm_preds = [], []
        bar = tqdm(models, desc="wildsci eval", unit="model", disable=None)
        for m in bar:
            bar.set_postfix_str(m.name)
            bar.write(f"wildsci eval: {m.name} (step {m.step}): lighteval log in {out_dir / 'lighteval' / m.name}")
            results, records = evaluate_model(recipe, m, tasks, cfg, out_dir, config_file)
            res["scores"][m.name] = {}
            for t in tasks:
                recs = [r for r in records if r["task"] == t and r["_permutation"] == -1]
                if TASKS[t].name in results:
                    res["scores"][m.name][t] = task_scores(results[TASKS[t].name], recs)
                preds.extend(recs)
                if cfg.permutations:
                    by_k = {
                        k: [r for r in records if r["task"] == t and r["_permutation"] == k]
                        for k in range(cfg.permutations)
                    }
                    if all(by_k.values()):
                        perms.setdefault(m.name, {})[t] = permutation_summary(by_k)
                    perm_preds.extend(r for k in by_k for r in by_k[k])
    if cfg.permutations:
        res["permutations"] = perms

    def public(r: dict) -> dict:
        return {k: v for k, v in r.items() if not k.startswith("_")}

    _write_jsonl(out_dir / "predictions.jsonl", [public(r) for r in preds])
    if perm_preds:
        _write_jsonl(
            out_dir / "permutation_predictions.jsonl",
            [{**public(r), "permutation": r["_permutation"], "order": r["_order"]} for r in perm_preds],
        )
    if skipped:
        res["skipped"] = skipped  # results.md (wildsci.report.evaluation) lists them
    res["ran_on"] = ran_on(recipe, models[0], out_dir)
    tmp_json = out_dir / "results.json.tmp"
    tmp_json.write_text(json.dumps(res, indent=1), encoding="utf-8")
    os.replace(tmp_json, out_dir / "results.json")
    print(f"wildsci eval: {len(models)} model(s) x {len(tasks)} task(s) -> {out_dir / 'results.json'}")
    return out_dir / "results.json"
