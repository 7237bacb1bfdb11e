"""Helpers shared by the evaluation tests: real lighteval runs through the CLI, and an independent re-scoring.

The re-scoring reads lighteval's saved details (parquet) directly, re-extracts every answer from the raw model
output with the kit's parser, looks the gold letter up from the shown options and the *source file*, and
recomputes accuracy and extraction rate -- so a wrong gold letter, a lost question or a mis-aggregated metric in
the task code shows up as a mismatch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from wildsci.answers import LETTERS, extract_answer
from wildsci.prompts import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]
TASKS_FILE = ROOT / "eval_tasks" / "wildsci_tasks.py"
GPQA_PASSWORD = b"deserted-untie-orchid"


def child_env(**extra: str) -> dict[str, str]:
    """Offline, and one OpenMP thread: on a busy 2-core machine two OpenMP threads spin-wait on each other and make
    small CPU matmuls ~30x slower (measured: SmolLM2 at batch 4, 145 s -> 14 s for 48 tokens)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WILDSCI_EVAL_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def write_model_yaml(path: Path, model: str, cache_dir: Path, batch_size: int = 8) -> Path:
    params = {
        "model_name": model,
        "device": "cpu",
        "dtype": "float32",
        "batch_size": batch_size,
        "cache_dir": str(cache_dir),
        "system_prompt": SYSTEM_PROMPT,
        "generation_parameters": {"temperature": 0.0},
    }
    path.write_text(yaml.safe_dump({"model_parameters": params}))
    return path


def run_lighteval_cli(model_yaml: Path, tasks: str, out: Path, env: dict[str, str], timeout: int = 600) -> float:
    """``python -m wildsci.lighteval_compat accelerate ...`` as a user would run it; returns the wall time."""
    cmd = [sys.executable, "-m", "wildsci.lighteval_compat", "accelerate", str(model_yaml), tasks]
    cmd += ["--custom-tasks", str(TASKS_FILE), "--output-dir", str(out), "--save-details"]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"lighteval failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return time.time() - t0


def latest_outputs(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(results by full task name, detail rows by full task name) of the latest lighteval run in ``out``."""
    results_files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    assert results_files, f"no lighteval results under {out}"
    res = json.loads(results_files[-1].read_text())["results"]
    stamp = results_files[-1].stem.removeprefix("results_")
    details = {}
    for f in out.rglob(f"details_*_{stamp}.parquet"):
        details[f.name.removeprefix("details_").removesuffix(f"_{stamp}.parquet")] = pq.read_table(f).to_pylist()
    return res, details


def shown_options(query: str) -> list[str]:
    """The options as the model saw them (``A. text`` lines after ``Options:``)."""
    block = query.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    opts = []
    for line in block.split("\n"):
        m = re.match(r"^([A-J])\. (.*)$", line)
        assert m and m.group(1) == LETTERS[len(opts)], f"bad option line {line!r}"
        opts.append(m.group(2))
    return opts


def rescore(rows: list[dict], gold_text: dict[str, str] | None = None) -> dict[str, float]:
    """Accuracy and extraction rate recomputed from the raw outputs in lighteval's details.

    ``gold_text``: question id -> text of the correct option, read from the source file; when given, the gold
    letter is where that text appears among the shown options (not the letter the task code stored).
    """
    correct = extracted = 0
    for r in rows:
        query, spec = r["doc"]["query"], r["doc"]["specific"]
        opts = shown_options(query)
        assert f"(A through {LETTERS[len(opts) - 1]})" in query, "instruction must name the last option letter"
        if gold_text is not None:
            gold = LETTERS[opts.index(gold_text[spec["question_id"]].strip())]
            assert gold == spec["gold"], f"{spec['question_id']}: task says {spec['gold']}, source says {gold}"
        else:
            gold = spec["gold"]
        e = extract_answer(r["model_response"]["text"][0], len(opts))
        extracted += e.ok
        correct += e.ok and e.letter == gold
    n = len(rows)
    return {"acc": correct / n, "extraction_rate": extracted / n, "n": n}


def gold_texts_from_file(path: Path, id_key: str = "id") -> dict[str, str]:
    """question id -> correct option text, straight from a benchmark file of the shared schema."""
    out = {}
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            out[str(row[id_key])] = row["options"][LETTERS.index(row["answer"])]
    return out


def decrypt_gpqa(shared_data: Path, tmp: Path) -> Path:
    """GPQA-Diamond's jsonl, decrypted into ``tmp`` (a pytest temp dir) -- never anywhere else."""
    tmp = tmp / "gpqa-decrypted"  # its own folder: remove_gpqa() deletes it whole
    with zipfile.ZipFile(shared_data / "benchmarks" / "gpqa_diamond.zip") as z:
        z.setpassword(GPQA_PASSWORD)
        tmp.mkdir(parents=True, exist_ok=True)
        target = tmp / "gpqa_diamond.jsonl"
        target.write_bytes(z.read("gpqa_diamond.jsonl"))
    return target


def remove_gpqa(path: Path | None) -> None:
    """Delete the decrypted GPQA folder (pytest keeps recent temp dirs around; decrypted text should not linger)."""
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)


def gpqa_probes(path: Path, n: int = 25) -> list[str]:
    """Distinctive snippets of GPQA questions, to prove they did not leak into kept files."""
    probes = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            q = " ".join(json.loads(line)["question"].split())
            if len(q) > 60:
                probes.append(q[10:60])
        if len(probes) >= n:
            break
    return probes


