"""``EvalRecipe``: the eval recipe (``recipes/eval/*.yaml``) with its checks, and the models it expands to.

A trained folder's ``checkpoint-*`` subfolders become one model each, with their step; the final save is evaluated
once, under its step when ``trainer_state.json`` gives one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from wildsci.errors import UserError
from wildsci.eval.sources import (
    SOURCES,
    TASKS,
)
from wildsci.prompts import SYSTEM_PROMPT

DEFAULT_TASKS = ["wildsci", "gpqa_diamond", "supergpqa", "mmlu_pro"]


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
    model_index: int | None = field(
        default=None,
        metadata={
            "help": "evaluate only the i-th model (0 = base, then the checkpoints by step, then the final save) and "
            "write no matrix: one task of a per-model array job; a later run without it reuses every saved model "
            "run and writes the matrix (wildsci pipeline)"
        },
    )
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
    plan_gpus: int | None = field(
        default=None,
        metadata={"help": "--dry-run: GPUs of the time estimate (null: tensor_parallel_size x data_parallel_size)"},
    )
    plan_tokens_per_second: float | None = field(
        default=None,
        metadata={"help": "--dry-run: generated tokens/s of one GPU under load, as measured (needs a source)"},
    )
    plan_throughput_source: str | None = field(
        default=None, metadata={"help": "--dry-run: where plan_tokens_per_second comes from (a run, a bench section)"}
    )

    def __post_init__(self):
        if self.model_index is not None and self.model_index < 0:
            raise ValueError(f"model_index must be >= 0 (0 = the base model), got {self.model_index}")
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
        if self.plan_gpus is not None and self.plan_gpus < 1:
            raise ValueError("plan_gpus must be >= 1 (or null: tensor_parallel_size x data_parallel_size)")
        if self.plan_tokens_per_second is not None and (
            self.plan_tokens_per_second <= 0 or not (self.plan_throughput_source or "").strip()
        ):
            raise ValueError(
                "plan_tokens_per_second must be > 0 and come with plan_throughput_source (where it was measured)"
            )
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1")
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
