"""Does the CPU GRPO recipe make SmolLM2-135M-Instruct better on held-out science questions, without collapsing?

    HF_HUB_OFFLINE=1 python bench/grpo_quality.py                       # every setting below, one table
    HF_HUB_OFFLINE=1 python bench/grpo_quality.py --settings recipe,g8 --permutations 3

Multiple-choice RL has one cheap way to raise reward: answer the most frequent letter. So every trained policy is
reported with its letter histogram beside its accuracy, and the settings below are run side by side.

1. Data (real, disjoint). Training: ARC-Challenge *train* (4-option questions) as a WildSci-format folder.
   Held out: ``--n-heldout`` ARC-Challenge *test* questions (4 options, chance 25 %), seeded draw, minus any whose
   text also appears in the training file. ARC's gold letters are spread over A-D, so a policy that answers one
   letter cannot score above ~27 %.
2. Base policy: greedy answers (shared prompt format, shared parser), computed once and cached in ``--work``.
3. Each setting: ``accelerate launch -m wildsci.grpo --config recipes/grpo/demo_cpu.yaml`` with the training
   folder, an output folder and the setting's overrides; then the same greedy evaluation. Finished settings are
   cached in ``--work`` by their exact command and commit, so an interrupted sweep resumes where it stopped.
4. Reported per policy: readable answers (the parser found one letter), accuracy with a 95 % Wilson interval,
   accuracy among readable answers, the share of the most frequent letter among all held-out answers, the letter
   histogram, an exact McNemar test on the paired per-question correctness against the base model, and with
   ``--permutations K`` the share of questions whose chosen option (its text, not its letter) is the same under K
   cyclic rotations of the options. Per-question outputs go to ``bench/results/grpo_quality/`` and the section
   is rewritten after every finished setting, so a stopped sweep still leaves an honest, partial table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from _results import (  # noqa: E402
    markdown_table,
    mcnemar_p,
    package_versions,
    read_jsonl,
    section_name,
    start_run,
    wilson,
    write_jsonl,
)

from wildsci.answers import COLLAPSE_SHARE  # noqa: E402

BENCH = ROOT.parent / "shared" / "data" / "benchmarks"
TRAIN_FILE = BENCH / "arc_challenge_train.jsonl"
HELDOUT_FILE = BENCH / "arc_challenge_test.jsonl"
LETTERS = "ABCD"
#: a policy "does not collapse" when no letter takes more than COLLAPSE_SHARE of held-out answers, while at least
#: this share of its answers stays readable (issue 16)
MIN_READABLE = 0.90

TITLE = "GRPO quality on CPU: settings side by side (SmolLM2-135M, ARC-Challenge)"
#: setting -> (what it tests, overrides of demo_cpu.yaml, train on letter-balanced questions). Order = run order.
#: the starting point every setting but `recipe` changes one thing of: one question x 4 rollouts per step, no
#: rotations, no KL (the demo recipe until it took rotations + KL). Spelled out, so that a setting keeps its meaning
#: whatever demo_cpu.yaml holds now.
ONE_AT_A_TIME = ["--option_rotations", "1", "--shuffle_dataset", "true", "--per_device_train_batch_size", "4",
                 "--beta", "0.0"]  # fmt: skip
SETTINGS: dict[str, tuple[str, list[str], bool]] = {
    "recipe": ("demo_cpu.yaml as committed", [], False),
    "kl": ("KL term to the base model, beta 0.04", ["--beta", "0.04"], False),
    "kl0.3": ("KL term to the base model, beta 0.3", ["--beta", "0.3"], False),
    "kl1": ("KL term to the base model, beta 1.0", ["--beta", "1.0"], False),
    "balanced": ("training questions' gold letters rotated to exactly 25 % each", [], True),
    "g8": ("8 rollouts per question (1 question x 8 per step)", ["--num_generations", "8",
                                                                 "--per_device_train_batch_size", "8"], False),
    "q2": ("2 questions per step (2 x 4 rollouts)", ["--per_device_train_batch_size", "8"], False),
    "lr5e-6x32": ("lr 5e-6 for 32 steps", ["--learning_rate", "5e-6", "--max_steps", "32"], False),
    "fmt_warmup": ("format credit only with the right letter after 8 warm-up steps",
                   ["--reward_funcs", "accuracy", "format_after_warmup", "--format_warmup_steps", "8"], False),
    "letter_balance": ("minus each answer letter's excess over its gold share (last 8 steps)",
                       ["--reward_funcs", "accuracy", "format", "letter_balance", "--reward_weights", "1", "1", "1"],
                       False),
    "rot4": ("each question under 4 rotations of its options in one step, gold at A-D (4 x 4 rollouts)",
             ["--option_rotations", "4", "--shuffle_dataset", "false", "--per_device_train_batch_size", "16"], False),
    "rot4+kl1": ("rot4 with a KL term to the base model, beta 1.0",
                 ["--option_rotations", "4", "--shuffle_dataset", "false", "--per_device_train_batch_size", "16",
                  "--beta", "1.0"], False),
}  # fmt: skip


def load_mc(path: Path) -> list[dict]:
    """The 4-option questions of a shared benchmark file (one JSON object a line)."""
    if not path.is_file():
        sys.exit(f"grpo_quality: {path} not found -- lay ../shared/data beside the checkout (see its README)")
    with path.open(encoding="utf-8") as fh:  # not splitlines(): questions may contain U+2028
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if len(r["options"]) == 4 and r["answer"] == LETTERS[r["answer_index"]]]


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def rotate(row: dict, k: int) -> dict:
    """The same question with its options rotated left by ``k``: option i moves to letter (i - k) mod 4."""
    opts = row["options"][k:] + row["options"][:k]
    return {**row, "options": opts, "answer": LETTERS[(row["answer_index"] - k) % 4], "rotation": k}


def wildsci_rows(rows: list[dict]) -> list[dict]:
    """Benchmark questions as WildSci rows. ARC has no subject labels: one fixed discipline, which only the
    per-discipline training metrics read."""
    from wildsci.schema import options_dict, question_id

    return [
        {
            "paper_id": f"arc-{r['id']}",
            "question": r["question"],
            "options": options_dict([str(o) for o in r["options"]]),
            "answer": r["answer"],
            "rationale": "",
            "voting_type": "",  # benchmark questions were never voted on
            "voting_answers": [],
            "discipline": "Physics",
            "nc_domain": "Physical sciences",
            "nc_subdomain": "Condensed-matter physics",
            "question_id": question_id(f"arc-{r['id']}", r["question"]),
            "source_license": "CC-BY-SA-4.0 (AI2 ARC)",
            "generator_model": "none (ARC-Challenge benchmark question)",
            "recipe_hash": "bench-grpo-quality",
        }
        for r in rows
    ]


def make_data(work: Path, n_heldout: int, seed: int) -> tuple[list[dict], dict[bool, Path], int]:
    """Held-out rows, the training folders (natural and letter-balanced gold letters), and the training count."""
    from wildsci.dataset_io import save_wildsci

    train = load_mc(TRAIN_FILE)
    seen = {norm(r["question"]) for r in train}
    test = [r for r in load_mc(HELDOUT_FILE) if norm(r["question"]) not in seen]
    random.Random(seed).shuffle(test)
    if len(test) < n_heldout:
        sys.exit(f"grpo_quality: only {len(test)} held-out questions, asked for --n-heldout {n_heldout}")
    heldout = [{**r, "rotation": 0} for r in test[:n_heldout]]
    random.Random(seed).shuffle(train)
    # balanced: rotate question i so its gold letter is LETTERS[i % 4] (same questions, same option texts)
    balanced = [rotate(r, (r["answer_index"] - i) % 4) for i, r in enumerate(train)]
    folders = {}
    for is_bal, rows in ((False, train), (True, balanced)):
        folder = work / ("train_balanced" if is_bal else "train")
        save_wildsci({"train": wildsci_rows(rows)}, folder)
        folders[is_bal] = folder
    return heldout, folders, len(train)


def evaluate(model_dir: str, rows: list[dict], max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy answers with the shared prompt format, scored by the shared parser; one record per row."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wildsci.answers import extract_answer
    from wildsci.prompts import build_messages

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["question"]) + sum(map(len, rows[i]["options"])))
    out: list[dict | None] = [None] * len(rows)
    for s in tqdm(range(0, len(order), batch_size), desc=f"eval {Path(model_dir).name}"):
        idx = order[s : s + batch_size]  # similar lengths together: less padding
        texts = [
            tok.apply_chat_template(
                build_messages(rows[i]["question"], rows[i]["options"]), tokenize=False, add_generation_prompt=True
            )
            for i in idx
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )  # fmt: skip
        for i, ids in zip(idx, gen[:, enc.input_ids.shape[1] :], strict=True):
            r = rows[i]
            e = extract_answer(tok.decode(ids, skip_special_tokens=True), 4)
            pick = (LETTERS.index(e.letter) + r["rotation"]) % 4 if e.ok else None  # original option index
            out[i] = {
                "id": r["id"], "rotation": r["rotation"], "gold": r["answer"], "pred": e.letter if e.ok else None,
                "status": e.status, "correct": bool(e.ok and e.letter == r["answer"]), "pick": pick,
            }  # fmt: skip
    return out  # type: ignore[return-value]


def summarize(recs: list[dict], base: list[dict] | None) -> dict:
    """Every number of a table row, from the per-question records alone (the test recomputes them the same way)."""
    main = [r for r in recs if r["rotation"] == 0]
    n = len(main)
    readable = sum(r["status"] == "ok" for r in main)
    correct = sum(r["correct"] for r in main)
    letters = Counter(r["pred"] for r in main if r["pred"])
    top, top_n = max(sorted(letters.items()), key=lambda kv: kv[1]) if letters else ("-", 0)
    lo, hi = wilson(correct, n)
    # what answering the policy's most frequent letter to every question would score: a collapsed policy's
    # accuracy is this letter's share of the gold answers, whatever it learned
    s = {"top_gold": sum(r["gold"] == top for r in main),
        "n": n, "readable": readable, "correct": correct, "ci": (lo, hi), "top": top, "top_n": top_n,
        "letters": {c: letters.get(c, 0) for c in LETTERS},
        "collapsed": top_n > COLLAPSE_SHARE * n or readable < MIN_READABLE * n,
    }  # fmt: skip
    if base is not None:
        b = {r["id"]: r["correct"] for r in base if r["rotation"] == 0}
        s["p"] = mcnemar_p([b[r["id"]] for r in main], [r["correct"] for r in main])
    views: dict[str, set] = {}
    for r in recs:
        views.setdefault(r["id"], set()).add(r["pick"])
    if any(r["rotation"] for r in recs):
        s["consistent"] = sum(len(v) == 1 and None not in v for v in views.values())
    return s


def row_cells(name: str, desc: str, s: dict, train_min: float | None) -> list[str]:
    n = s["n"]
    cells = [
        f"`{name}`", desc, f"{train_min:.1f}" if train_min is not None else "-",
        f"{s['readable']}/{n} ({100 * s['readable'] / n:.1f}%)",
        f"{s['correct']}/{n} ({100 * s['correct'] / n:.1f}%) [{100 * s['ci'][0]:.1f}, {100 * s['ci'][1]:.1f}]",
        f"{s['correct']}/{s['readable']} ({100 * s['correct'] / s['readable']:.1f}%)" if s["readable"] else "-",
        f"{s['top']} {s['top_n']}/{n} ({100 * s['top_n'] / n:.1f}%)",
        " ".join(f"{c}:{k}" for c, k in s["letters"].items()),
        f"{s['p']:.3g}" if "p" in s else "-",
        "yes" if s["collapsed"] else "no",
    ]  # fmt: skip
    if "consistent" in s:
        cells.append(f"{s['consistent']}/{n} ({100 * s['consistent'] / n:.1f}%)")
    return cells


def code_key(commit: str) -> str:
    """What a cached policy or evaluation depends on: the kit's code (git tree of src/), this file's data and
    evaluation functions, and the installed key packages. A commit that changes only the report reuses them; with
    uncommitted changes in src/ the key also holds those changes (diff and new files), so an --allow-dirty rerun
    of the same code reuses its own results and nothing else."""
    import inspect

    tree = subprocess.run(["git", "rev-parse", "HEAD:src"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    here = "".join(inspect.getsource(f) for f in (load_mc, rotate, wildsci_rows, make_data, evaluate))
    dirty = ""
    if commit == "unknown":  # no git: nothing says what the code was, so nothing is reused
        dirty = f"{commit}@{time.time()}"
    elif commit.endswith("-dirty"):
        git = ["git", "-C", str(ROOT)]
        diff = subprocess.run([*git, "diff", "HEAD", "--", "src"], capture_output=True, text=True).stdout
        new = subprocess.run([*git, "ls-files", "--others", "--exclude-standard", "src"], capture_output=True,
                             text=True).stdout.split()  # fmt: skip
        dirty = diff + "".join(f + (ROOT / f).read_text(errors="replace") for f in new) or f"{commit}@{time.time()}"
    versions = json.dumps(package_versions(), sort_keys=True)  # a reinstalled torch/transformers/trl: rerun
    return hashlib.sha256(f"{tree}\0{here}\0{dirty}\0{versions}".encode()).hexdigest()[:16]


def verdict(base: dict, trained: dict[str, dict], n_heldout: int) -> str:
    """What the table shows, in words derived from its numbers (no claim the numbers do not carry)."""
    n = base["n"]
    lines = []
    ok = [k for k, s in trained.items() if not s["collapsed"]]
    better = [k for k, s in trained.items() if s["correct"] > base["correct"] and s["p"] < 0.05]
    fmt = ", ".join(f"`{k}` {100 * s['readable'] / n:.0f}%" for k, s in trained.items())
    lines.append(f"Answer format: base {100 * base['readable'] / n:.0f}% readable; trained: {fmt}.")
    if better:
        lines.append("Accuracy above the base model at p < 0.05: " + ", ".join(f"`{k}`" for k in better) + ".")
        letter_only = [k for k in better if trained[k]["correct"] <= trained[k]["top_gold"]]
        if letter_only:
            lines.append(
                "Of these, " + ", ".join(f"`{k}`" for k in letter_only) + " score no more than answering their most "
                "frequent letter to every question would (its share of the gold answers): the gain over the base "
                "is readable answers plus that letter's share, not science."
            )
    else:
        lines.append(
            f"No setting answers more of the {n_heldout} held-out questions correctly than the base model at "
            "p < 0.05, so no accuracy gain is claimed: what GRPO on CPU teaches this 135M model here is the answer "
            "format; whether it learns science is not shown by these runs."
        )
    if ok:
        best = max(ok, key=lambda k: (trained[k]["correct"], -trained[k]["top_n"]))
        lines.append(
            f"Not collapsed (every letter <= {COLLAPSE_SHARE:.0%} of answers, >= {MIN_READABLE:.0%} readable): "
            + ", ".join(f"`{k}`" for k in ok)
            + f"; the most accurate of them is `{best}`."
        )
    else:
        lines.append(
            f"Every trained setting collapsed (a letter above {COLLAPSE_SHARE:.0%} of answers or fewer than "
            f"{MIN_READABLE:.0%} readable)."
        )
    spread = [k for k, s in trained.items() if s["collapsed"] and s["top_n"] <= COLLAPSE_SHARE * n]
    if spread:
        lines.append(
            f"No letter above {COLLAPSE_SHARE:.0%}, but under {MIN_READABLE:.0%} readable: "
            + ", ".join(f"`{k}` ({trained[k]['readable']}/{n})" for k in spread)
            + "."
        )
    return " ".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from: {', '.join(SETTINGS)}")
    ap.add_argument("--recipe", default="recipes/grpo/demo_cpu.yaml")
    ap.add_argument("--work", default="runs/bench/grpo_quality", help="scratch folder (data, policies, cache)")
    ap.add_argument("--section", default="grpo_quality",
                    help="RESULTS.md section and bench/results/ folder to (re)write: a sweep of other settings gets "
                         "its own, so it does not replace the main table")  # fmt: skip
    ap.add_argument("--n-heldout", type=int, default=300)
    ap.add_argument("--permutations", type=int, default=0, help="also evaluate K cyclic rotations of the options")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="= training's max_completion_length")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (eval, train)")
    ap.add_argument("--jobs", type=int, default=1, help="settings trained side by side (each with --threads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    args = ap.parse_args()
    section_name(args.section)
    names = [s for s in args.settings.split(",") if s]
    if bad := [s for s in names if s not in SETTINGS]:
        ap.error(f"unknown setting(s) {', '.join(bad)}; known: {', '.join(SETTINGS)}")
    if min(args.threads, args.jobs, args.n_heldout) < 1 or not 0 <= args.permutations <= 3:
        ap.error("--threads, --jobs, --n-heldout must be >= 1; --permutations 0-3 (4 options: 3 other rotations)")
    run = start_run(args.allow_dirty, write=not args.no_write)
    os.chdir(ROOT)
    for k, v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(k, v)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    # transformers imports its model classes lazily, and two evaluation threads importing them at once can fail
    # (one setting's evaluation died that way with --jobs 2): import them here, once, before any thread starts
    _ = transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.LlamaForCausalLM
    from wildsci.models import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    heldout, folders, n_train = make_data(work, args.n_heldout, args.seed)
    views = [rotate(r, k) for k in range(1, args.permutations + 1) for r in heldout]
    eval_key = json.dumps([[r["id"] for r in heldout], args.permutations, args.max_new_tokens, code_key(run.commit)])

    def cached_eval(folder: Path, model: str, key: str) -> list[dict]:
        digest = hashlib.sha256((key + eval_key).encode()).hexdigest()[:16]
        path = folder / f"eval_{digest}.jsonl"
        if not path.is_file():
            t = time.time()
            write_jsonl(path, evaluate(model, heldout + views, args.max_new_tokens, args.batch_size))
            print(f"evaluation of {model}: {time.time() - t:.0f}s", flush=True)
        return read_jsonl(path)

    accelerate = Path(sys.executable).parent / "accelerate"
    launch = (
        [str(accelerate), "launch"] if accelerate.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # the checkout's code, as start_run checked

    def train_and_eval(name: str) -> tuple[list[dict], float, list[str]]:
        desc, overrides, balanced = SETTINGS[name]
        out = work / name
        cmd = [*launch, "--num_processes", "1", "--num_cpu_threads_per_process", str(args.threads),
               "-m", "wildsci.grpo", "--config", args.recipe, "--dataset_name", str(folders[balanced]),
               "--output_dir", str(out / "grpo"), "--save_strategy", "no",
               *([] if name == "recipe" else ONE_AT_A_TIME), *overrides]  # fmt: skip
        key = json.dumps([cmd[1:], code_key(run.commit), (ROOT / args.recipe).read_text()])
        stamp = out / "train_done.json"
        if not (stamp.is_file() and json.loads(stamp.read_text())["key"] == key):
            print("+", shlex.join(cmd), flush=True)
            t = time.time()
            with open(work / f"{name}.log", "w") as log:
                subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
            stamp.write_text(json.dumps({"key": key, "minutes": (time.time() - t) / 60}))
        return cached_eval(out, str(out / "grpo"), key), json.loads(stamp.read_text())["minutes"], cmd

    # --jobs > 1: the base evaluation and the trainings run side by side (each with --threads threads)
    done: dict[str, tuple[list[dict], float, list[str]]] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        base_job = pool.submit(cached_eval, work / "base", resolve_model("embedded:smollm2-135m-instruct"), "base")
        jobs = {pool.submit(train_and_eval, name): name for name in names}
        base = base_job.result()
        for job in as_completed(jobs):
            try:
                done[jobs[job]] = job.result()
            except Exception as e:  # one failed setting must not hide the others: reported, the sweep goes on
                failed[jobs[job]] = f"{type(e).__name__}: {e}"
                print(f"grpo_quality: setting {jobs[job]} failed: {failed[jobs[job]]}", file=sys.stderr, flush=True)
                continue
            done = {n: done[n] for n in names if n in done}  # table in setting order, whatever finished first
            body = report(args, run, heldout, n_train, base, done, names)
            print(body, flush=True)
            if not args.no_write:
                files = {"base.jsonl": base, **{f"{k}.jsonl": v[0] for k, v in done.items()}}
                run.write(args.section, TITLE if args.section == "grpo_quality" else f"{TITLE}: {args.section}",
                          body, files)  # fmt: skip
    if failed:
        sys.exit(f"grpo_quality: {len(failed)} setting(s) failed ({', '.join(failed)}); the table holds the others "
                 "-- rerun the same command: finished settings are cached")  # fmt: skip


def report(args, run, heldout: list[dict], n_train: int, base: list[dict], done: dict, names: list[str]) -> str:
    headers = ["setting", "what changes", "train min", "readable", "accuracy [95% CI]", "accuracy of readable",
               "top letter (of all)", "letters", "p vs base (McNemar)", "collapsed"]  # fmt: skip
    if args.permutations:
        headers.append(f"same option under {args.permutations} rotations")
    sb = summarize(base, None)
    trained = {name: summarize(recs, base) for name, (recs, _, _) in done.items()}
    rows = [row_cells("base", "SmolLM2-135M-Instruct, no training", sb, None)]
    rows += [row_cells(name, SETTINGS[name][0], trained[name], done[name][1]) for name in done]
    gold = Counter(r["answer"] for r in heldout)
    cmds = "\n".join(f"- `{k}`: `{shlex.join(['accelerate', *v[2][1:]])}`" for k, v in done.items())
    missing = [n for n in names if n not in done]
    return (
        (
            "**Partial: " + f"{len(missing)} of {len(names)} settings not finished ({', '.join(missing)}).**\n\n"
            if missing
            else ""
        )
        + f"Held out: {len(heldout)} ARC-Challenge test questions (4 options, chance 25 %; gold letters "
        + " ".join(f"{c}:{gold[c]}" for c in LETTERS)
        + f"), none in the training file. Training: {n_train} ARC-Challenge train questions (4 options), recipe "
        f"`{args.recipe}` with the overrides below (every setting but `recipe` first sets one question x 4 "
        f"rollouts per step, no rotations, no KL: `{' '.join(ONE_AT_A_TIME)}`). Greedy answers, at most "
        f"{args.max_new_tokens} new tokens, the "
        f"shared prompt format and parser; torch threads {args.threads} per job, {args.jobs} job(s) side by side.\n\n"
        + markdown_table(headers, rows)
        + f"\n\nCollapsed = some letter takes more than {COLLAPSE_SHARE:.0%} of held-out answers, or fewer than "
        f"{MIN_READABLE:.0%} are readable. p: exact McNemar test on per-question correctness, paired with the base "
        f"model on the same questions.\n\n{verdict(sb, trained, len(heldout)) if trained else ''}\n\n"
        f"Training commands (in `{args.work}`; train minutes are wall time measured when the policy was trained, "
        "with the other settings' jobs beside it; a policy reused from the cache keeps its minutes, and the load "
        "line below is this invocation's):\n\n"
        f"{cmds}\n\n"
        f"Load: {run.load_note(args.threads * args.jobs)}"
    )


if __name__ == "__main__":
    main()
