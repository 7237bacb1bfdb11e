"""WildSci Space: the page layout and request handlers -- ask a (finetuned) model WildSci questions, side by side.

Run locally (offline, CPU, the embedded SmolLM2 for both sides unless told otherwise)::

    python space/app.py
    WILDSCI_SPACE_MODEL=runs/demo/grpo WILDSCI_SPACE_DATASET=runs/demo/dataset python space/app.py

The rest lives in sibling modules, imported with this folder on ``sys.path`` (as a Space runs ``app.py``):
``config`` (``WILDSCI_SPACE_*`` settings and limits), ``models`` (shared models, streamed generation),
``questions`` (the dataset split and typed questions), ``verdict`` (what the page shows).

Why it is built this way: one prompt format and one answer parser (``wildsci.prompts``, ``wildsci.answers``),
so the letter shown here is the letter the GRPO reward and the evaluation would have scored; every request
goes through ``demo.queue`` with a concurrency limit, and every user input has a limit; bad input gets one
line in the status box and a toast, never a traceback. Models load with ``trust_remote_code=False``; no
token is ever displayed (messages are scrubbed of secret values from the environment as a last guard).
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry from a demo that may run offline

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # imported by path (tests) rather than run as a script: find the siblings
    sys.path.insert(0, str(_HERE))
try:  # installed package, or the package uploaded next to app.py on a Space
    import wildsci  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(1, str(_HERE.parent / "src"))

import gradio as gr  # noqa: E402
from config import (  # noqa: E402
    ALL,
    HUB_DATASET,
    LOCAL_DEMO_DATASETS,
    MAX_TEMPERATURE,
    SpaceConfig,
    check_listen,
    check_number,
)
from models import device, get_model, stream_generate  # noqa: E402
from questions import Question, QuestionBank, parse_own_question  # noqa: E402
from verdict import esc, judge, render_question, render_verdict  # noqa: E402

from wildsci.answers import LETTERS  # noqa: E402
from wildsci.errors import UserError, first_line  # noqa: E402
from wildsci.redact import scrub_env as scrub  # noqa: E402


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
        # before the dataset or any weights: a model that cannot load is one line naming its variable
        for var, cm in (
            ("WILDSCI_SPACE_MODEL" if cfg.model else "WILDSCI_SPACE_BASE_MODEL", self.finetuned),
            ("WILDSCI_SPACE_BASE_MODEL", self.base),
        ):
            try:
                cm.check()
            except UserError as e:
                raise UserError(f"{var}={cm.ref}: {e}") from None
        self.bank: QuestionBank | None = None
        local = next((str(p) for p in LOCAL_DEMO_DATASETS if (p / "data").is_dir()), None)
        ref = cfg.dataset or local or HUB_DATASET
        try:
            self.bank = QuestionBank.load(ref, cfg.split)
        except UserError as e:
            self.notices.append(scrub(f"Dataset not available ({e}). You can still type your own question."))
        if cfg.preload:
            for cm in {id(self.finetuned): self.finetuned, id(self.base): self.base}.values():
                cm.load()
                if cm.note:
                    self.notices.append(cm.note)

    def answer(self, q: Question, compare: bool, max_new_tokens: Any, temperature: Any = 0.0) -> Iterator[tuple]:
        """Stream ``(ft_text, ft_result, ft_md, base_text, base_result, base_md, status)`` for one question."""
        cfg = self.cfg
        n = check_number(max_new_tokens, int, "max_new_tokens", 1, cfg.max_new_tokens_limit)
        temp = check_number(temperature, float, "temperature", 0.0, MAX_TEMPERATURE)
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
                res[tag] = {"model": ref, "finished": True, "error": f"generation failed: {scrub(value)}"}
        failed = list(dict.fromkeys(res[t]["model"] for t in res if res[t].get("error")))
        if failed:
            status = f"⚠️ generation failed for {', '.join(failed)}"
        else:
            status = f"✅ answered in {time.perf_counter() - t0:.1f} s on {device()}"
            if same:
                status += " · base and finetuned are the same model, so it ran once"
        yield frame(status)


def _error_frame(msg: str) -> tuple:
    msg = scrub(msg)
    gr.Warning(msg)
    return ("", {"error": msg}, "", "", {}, "", f"⚠️ {esc(msg)}")


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
            gr.Markdown(f"ℹ️ {esc(note)}", elem_classes=["notice"])

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

        def on_row(r, d, s):
            """A typed question number: show it, and make the picker show it too."""
            try:
                i = int(r)
            except (TypeError, ValueError):
                return "*Type a question number.*", gr.update()
            if bank is None or not 0 <= i < len(bank):
                return f"*No question #{i}{f' (0-{len(bank) - 1})' if bank else ''}.*", gr.update()
            return render_question(bank.question(i)), gr.update(
                choices=bank.choices(bank.rows(d, s), include=i), value=i
            )

        private = {"api_visibility": "private", "queue": False}
        disc.input(lambda d: on_filter(d), [disc], [sub, pick, row, view], **private)
        sub.input(on_filter, [disc, sub], [sub, pick, row, view], **private)
        pick.input(lambda r: r, [pick], [row], **private)
        row.change(on_row, [row, disc, sub], [view, pick], **private)
        # preprocess=False: the handlers check every value themselves and answer bad ones in one status line;
        # gradio's own checks (slider range, dropdown choices) print a traceback to the log per bad API call
        rnd.click(on_random, [disc, sub], [pick, row, view], api_name="random_question", queue=False, preprocess=False)
        compare.change(lambda c: gr.update(visible=bool(c)), [compare], [base_col], **private)
        limit = {
            "concurrency_limit": cfg.concurrency,
            "concurrency_id": "generate",
            "show_progress": "minimal",
            "preprocess": False,
        }
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
        check_listen(cfg.host, cfg.port)  # before any model or dataset loads
        demo = build_app(cfg)
    except UserError as e:
        print(f"wildsci space: error: {scrub(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while models download or load: stop quietly (serving handles its own)
        print("wildsci space: interrupted", file=sys.stderr)
        return 130
    st = demo.wildsci_state
    data = f"{st.bank.ref} ({st.bank.split}, {len(st.bank)} questions)" if st.bank else "none"
    print(f"wildsci space: finetuned={st.finetuned.ref} base={st.base.ref} dataset={data} device={device()}")
    for note in st.notices:
        print(f"wildsci space: note: {note}")
    print(f"wildsci space: serving on http://{cfg.host}:{cfg.port}", flush=True)
    try:
        launch(demo, cfg)
    except OSError as e:  # lost a race for the port after check_listen: still one line
        print(f"wildsci space: error: cannot listen on {cfg.host}:{cfg.port}: {first_line(e)}", file=sys.stderr)
        return 2
    if demo.is_running:  # Gradio's block_thread returns on Ctrl-C (it catches it) with the app still marked running
        print("wildsci space: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
