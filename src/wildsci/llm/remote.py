"""The remote backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang, TGI, HF router).

The per-request seed derived from the cache key goes out as the API's ``seed`` field (honoured by vLLM, SGLang
and TGI), so a resumed build asks exactly what an uninterrupted one asked. Structured output is requested as
``response_format={"type": "json_schema", ...}`` (portable) or, with ``guided_decoding``, in vLLM's own
``structured_outputs`` / legacy ``guided_json`` fields (see docs/build.md for which vLLM takes which).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from openai import DefaultHttpxClient, OpenAI
from openai._constants import DEFAULT_CONNECTION_LIMITS

from wildsci.errors import UserError
from wildsci.llm.client import CachedClient, ChatRequest, ChatResult, choice_schema, request_seed

if TYPE_CHECKING:
    from wildsci.llm.backends import BackendConfig
    from wildsci.llm.cache import CallCache


class OpenAIClient(CachedClient):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint, ``concurrency`` requests in flight.

    Retries with exponential backoff (honouring ``Retry-After``) are the ``openai`` client's own
    (``max_retries``): timeouts, connection errors, 408/409/429 and 5xx. Whatever still fails becomes a
    ``ChatResult`` with an error, counted by the caller as a drop.
    """

    def __init__(self, config: BackendConfig, cache: CallCache | None):
        super().__init__(config, cache)
        if not config.base_url:
            raise UserError(
                "backend openai needs base_url (e.g. http://localhost:8000/v1 for `vllm serve`, "
                "https://router.huggingface.co/v1 for HF Inference Providers) -- add it to the recipe"
            )
        api_key = "EMPTY"
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env) or ""
            if not api_key:
                raise UserError(
                    f"api_key_env is {config.api_key_env!r} but that environment variable is not set -- "
                    f"export {config.api_key_env}=... (the key is read from the environment only)"
                )
        # The SDK's default pool (100 keep-alive connections) covers any sane concurrency; a bigger one is sized here.
        http_client = None
        if config.concurrency > 100:
            limits = type(DEFAULT_CONNECTION_LIMITS)(
                max_connections=config.concurrency * 2, max_keepalive_connections=config.concurrency
            )
            http_client = DefaultHttpxClient(limits=limits)
        self._client = OpenAI(
            base_url=config.base_url,
            api_key=api_key,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
            http_client=http_client,
        )

    def _kwargs(self, req: ChatRequest, seed: int) -> dict[str, Any]:
        cfg = self.config
        kw: dict[str, Any] = {
            "model": cfg.model,
            "messages": req.messages,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_new_tokens,
            "seed": seed,
        }
        if not cfg.structured or (req.json_schema is None and not req.choices):
            return kw
        if cfg.guided_decoding == "vllm":
            so = {"choice": list(req.choices)} if req.choices else {"json": req.json_schema}
            kw["extra_body"] = {"structured_outputs": so}
        elif cfg.guided_decoding == "vllm_legacy":
            kw["extra_body"] = (
                {"guided_choice": list(req.choices)} if req.choices else {"guided_json": req.json_schema}
            )
        else:
            schema = choice_schema(req.choices) if req.choices else req.json_schema
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "choice" if req.choices else "answer", "schema": schema, "strict": True},
            }
        return kw

    def _one(self, key: str, req: ChatRequest) -> ChatResult:
        kw = self._kwargs(req, request_seed(key))
        body = {**{k: v for k, v in kw.items() if k != "extra_body"}, **kw.get("extra_body", {})}
        try:
            # ``client.post`` is the SDK's documented route for raw endpoints: the same auth, timeouts, retries and
            # error types as ``chat.completions.create``, without re-validating our already-plain JSON parameters
            # through the typed-dict transformer (that step alone halved throughput in bench/synthesis_throughput).
            data = self._client.post("/chat/completions", body=body, cast_to=dict)
        except ValueError as e:  # json.JSONDecodeError included: a 200 whose JSON body does not parse
            return ChatResult(None, error=f"server returned a non-JSON body ({type(e).__name__})")
        except Exception as e:  # noqa: BLE001 - every failure becomes a counted drop, never a crash
            first = str(e).splitlines()[0][:200] if str(e) else ""
            return ChatResult(None, error=f"{type(e).__name__}: {first}")
        if not isinstance(data, dict):
            return ChatResult(None, error=f"server returned a non-JSON body: {str(data)[:80]!r}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ChatResult(None, error="server returned no choices")
        message = choices[0].get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            return ChatResult(
                None, error=f"server returned no content (finish_reason={choices[0].get('finish_reason')})"
            )
        return ChatResult(text, finish_reason=choices[0].get("finish_reason"))

    def _run(self, jobs: list[tuple[str, ChatRequest]]) -> Iterator[tuple[str, ChatResult]]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="wildsci-llm") as pool:
            futures = {pool.submit(self._one, k, req): k for k, req in jobs}
            try:
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
            finally:
                for fut in futures:
                    fut.cancel()

    def close(self) -> None:
        self._client.close()
