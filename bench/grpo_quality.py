"""Does the CPU GRPO recipe make the embedded SmolLM2-135M-Instruct better at answering in a readable format?

    python bench/grpo_quality.py [--data auto|mmlu-pro|<folder>] [--n-train 96] [--n-heldout 64] [-- <grpo overrides>]
    python bench/grpo_quality.py --data runs/abstracts_dev/dataset --resplit --n-heldout 80 -- --max_steps 48

1. Data. ``auto`` uses ``runs/demo/dataset`` (train split to train, test split held out) when ``wildsci build
   recipes/data/demo.yaml`` has produced it, else real 10-option MMLU-Pro science questions
   (``../shared/data/benchmarks/mmlu_pro_test.jsonl``) written as a WildSci-format folder, train and held-out
   sets disjoint. Only questions whose prompt fits ~``--max-prompt-chars`` characters are used: CPU step time
   grows with prompt length, and the point here is the answer format, not long questions.
2. Base policy: greedy answers to the held-out questions with the one prompt format, scored by the one parser.
3. Training: ``accelerate launch -m wildsci.grpo --config recipes/grpo/demo_cpu.yaml`` (the recipe unchanged,
   only the dataset and output folder overridden, plus anything after ``--``).
4. Trained policy: the same greedy evaluation; the results go to bench/RESULTS.md with the exact command.

Reported: extraction rate (the parser found exactly one letter), boxed rate (``\\boxed{X}``, the requested form)
and accuracy, with counts, and an exact McNemar test on the paired extraction outcomes (same questions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _results import markdown_table, write_section  # noqa: E402

MMLU_PRO = ROOT.parent / "shared" / "data" / "benchmarks" / "mmlu_pro_test.jsonl"
#: MMLU-Pro subject -> (taxonomy discipline, subdomain). The subdomain is a representative one: MMLU-Pro has no
#: finer labels, and only the discipline is used by the per-discipline metrics.
SUBJECTS = {
    "physics": ("Physics", "Quantum and particle physics"),
    "chemistry": ("Chemistry", "Physical and theoretical chemistry"),
    "biology": ("Biology", "Molecular and cell biology"),
    "health": ("Health Sciences", "Diseases and clinical medicine"),
    "engineering": ("Engineering", "Electrical and electronic engineering"),
    "computer science": ("Mathematics and Computing", "Computer science and artificial intelligence"),
}


def mmlu_pro_dataset(out: Path, n_train: int, n_heldout: int, max_chars: int, seed: int = 0) -> Path:
    """Real MMLU-Pro science questions (10 options) as a WildSci-format folder: train and test disjoint."""
    from wildsci.dataset_io import save_wildsci
    from wildsci.schema import options_dict, question_id
    from wildsci.taxonomy import load_taxonomy

    if not MMLU_PRO.is_file():
        sys.exit(f"grpo_quality: {MMLU_PRO} not found -- build runs/demo/dataset first or pass --data <folder>")
    tax = load_taxonomy()
    rows = []
    with MMLU_PRO.open(encoding="utf-8") as fh:  # not splitlines(): questions contain U+2028
        lines = [line for line in fh if line.strip()]
    for line in lines:
        r = json.loads(line)
        if r["subject"] not in SUBJECTS or len(r["options"]) != 10:
            continue
        if r["answer"] != "ABCDEFGHIJ"[r["answer_index"]]:  # the known upstream inconsistency (id 3983)
            continue
        if len(r["question"]) + sum(len(o) for o in r["options"]) > max_chars:
            continue
        disc, sub = SUBJECTS[r["subject"]]
        pid = f"mmlu-pro-{r['id']}"
        rows.append(
            {
                "paper_id": pid,
                "question": r["question"],
                "options": options_dict([str(o) for o in r["options"]]),
                "answer": r["answer"],
                "rationale": "",
                "voting_type": "",  # benchmark questions were never voted on
                "voting_answers": [],
                "discipline": disc,
                "nc_domain": tax.subdomain(sub).nc_domain,
                "nc_subdomain": sub,
                "question_id": question_id(pid, r["question"]),
                "source_license": "MIT (MMLU-Pro)",
                "generator_model": "none (MMLU-Pro benchmark question)",
                "recipe_hash": "bench-grpo-quality",
            }
        )
    random.Random(seed).shuffle(rows)
    if len(rows) < n_train + n_heldout:
        sys.exit(f"grpo_quality: only {len(rows)} MMLU-Pro questions fit --max-prompt-chars {max_chars}")
    save_wildsci({"train": rows[:n_train], "test": rows[n_train : n_train + n_heldout]}, out)
    return out


def resplit_by_paper(folder: Path, out: Path, n_heldout: int, seed: int = 0) -> tuple[Path, int, int]:
    """Every split of a built dataset pooled, whole papers held out until ``n_heldout`` questions (seeded order).

    Why: a small build's own test split (10 % of the papers) is too few questions to tell a format gain from noise.
    Papers stay on one side, as in ``wildsci build``'s own splits. Returns (folder, n_train, n_heldout).
    """
    from wildsci.dataset_io import load_wildsci, save_wildsci

    ds = load_wildsci(str(folder))
    rows = [dict(r) for split in sorted(ds) for r in ds[split]]
    papers = sorted({r["paper_id"] for r in rows})
    random.Random(seed).shuffle(papers)
    held: set[str] = set()
    for pid in papers:
        if sum(r["paper_id"] in held for r in rows) >= n_heldout:
            break
        held.add(pid)
    train = [r for r in rows if r["paper_id"] not in held]
    test = [r for r in rows if r["paper_id"] in held]
    if not train or not test:
        sys.exit(f"grpo_quality: {folder} has {len(rows)} questions -- too few to hold {n_heldout} out")
    save_wildsci({"train": train, "test": test}, out)
    return out, len(train), len(test)


def evaluate(model_dir: str, rows: list[dict], max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy answers with the shared prompt format, scored by the shared parser."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wildsci.answers import extract_answer
    from wildsci.prompts import build_messages
    from wildsci.schema import options_list

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for i in tqdm(range(0, len(rows), batch_size), desc=f"eval {Path(model_dir).name}"):
        batch = rows[i : i + batch_size]
        texts = [
            tok.apply_chat_template(
                build_messages(r["question"], r["options"]), tokenize=False, add_generation_prompt=True
            )
            for r in batch
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )  # fmt: skip
        for r, ids in zip(batch, gen[:, enc.input_ids.shape[1] :], strict=True):
            text = tok.decode(ids, skip_special_tokens=True)
            e = extract_answer(text, len(options_list(r["options"])))
            out.append(
                {
                    "question_id": r["question_id"],
                    "discipline": r["discipline"],
                    "gold": r["answer"],
                    "pred": e.letter,
                    "status": e.status,
                    "method": e.method,
                    "correct": bool(e.ok and e.letter == r["answer"]),
                    "completion": text,
                }
            )
    return out


def score(results: list[dict]) -> dict:
    n = len(results)
    ok = sum(r["status"] == "ok" for r in results)
    boxed = sum(r["status"] == "ok" and r["method"] == "boxed" for r in results)
    correct = sum(r["correct"] for r in results)
    return {"n": n, "extracted": ok, "boxed": boxed, "correct": correct}


def mcnemar_p(before: list[bool], after: list[bool]) -> float:
    """Exact two-sided McNemar p-value for paired binary outcomes."""
    b = sum(x and not y for x, y in zip(before, after, strict=True))
    c = sum(y and not x for x, y in zip(before, after, strict=True))
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    p = 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, p)


def top_letter(results: list[dict]) -> str:
    """The most frequent predicted letter and its share: a policy that answers one letter to everything has
    learned the format, not the questions (the gold letters are spread over A-J)."""
    preds = [r["pred"] for r in results if r["pred"]]
    if not preds:
        return "-"
    letter = max(sorted(set(preds)), key=preds.count)
    return f"{letter} {preds.count(letter)}/{len(preds)}"


def pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="auto", help="auto | mmlu-pro | a WildSci-format folder (train + test splits)")
    ap.add_argument("--recipe", default="recipes/grpo/demo_cpu.yaml")
    ap.add_argument("--work", default="runs/bench/grpo_quality", help="scratch folder (data, policy, evaluations)")
    ap.add_argument("--n-train", type=int, default=96)
    ap.add_argument("--n-heldout", type=int, default=64)
    ap.add_argument("--max-prompt-chars", type=int, default=700)
    ap.add_argument("--max-new-tokens", type=int, default=96, help="evaluation budget (larger than training's)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing <work>/grpo")
    ap.add_argument("--tag", default="", help="write the results to their own RESULTS.md section (grpo_quality_TAG)")
    ap.add_argument(
        "--resplit",
        action="store_true",
        help="with --data FOLDER: pool its splits and hold out whole papers until --n-heldout questions",
    )
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    os.chdir(ROOT)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    from wildsci.dataset_io import load_wildsci
    from wildsci.models import resolve_model

    if args.data == "auto":
        data = Path("runs/demo/dataset") if (Path("runs/demo/dataset") / "data").is_dir() else None
    elif args.data == "mmlu-pro":
        data = None
    else:
        data = Path(args.data)
    if data is None:
        data = mmlu_pro_dataset(work / "data", args.n_train, args.n_heldout, args.max_prompt_chars)
        data_desc = (
            f"real MMLU-Pro 10-option questions ({', '.join(SUBJECTS)}; question+options <= {args.max_prompt_chars} "
            f"chars), {args.n_train} train / {args.n_heldout} held-out, disjoint"
        )
    elif args.resplit:
        source = data
        data, n_tr, n_te = resplit_by_paper(source, work / "data", args.n_heldout)
        data_desc = (
            f"`{source}` (every split pooled; whole papers held out, seeded: {n_tr} questions to train on, "
            f"{n_te} held out)"
        )
    else:
        data_desc = f"`{data}` (train split to train, test split held out)"
    heldout = [dict(r) for r in load_wildsci(str(data), split="test")]
    base_model = resolve_model("embedded:smollm2-135m-instruct")

    key = hashlib.sha256(
        json.dumps([sorted(r["question_id"] for r in heldout), args.max_new_tokens]).encode()
    ).hexdigest()[:12]
    base_file = work / f"base_eval_{key}.json"
    if base_file.is_file():
        base = json.loads(base_file.read_text())
    else:
        t = time.time()
        base = evaluate(base_model, heldout, args.max_new_tokens, args.batch_size)
        base_file.write_text(json.dumps(base))
        print(f"base evaluation: {time.time() - t:.0f}s")

    policy = work / "grpo"
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    launch = ["--num_processes", "1", "--num_cpu_threads_per_process", threads]  # accelerate's CPU default is 1
    train_cmd = [
        *(
            [str(Path(sys.executable).parent / "accelerate"), "launch", *launch]
            if (Path(sys.executable).parent / "accelerate").is_file()
            else [sys.executable, "-m", "accelerate.commands.launch", *launch]
        ),
        "-m", "wildsci.grpo", "--config", args.recipe, "--dataset_name", str(data), "--output_dir", str(policy),
        *extra,
    ]  # fmt: skip
    train_s = None
    if not args.skip_train:
        shutil.rmtree(policy, ignore_errors=True)
        print("+", shlex.join(train_cmd), flush=True)
        t = time.time()
        subprocess.run(train_cmd, check=True)
        train_s = time.time() - t
    t = time.time()
    trained = evaluate(str(policy), heldout, args.max_new_tokens, args.batch_size)
    (work / "trained_eval.json").write_text(json.dumps(trained))
    print(f"trained evaluation: {time.time() - t:.0f}s")

    sb, st = score(base), score(trained)
    p_ext = mcnemar_p([r["status"] == "ok" for r in base], [r["status"] == "ok" for r in trained])
    p_acc = mcnemar_p([r["correct"] for r in base], [r["correct"] for r in trained])
    table = markdown_table(
        ["policy", "extraction rate", "boxed rate", "accuracy", "most frequent answer"],
        [
            ["base SmolLM2-135M-Instruct", pct(sb["extracted"], sb["n"]), pct(sb["boxed"], sb["n"]),
             pct(sb["correct"], sb["n"]), top_letter(base)],
            [f"after GRPO ({Path(args.recipe).stem} recipe)", pct(st["extracted"], st["n"]), pct(st["boxed"], st["n"]),
             pct(st["correct"], st["n"]), top_letter(trained)],
        ],
    )  # fmt: skip
    from wildsci.metrics import read_metrics

    recs = [r for r in read_metrics(policy / "wildsci_metrics.jsonl") if "unparseable_rate" in r]
    dyn = ""
    if recs:
        k = max(1, len(recs) // 3)

        def mean(key: str, rs: list[dict]) -> float:
            vals = [r[key] for r in rs if key in r]
            return sum(vals) / len(vals) if vals else float("nan")

        dyn = (
            f"Training rollouts (sampled, from `wildsci_metrics.jsonl`), first {k} vs last {k} logged steps of "
            f"{len(recs)}: unparseable rate {mean('unparseable_rate', recs[:k]):.2f} -> "
            f"{mean('unparseable_rate', recs[-k:]):.2f}, reward {mean('reward', recs[:k]):.2f} -> "
            f"{mean('reward', recs[-k:]):.2f}, completion length {mean('completion_length', recs[:k]):.0f} -> "
            f"{mean('completion_length', recs[-k:]):.0f} tokens, clipped ratio "
            f"{mean('clipped_ratio', recs[:k]):.2f} -> {mean('clipped_ratio', recs[-k:]):.2f}."
        )
        kinds = Counter(
            re.sub(r"\d+ logged steps", "N logged steps", w.split(": ", 1)[1])
            for r in recs
            for w in r.get("warnings", [])
        )
        if kinds:
            dyn += "\n\nGuard warnings raised: " + "; ".join(f"{w} ({n} steps)" for w, n in sorted(kinds.items()))
    body = (
        f"Data: {data_desc}. Held-out answers are greedy, at most {args.max_new_tokens} new tokens, shared prompt "
        f"format and parser. Training: `{shlex.join(train_cmd)}`"
        + (f" ({train_s / 60:.1f} min)" if train_s else "")
        + f".\n\n{table}\n\nPaired exact McNemar test on the same {sb['n']} questions: extraction p = {p_ext:.3g}, "
        f"accuracy p = {p_acc:.3g}.\n\n{dyn}\n\nTorch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}."
    )
    print(body)
    if not args.no_write:
        cmd = "python bench/grpo_quality.py " + shlex.join(sys.argv[1:])
        name = "grpo_quality" + (f"_{args.tag}" if args.tag else "")
        title = "GRPO quality on CPU (SmolLM2-135M-Instruct, demo_cpu recipe)" + (f", {args.tag}" if args.tag else "")
        write_section(name, title, cmd, body)


if __name__ == "__main__":
    main()
