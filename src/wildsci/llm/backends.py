"""Chat backends for the dataset builder: local transformers and any OpenAI-compatible endpoint.

Both backends share one contract (:class:`LLMClient`): ``chat(requests) -> results`` in the same order,
every call cached on disk (:mod:`wildsci.llm.cache`), a failed call returned as
``ChatResult(text=None, error=...)`` instead of an exception, a tqdm bar with rate and ETA.

Determinism (why a resumed build equals an uninterrupted one): each request is sampled from its own seed,
derived from its cache key, never from global RNG state. The transformers backend samples every row of a
batch with its own ``torch.Generator`` (see :class:`SeededSampler`), so the tokens a request gets do not
depend on which other requests share its batch; the OpenAI backend passes the same per-request seed as the
API's ``seed`` field (honoured by vLLM, SGLang and TGI).

Structured output:

- transformers: an xgrammar grammar compiled from the JSON schema (or from the list of choices) masks the
  logits at every step, so even a 135M model emits parseable JSON;
- openai: ``response_format={"type": "json_schema", ...}`` (the portable OpenAI form, accepted by vLLM,
  SGLang, TGI, ``transformers serve`` and HF Inference Providers); choices are sent as a schema with an
  ``enum``. ``guided_decoding: vllm`` sends vLLM's ``extra_body={"structured_outputs": {"json"|"choice": ...}}``
  instead (vLLM >= 0.10; ``vllm_legacy`` sends ``guided_json`` / ``guided_choice`` for older servers).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tqdm.auto import tqdm

from wildsci.errors import UserError

if TYPE_CHECKING:
    from wildsci.llm.cache import CallCache

BACKENDS = ("transformers", "openai")
GUIDED_MODES = ("response_format", "vllm", "vllm_legacy")
DTYPES = ("auto", "float32", "bfloat16", "float16")


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
        for name in ("max_new_tokens", "concurrency", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries must be >= 0 and timeout_s > 0")

    def sampling(self) -> dict[str, Any]:
        """The parameters that change a call's answer (part of the cache key)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "structured": self.structured,
        }

    def describe(self) -> str:
        where = f" at {self.base_url}" if self.backend == "openai" else ""
        return f"{self.model} ({self.backend}{where}, T={self.temperature}, top_p={self.top_p})"


@dataclass
class ChatRequest:
    """One chat call. ``sample_index`` makes repeated samples of the same prompt distinct cache entries."""

    messages: list[dict[str, str]]
    json_schema: dict | None = None
    choices: list[str] | None = None
    sample_index: int = 0


@dataclass
class ChatResult:
    """``text`` is None when the call failed; ``finish_reason`` is ``length`` when it hit max_new_tokens."""

    text: str | None
    error: str | None = None
    cached: bool = False
    finish_reason: str | None = None


class LLMClient(Protocol):
    config: BackendConfig

    def chat(self, requests: list[ChatRequest], desc: str = "") -> list[ChatResult]: ...


def request_seed(key: str) -> int:
    """A 31-bit seed from a cache key (31 bits: every server accepts it)."""
    return int(key[:8], 16) & 0x7FFFFFFF


def choice_schema(choices: list[str]) -> dict:
    """The JSON schema used to ask a server for one of ``choices`` when it has no native choice constraint."""
    return {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": list(choices)}},
        "required": ["choice"],
        "additionalProperties": False,
    }


def normalize_choice(text: str, choices: list[str]) -> str:
    """Map a constrained answer back to the exact choice string; unknown answers are returned stripped.

    Accepts the bare choice, a JSON string (``"Neuroscience"``) or ``{"choice": ...}``, case-insensitively.
    """
    raw = text.strip()
    candidates = [raw]
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("choice"), str):
            candidates.insert(0, obj["choice"])
        elif isinstance(obj, str):
            candidates.insert(0, obj)
    except (json.JSONDecodeError, ValueError):
        pass
    lower = {c.lower(): c for c in choices}
    for cand in candidates:
        c = cand.strip().strip(".").strip()
        if c in choices:
            return c
        if c.lower() in lower:
            return lower[c.lower()]
    return raw


