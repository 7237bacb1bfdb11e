"""LLM access for the dataset builder: a local transformers model or any OpenAI-compatible endpoint.

Every call goes through :class:`CallCache` (sqlite, one commit per answer), so a rerun or a resumed build
never repeats a call, and every request is sampled from a seed derived from its cache key, so a resumed
build produces the same dataset as an uninterrupted one.

Backends as a recipe names them (``generator:``, each entry of ``voters:``, ``labeler:``)::

    # local, the default: the embedded SmolLM2-135M, JSON held to the schema by an xgrammar logits processor
    generator: {backend: transformers, model: embedded:smollm2-135m-instruct, batch_size: 8}

    # vLLM (`vllm serve Qwen/Qwen2.5-32B-Instruct --tensor-parallel-size 4 --port 8000`)
    generator: {backend: openai, base_url: http://localhost:8000/v1, model: Qwen/Qwen2.5-32B-Instruct,
                concurrency: 64, guided_decoding: vllm}

    # SGLang (`python -m sglang.launch_server --model-path Qwen/Qwen2.5-32B-Instruct --port 30000`),
    # TGI (`text-generation-launcher --model-id ... --port 8080`), or `transformers serve` (port 8000):
    generator: {backend: openai, base_url: http://localhost:30000/v1, model: Qwen/Qwen2.5-32B-Instruct}

    # HF Inference Providers (the key is read from $HF_TOKEN, never written anywhere)
    generator: {backend: openai, base_url: https://router.huggingface.co/v1, api_key_env: HF_TOKEN,
                model: Qwen/Qwen2.5-72B-Instruct, concurrency: 16}

Structured output: ``response_format: json_schema`` (the default, ``guided_decoding: response_format``) is
understood by vLLM, SGLang, TGI, ``transformers serve`` and the HF router; ``guided_decoding: vllm`` sends
vLLM's own ``structured_outputs`` (vLLM >= 0.10), ``vllm_legacy`` the older ``guided_json``/``guided_choice``.
OpenAI's own API rejects ``maxLength`` in strict schemas: set ``generate.max_question_chars``,
``generate.max_option_chars`` and ``options.max_option_chars`` to null there.

Scale-out: one endpoint per node behind a load balancer (or several ``voters`` entries, one per server) and
``concurrency`` = the engine's batch size; the client keeps that many requests in flight (see
``bench/synthesis_throughput.py``). Shards of a build (``--shard i/n``) may share one cache file.
"""

from wildsci.llm.backends import (
    BackendConfig,
    ChatRequest,
    ChatResult,
    LLMClient,
    OpenAIClient,
    TransformersClient,
    make_client,
)
from wildsci.llm.cache import CallCache, CallKey, call_key

__all__ = [
    "BackendConfig",
    "CallCache",
    "CallKey",
    "ChatRequest",
    "ChatResult",
    "LLMClient",
    "OpenAIClient",
    "TransformersClient",
    "call_key",
    "make_client",
]
