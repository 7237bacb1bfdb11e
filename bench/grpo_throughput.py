"""GRPO throughput on one GPU: stock ``GRPOTrainer`` defaults vs this kit's 1-GPU recipe, in one run.

    python bench/grpo_throughput.py                      # GPU: all variants, writes bench/RESULTS.md
    python bench/grpo_throughput.py --cpu-smoke          # CPU, tiny shape, < 1 minute: proves the script works

Workload (issue 8): a randomly initialised model with the real Qwen2.5-1.5B shape (151,936 vocab, bf16), a
synthetic word-level tokenizer of that size, 8 prompts x 8 rollouts per optimizer step, 256-token prompts,
1,024-token completions (fixed: ``min_new_tokens`` / vLLM ``min_tokens`` = the maximum, so every variant
generates the same number of tokens), activation (gradient) checkpointing, a random reward (non-zero
advantages, so the backward pass is real). A random model is the point: speed does not depend on the weights,
and nothing has to be downloaded.

Variants (each in its own process, so peak memory is per variant):

- ``stock``: ``GRPOConfig`` defaults, with ``gradient_accumulation_steps=8`` so an optimizer step sees 64
  rollouts (TRL then generates the 64 rollouts in one pass per optimizer step);
- ``stock_reuse``: stock + ``steps_per_generation=64``: one 512-rollout generation pass feeds 8 optimizer steps;
- ``recipe``: every speed-relevant key of ``recipes/grpo/qwen2.5-1.5b-instruct.yaml`` (same 64 rollouts per
  optimizer step, larger micro-batches, generation reused across 8 optimizer steps);
- ``recipe_vllm``: the recipe with vLLM colocate generation (only where vllm is installed).

Measured: time per optimizer step (median after warm-up; for variants that generate once every k steps, the
mean over whole k-step cycles after the first cycle, plus the generating and non-generating step times),
completion tokens/s (rollouts per step x completion length / s per step), peak GPU memory (torch allocator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

QWEN25_15B = dict(
    vocab_size=151_936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
#: recipe keys that change what is computed or how fast; the rest (paths, logging, data, rewards) do not apply
SPEED_KEYS = {
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "generation_batch_size",
    "num_generations", "gradient_checkpointing", "bf16", "beta", "loss_type",
    "mask_truncated_completions", "temperature", "top_p", "top_k", "num_iterations", "use_vllm", "vllm_mode",
    "vllm_gpu_memory_utilization", "vllm_enable_sleep_mode", "vllm_tensor_parallel_size",
    "vllm_importance_sampling_correction", "cache_implementation", "use_liger_kernel", "torch_compile",
    "optim", "scale_rewards", "epsilon", "epsilon_high", "attn_implementation", "dtype",
}  # fmt: skip
VARIANTS = ("stock", "stock_reuse", "recipe", "recipe_vllm")


# ---------------------------------------------------------------------------------------- model + data
def build_model(folder: Path, shape: dict, device: str) -> Path:
    """Random-init Qwen2 of ``shape`` in bf16 (fp32 on CPU) plus a word-level tokenizer of the same vocab size."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<eos>": 1, **{f"t{i}": i for i in range(2, shape["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<pad>")
    fast.save_pretrained(folder)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=1, pad_token_id=0, dtype=dtype)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    del model
    return folder


def load_tokenizer(folder: Path):
    """Load the word-level tokenizer as itself (AutoTokenizer would rebuild a BPE Qwen2Tokenizer for qwen2)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder)


def prompts(n: int, length: int, words: list[str], seed: int = 0):
    """``n`` prompts of ``length`` words, each word one token of the model's tokenizer."""
    from datasets import Dataset

    rng = random.Random(seed)
    return Dataset.from_dict({"prompt": [" ".join(rng.choice(words) for _ in range(length)) for _ in range(n)]})


def smoke_model(folder: Path):
    """The CPU smoke run's model: the kit's tiny Qwen2 (:mod:`wildsci.testing.tiny_model`), and its one-token
    words (byte-level BPE entries for a space plus letters), so a prompt of N words is N tokens."""
    from transformers import AutoTokenizer

    from wildsci.testing.tiny_model import build_tiny_qwen2

    if not (folder / "config.json").is_file():
        build_tiny_qwen2(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    words = sorted(t[1:] for t in tok.get_vocab() if t.startswith("\u0120") and t[1:].isalpha())
    return folder, tok, words


def random_reward(completions, **kwargs):
    """Non-constant rewards: GRPO advantages are non-zero, so the backward pass does real work."""
    return [random.random() for _ in completions]


# ------------------------------------------------------------------------------------------- variants
def variant_config(name: str, recipe: str, completion_len: int, smoke: bool) -> dict:
    """GRPOConfig keyword arguments of one variant (before output dir / step counts)."""
    import yaml

    if name.startswith("stock"):
        cfg = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 8}  # the rest: TRL defaults
        if name == "stock_reuse":
            cfg["steps_per_generation"] = 64
    else:
        data = yaml.safe_load(Path(recipe).read_text())
        cfg = {k: v for k, v in data.items() if k in SPEED_KEYS}
        from trl import GRPOConfig

        known = {f.name for f in dataclasses.fields(GRPOConfig)} | {"dtype", "attn_implementation"}
        if stale := sorted(k for k in cfg if k not in known):  # a key TRL renamed: say so, not a TypeError
            sys.exit(f"grpo_throughput: {recipe}: {', '.join(stale)} is not a GRPOConfig key in the installed TRL")
        if name == "recipe_vllm":
            cfg.update(use_vllm=True, vllm_mode="colocate", vllm_importance_sampling_correction=True)
            cfg.setdefault("vllm_gpu_memory_utilization", 0.35)
    cfg["max_completion_length"] = completion_len
    # Fixed-length completions never end with EOS, so they all count as truncated; masking them would zero the
    # loss. The compute is the same either way, but the bench keeps a real loss.
    cfg["mask_truncated_completions"] = False
    fixed = {"min_tokens": completion_len} if cfg.get("use_vllm") else {"min_new_tokens": completion_len}
    cfg["generation_kwargs"] = fixed
    if smoke:
        cfg.update(bf16=False, use_cpu=True)
        cfg.pop("use_vllm", None)
    return cfg


def run_one(args) -> dict:
    """Train one variant for warm-up + measured steps; return timings and memory."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    smoke = args.cpu_smoke
    cuda = torch.cuda.is_available() and not smoke
    if smoke:
        model_dir, tokenizer, words = smoke_model(Path(args.work) / "model-tiny-qwen2")
    else:
        model_dir = build_model(Path(args.work) / "model-qwen2.5-1.5b-shape", QWEN25_15B, "cuda" if cuda else "cpu")
        tokenizer, words = load_tokenizer(model_dir), [f"t{i}" for i in range(2, QWEN25_15B["vocab_size"])]
    cfg = variant_config(args.one, args.recipe, args.completion_len, smoke)
    recipe_dtype = cfg.pop("dtype", "bfloat16")
    dtype = recipe_dtype if cuda else "float32"  # CPU smoke: bf16 matmuls are slow on CPU
    attn = cfg.pop("attn_implementation", "sdpa")

    probe = GRPOConfig(output_dir=tempfile.mkdtemp(), **{**cfg, "report_to": "none"})
    per_step = probe.per_device_train_batch_size * probe.gradient_accumulation_steps
    cycle = max(1, probe.steps_per_generation // probe.gradient_accumulation_steps)
    # the first generation cycle pays one-off costs (CUDA init, allocator growth): a warm-up, except in the smoke run
    warmup = (0 if smoke else cycle) if cycle > 1 else args.warmup
    measured = cycle * max(1, -(-args.steps // cycle)) if cycle > 1 else args.steps
    n_prompts = (warmup + measured) * per_step // probe.num_generations + probe.generation_batch_size
    config = GRPOConfig(
        output_dir=str(Path(args.work) / f"out-{args.one}"),
        max_steps=warmup + measured,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        model_init_kwargs={"dtype": dtype, "attn_implementation": attn},
        **cfg,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)

    timer = StepTimer()
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=random_reward,
        args=config,
        train_dataset=prompts(n_prompts, args.prompt_len, words),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    steady = timer.times[warmup:]
    if cycle > 1:
        s_per_step = statistics.mean(steady)
        gen = [t for i, t in enumerate(steady) if i % cycle == 0]
        other = [t for i, t in enumerate(steady) if i % cycle != 0]
    else:
        s_per_step, gen, other = statistics.median(steady), steady, []
    return {
        "variant": args.one,
        "rollouts_per_step": per_step,
        "steps_per_generation_cycle": cycle,
        "warmup_steps": warmup,
        "measured_steps": len(steady),
        "s_per_step": s_per_step,
        "generating_step_s": statistics.median(gen) if gen else None,
        "other_step_s": statistics.median(other) if other else None,
        "completion_tok_per_s": per_step * args.completion_len / s_per_step,
        "mean_completion_length": statistics.mean(lengths) if lengths else None,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "step_times": timer.times,
        "config": {k: v for k, v in cfg.items() if k != "generation_kwargs"},
    }


# ----------------------------------------------------------------------------------------- orchestrator
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--recipe", default="recipes/grpo/qwen2.5-1.5b-instruct.yaml")
    ap.add_argument("--steps", type=int, default=3, help="measured optimizer steps (whole cycles for reuse variants)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps for variants that generate every step")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--completion-len", type=int, default=1024)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape on CPU (16+16 tokens): checks the script")
    ap.add_argument("--work", default=str(ROOT / "runs/bench/grpo_throughput"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    ap.add_argument("--allow-dirty", action="store_true", help="write from uncommitted code (stamped -dirty)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.cpu_smoke:
        args.prompt_len, args.completion_len = min(args.prompt_len, 16), min(args.completion_len, 16)
        args.steps, args.warmup = 1, 1
    if args.one:
        Path(args.json).write_text(json.dumps(run_one(args)))
        return

    import torch
    from _results import machine, markdown_table, start_run

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("grpo_throughput: no GPU found -- run it on a GPU machine, or use --cpu-smoke to check the script")
    run = start_run(args.allow_dirty, write=not args.no_write)
    results, notes = [], []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            sys.exit(f"grpo_throughput: unknown variant {name!r} -- use {', '.join(VARIANTS)}")
        if name == "recipe_vllm":
            import importlib.util

            if args.cpu_smoke or importlib.util.find_spec("vllm") is None:
                notes.append("recipe_vllm skipped: " + ("CPU smoke run" if args.cpu_smoke else "vllm not installed"))
                continue
        t = time.time()
        print(f"== {name}", flush=True)
        if args.cpu_smoke:  # in-process: the smoke run is about the script, not about isolated memory peaks
            r = run_one(argparse.Namespace(**{**vars(args), "one": name}))
        else:  # one process per variant, so each peak-memory number is that variant's own
            out = Path(tempfile.mkdtemp()) / f"{name}.json"
            run = subprocess.run([sys.executable, __file__, "--one", name, "--json", str(out), *sys.argv[1:]])
            if run.returncode != 0:
                notes.append(f"{name} failed (exit {run.returncode}); see its output above")
                continue
            r = json.loads(out.read_text())
        r["wall_s"] = time.time() - t
        results.append(r)

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    stock = next((r for r in results if r["variant"] == "stock"), None)
    rows = [
        [
            r["variant"], r["rollouts_per_step"], r["steps_per_generation_cycle"], r["measured_steps"],
            f(r["s_per_step"], ".2f"), f(r["generating_step_s"], ".2f"), f(r["other_step_s"], ".2f"),
            f(r["completion_tok_per_s"], ",.0f"), f(r["mean_completion_length"], ".0f"), f(r["peak_gpu_gib"], ".1f"),
            f(stock["s_per_step"] / r["s_per_step"], ".2f") + "x" if stock else "-",
        ]
        for r in results
    ]  # fmt: skip
    table = markdown_table(
        ["variant", "rollouts/step", "steps/generation", "measured steps", "s/step", "generating step s",
         "other steps s", "completion tok/s", "mean completion len", "peak GPU GiB", "speed-up vs stock"],
        rows,
    )  # fmt: skip
    shape = "tiny Qwen2 of wildsci.testing (CPU smoke)" if args.cpu_smoke else "Qwen2.5-1.5B shape, random init, bf16"
    body = (
        f"Workload: {shape}; {args.prompt_len}-token prompts, {args.completion_len}-token completions (fixed), "
        f"8 rollouts per prompt; recipe `{args.recipe}`.\n\n{table}\n"
        + ("\n" + "\n".join(f"- {n}" for n in notes) + "\n" if notes else "")
    )
    print(body)
    (Path(args.work) / "results.json").write_text(json.dumps(results, indent=2))
    if args.cpu_smoke:
        body += (
            "\nThis is the CPU smoke run (it proves the script runs end to end). **The GPU numbers have not been "
            "measured yet**: no GPU machine was available to this task. Run `python bench/grpo_throughput.py` on one "
            "GPU to fill this section; the issue's reference for stock TRL 1.16 on one H100 is 43.9 s/step, 1,485 "
            "completion tok/s, 41.4 GiB.\n"
        )
    body += f"\nLoad: {run.load_note(own_threads=torch.get_num_threads())}\n"
    if not args.no_write:
        run.write("grpo_throughput", f"GRPO throughput ({'CPU smoke' if args.cpu_smoke else machine()})", body)


if __name__ == "__main__":
    main()
