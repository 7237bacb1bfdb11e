"""Which LLM a recipe names (:class:`BackendConfig`) and the client that serves it (:func:`make_client`).

Two backends keep one contract (:mod:`wildsci.llm.client`: requests in, results in the same order, every call
cached, a failure returned as a result): ``transformers`` (:mod:`wildsci.llm.local`, a model run in-process)
and ``openai`` (:mod:`wildsci.llm.remote`, any OpenAI-compatible endpoint). The client classes and request types
are re-exported here: callers import a backend from one place.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from wildsci.errors import UserError
from wildsci.llm.cache import CallCache
from wildsci.llm.client import ChatRequest, ChatResult, LLMClient, choice_schema, normalize_choice, request_seed
from wildsci.llm.local import SeededSampler, TransformersClient
from wildsci.llm.remote import OpenAIClient
from wildsci.models import DEVICE_NAME
from wildsci.recipes import check_count

__all__ = [
    "BackendConfig",
    "ChatRequest",
    "ChatResult",
    "LLMClient",
    "OpenAIClient",
    "SeededSampler",
    "TransformersClient",
    "choice_schema",
    "make_client",
    "normalize_choice",
    "request_seed",
]

BACKENDS = ("transformers", "openai")
GUIDED_MODES = ("response_format", "vllm", "vllm_legacy")
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: what an environment variable name looks like (a pasted key has lower case letters or dashes)
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass
class BackendConfig:
    """One LLM: which backend serves it, how it samples, how hard the client pushes the server."""

    backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers (local model, default) or openai (any OpenAI-compatible endpoint: vLLM, SGLang, "
            "TGI, `transformers serve`, HF Inference Providers)"
        },
    )
    model: str = field(
        default="embedded:smollm2-135m-instruct",
        metadata={
            "help": "transformers: Hub id, local folder or embedded:smollm2-135m-instruct (see wildsci.models); "
            "openai: the model name the server expects"
        },
    )
    base_url: str | None = field(
        default=None,
        metadata={
            "help": "openai backend: the endpoint, e.g. http://localhost:8000/v1 or https://router.huggingface.co/v1"
        },
    )
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "openai backend: NAME of the environment variable that holds the API key (e.g. HF_TOKEN); "
            "never the key itself. Unset: no key (local servers)"
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature; 0 = greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling threshold (1.0 = off)"})
    max_new_tokens: int = field(default=512, metadata={"help": "maximum tokens generated per call"})
    concurrency: int = field(default=8, metadata={"help": "openai backend: maximum requests in flight"})
    batch_size: int = field(default=8, metadata={"help": "transformers backend: prompts per generate() call"})
    timeout_s: float = field(default=120.0, metadata={"help": "openai backend: seconds before one request times out"})
    max_retries: int = field(
        default=3,
        metadata={"help": "openai backend: retries (exponential backoff) on timeouts, connection errors, 429 and 5xx"},
    )
    structured: bool = field(
        default=True,
        metadata={
            "help": "constrain output to the requested JSON schema / choices (xgrammar locally, response_format or "
            "guided decoding remotely); false = plain generation, validated afterwards"
        },
    )
    guided_decoding: str = field(
        default="response_format",
        metadata={
            "help": "openai backend, how structure is requested: response_format (portable OpenAI json_schema), "
            "vllm (extra_body structured_outputs, vLLM >= 0.10) or vllm_legacy (guided_json/guided_choice)"
        },
    )
    seed: int = field(default=0, metadata={"help": "base seed; each request's seed is derived from it and the prompt"})
    device: str = field(default="auto", metadata={"help": "transformers backend: auto, cpu, cuda, cuda:1, mps"})
    dtype: str = field(
        default="auto", metadata={"help": "transformers backend: auto (bfloat16 on GPU, float32 on CPU), float32, ..."}
    )

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.guided_decoding not in GUIDED_MODES:
            raise ValueError(f"guided_decoding must be one of {', '.join(GUIDED_MODES)}, got {self.guided_decoding!r}")
        check_count("max_new_tokens", self.max_new_tokens, 1, 1_048_576, "tokens per call; no model is longer")
        check_count("concurrency", self.concurrency, 1, 4096, "requests in flight")
        check_count("batch_size", self.batch_size, 1, 4096, "prompts per generate() call")
        # written as positive ranges so that nan fails them too (nan < 0 is False)
        if not (0 <= self.temperature <= 10 and 0 < self.top_p <= 1):
            raise ValueError(
                f"temperature must be in [0, 10] and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )
        if self.base_url is not None and not re.match(r"https?://[^/\s]+", self.base_url):
            raise ValueError(
                f"base_url {self.base_url!r} is not an http(s) URL -- e.g. http://localhost:8000/v1 (scheme, host, "
                "port and the /v1 of the OpenAI API)"
            )
        if not DEVICE_NAME.fullmatch(str(self.device)):
            raise ValueError(f"device {self.device!r} is not a device name -- use auto, cpu, cuda, cuda:N or mps")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not (0 <= self.max_retries <= 20 and 0 < self.timeout_s <= 3600):
            raise ValueError("max_retries must be in [0, 20] and timeout_s in (0, 3600]")
        if self.api_key_env is not None and not ENV_NAME.fullmatch(self.api_key_env):
            # never echo the value: a key pasted here instead of a variable name must not reach a log
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (upper case, e.g. HF_TOKEN), not a key "
                "(the value given is not shown) -- export the key as a variable and name it here"
            )

    def sampling(self) -> dict[str, Any]:
        """The parameters that change a call's answer (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "structured": self.structured,
            # how a constraint is sent changes a remote answer (an old vLLM ignores one of the spellings); the
            # local backend has one way only, so its keys (and seeds) stay as they were
            **({"guided_decoding": self.guided_decoding} if self.backend == "openai" and self.structured else {}),
        }

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.backend == "openai" else ""
        return f"{self.model} ({self.backend}{where}, T={self.temperature}, top_p={self.top_p})"


def make_client(config: BackendConfig, cache: CallCache | None) -> LLMClient:
    """The client for ``config.backend``; ``cache`` may be shared by several clients (keys include the model)."""
    if config.backend == "openai":
        return OpenAIClient(config, cache)
    if config.backend == "transformers":
        return TransformersClient(config, cache)
    raise UserError(f"unknown LLM backend {config.backend!r} -- use one of {', '.join(BACKENDS)}")


def config_summary(config: BackendConfig) -> dict[str, Any]:
    """The config as a dict for reports and cards (never contains a key: only the env var's name)."""
    return asdict(config)
