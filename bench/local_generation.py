"""Benchmark: the builder's local (transformers) backend on the embedded SmolLM2-135M, CPU -- what each lever buys.

The demo build spends almost all of its time in this backend. On the first 16 passages of the built-in corpus,
with the generator settings of ``recipes/data/demo.yaml`` (one batch of 16), it measures:

1. **question format**: the session-1 setting (10 options asked, no text patterns, long fields) vs the recipe's
   (4 options, ``text_patterns``, short fields): seconds and how many questions pass validation;
2. **shared prompt prefix**: the recipe's setting with the shared prefix (system prompt + worked example +
   instructions) run once per batch vs plain left padding; the answers must be identical;
3. **letter votes**: 8 constrained votes per valid question through one forward pass per distinct prompt vs
   grammar-constrained ``generate()`` per vote; the votes must be identical.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/local_generation.py            # writes bench/RESULTS.md
    HF_HUB_OFFLINE=1 .venv/bin/python bench/local_generation.py --passages 8 --no-write
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from _results import markdown_table, spread, start_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=16, help="built-in passages (one generation batch)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (min / median / max reported)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch bench/RESULTS.md")
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    args = ap.parse_args()
    if args.repeats < 1 or args.passages < 1:
        ap.error("--repeats and --passages must be >= 1")
    run = start_run(args.allow_dirty, write=not args.no_write)
    os.chdir(ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from wildsci.answers import LETTERS
    from wildsci.builder.chunk import read_and_chunk
    from wildsci.builder.config import BuildRecipe
    from wildsci.builder.generate import GenerateConfig, build_request_messages, question_schema, validate_question
    from wildsci.llm.backends import ChatRequest, TransformersClient, make_client
    from wildsci.prompts import build_messages
    from wildsci.recipes import load_recipe

    recipe = load_recipe("recipes/data/demo.yaml", BuildRecipe)
    chunks, _ = read_and_chunk(recipe.sources, recipe.chunking, tokenizer=recipe.generator.model, progress=False)
    chunks = chunks[: args.passages]
    backend = dataclasses.replace(recipe.generator, batch_size=len(chunks))
    session1 = dataclasses.replace(
        recipe.generate, num_options=10, min_options=4, text_patterns=False, max_option_chars=80,
        max_question_chars=300, max_rationale_chars=300,
    )  # fmt: skip

    def generate(gen: GenerateConfig, max_new_tokens: int, shared_prefix: bool) -> tuple[list[float], list, int]:
        """``--repeats`` timed runs of one batch (seeded sampling: every run gives the same answers)."""
        cfg = dataclasses.replace(backend, max_new_tokens=max_new_tokens)
        client = make_client(cfg, None)
        client._load()
        client._grammar(ChatRequest(messages=[], json_schema=question_schema(gen)))  # compile outside the timing
        TransformersClient.MIN_SHARED_PREFIX = 32 if shared_prefix else 10**9
        reqs = [ChatRequest(build_request_messages(c, gen), json_schema=question_schema(gen)) for c in chunks]
        dt = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = client.chat(reqs, desc="generate")
            dt.append(time.perf_counter() - t)
        valid = [q for r in res if r.text is not None and (q := validate_question(r.text, gen, r.finish_reason)[0])]
        client.close()
        return dt, res, len(valid)

    print(f"torch threads: {torch.get_num_threads()}; {len(chunks)} passages, batch {len(chunks)}", flush=True)
    rows = []
    t_old, _, v_old = generate(session1, 400, shared_prefix=False)
    rows.append(["10 options, no text patterns, long fields, plain padding (session 1)", spread(t_old, "{:.1f}"),
                 f"{v_old}/{len(chunks)}", "-"])  # fmt: skip
    t_plain, res_plain, v_plain = generate(recipe.generate, backend.max_new_tokens, shared_prefix=False)
    rows.append(["4 options + text_patterns + short fields, plain padding", spread(t_plain, "{:.1f}"),
                 f"{v_plain}/{len(chunks)}", "-"])  # fmt: skip
    t_pre, res_pre, v_pre = generate(recipe.generate, backend.max_new_tokens, shared_prefix=True)
    same = sum(a.text == b.text for a, b in zip(res_pre, res_plain, strict=True))
    rows.append(["same, shared prefix run once per batch (the recipe)", spread(t_pre, "{:.1f}"),
                 f"{v_pre}/{len(chunks)}", f"{same}/{len(chunks)}"])  # fmt: skip

    # votes on the valid questions (their own options: the vote prompt is the shared training/eval prompt)
    questions = [q for r in res_pre if (q := validate_question(r.text or "", recipe.generate, r.finish_reason)[0])]
    vote_cfg = dataclasses.replace(backend, batch_size=16)
    reqs = [
        ChatRequest(build_messages(q["question"], q["options"]), choices=list(LETTERS[: len(q["options"])]),
                    sample_index=k)
        for q in questions for k in range(recipe.vote.num_votes)
    ]  # fmt: skip
    timings: dict[str, list[float]] = {}
    answers = {}
    for name, fast in (("one forward pass per distinct prompt (the recipe)", True), ("generate() per vote", False)):
        client = make_client(vote_cfg, None)
        client._load()
        if not fast:
            client._letter_choice_ids = lambda req: None  # force the grammar-constrained generate() path
            client._grammar(reqs[0])
        timings[name] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            answers[name] = [r.text for r in client.chat(reqs, desc="votes")]
            timings[name].append(time.perf_counter() - t)
        client.close()
    fast_name, slow_name = list(timings)
    same_votes = sum(a == b for a, b in zip(answers[fast_name], answers[slow_name], strict=True))
    vote_rows = [
        [slow_name, len(reqs), spread(timings[slow_name], "{:.1f}"), "-"],
        [fast_name, len(reqs), spread(timings[fast_name], "{:.1f}"), f"{same_votes}/{len(reqs)}"],
    ]
    secs = "seconds (min / median / max)"
    gen_table = markdown_table(["question generation", secs, "valid questions", "identical to plain"], rows)
    vote_table = markdown_table(["letter votes", "votes", secs, "identical to generate()"], vote_rows)
    print("\n" + gen_table + "\n\n" + vote_table)
    if not args.no_write:
        body = (
            f"Embedded SmolLM2-135M-Instruct (float32), torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"the first {len(chunks)} passages of the built-in corpus in one batch; generator settings of "
            f"`recipes/data/demo.yaml` (T={backend.temperature}, top-p {backend.top_p}, "
            f"max {backend.max_new_tokens} new tokens, structured={backend.structured}), no call cache; "
            f"{args.repeats} timed runs per row.\n\n"
            f"{gen_table}\n\n{vote_table}\n\n"
            "Valid = passes `validate_question` (the generate stage's own check). Asking a 135M model for 4 options "
            "with grammar-held text (question ends with '?', no bare-letter options) and short fields gives more "
            "valid questions in less time; the options stage brings each to 10. The shared prefix (system prompt, "
            "worked example, instructions: most of each prompt) is computed once per batch instead of once per row. "
            "Votes: the 8 voters of a question send one prompt; one forward pass gives the next-token distribution "
            "that each vote samples (seeded) over the letters.\n\n"
            f"Load: {run.load_note(own_threads=torch.get_num_threads())}"
        )
        run.write("local_generation", "Builder: local generation on CPU (embedded SmolLM2-135M)", body)
        print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
