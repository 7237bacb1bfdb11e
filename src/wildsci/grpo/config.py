"""The GRPO recipe's dataclasses and the checks that need nothing but the values themselves.

A flat recipe (open-r1 style) is parsed by TRL's ``TrlParser`` into three dataclasses, see
:func:`recipe_dataclasses`: :class:`WildSciGRPOArguments` (dataset, filters, rewards, metrics, guards),
:class:`GRPOConfig` (TRL's, plus our checks) and TRL's ``ModelConfig``. Every check lives in a
``__post_init__``, so it runs on the final values -- YAML and command-line overrides alike -- whoever builds
the arguments. Why our own checks before TRL's: TRL accepts counts that mean nothing (``max_steps 0`` trains
one step, a batch of 0 fails deep inside training) and states its batch rule without the fix.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass, field
from typing import Any

import trl
from trl import ModelConfig

from wildsci.answers import COLLAPSE_SHARE
from wildsci.errors import UserError, first_line
from wildsci.schema import NUM_OPTIONS, VOTING_TYPES
from wildsci.taxonomy import load_taxonomy


@dataclass
class WildSciGRPOArguments:
    """The WildSci part of a GRPO recipe (the rest is TRL's ``GRPOConfig`` and ``ModelConfig``)."""

    dataset_name: str = field(
        metadata={
            "help": "WildSci-format dataset: a Hub id (JustinTX/WildSci), a local folder in the Hub layout, or the "
            "output folder of `wildsci build` (e.g. runs/demo/dataset)."
        }
    )
    dataset_revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision (branch, tag or commit) of the dataset; pin it for reproducibility."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Split used for evaluation when eval_strategy is not 'no' (e.g. validation)."}
    )
    voting_types: list[str] | None = field(
        default=None,
        metadata={
            "help": "Keep only rows whose voting_type is in this list (all_aligned, majority_aligned, "
            "minority_aligned, majority_misaligned, unaligned); null keeps all."
        },
    )
    disciplines: list[str] | None = field(
        default=None,
        metadata={"help": "Keep only these disciplines (names from src/wildsci/taxonomy.yaml); null keeps all."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a seeded random subset of this many rows (after filtering)."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Rewards by name (accuracy, format, format_after_warmup, letter_balance) or dotted path "
            "(my_pkg.my_module:my_reward); weights go in reward_weights, one per reward."
        },
    )
    format_partial_credit: float = field(
        default=0.5,
        metadata={"help": "Format reward for a parseable answer that is not \\boxed{X} (a boxed answer gets 1)."},
    )
    format_warmup_steps: int = field(
        default=8,
        metadata={
            "help": "format_after_warmup: training steps during which any readable answer earns format credit; "
            "afterwards only a right answer earns it."
        },
    )
    option_rotations: int = field(
        default=1,
        metadata={
            "help": "Ask each training question under this many cyclic rotations of its options in the same "
            "optimizer step, so its gold letter differs between them (needs shuffle_dataset: false; the questions "
            "are shuffled once with the seed). 1 = each question once, as written."
        },
    )
    letter_balance_window: int = field(
        default=8,
        metadata={
            "help": "letter_balance: reward calls (one per generation batch) whose answers and gold letters are "
            "pooled to measure each letter's excess over its gold share."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; null uses wildsci.prompts.SYSTEM_PROMPT, '' sends no system message."},
    )
    metrics_path: str | None = field(
        default=None, metadata={"help": "Per-discipline metrics JSONL; default <output_dir>/wildsci_metrics.jsonl."}
    )
    clipped_ratio_threshold: float = field(
        default=0.5, metadata={"help": "Warn when more than this fraction of completions hit max_completion_length."}
    )
    zero_std_threshold: float = field(
        default=0.95, metadata={"help": "frac_reward_zero_std at or above this counts as 'every group identical'."}
    )
    zero_std_patience: int = field(
        default=3,
        metadata={"help": "Warn after this many logged steps in a row with identical rewards in every group."},
    )
    letter_share_threshold: float = field(
        default=COLLAPSE_SHARE,
        metadata={
            "help": "Warn when one answer letter takes more than this share of the readable rollout answers over "
            "letter_share_window logged steps (and more than its share of the gold letters): a collapse onto one "
            "letter earns accuracy by chance, not by reading the question."
        },
    )
    letter_share_window: int = field(
        default=8, metadata={"help": "Logged steps pooled by the one-letter guard (it judges from 20 answers on)."}
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "help": "Run every check and print the memory plan (with plan_device, or on a GPU), then stop before "
            "the model's weights are loaded."
        },
    )
    plan_device: str | None = field(
        default=None,
        metadata={
            "help": "Plan memory for this device instead of the one found (dry_run): h100-80gb, h200-141gb, "
            "a100-80gb, a100-40gb, l40s-48gb, or a size such as 24gib."
        },
    )
    plan_launch: str | None = field(
        default=None,
        metadata={
            "help": "With plan_device: plan for the launch this accelerate config describes (processes, ZeRO stage, "
            "FSDP), e.g. recipes/accelerate/zero3.yaml; default: this launch."
        },
    )
    allow_half_precision_optimizer: bool = field(
        default=False,
        metadata={
            "help": "Allow dtype bfloat16/float16 without DeepSpeed or FSDP, i.e. a half-precision AdamW with no fp32 "
            "master weights (small updates round away; docs/grpo.md, 'Precision')."
        },
    )

    def __post_init__(self) -> None:
        bad = [v for v in self.voting_types or [] if v not in VOTING_TYPES]
        if bad:
            raise UserError(f"voting_types {bad} unknown -- use some of {', '.join(sorted(VOTING_TYPES))}")
        known = load_taxonomy().disciplines
        bad = [d for d in self.disciplines or [] if d not in known]
        if bad:
            raise UserError(
                f"disciplines {bad} unknown -- use names from src/wildsci/taxonomy.yaml: {', '.join(known)}"
            )
        if not self.reward_funcs:
            raise UserError("reward_funcs is empty -- name at least one reward, e.g. [accuracy, format]")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise UserError(
                f"max_train_samples {self.max_train_samples} leaves nothing to train on -- give a positive number, "
                "or null for every row"
            )
        for name in ("format_partial_credit", "clipped_ratio_threshold", "zero_std_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} {getattr(self, name)} is not a fraction -- give a value between 0 and 1")
        if not 0.0 < self.letter_share_threshold < 1.0:
            raise UserError(
                f"letter_share_threshold {self.letter_share_threshold} -- give a share strictly between 0 and 1"
            )
        for name, unit in (("zero_std_patience", "logged steps"), ("letter_share_window", "logged steps"),
                           ("letter_balance_window", "reward calls")):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserError(f"{name} {getattr(self, name)} -- give a number of {unit}, at least 1")
        if not 1 <= self.option_rotations <= NUM_OPTIONS:
            raise UserError(
                f"option_rotations {self.option_rotations} -- give 1 (questions as written) to {NUM_OPTIONS} "
                "(one rotation per option letter)"
            )
        if self.format_warmup_steps < 0:
            raise UserError(f"format_warmup_steps {self.format_warmup_steps} -- give 0 or more reward calls")
        if self.plan_launch is not None and self.plan_device is None:
            raise UserError("plan_launch is set without plan_device -- add e.g. --plan_device h100-80gb")
        if self.plan_device is not None:
            from wildsci.grpo.memory import parse_device

            parse_device(self.plan_device)  # an unknown device is refused here, before anything loads