# ------------------------------------------------------------------------------------------- base client
class _CachedClient:
    """Cache lookup, de-duplication, progress bar and result assembly; subclasses only run the misses."""

    def __init__(self, config: BackendConfig, cache: CallCache | None):
        self.config = config
        self.cache = cache
        self.stats = cache.stats if cache is not None else {"made": 0, "cached": 0, "failed": 0}

    def key(self, req: ChatRequest) -> str:
        from wildsci.llm.cache import call_key

        return call_key(
            self.config.backend,
            self.config.model,
            req.messages,
            self.config.sampling(),
            req.json_schema,
            list(req.choices) if req.choices is not None else None,
            req.sample_index,
        )

    def chat(self, requests: list[ChatRequest], desc: str = "") -> list[ChatResult]:
        keys = [self.key(r) for r in requests]
        hits = self.cache.get_entries(keys) if self.cache is not None else {}
        results: list[ChatResult | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in hits:
                text, finish = hits[k]
                results[i] = self._finish(requests[i], text, cached=True, finish_reason=finish)
            else:
                pending.setdefault(k, []).append(i)
        n_cached = len(requests) - sum(len(v) for v in pending.values())
        self.stats["cached"] += n_cached
        if pending:
            jobs = [(k, requests[idx[0]]) for k, idx in pending.items()]
            label = desc or "llm calls"
            with tqdm(total=len(jobs), desc=f"{label} ({n_cached} cached)", unit="call", dynamic_ncols=True) as bar:
                for k, res in self._run(jobs):
                    self.stats["made"] += 1
                    if res.text is None:
                        self.stats["failed"] += 1
                    elif self.cache is not None:
                        self.cache.put(k, res.text, self.config.model, res.finish_reason)
                    for i in pending[k]:
                        results[i] = (
                            self._finish(requests[i], res.text, finish_reason=res.finish_reason)
                            if res.text is not None
                            else res
                        )
                    bar.update(1)
        return [r if r is not None else ChatResult(None, error="internal: no result") for r in results]

    @staticmethod
    def _finish(req: ChatRequest, text: str, cached: bool = False, finish_reason: str | None = None) -> ChatResult:
        if req.choices:
            text = normalize_choice(text, req.choices)
        return ChatResult(text=text, cached=cached, finish_reason=finish_reason)

    def _run(self, jobs: list[tuple[str, ChatRequest]]) -> Iterator[tuple[str, ChatResult]]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


# --------------------------------------------------------------------------------------- transformers
class SeededSampler:
    """Logits processor that samples each batch row from its own ``torch.Generator``.

    It turns the row's logits into a one-hot on the sampled token, so ``generate(do_sample=False)`` picks
    exactly that token. Why not ``do_sample=True``: transformers samples the whole batch from the global RNG,
    so a request's tokens would depend on its batch neighbours and a resumed run (whose batches hold only
    the missing calls) would not reproduce an uninterrupted one.
    """

    TOP_K_FIRST = 256

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float().cpu() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            # The nucleus almost always lies in the top few hundred tokens: sorting those instead of the whole
            # vocabulary (49k-152k) gives the same nucleus at a fraction of the cost; fall back when it does not.
            k = min(self.TOP_K_FIRST, probs.shape[-1])
            sorted_p, order = probs.topk(k, dim=-1)
            if bool((sorted_p.sum(-1) < self.top_p).any()):
                sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keep the smallest prefix reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        out = torch.full_like(scores, float("-inf"))
        for i, gen in enumerate(self.generators):
            row = probs[i]
            if not torch.isfinite(row).all() or row.sum() <= 0:
                tok = int(torch.argmax(scores[i]))
            else:
                tok = int(torch.multinomial(row / row.sum(), 1, generator=gen))
            out[i, tok] = 0.0
        return out


class TransformersClient(_CachedClient):
    """A local model through ``transformers``: chat template, left padding, batches, xgrammar constraints."""

    def __init__(self, config: BackendConfig, cache: CallCache | None):
        super().__init__(config, cache)
        self._model = self._tok = None
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        self._choice_ids: dict[tuple[str, ...], list[int] | None] = {}
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from wildsci.models import resolve_model

        path = resolve_model(self.config.model)
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.config.dtype
        if dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, dtype)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if not tok.chat_template:
            raise UserError(
                f"{self.config.model}: the tokenizer has no chat template -- use an instruct/chat model here"
            )
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False).to(device).eval()
        eos = model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            stop.add(tok.eos_token_id)
        self._stop_ids = sorted(stop)
        self._device = device
        self._max_positions = getattr(model.config, "max_position_embeddings", None)
        self._tok, self._model = tok, model

    def _grammar(self, req: ChatRequest):
        """The compiled xgrammar grammar for a request's schema/choices (cached per distinct constraint)."""
        if not self.config.structured or (req.json_schema is None and not req.choices):
            return None, ""
        gkey = json.dumps({"s": req.json_schema, "c": req.choices}, sort_keys=True)
        if gkey not in self._grammars:
            import xgrammar as xgr

            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self._tok, vocab_size=self._model.config.vocab_size, stop_token_ids=self._stop_ids
                )
                self._compiler = xgr.GrammarCompiler(info)
            if req.choices:
                ebnf = "root ::= " + " | ".join(json.dumps(c) for c in req.choices)
                self._grammars[gkey] = self._compiler.compile_grammar(ebnf)
            else:
                self._grammars[gkey] = self._compiler.compile_json_schema(
                    json.dumps(req.json_schema), any_whitespace=False
                )
        return self._grammars[gkey], gkey

    def _run(self, jobs: list[tuple[str, ChatRequest]]) -> Iterator[tuple[str, ChatResult]]:
        with self._lock:
            self._load()
            tok = self._tok
            prompts = [
                tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True) for _, req in jobs
            ]
            lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
            letter_jobs = [i for i, (_, req) in enumerate(jobs) if self._letter_choice_ids(req) is not None]
            if letter_jobs:
                yield from self._choose_letters(jobs, prompts, lengths, letter_jobs)
            done = set(letter_jobs)
            groups: dict[str, list[int]] = {}
            grammars = {}
            for i, (_, req) in enumerate(jobs):
                if i in done:
                    continue
                g, gkey = self._grammar(req)
                grammars[gkey] = g
                groups.setdefault(gkey, []).append(i)
            for gkey, idx in groups.items():
                # longest first: the slowest batches run while the ETA is still honest; similar lengths pad less
                idx.sort(key=lambda i: (-lengths[i], jobs[i][0]))
                for s in range(0, len(idx), self.config.batch_size):
                    batch = idx[s : s + self.config.batch_size]
                    too_long = [i for i in batch if self._too_long(lengths[i])]
                    for i in too_long:
                        yield jobs[i][0], self._too_long_result(lengths[i])
                    batch = [i for i in batch if i not in too_long]
                    if batch:
                        texts = self._generate(
                            [prompts[i] for i in batch], [jobs[i][0] for i in batch], grammars[gkey]
                        )
                        for i, res in zip(batch, texts, strict=True):
                            yield jobs[i][0], res

    def _letter_choice_ids(self, req: ChatRequest) -> list[int] | None:
        """Token ids of ``req.choices`` when the one-forward-pass path applies to it, else None.

        It applies to a constrained choice among single-character options that are each one token (the voters'
        letters A-J): constrained decoding can then emit nothing but one of those tokens followed by end of text.
        """
        if not self.config.structured or not req.choices or any(len(c) != 1 for c in req.choices):
            return None
        key = tuple(req.choices)
        if key not in self._choice_ids:  # one tokenization per distinct choice list, not per vote
            ids = [self._tok.encode(c, add_special_tokens=False) for c in req.choices]
            single = all(len(t) == 1 for t in ids) and len({t[0] for t in ids}) == len(ids)
            self._choice_ids[key] = [t[0] for t in ids] if single else None
        return self._choice_ids[key]

    def _choose_letters(
        self, jobs: list[tuple[str, ChatRequest]], prompts: list[str], lengths: list[int], idx: list[int]
    ) -> Iterator[tuple[str, ChatResult]]:
        """Answer single-letter choices with one forward pass per *distinct* prompt.

        Why: WildSci's 8 voters send the same prompt 8 times (distinct ``sample_index``); generate() would run
        the full prompt 8 times for what is one next-token distribution. Each request is still sampled with its
        own seed through :class:`SeededSampler` over the logits masked to the choices -- the same token the
        grammar-constrained generate() path picks -- so results do not depend on this shortcut.
        """
        import torch

        by_prompt: dict[str, list[int]] = {}
        for i in idx:
            by_prompt.setdefault(prompts[i], []).append(i)
        order = sorted(by_prompt, key=lambda p: -lengths[by_prompt[p][0]])
        for s in range(0, len(order), self.config.batch_size):
            batch = order[s : s + self.config.batch_size]
            too_long = [p for p in batch if self._too_long(lengths[by_prompt[p][0]])]
            for p in too_long:
                for i in by_prompt[p]:
                    yield jobs[i][0], self._too_long_result(lengths[i])
            batch = [p for p in batch if p not in too_long]
            if not batch:
                continue
            enc = self._tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
            try:
                with torch.inference_mode():
                    mask = enc["attention_mask"]
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: what generate() passes too
                    logits = self._model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1, :]
                    logits = logits.float().cpu()
            except (RuntimeError, ValueError) as e:
                msg = f"forward failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                for p in batch:
                    for i in by_prompt[p]:
                        yield jobs[i][0], ChatResult(None, error=msg)
                continue
            for row, p in zip(logits, batch, strict=True):
                for i in by_prompt[p]:
                    key, req = jobs[i]
                    ids = self._letter_choice_ids(req)
                    masked = torch.full_like(row, float("-inf"))
                    masked[ids] = row[ids]
                    if self.config.temperature > 0:
                        sampler = SeededSampler([request_seed(key)], self.config.temperature, self.config.top_p)
                        tok_id = int(torch.argmax(sampler(None, masked[None])[0]))
                    else:
                        tok_id = int(torch.argmax(masked))
                    yield key, ChatResult(req.choices[ids.index(tok_id)], finish_reason="stop")

    def close(self) -> None:
        """Drop the model and grammars (the pipeline closes its clients when a build ends)."""
        with self._lock:
            self._model = self._tok = self._compiler = None
            self._grammars.clear()
            self._choice_ids.clear()

    def _too_long_result(self, n: int) -> ChatResult:
        return ChatResult(
            None,
            error=f"prompt has {n} tokens; with max_new_tokens={self.config.max_new_tokens} it exceeds the "
            f"model's {self._max_positions} positions -- use shorter chunks",
        )

    def _too_long(self, n: int) -> bool:
        return self._max_positions is not None and n + self.config.max_new_tokens > self._max_positions

    #: shortest common token prefix worth computing once per batch (below it the saving is noise)
    MIN_SHARED_PREFIX = 32

    def _encode_with_shared_prefix(self, prompts: list[str]) -> tuple[dict, Any]:
        """Token ids for ``generate()``, plus a KV cache of the prefix every prompt of the batch shares.

        Why: the generator's prompts repeat the same system prompt, worked example and instructions (~80 % of their
        tokens); the prefix is run once and copied across the batch instead of once per row. Layout per row:
        ``[shared prefix][left pads][own suffix]``, pads masked out; ``generate()`` derives positions from the
        mask, so each row sees exactly its own prompt at positions 0..n-1, as with plain left padding.
        Returns ``(inputs, None)`` (plain left padding) when the batch shares no prefix worth caching.
        """
        import torch

        tok = self._tok
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        n = min(len(x) for x in ids) - 1  # every row keeps at least one token of its own to prefill
        shared = 0
        while shared < n and all(x[shared] == ids[0][shared] for x in ids[1:]):
            shared += 1
        if len(prompts) < 2 or shared < self.MIN_SHARED_PREFIX:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
            return dict(enc), None
        width = max(len(x) for x in ids) - shared
        pad = tok.pad_token_id
        rows = [x[:shared] + [pad] * (width - (len(x) - shared)) + x[shared:] for x in ids]
        mask = [[1] * shared + [0] * (width - (len(x) - shared)) + [1] * (len(x) - shared) for x in ids]
        input_ids = torch.tensor(rows, device=self._device)
        with torch.inference_mode():
            cache = self._model(input_ids=input_ids[:1, :shared], use_cache=True).cache
        cache.batch_repeat_interleave(len(prompts))
        return {"input_ids": input_ids, "attention_mask": torch.tensor(mask, device=self._device)}, cache

    def _generate(self, prompts: list[str], keys: list[str], grammar) -> list[ChatResult]:
        import torch
        from transformers import LogitsProcessorList

        cfg, tok = self.config, self._tok
        procs = []
        if grammar is not None:
            import xgrammar as xgr

            procs.append(xgr.contrib.hf.LogitsProcessor(grammar))  # one per generate() call (it is stateful)
        if cfg.temperature > 0:
            procs.append(SeededSampler([request_seed(k) for k in keys], cfg.temperature, cfg.top_p))
        try:
            enc, prefix_cache = self._encode_with_shared_prefix(prompts)
            with torch.inference_mode():
                out = self._model.generate(
                    **enc,
                    cache=prefix_cache,
                    max_new_tokens=cfg.max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    logits_processor=LogitsProcessorList(procs),
                    eos_token_id=self._stop_ids,
                    pad_token_id=tok.pad_token_id,
                )
        except (RuntimeError, ValueError, AssertionError) as e:  # e.g. OOM, grammar rejected a token
            msg = f"generate failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            return [ChatResult(None, error=msg) for _ in prompts]
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        results = []
        stop = set(self._stop_ids)
        for row in new.tolist():
            finished = any(t in stop for t in row)
            if finished:
                row = row[: next(j for j, t in enumerate(row) if t in stop)]
            text = tok.decode(row, skip_special_tokens=True)
            results.append(ChatResult(text, finish_reason="stop" if finished else "length"))
        return results


# --------------------------------------------------------------------------------------------- openai
class OpenAIClient(_CachedClient):
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
        from openai import OpenAI

        # The SDK's default pool (100 keep-alive connections) covers any sane concurrency; a bigger one is sized here.
        http_client = None
        if config.concurrency > 100:
            from openai import DefaultHttpxClient
            from openai._constants import DEFAULT_CONNECTION_LIMITS

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
