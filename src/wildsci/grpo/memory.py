"""The memory plan: peak memory per device of a GRPO run, estimated before launch, from the recipe and the data.

Why: a GRPO step has two phases with different peaks, and the larger one is easy to miss. Generation with
transformers holds a KV cache for the whole generation batch of a process (``per_device_train_batch_size x
steps_per_generation`` sequences, left-padded to the longest prompt of the batch, plus ``max_completion_length``),
in the dtype of the weights: fp32 weights under bf16 autocast give an fp32 cache (RoPE's cos/sin take the
weights' dtype in ``modeling_qwen2.py`` and the cache makes V in K's dtype, ``cache_utils.py``). Training holds
the activations of one micro-batch. Weights, AdamW state and (while training) gradients sit under both.

The estimate counts, per device:

- weights, the reference model (``beta > 0``), gradients, AdamW state, each at its dtype and divided by the
  processes where the launch shards it (ZeRO-1/2 shard the optimizer (and gradients), ZeRO-3 and FSDP everything;
  DeepSpeed and FSDP keep fp32 master weights + AdamW state, 12 bytes a parameter, sharded);
- generation (transformers): the KV cache above, plus the prefill's transient activations of one layer;
  generation (vLLM colocate): ``vllm_gpu_memory_utilization`` of the device (vLLM allocates its share up front;
  with ``vllm_enable_sleep_mode`` the share is released while training);
- training: activations of one micro-batch of the longest sequences, every layer's (checkpointing keeps one
  hidden state per layer and recomputes one layer at a time). TRL scores log-probs through a fused, chunked LM
  head (``fused_lm_head=True``), so no full logits tensor is counted. Attention scores (batch x heads x L x L)
  are counted only for ``attn_implementation: eager``; sdpa's kernels do not keep them.

The prompt lengths are the dataset's real ones: every prompt is rendered with the model's chat template and
tokenized (what TRL feeds to ``generate``); the plan takes the longest, because the batch that holds it is padded
to it and one batch out of memory ends the run. ``tests/test_grpo_memory.py`` checks the estimate against the
measured peak of tiny models on the CPU.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from wildsci.errors import UserError

log = logging.getLogger("wildsci.grpo")

GIB = 1024**3
#: usable memory of named devices in GiB, as torch.cuda.get_device_properties reports them
DEVICES = {
    "h100-80gb": 79.6,
    "h200-141gb": 139.8,
    "a100-80gb": 79.2,
    "a100-40gb": 39.4,
    "l40s-48gb": 44.4,
}
#: CUDA context, allocator fragmentation and NCCL buffers: a plan must leave this share of the device free
HEADROOM = 0.10
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 4, None: 4}


def parse_device(name: str) -> float:
    """GiB of a named device (``h100-80gb``) or of a size (``24gib``, ``24gb``); anything else is refused."""
    key = name.strip().lower()
    if key in DEVICES:
        return DEVICES[key]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(gib|gb)", key)
    if m and float(m.group(1)) > 0:
        return float(m.group(1)) * (1e9 / GIB if m.group(2) == "gb" else 1.0)
    raise UserError(f"plan_device {name!r} unknown -- use one of {', '.join(DEVICES)} or a size such as 24gib")


def device_capacity(plan_device: str | None, args: Any, planning: bool) -> tuple[str, float] | None:
    """(name, GiB) of the device to plan for: the named one, else this process's CUDA device, else None (CPU)."""
    if plan_device is not None:
        return plan_device, parse_device(plan_device)
    if planning or args.use_cpu:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(args.device)
    return props.name, props.total_memory / GIB


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: parameter count and the sizes of its layers."""

    params: int
    layers: int
    heads: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Counted on the meta device: any architecture ``AutoModelForCausalLM`` builds, no memory allocated."""
        import torch
        from transformers import AutoModelForCausalLM

        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        params = sum(p.numel() for p in model.parameters())
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return cls(
            params=params,
            layers=text.num_hidden_layers,
            heads=heads,
            hidden=text.hidden_size,
            intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
            kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=text.vocab_size,
        )


