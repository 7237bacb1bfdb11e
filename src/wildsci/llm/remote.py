"""The remote backend: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang, TGI, HF router).

The per-request seed derived from the cache key goes out as the API's ``seed`` field (honoured by vLLM, SGLang
and TGI), so a resumed build asks exactly what an uninterrupted one asked. Structured output is requested as
``response_format={"type": "json_schema", ...}`` (portable) or, with ``guided_decoding``, in vLLM's own
``structured_outputs`` / legacy ``guided_json`` fields (see docs/build.md for which vLLM takes which).

Failures are the user's to see, as they happen: every failed attempt prints one line (endpoint, error, attempt k of
n, the wait before the next), retries are this module's own (the SDK's are silent), and after
:data:`STOP_AFTER_FAILURES` calls in a row failed the rest of the batch is not sent -- a dead server ends the stage
in seconds instead of paying timeouts for every call. Workers are daemon threads that stop retrying when the
caller goes away, so Ctrl-C ends the process at once; every answer received is already in the cache.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
from openai import DefaultHttpxClient, OpenAI
from openai._constants import DEFAULT_CONNECTION_LIMITS
from tqdm.auto import tqdm

from wildsci.errors import UserError
from wildsci.llm.client import CachedClient, ChatRequest, ChatResult, choice_schema, normalize_choice, request_seed
from wildsci.redact import scrub

if TYPE_CHECKING:
    from wildsci.llm.backends import BackendConfig
    from wildsci.llm.cache import CallCache

#: failed calls in a row (each after its retries) after which the rest of a batch is not sent
STOP_AFTER_FAILURES = 8
#: constrained replies that are not JSON, with none that is, after which the server is taken to ignore the constraint
IGNORED_CONSTRAINT_AFTER = 4
RETRY_STATUS = (408, 409, 429)
#: seconds without any reply after which a stage says so (once), when an attempt's own timeout is longer
FIRST_REPLY_NOTICE_S = 10.0

GUIDED_HELP = (
    "use guided_decoding: vllm or response_format on vLLM >= 0.10.2, vllm_legacy or response_format below it "
    "(vLLM >= 0.12 ignores vllm_legacy, vLLM < 0.10.2 ignores vllm), or structured: false"
)


def _retry_after(headers: Any) -> float | None:
    """Seconds a server asked us to wait (``retry-after-ms`` or a numeric ``retry-after``), else None."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return float(headers.get(name, "")) * scale
        except ValueError:
            continue
    return None


def warn(msg: str) -> None:
    """One line on stderr that does not break the progress bar."""
    tqdm.write(msg, file=sys.stderr)


