"""The local backend: a chat model run in-process by ``transformers``, its output held to JSON by xgrammar.

Determinism (why a resumed build equals an uninterrupted one): every row of a batch is sampled with its own
``torch.Generator`` seeded from the request's cache key (:class:`SeededSampler`), so the tokens a request gets do
not depend on which other requests share its batch. Structured output: an xgrammar grammar compiled from the
JSON schema (or from the list of choices) masks the logits at every step, so even a 135M model emits parseable
JSON. torch, transformers and xgrammar are imported lazily: a fully cached rerun and the remote backend never
pay for them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from wildsci.errors import UserError, first_line
from wildsci.llm.client import CachedClient, ChatRequest, ChatResult, request_seed
from wildsci.models import check_model

if TYPE_CHECKING:
    from wildsci.llm.backends import BackendConfig
    from wildsci.llm.cache import CallCache


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


class TransformersClient(CachedClient):
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

        # the same pre-load check as GRPO, eval and the Space (preflight ran it already; a direct caller gets it here)
        path = check_model(self.config.model, device=self.config.device, chat_template=True)
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
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
            model = model.to(device).eval()
        except (OSError, RuntimeError, ValueError) as e:  # e.g. truncated weights, out of memory
            raise UserError(f"{self.config.model}: the model cannot be loaded: {first_line(e)}") from None
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
            # transformers 5.17 (the pinned set) names the KV cache past_key_values (5.24 renamed it cache)
            cache = self._model(input_ids=input_ids[:1, :shared], use_cache=True).past_key_values
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
                    past_key_values=prefix_cache,
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