#: True while a dry run plans for a named device (``--dry-run --plan_device``): this machine's device is not checked
PLANNING: contextvars.ContextVar[bool] = contextvars.ContextVar("wildsci_grpo_planning", default=False)


def enum_value(x: Any) -> Any:
    """An enum's value (TrainingArguments turns strategies into enums in its own ``__post_init__``)."""
    return getattr(x, "value", x)


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig``, refusing counts that mean nothing and batches that cannot hold whole groups.

    TRL would train one step for ``max_steps: 0`` and fail mid-training on a batch of 0; its batch rule
    says what is wrong but not the fix. These checks run first, then TRL's (whose errors become one line).
    """

    def __post_init__(self) -> None:
        from wildsci.grpo.launch import check_device, check_sharding, config_name

        self._check_counts()
        self._check_values()
        self._check_batch(int(os.environ.get("WORLD_SIZE", "1")))
        planning = PLANNING.get()
        if not planning:
            check_device(self)  # before transformers' own bf16 rule, which does not say why the GPU is missing
            check_sharding(self, config_name())  # before transformers asks for DeepSpeed
        use_cpu = self.use_cpu
        if planning:  # a plan for a GPU made on a CPU: transformers would refuse bf16 here; the run is not here
            self.use_cpu = True
        try:
            super().__post_init__()
        except ValueError as e:  # TRL's and transformers' own rules: one line, not a traceback
            raise UserError(first_line(e)) from None
        finally:
            self.use_cpu = use_cpu

    def _check_counts(self) -> None:
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(
                f"max_steps {self.max_steps} trains nothing -- give a positive number of steps, or -1 (the default) "
                "to train num_train_epochs epochs"
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise UserError(
                f"num_train_epochs {self.num_train_epochs} trains nothing -- give a positive number of epochs or set "
                "max_steps"
            )
        positive = ["per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length"]
        positive += [k for k in ("generation_batch_size", "steps_per_generation") if getattr(self, k) is not None]
        if self.do_eval or enum_value(self.eval_strategy) != "no":
            positive.append("per_device_eval_batch_size")
        if enum_value(self.logging_strategy) == "steps":
            positive.append("logging_steps")
        if enum_value(self.save_strategy) == "steps":
            positive.append("save_steps")
        for name in positive:
            v = getattr(self, name)
            if v is None or v <= 0:
                raise UserError(f"{name} {v} means nothing to train with -- give a positive number")
        if self.num_generations is None or self.num_generations < 2:
            raise UserError(
                f"num_generations is {self.num_generations}; GRPO compares at least 2 completions per prompt -- "
                "set num_generations to 2 or more"
            )

    def _check_values(self) -> None:
        """Values TRL or torch would refuse only after the model and data are loaded (or never)."""
        rules = [
            ("learning_rate", self.learning_rate > 0, "give a positive rate, e.g. 1e-6"),
            ("weight_decay", self.weight_decay >= 0, "give 0 or more"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm >= 0, "give 0 (no clipping) or more"),
            ("warmup_steps", self.warmup_steps >= 0, "give 0 or more"),
            ("temperature", self.temperature > 0, "give a positive temperature, e.g. 1.0"),
            ("top_p", 0 < self.top_p <= 1, "give a share in (0, 1]"),
            ("beta", self.beta >= 0, "give 0 (no KL term) or more"),
            ("epsilon", self.epsilon > 0, "give a positive clipping range, e.g. 0.2"),
            ("num_iterations", self.num_iterations >= 1, "give 1 or more"),
            ("adam_beta1", 0 <= self.adam_beta1 < 1, "give a value in [0, 1)"),
            ("adam_beta2", 0 <= self.adam_beta2 < 1, "give a value in [0, 1)"),
            ("adam_epsilon", self.adam_epsilon > 0, "give a small positive value, e.g. 1e-8"),
        ]
        if self.top_k is not None:
            rules.append(("top_k", self.top_k >= 0, "give 0 (off) or more"))
        if self.save_total_limit is not None:
            rules.append(("save_total_limit", self.save_total_limit >= 1, "give 1 or more, or null to keep all"))
        if self.vllm_max_model_length is not None:
            rules.append(("vllm_max_model_length", self.vllm_max_model_length > 0, "give a positive token count"))
        for name, ok, fix in rules:
            if not ok:
                raise UserError(f"{name} {getattr(self, name)} -- {fix}")
        for name in ("warmup_ratio",):
            v = getattr(self, name, None)
            if v is not None and not 0 <= v <= 1:
                raise UserError(f"{name} {v} is not a fraction -- give a value between 0 and 1")

    def _check_batch(self, world_size: int) -> None:
        """TRL's rule with the fix: the generation batch must hold whole groups of ``num_generations``."""
        per_device, num_gen = self.per_device_train_batch_size, self.num_generations
        global_batch = per_device * world_size
        gen_batch, spg = self.generation_batch_size, self.steps_per_generation
        if gen_batch is not None and spg is not None:
            raise UserError("set either generation_batch_size or steps_per_generation, not both -- remove one")
        if gen_batch is not None:
            if gen_batch % global_batch:
                raise UserError(
                    f"generation_batch_size {gen_batch} must be a multiple of per_device_train_batch_size "
                    f"{per_device} x {world_size} processes = {global_batch}"
                )
            how = f"generation_batch_size {gen_batch}"
        else:
            steps = spg if spg is not None else self.gradient_accumulation_steps
            which = "steps_per_generation" if spg is not None else "gradient_accumulation_steps"
            gen_batch = global_batch * steps
            how = f"per_device_train_batch_size {per_device} x {world_size} processes x {which} {steps} = {gen_batch}"
        if gen_batch % num_gen:
            raise UserError(
                f"effective batch ({how}) is not divisible by num_generations {num_gen}; every prompt needs all its "
                f"{num_gen} completions in one batch -- make the batch a multiple of {num_gen} or change "
                "num_generations"
            )
        if self.do_eval and enum_value(self.eval_strategy) != "no":
            eval_gen = self.num_generations_eval or num_gen
            eval_batch = self.per_device_eval_batch_size * world_size
            if eval_batch % eval_gen:
                raise UserError(
                    f"eval batch (per_device_eval_batch_size x {world_size} processes = {eval_batch}) is not "
                    f"divisible by {eval_gen} generations -- change per_device_eval_batch_size or num_generations_eval"
                )


def recipe_dataclasses() -> tuple[type, ...]:
    """The dataclasses a flat GRPO recipe is parsed into (``wildsci recipes check`` and the entry point)."""
    return (WildSciGRPOArguments, GRPOConfig, ModelConfig)