def assert_no_leak(probes: list[str], roots: list[Path]) -> None:
    """No file under ``roots`` (outside .venv/.git) contains any probe text (checked as UTF-8 text)."""
    for root in roots:
        for f in root.rglob("*"):
            if not f.is_file() or any(p in (".venv", ".git", "node_modules") for p in f.parts):
                continue
            if f.stat().st_size > 50_000_000:
                continue
            text = " ".join(f.read_bytes().decode("utf-8", errors="ignore").split())
            for p in probes:
                assert p not in text, f"GPQA question text found in {f}"


def train_letter_model(out: Path, letter: str = "A", steps: int = 120) -> Path:
    """The tiny model fine-tuned to answer ``\\boxed{<letter>}`` to every question: a pure letter-prior policy.

    A real (if degenerate) trained checkpoint: what an MCQ policy that learned a letter prior instead of science
    looks like, which the permutation analysis must expose. Built once per cache directory (~10 s on one core).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wildsci.models import cache_dir, resolve_model
    from wildsci.prompts import build_messages

    cached = cache_dir() / "models" / f"tiny-qwen2-letter{letter}-{steps}-v1"  # bump when the recipe changes
    if not (cached / "config.json").is_file():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: one thread is several times faster than two fighting
        grad = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # importing lighteval's transformers model switches gradients off globally
        try:
            src = resolve_model("tiny:qwen2")
            tok = AutoTokenizer.from_pretrained(src)
            model = AutoModelForCausalLM.from_pretrained(src)
            torch.manual_seed(0)
            questions = [
                (
                    f"Question {i}: which statement about topic {i * 7 % 13} holds?",
                    [f"option {j}" for j in range(4 + i % 7)],
                )
                for i in range(32)
            ]
            prompts = [
                tok(tok.apply_chat_template(build_messages(q, o), tokenize=False, add_generation_prompt=True))[
                    "input_ids"
                ]
                for q, o in questions
            ]
            target = tok(f"\\boxed{{{letter}}}{tok.eos_token}", add_special_tokens=False)["input_ids"]
            opt = torch.optim.Adam(model.parameters(), lr=5e-3)
            model.train()
            for step in range(steps):
                batch = [prompts[(step * 4 + k) % len(prompts)] for k in range(4)]
                length = max(len(p) for p in batch) + len(target)
                ids = [[tok.pad_token_id] * (length - len(p) - len(target)) + p + target for p in batch]
                labels = [[-100] * (length - len(target)) + target for _ in batch]
                mask = [[0] * (length - len(p) - len(target)) + [1] * (len(p) + len(target)) for p in batch]
                loss = model(
                    input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)
                ).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(tmp, cached)
        finally:
            torch.set_num_threads(threads)
            torch.set_grad_enabled(grad)
    shutil.copytree(cached, out, dirs_exist_ok=True)
    return out


SLICE_FILES = {
    "mmlu_pro": "mmlu_pro_test.jsonl",
    "arc_challenge": "arc_challenge_test.jsonl",
    "scieval": "scieval_valid_mcq.jsonl",
}
SCIENCE = {"biology", "chemistry", "physics", "health", "engineering", "math", "computer science"}


def make_slices(shared_data: Path, out: Path, n: int = 6, max_chars: int = 400) -> dict[str, Path]:
    """Small real slices of the shipped benchmarks: ``n`` short questions each (CPU prompts stay ~150 tokens).

    Rows are taken in the kit's own hash order (the same rule ``max_samples`` uses), keeping those whose question
    and options fit in ``max_chars``; MMLU-Pro keeps science categories only.
    """
    import hashlib

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for source, name in SLICE_FILES.items():
        rows = [json.loads(x) for x in (shared_data / "benchmarks" / name).read_text("utf-8").split("\n") if x.strip()]
        rows = [r for r in rows if len(r["question"]) + sum(len(o) for o in r["options"]) <= max_chars]
        if source == "mmlu_pro":
            rows = [r for r in rows if r["subject"] in SCIENCE]
        rows.sort(key=lambda r: hashlib.sha256(f"wildsci-eval-sample:{r['id']}".encode()).hexdigest())
        paths[source] = out / name
        paths[source].write_text("".join(json.dumps(r) + "\n" for r in rows[:n]), encoding="utf-8")
    return paths


def damaged_parquet(path: Path, rows: list[dict]) -> Path:
    """A parquet file of ``rows`` whose first page header is overwritten: pyarrow fails with "Couldn't deserialize
    thrift", as on a truncated download or a bad disk sector."""
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    data = bytearray(path.read_bytes())
    data[4:40] = b"\xff" * 36  # just after the "PAR1" magic: the first column chunk's page header
    path.write_bytes(bytes(data))
    return path


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into, on any machine: a ``chmod 555`` folder, or ``/sys`` for root (which
    writes through file modes; sysfs refuses it new files)."""
    import os

    if os.geteuid() == 0:
        return Path("/sys")
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro


def mixed_mmlu_pro(shared_data: Path, out: Path, per_kind: int = 3, max_chars: int = 400) -> tuple[Path, list[dict]]:
    """An MMLU-Pro file of ``per_kind`` science and ``per_kind`` other questions (short ones, in the kit's hash
    order), the first row written twice; returns (file, the distinct rows)."""
    import hashlib

    text = (shared_data / "benchmarks" / SLICE_FILES["mmlu_pro"]).read_text("utf-8")
    rows = [json.loads(x) for x in text.split("\n") if x.strip()]
    rows = [r for r in rows if len(r["question"]) + sum(len(o) for o in r["options"]) <= max_chars]
    rows.sort(key=lambda r: hashlib.sha256(f"wildsci-eval-sample:{r['id']}".encode()).hexdigest())
    science = [r for r in rows if r["subject"] in SCIENCE][:per_kind]
    other = [r for r in rows if r["subject"] not in SCIENCE][:per_kind]
    distinct = science + other
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in [*distinct, distinct[0]]), encoding="utf-8")
    return out, distinct