class OpenAIClient(CachedClient):
    """Any OpenAI-compatible ``/v1/chat/completions`` endpoint, ``concurrency`` requests in flight.

    Retries (``max_retries``, exponential backoff honouring ``Retry-After``) on timeouts, connection errors,
    408/409/429 and 5xx; whatever still fails becomes a ``ChatResult`` whose ``error`` names the cause and the
    endpoint (``HTTP 500 from http://...``), counted by the caller as a drop and by :attr:`failures`.
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
        self._secrets = (api_key,) if api_key != "EMPTY" else ()
        self.url = config.base_url.rstrip("/")
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
            max_retries=0,  # retried here, where each attempt can be shown and Ctrl-C can stop the waiting
            http_client=http_client,
        )
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._stop_cause: str | None = None
        self._constrained = {"ok": 0, "bad": 0}

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

    def _classify(self, e: Exception) -> tuple[str, str, bool, float | None]:
        """``(cause, detail, retryable, retry_after)`` of a failed attempt; ``cause`` is what failures count."""
        # a server may echo the request's key in an error body: it never reaches a log from here
        detail = scrub(str(e).splitlines()[0][:200] if str(e) else type(e).__name__, self._secrets)
        if isinstance(e, openai.APITimeoutError):
            return f"no answer within {self.config.timeout_s:g} s from {self.url}", "timed out", True, None
        if isinstance(e, openai.APIConnectionError):
            return f"no connection to {self.url}", detail, True, None
        if isinstance(e, openai.APIStatusError):
            status = e.status_code
            after = _retry_after(e.response.headers)
            return f"HTTP {status} from {self.url}", detail, status in RETRY_STATUS or status >= 500, after
        if isinstance(e, ValueError):  # json.JSONDecodeError included: a 200 whose body does not parse
            return f"a non-JSON body from {self.url}", type(e).__name__, False, None
        return f"{type(e).__name__} from {self.url}", detail, False, None

    def _one(self, key: str, req: ChatRequest, stop: threading.Event) -> ChatResult:
        kw = self._kwargs(req, request_seed(key))
        body = {**{k: v for k, v in kw.items() if k != "extra_body"}, **kw.get("extra_body", {})}
        attempts = self.config.max_retries + 1
        cause = "interrupted"
        for attempt in range(1, attempts + 1):
            if stop.is_set() or self._stop_cause:
                return ChatResult(None, error=self._stop_cause or cause)
            try:
                # ``client.post`` is the SDK's documented route for raw endpoints: the same auth, timeouts and error
                # types as ``chat.completions.create``, without re-validating our already-plain JSON parameters
                # through the typed-dict transformer (that alone halved throughput in bench/synthesis_throughput).
                data = self._client.post("/chat/completions", body=body, cast_to=dict)
            except Exception as e:  # noqa: BLE001 - every failure becomes a counted drop, never a crash
                cause, detail, retryable, after = self._classify(e)
                if retryable and attempt < attempts and not stop.is_set():
                    wait = min(after if after is not None else 0.5 * 2 ** (attempt - 1), 30.0)
                    where = f"{self.config.model}: {cause}: {detail} (attempt {attempt} of {attempts})"
                    warn(f"{where} -- retry in {wait:g} s")
                    stop.wait(wait)
                    continue
                warn(f"{self.config.model}: {cause}: {detail} (attempt {attempt} of {attempts}) -- call dropped")
                break
            result = self._reply(data, req)
            if result.text is not None:
                with self._lock:
                    self._in_a_row = 0
                return result
            cause = f"{result.error} from {self.url}"
            warn(f"{self.config.model}: {cause} -- call dropped")
            break
        with self._lock:
            self._in_a_row += 1
            if self._in_a_row >= STOP_AFTER_FAILURES and not self._stop_cause and not stop.is_set():
                self._stop_cause = cause
                warn(
                    f"{self.config.model}: {STOP_AFTER_FAILURES} calls in a row failed ({cause}) -- the rest of this "
                    "batch is not sent; a rerun of the same command resumes from the cache"
                )
        return ChatResult(None, error=cause)

    def _reply(self, data: Any, req: ChatRequest) -> ChatResult:
        """The completion's text, or why there is none; checks that a requested constraint was honoured."""
        if not isinstance(data, dict):
            return ChatResult(None, error="a non-JSON body")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ChatResult(None, error="a reply with no choices")
        message = choices[0].get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        finish = choices[0].get("finish_reason")
        if not isinstance(text, str):
            return ChatResult(None, error=f"a reply with no content (finish_reason={finish})")
        if self.config.structured and (req.json_schema is not None or req.choices) and finish != "length":
            self._check_constraint(req, text)
        return ChatResult(text, finish_reason=finish)

    def _check_constraint(self, req: ChatRequest, text: str) -> None:
        """A server that honours a JSON schema / choice constraint never returns anything else: one that does
        ignored it (an old vLLM given ``structured_outputs``, a new one given ``guided_json``), with HTTP 200."""
        if req.choices:
            ok = normalize_choice(text, req.choices) in req.choices
        else:
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
        with self._lock:
            self._constrained["ok" if ok else "bad"] += 1
            ignored = not self._constrained["ok"] and self._constrained["bad"] >= IGNORED_CONSTRAINT_AFTER
            if ignored and not self.fatal:
                self.fatal = (
                    f"{self.url} ignored the structured-output request (guided_decoding: "
                    f"{self.config.guided_decoding}): its first {self._constrained['bad']} constrained replies are "
                    f"not {'one of the choices' if req.choices else 'JSON'} -- {GUIDED_HELP}"
                )
                self._stop_cause = "not sent: the server ignores the structured-output request"

    def _run(self, jobs: list[tuple[str, ChatRequest]]) -> Iterator[tuple[str, ChatResult]]:
        self._in_a_row, self._stop_cause = 0, None  # a stage may reach a server that has come back
        todo: queue.SimpleQueue[tuple[str, ChatRequest]] = queue.SimpleQueue()
        done: queue.SimpleQueue[tuple[str, ChatResult]] = queue.SimpleQueue()
        for job in jobs:
            todo.put(job)
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    k, req = todo.get_nowait()
                except queue.Empty:
                    return
                done.put((k, self._one(k, req, stop)))

        # daemon threads: an interrupted build exits without waiting for requests in flight (they are not cached)
        for i in range(min(self.config.concurrency, len(jobs))):
            threading.Thread(target=work, name=f"wildsci-llm-{i}", daemon=True).start()
        # a timeout shorter than the notice reports itself first (the attempt's own line)
        started, answered = time.monotonic(), self.config.timeout_s <= FIRST_REPLY_NOTICE_S
        try:
            for _ in range(len(jobs)):
                while True:
                    try:
                        yield done.get(timeout=0.5)  # a bounded wait keeps Ctrl-C prompt
                        answered = True
                        break
                    except queue.Empty:
                        if not answered and time.monotonic() - started >= FIRST_REPLY_NOTICE_S:
                            answered = True  # said once per stage
                            self._warn_silence(time.monotonic() - started, len(jobs))
                        continue
        finally:
            stop.set()  # Ctrl-C or an early exit: no new request, no retry

    def _warn_silence(self, waited: float, n: int) -> None:
        """Say once per stage that the server has not answered yet: a mute server would otherwise show nothing
        for ``timeout_s`` x attempts (8 min at the defaults) before the first failure line."""
        attempts, in_flight = self.config.max_retries + 1, min(n, self.config.concurrency)
        warn(
            f"{self.config.model}: no reply yet from {self.url} after {waited:.0f} s ({in_flight} request(s) in "
            f"flight; each waits up to timeout_s {self.config.timeout_s:g} s, {attempts} attempt(s)) -- "
            "is the server up and serving this model? Ctrl-C stops; answered calls stay cached"
        )

    def close(self) -> None:
        self._client.close()
