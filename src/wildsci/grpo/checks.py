"""Pre-launch checks that need the world: the model, the output folder, the checkpoint, vLLM, the Hub token.

Each one turns a failure that would otherwise surface minutes into training (or as a page of traceback) into
one line that says what and how to fix it. Checks that need only the argument values live in the
dataclasses' ``__post_init__`` (:mod:`wildsci.grpo.config`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from wildsci import models
from wildsci.errors import UserError, check_writable_dir, first_line


def check_output_dir(output_dir: str | None) -> Path:
    """The folder must be creatable and writable; it is not created here (a failed run leaves nothing behind)."""
    if not output_dir:
        raise UserError("output_dir is not set -- add output_dir: runs/<name> to the recipe")
    return check_writable_dir(output_dir, "output_dir")  # the one check eval and report use too


def check_model(ref: str | None, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """The kit's one model check (:func:`wildsci.models.check_model`: reference, config, causal LM, weights,
    tokenizer with a chat template -- GRPO's prompts are conversations), named after the recipe key."""
    return models.check_model(
        ref, revision=revision, trust_remote_code=trust_remote_code, chat_template=True, where="model_name_or_path"
    )


def vllm_window_problem() -> str | None:
    """TRL's own verdict on the installed vLLM (its supported window), or None when TRL has no complaint.

    The window is read from TRL itself (``trl.import_utils.is_vllm_available`` warns outside it), so it moves
    with the installed TRL instead of being copied here.
    """
    from trl.import_utils import is_vllm_available

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            available = is_vllm_available()
        except Exception as e:  # e.g. a build whose version string TRL cannot parse
            return f"TRL cannot read the installed vllm's version ({first_line(e)})"
    if not available:
        return "vllm is not installed"
    for w in caught:
        if "vLLM" in str(w.message) and "support" in str(w.message):
            return first_line(Exception(w.message))
    return None


def check_vllm(args: Any, planning: bool = False) -> None:
    """``use_vllm``: vLLM installed and inside TRL's window, a GPU for colocate mode, sane memory share.

    ``planning`` (a dry run for a named device): the values are checked, not this machine's vLLM and GPU.
    """
    if not args.use_vllm:
        return
    if args.vllm_mode not in ("colocate", "server"):
        raise UserError(f"vllm_mode {args.vllm_mode!r} unknown -- use colocate or server")
    problem = None if planning else vllm_window_problem()
    if problem:
        raise UserError(
            f"use_vllm is true but {problem} -- install the resolved GPU set "
            '(`pip install -e ".[gpu]" -c constraints-gpu.txt`) or set use_vllm: false'
        )
    if args.vllm_mode == "colocate":
        import torch

        if not planning and (args.use_cpu or not torch.cuda.is_available()):
            raise UserError(
                "use_vllm with vllm_mode colocate needs a CUDA GPU, and this run has none -- set use_vllm: false "
                "to generate with transformers"
            )
        if not 0.0 < args.vllm_gpu_memory_utilization <= 1.0:
            raise UserError(
                f"vllm_gpu_memory_utilization {args.vllm_gpu_memory_utilization} is not a share of the GPU memory "
                "-- give a value in (0, 1], e.g. 0.3 when training shares the GPU"
            )


def check_rotations(option_rotations: int, args: Any, where: str) -> None:
    """The rotations of one question must land in one optimizer step, or they do not cancel each other's letter."""
    if option_rotations <= 1:
        return
    if args.shuffle_dataset:
        raise UserError(
            f"{where}: option_rotations {option_rotations} needs shuffle_dataset: false -- TRL's shuffle would "
            "scatter a question's rotations over different steps (wildsci shuffles the questions once, with the seed)"
        )
    b, w, n = args.per_device_train_batch_size, args.world_size, args.num_generations
    g = args.gradient_accumulation_steps
    prompts = b * w * g // n
    if prompts % option_rotations:
        raise UserError(
            f"{where}: option_rotations {option_rotations}: a step holds {prompts} prompt(s) "
            f"(per_device_train_batch_size {b} x {w} process(es) x gradient_accumulation_steps {g} / num_generations "
            f"{n}) -- make it a multiple of {option_rotations}, e.g. per_device_train_batch_size "
            f"{option_rotations * n}"
        )


def check_push(push: bool, hub_model_id: str | None, token: str | None) -> str | None:
    """The token to push with (we push once, at the end), or a one-line error when the push cannot happen."""
    if not push:
        return None
    from huggingface_hub import get_token

    if not hub_model_id:
        raise UserError("push_to_hub needs hub_model_id (e.g. your-name/wildsci-qwen2.5-1.5b-grpo) -- add it")
    token = token or get_token()
    if not token:
        raise UserError("push_to_hub needs a Hub token -- run `hf auth login` or set HF_TOKEN")
    return token


def resolve_resume(value: Any, output_dir: str) -> str | None:
    """``true``/``last`` -> the newest ``checkpoint-*`` of ``output_dir``; a path -> itself, if it is a checkpoint."""
    if value is None or value is False or str(value).lower() in ("", "false", "no", "none"):
        return None
    if value is True or str(value).lower() in ("true", "yes", "last"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise UserError(
                f"--resume_from_checkpoint: no checkpoint-* folder in {output_dir} -- train without it first, or give "
                "the checkpoint path"
            )
        return last
    if not (Path(value) / "trainer_state.json").is_file():
        raise UserError(
            f"--resume_from_checkpoint: {value} is not a checkpoint folder (no trainer_state.json) -- give a "
            "checkpoint-<step> path"
        )
    return str(value)