@dataclass(frozen=True)
class RunShape:
    """The recipe's numbers that decide memory (one process's view)."""

    weight_bytes: int  # the loaded weights' dtype (and so gradients', AdamW's and the KV cache's)
    autocast_bytes: int  # activations' dtype: 2 under bf16/fp16 autocast, else the weights'
    micro_batch: int  # per_device_train_batch_size
    generation_batch: int  # sequences one process generates at once
    prompt_tokens: int  # longest prompt of the data, chat template included
    completion_tokens: int  # max_completion_length
    gradient_checkpointing: bool
    beta: float
    vllm_share: float | None  # vllm_gpu_memory_utilization in colocate mode, else None
    vllm_sleeps: bool
    scores_materialized: bool  # attention keeps batch x heads x L x L scores (attn_implementation: eager)

    @property
    def sequence(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Activation bytes per token and layer, in units of the activation dtype, for a transformer decoder layer
# (Llama/Qwen2 shape): saved for the backward without checkpointing, and one layer's working set with it.
ACT_HIDDEN, ACT_INTERMEDIATE = 16, 5
#: with checkpointing, the backward holds the recomputed layer's activations, their gradients and the next layer's
#: recompute: three layers' worth, as measured on the CPU (tests/test_grpo_memory.py keeps it honest)
CHECKPOINT_LAYERS = 3
PREFILL_HIDDEN, PREFILL_INTERMEDIATE = 4, 3


@dataclass
class MemoryPlan:
    """Rows of GiB per device and the verdict; :meth:`table` prints them, :meth:`refuse_if_too_big` acts on them."""

    device: str
    capacity: float
    launch: str
    rows: list[tuple[str, float, str]] = field(default_factory=list)  # (what, GiB, how it was counted)
    generation_peak: float = 0.0
    training_peak: float = 0.0
    hint: str = ""

    @property
    def peak(self) -> float:
        return max(self.generation_peak, self.training_peak)

    @property
    def usable(self) -> float:
        return self.capacity * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable

    def table(self) -> str:
        lines = [
            f"memory plan per device: {self.device} ({self.capacity:.1f} GiB), {self.launch}",
            f"  {'what':<24} {'GiB':>8}  how",
        ]
        lines += [f"  {what:<24} {gib:>8.2f}  {how}" for what, gib, how in self.rows]
        lines.append(f"  {'peak, generating':<24} {self.generation_peak:>8.2f}")
        lines.append(f"  {'peak, training':<24} {self.training_peak:>8.2f}")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(
            f"  {'peak':<24} {self.peak:>8.2f}  {verdict} in {self.usable:.1f} GiB "
            f"({self.capacity:.1f} less {HEADROOM:.0%} for the CUDA context and fragmentation)"
        )
        return "\n".join(lines)

    def refuse_if_too_big(self, where: str) -> None:
        if not self.fits:
            raise UserError(
                f"{where}: the memory plan needs {self.peak:.1f} GiB per device, {self.device} has {self.usable:.1f} "
                f"usable -- {self.hint}"
            )


def estimate(
    model: ModelShape, run: RunShape, processes: int, sharding: str, device: str, capacity: float
) -> MemoryPlan:
    """The plan for one device (see the module doc for what each row counts)."""
    n, p, wb = processes, model.params, run.weight_bytes
    shard_all = sharding in ("zero3", "fsdp")
    plan = MemoryPlan(device, capacity, f"{n} process(es), sharding {sharding}")
    add = plan.rows.append

    weights = p * (4 if sharding == "fsdp" else wb) / (n if shard_all else 1)
    add(
        (
            "weights",
            weights / GIB,
            f"{p / 1e9:.2f}B params x {4 if sharding == 'fsdp' else wb} B" + (f" / {n}" if shard_all else ""),
        )
    )
    ref = p * wb / (n if shard_all else 1) if run.beta > 0 else 0.0
    if ref:
        add(("reference model", ref / GIB, "beta > 0: a frozen copy of the weights"))
    if sharding.startswith("zero") or sharding == "fsdp":
        optim = 12 * p / n if sharding.startswith("zero") else 8 * p / n
        how = "fp32 master + AdamW m, v: 12 B/param / n" if sharding.startswith("zero") else "AdamW m, v fp32: 8 B / n"
        grads = p * (4 if sharding == "fsdp" else wb) / (n if sharding != "zero1" else 1)
    else:
        optim, how = 2 * p * wb, f"AdamW m, v in the weights' dtype: 2 x {wb} B/param"
        grads = p * wb
    add(("optimizer state", optim / GIB, how))
    add(
        (
            "gradients",
            grads / GIB,
            "while training" + (f" (sharded / {n})" if sharding not in ("none", "zero1") else ""),
        )
    )
    resident = weights + ref + optim
    # DDP keeps its gradient buckets between steps; a single process frees the gradients after each step
    persistent_grads = grads if (n > 1 and sharding == "none") else 0.0

    if run.vllm_share is not None:
        gen = run.vllm_share * capacity * GIB
        add(("vLLM (colocate)", gen / GIB, f"vllm_gpu_memory_utilization {run.vllm_share} of the device"))
    else:
        kv = run.generation_batch * run.sequence * model.layers * 2 * model.kv_heads * model.head_dim * wb
        add(
            (
                "generation KV cache",
                kv / GIB,
                f"{run.generation_batch} seqs x ({run.prompt_tokens} prompt + {run.completion_tokens}) tokens x "
                f"{model.layers} layers x 2 x {model.kv_heads * model.head_dim} x {wb} B",
            )
        )
        prefill = (
            run.generation_batch
            * run.prompt_tokens
            * (PREFILL_HIDDEN * model.hidden + PREFILL_INTERMEDIATE * model.intermediate)
            * run.autocast_bytes
        )
        if run.scores_materialized:
            prefill += 2 * run.generation_batch * model.heads * run.prompt_tokens**2 * run.autocast_bytes
        add(("generation transient", prefill / GIB, "the prefill's activations of one layer"))
        gen = kv + prefill
    tokens = run.micro_batch * run.sequence
    layer = tokens * (ACT_HIDDEN * model.hidden + ACT_INTERMEDIATE * model.intermediate) * run.autocast_bytes
    scores = run.micro_batch * model.heads * run.sequence**2 * run.autocast_bytes if run.scores_materialized else 0
    if run.gradient_checkpointing:  # one hidden state per layer + CHECKPOINT_LAYERS layers' worth while recomputing
        acts = tokens * model.layers * model.hidden * wb + CHECKPOINT_LAYERS * (layer + scores)
        n = CHECKPOINT_LAYERS
        how = f"{run.micro_batch} x {run.sequence} tokens: a hidden state a layer + {n} layers recomputing"
    else:  # every layer's activations
        acts = model.layers * (layer + scores)
        how = f"{run.micro_batch} x {run.sequence} tokens x {model.layers} layers (no checkpointing)"
    if scores:
        how += "; attention scores kept (eager)"
    add(("training activations", acts / GIB, how))

    gen_during_training = gen if (run.vllm_share is not None and not run.vllm_sleeps) else 0.0
    plan.generation_peak = (resident + persistent_grads + gen) / GIB
    plan.training_peak = (resident + grads + acts + gen_during_training) / GIB
    plan.hint = _hint(plan, run, sharding)
    return plan


def _hint(plan: MemoryPlan, run: RunShape, sharding: str) -> str:
    """The key to change, named for the phase that does not fit."""
    if plan.generation_peak >= plan.training_peak:
        if run.vllm_share is not None:
            return "lower vllm_gpu_memory_utilization or shard the training state (recipes/accelerate/zero3.yaml)"
        return (
            f"lower steps_per_generation (each process generates {run.generation_batch} sequences at once) or "
            "max_completion_length"
        )
    if not run.gradient_checkpointing:
        return "set gradient_checkpointing: true or lower per_device_train_batch_size"
    if sharding in ("none", "zero1"):
        return "shard the training state (--config_file recipes/accelerate/zero2.yaml or zero3.yaml)"
    return "lower per_device_train_batch_size or max_completion_length"


def prompt_token_counts(dataset: Any, tokenizer: Any) -> list[int]:
    """Tokens of each prompt as TRL feeds it to generation: the chat template with the generation prompt."""
    counts = []
    for messages in dataset["prompt"]:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # a BatchEncoding in newer transformers
            ids = ids["input_ids"]
        counts.append(len(ids))
    return counts


def run_shape(args: Any, model_args: Any, prompt_tokens: int, processes: int) -> RunShape:
    """The :class:`RunShape` of a parsed recipe (``args``: GRPOConfig after its checks, ``model_args``)."""
    wb = DTYPE_BYTES.get(model_args.dtype, 4)
    half = args.bf16 or args.fp16
    if args.generation_batch_size is not None and args.steps_per_generation is None:
        per_process = args.generation_batch_size // processes
    else:
        per_process = args.per_device_train_batch_size * (
            args.steps_per_generation or args.gradient_accumulation_steps
        )
    colocate = args.use_vllm and args.vllm_mode == "colocate"
    return RunShape(
        weight_bytes=wb,
        autocast_bytes=2 if half else wb,
        micro_batch=args.per_device_train_batch_size,
        generation_batch=per_process,
        prompt_tokens=prompt_tokens,
        completion_tokens=args.max_completion_length,
        gradient_checkpointing=bool(args.gradient_checkpointing),
        beta=args.beta,
        vllm_share=args.vllm_gpu_memory_utilization if colocate else None,
        vllm_sleeps=bool(args.vllm_enable_sleep_mode),
        # sdpa's kernels (flash, memory-efficient; on the CPU too, measured) do not keep the L x L scores; eager does
        scores_materialized=model_args.attn_implementation == "eager",
    )


def plan_for_run(script: Any, args: Any, model_args: Any, model_path: str, capacity: tuple[str, float]) -> MemoryPlan:
    """The plan of this run: the model's shape and tokenizer, the dataset's longest prompt, the launch."""
    from transformers import AutoConfig, AutoTokenizer

    from wildsci.grpo.data import load_split
    from wildsci.grpo.launch import launch_shape, shape_from_config

    launch = shape_from_config(script.plan_launch) if script.plan_launch else launch_shape()
    kw = {"revision": model_args.model_revision, "trust_remote_code": args.trust_remote_code}
    model = ModelShape.from_config(AutoConfig.from_pretrained(model_path, **kw))
    tokenizer = AutoTokenizer.from_pretrained(model_path, **kw)
    counts = prompt_token_counts(load_split(script, script.dataset_train_split, seed=args.seed), tokenizer)
    log.info(
        "memory plan: %d prompts, %d to %d tokens (mean %.0f) with the chat template of %s",
        len(counts), min(counts), max(counts), sum(counts) / len(counts), model_args.model_name_or_path,
    )  # fmt: skip
    longest = max(counts) + args.max_completion_length
    if args.use_vllm and args.vllm_max_model_length and longest > args.vllm_max_model_length:
        raise UserError(
            f"vllm_max_model_length {args.vllm_max_model_length} is shorter than the longest prompt ({max(counts)} "
            f"tokens) + max_completion_length {args.max_completion_length} = {longest} -- raise it to {longest}"
        )
    run = run_shape(args, model_args, max(counts), launch.processes)
    return estimate(model, run, launch.processes, launch.sharding, *capacity)
