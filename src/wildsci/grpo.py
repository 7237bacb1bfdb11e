"""GRPO training on a WildSci-format dataset with TRL's ``GRPOTrainer``.

    accelerate launch [--config_file recipes/accelerate/<x>.yaml] -m wildsci.grpo --config recipes/grpo/<name>.yaml

The recipe is one flat YAML (open-r1 style) whose keys belong to three dataclasses, see
:func:`recipe_dataclasses`: our :class:`WildSciGRPOArguments` (dataset, filters, rewards, metrics), TRL's
``GRPOConfig`` and TRL's ``ModelConfig``. Every key can be overridden on the command line (``--learning_rate
1e-6``), because parsing is TRL's ``TrlParser``. Before that, the YAML is checked by
:func:`wildsci.recipes.check_flat`, so an unknown key or a wrong type is one line naming the file and the key,
not a traceback from deep inside training.

Flow: recipe -> pre-launch checks (effective batch vs ``num_generations``, model reachable, output dir
writable, dataset columns present) -> dataset (Hub id, local folder or ``wildsci build`` output; optional
``voting_type`` / discipline filters) -> chat prompts from :func:`wildsci.prompts.build_messages` (the one
prompt format) -> ``GRPOTrainer`` with rewards from :mod:`wildsci.rewards` and the per-discipline metrics
callback of :mod:`wildsci.metrics` -> save, model card (recipe, dataset revision, versions, git SHA, final
metrics) -> optional push (private by default). Every problem a user can fix is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildsci.errors import UserError, first_line

log = logging.getLogger("wildsci.grpo")

REQUIRED_COLUMNS = ("question", "options", "answer")
#: columns handed to the rewards (TRL passes every remaining dataset column to each reward function)
KEEP_COLUMNS = ("prompt", "answer", "options", "discipline", "nc_subdomain", "question_id")


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
            "help": "Rewards by name (accuracy, format) or dotted path (my_pkg.my_module:my_reward); weights go in "
            "reward_weights, one per reward."
        },
    )
    format_partial_credit: float = field(
        default=0.5,
        metadata={"help": "Format reward for a parseable answer that is not \\boxed{X} (a boxed answer gets 1)."},
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


def recipe_dataclasses() -> tuple[type, ...]:
    """The dataclasses a flat GRPO recipe is parsed into (used by ``wildsci recipes check`` and :func:`main`)."""
    from trl import GRPOConfig, ModelConfig

    return (WildSciGRPOArguments, GRPOConfig, ModelConfig)


# ------------------------------------------------------------------------------------------ pre-launch checks
def _field_default(cls: type, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else None


def check_batch(values: dict[str, Any], world_size: int, source: str = "recipe") -> None:
    """Reproduce TRL 1.x's batch rules (GRPOConfig.__post_init__) and fail with one line that says the fix.

    The generation batch (``per_device_train_batch_size x world_size x steps_per_generation``, where
    ``steps_per_generation`` defaults to ``gradient_accumulation_steps``, or ``generation_batch_size`` if
    given) must hold whole groups of ``num_generations`` completions of the same prompt.
    """
    from trl import GRPOConfig

    def get(key: str) -> Any:
        return values[key] if values.get(key) is not None else _field_default(GRPOConfig, key)

    per_device, accum, num_gen = get("per_device_train_batch_size"), get("gradient_accumulation_steps"), None
    num_gen = get("num_generations")
    gen_batch, spg = values.get("generation_batch_size"), values.get("steps_per_generation")
    if num_gen is None or num_gen < 2:
        raise UserError(f"{source}: num_generations is {num_gen}; GRPO compares at least 2 completions per prompt")
    global_batch = per_device * world_size
    if gen_batch is not None and spg is not None:
        raise UserError(
            f"{source}: set either generation_batch_size or steps_per_generation, not both -- remove one of them"
        )
    if gen_batch is not None:
        if gen_batch % global_batch:
            raise UserError(
                f"{source}: generation_batch_size {gen_batch} must be a multiple of per_device_train_batch_size "
                f"{per_device} x {world_size} processes = {global_batch}"
            )
        how = f"generation_batch_size {gen_batch}"
    else:
        steps = spg if spg is not None else accum
        gen_batch = global_batch * steps
        which = "steps_per_generation" if spg is not None else "gradient_accumulation_steps"
        how = f"per_device_train_batch_size {per_device} x {world_size} processes x {which} {steps} = {gen_batch}"
    if gen_batch % num_gen:
        raise UserError(
            f"{source}: effective batch ({how}) is not divisible by num_generations {num_gen}; every prompt needs "
            f"all its {num_gen} completions in one batch -- make the batch a multiple of {num_gen} or change "
            "num_generations"
        )
    if values.get("do_eval") and get("eval_strategy") not in ("no", None):
        eval_gen = values.get("num_generations_eval") or num_gen
        eval_batch = get("per_device_eval_batch_size") * world_size
        if eval_batch % eval_gen:
            raise UserError(
                f"{source}: eval batch (per_device_eval_batch_size x {world_size} processes = {eval_batch}) is not "
                f"divisible by {eval_gen} generations -- change per_device_eval_batch_size or num_generations_eval"
            )


def check_output_dir(output_dir: str | None) -> Path:
    if not output_dir:
        raise UserError("output_dir is not set -- add output_dir: runs/<name> to the recipe")
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output_dir {out} is not writable ({e.strerror or e}) -- choose another folder") from None
    return out


def check_model(ref: str | None, revision: str | None = None, trust_remote_code: bool = False) -> str:
    """Resolve ``embedded:``/``tiny:``/folders/Hub ids and load the config, so a bad model fails before training."""
    from wildsci.models import resolve_model

    if not ref:
        raise UserError("model_name_or_path is not set -- add e.g. model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct")
    path = resolve_model(ref)
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as e:
        msg = first_line(e)
        raise UserError(
            f"model {ref!r} is not reachable: {msg} -- check the id/folder, the network (HF_HUB_OFFLINE needs a "
            "cached copy) and, for gated models, `hf auth login`"
        ) from None
    return path


def check_columns(columns: list[str], script: WildSciGRPOArguments, where: str) -> None:
    need = list(REQUIRED_COLUMNS)
    if script.voting_types:
        need.append("voting_type")
    if script.disciplines:
        need.append("discipline")
    missing = [c for c in need if c not in columns]
    if missing:
        raise UserError(
            f"dataset {where} lacks column(s) {', '.join(missing)} (has {', '.join(columns)}) -- use a WildSci-format "
            "dataset (wildsci build output or JustinTX/WildSci)"
        )


def check_filters(script: WildSciGRPOArguments) -> None:
    from wildsci.schema import VOTING_TYPES
    from wildsci.taxonomy import load_taxonomy

    bad = [v for v in script.voting_types or [] if v not in VOTING_TYPES]
    if bad:
        raise UserError(f"voting_types {bad} unknown -- use some of {', '.join(VOTING_TYPES)}")
    known = load_taxonomy().disciplines
    bad = [d for d in script.disciplines or [] if d not in known]
    if bad:
        raise UserError(f"disciplines {bad} unknown -- use names from src/wildsci/taxonomy.yaml: {', '.join(known)}")


# --------------------------------------------------------------------------------------------------- data
def prepare_dataset(ds, script: WildSciGRPOArguments, where: str, seed: int = 0):
    """Filter, drop unusable rows (counted, logged) and add the conversational ``prompt`` column."""
    from wildsci.answers import LETTERS
    from wildsci.prompts import SYSTEM_PROMPT, build_messages
    from wildsci.schema import options_list

    check_columns(list(ds.column_names), script, where)
    n0 = len(ds)
    if script.voting_types:
        keep = set(script.voting_types)
        ds = ds.filter(lambda r: r["voting_type"] in keep)
    if script.disciplines:
        keep_d = set(script.disciplines)
        ds = ds.filter(lambda r: r["discipline"] in keep_d)
    n_filtered = len(ds)

    def usable(r) -> bool:
        opts = options_list(r["options"] or {})
        return (
            2 <= len(opts) <= len(LETTERS)
            and all(str(o).strip() for o in opts)
            and isinstance(r["answer"], str)
            and r["answer"] in LETTERS[: len(opts)]
            and bool(str(r["question"] or "").strip())
        )

    ds = ds.filter(usable)
    dropped = n_filtered - len(ds)
    if dropped:
        log.warning(
            "%s: dropped %d of %d rows (empty question, <2 options, or answer not an option letter)",
            where,
            dropped,
            n_filtered,
        )
    if len(ds) == 0:
        raise UserError(
            f"dataset {where}: no usable rows left ({n0} rows, {n_filtered} after the voting_types/disciplines "
            f"filters, {dropped} unusable) -- loosen the filters or check the dataset"
        )
    if script.max_train_samples is not None and script.max_train_samples < len(ds):
        ds = ds.shuffle(seed=seed).select(range(script.max_train_samples))
    system = SYSTEM_PROMPT if script.system_prompt is None else (script.system_prompt or None)
    ds = ds.map(lambda r: {"prompt": build_messages(r["question"], r["options"], system_prompt=system)})
    ds = ds.remove_columns([c for c in ds.column_names if c not in KEEP_COLUMNS])
    log.info("%s: %d rows (of %d; %d after filters, %d unusable dropped)", where, len(ds), n0, n_filtered, dropped)
    return ds


def load_split(script: WildSciGRPOArguments, split: str, seed: int = 0):
    from wildsci.dataset_io import load_wildsci

    ds = load_wildsci(script.dataset_name, split=split, revision=script.dataset_revision)
    return prepare_dataset(ds, script, f"{script.dataset_name}[{split}]", seed=seed)


def dataset_provenance(ref: str, revision: str | None) -> dict[str, Any]:
    """What exactly was trained on: a folder's build recipe hash, or the Hub commit of the dataset."""
    import json

    p = Path(ref).expanduser()
    if p.exists():
        info: dict[str, Any] = {"dataset": str(p.resolve()), "revision": "local folder"}
        report = p / "build_report.json"
        if report.is_file():
            try:
                info["recipe_hash"] = json.loads(report.read_text()).get("recipe_hash")
            except (OSError, ValueError):
                pass
        return info
    info = {"dataset": ref, "revision": revision or "main"}
    try:
        from huggingface_hub import HfApi

        info["commit"] = HfApi().dataset_info(ref, revision=revision).sha
    except Exception:  # offline or private: the requested revision is all we know
        pass
    return info


# ------------------------------------------------------------------------------------- card, versions, push
def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("wildsci", "trl", "transformers", "torch", "accelerate", "datasets", "vllm", "deepspeed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _redact(text: str) -> str:
    return "\n".join("<redacted>" if "token" in line.lower() else line for line in text.splitlines())


def write_model_card(
    output_dir: Path,
    model_ref: str,
    recipe_text: str,
    overrides: list[str],
    provenance: dict[str, Any],
    final: dict[str, Any],
    warnings: list[str],
) -> Path:
    """README.md with what a reader needs to reproduce the run (secrets never written)."""
    import json

    from huggingface_hub import ModelCard, ModelCardData

    hub_dataset = not Path(provenance["dataset"]).exists()
    data = ModelCardData(
        base_model=model_ref if "/" in model_ref and not Path(model_ref).exists() else None,
        datasets=[provenance["dataset"]] if hub_dataset else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["wildsci", "grpo", "trl", "science-qa"],
    )
    cmd_over = " ".join(a if "token" not in a.lower() else "<redacted>" for a in overrides)
    warn = "\n".join(f"- {w}" for w in warnings[:10]) or "none"
    if len(warnings) > 10:
        warn += f"\n- ... and {len(warnings) - 10} more (see wildsci_metrics.jsonl)"
    body = f"""---
{data.to_yaml()}
---

# GRPO policy trained with wildsci-kit

Base model `{model_ref}`, trained with TRL's `GRPOTrainer` on WildSci-format multiple-choice science questions
(`python -m wildsci.grpo`). Prompts ask for the answer as `\\boxed{{X}}`; rewards use `wildsci.answers.extract_answer`.

## Dataset
```json
{json.dumps(provenance, indent=2)}
```

## Recipe
```yaml
{_redact(recipe_text).strip()}
```
Command-line overrides: `{cmd_over or "none"}`

## Final metrics
Mean over the last 10% of logged steps (`steps` gives the range), plus the trainer's run summary; every step is in
`wildsci_metrics.jsonl`.
```json
{json.dumps(final, indent=2, default=str)}
```

## Warnings raised during training
{warn}

## Versions
git SHA of wildsci-kit: `{git_sha()}`
```json
{json.dumps(versions(), indent=2)}
```
"""
    path = output_dir / "README.md"
    ModelCard(body).save(path)
    return path


def push_model(output_dir: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload the final model folder (not the checkpoints) to ``repo_id``; private unless asked otherwise."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(output_dir),
            repo_type="model",
            commit_message="wildsci-kit GRPO policy",
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", "completions/**", "*.tmp", ".write-test-*"],
        )
    except Exception as e:
        msg = first_line(e)
        raise UserError(
            f"push to {repo_id} failed: {msg} -- check `hf auth login` and that you may write there"
        ) from None
    return str(getattr(info, "commit_url", repo_id))


# ------------------------------------------------------------------------------------------------- main
def _argparse_error(message: str):
    raise UserError(f"command line: {message} -- see `python -m wildsci.grpo --help`")


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    if "--config" not in argv:
        return None, argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise UserError("command line: --config needs a path, e.g. --config recipes/grpo/demo_cpu.yaml")
    return argv[i + 1], argv[:i] + argv[i + 2 :]


def _normalize_resume(argv: list[str]) -> list[str]:
    """A bare ``--resume_from_checkpoint`` means 'the last checkpoint' (argparse wants a value)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--resume_from_checkpoint" and (i + 1 == len(out) or out[i + 1].startswith("--")):
            out.insert(i + 1, "true")
            break
    return out


def _batch_values(data: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """The batch-related values after command-line overrides (only the keys :func:`check_batch` needs)."""
    keys = {
        "per_device_train_batch_size": int,
        "gradient_accumulation_steps": int,
        "num_generations": int,
        "generation_batch_size": int,
        "steps_per_generation": int,
        "per_device_eval_batch_size": int,
        "num_generations_eval": int,
        "eval_strategy": str,
        "do_eval": lambda s: str(s).lower() in ("1", "true", "yes"),
    }
    p = argparse.ArgumentParser(add_help=False)
    for k, tp in keys.items():
        p.add_argument(f"--{k}", type=tp, default=None, nargs="?", const="true" if k == "do_eval" else None)
    p.error = _argparse_error  # type: ignore[method-assign]
    known, _ = p.parse_known_args(argv)
    values = {k: data.get(k) for k in keys}
    values.update({k: v for k, v in vars(known).items() if v is not None})
    return values


def resolve_resume(value: Any, output_dir: str) -> str | None:
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


def run(argv: list[str]) -> dict[str, Any]:
    """Parse, check, train, save, card, push. Returns the final metrics record."""
    from wildsci.recipes import check_flat, load_yaml

    if "-h" in argv or "--help" in argv:  # TrlParser prints every key of the three dataclasses
        from trl import TrlParser

        TrlParser(recipe_dataclasses(), prog="python -m wildsci.grpo").parse_args_and_config(["--help"])
    argv = _normalize_resume(argv)
    config_path, rest = _split_config(argv)
    data = load_yaml(config_path) if config_path else {}
    source = config_path or "command line"
    env = data.pop("env", None)  # TrlParser sets these environment variables
    if env is not None and not isinstance(env, dict):
        raise UserError(f"{source}: env must be a mapping of VARIABLE: value")
    if isinstance(data.get("resume_from_checkpoint"), bool):
        data["resume_from_checkpoint"] = str(data["resume_from_checkpoint"]).lower()
    check_flat(data, recipe_dataclasses(), source)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_batch(_batch_values(data, rest), world_size, source)

    from trl import GRPOTrainer, TrlParser, get_peft_config

    parser = TrlParser(recipe_dataclasses(), prog="python -m wildsci.grpo")
    parser.error = _argparse_error  # type: ignore[method-assign]
    tmp_cfg = None
    if config_path:  # hand TrlParser the normalised recipe (resume flag as a string)
        import yaml

        tmp_cfg = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump({**data, **({"env": env} if env else {})}, tmp_cfg)
        tmp_cfg.close()
    try:
        script, args, model_args = parser.parse_args_and_config((["--config", tmp_cfg.name] if tmp_cfg else []) + rest)
    except ValueError as e:
        raise UserError(f"{source}: {str(e).splitlines()[0]}") from None
    finally:
        if tmp_cfg:
            Path(tmp_cfg.name).unlink(missing_ok=True)

    check_filters(script)
    out = check_output_dir(args.output_dir)
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    model_path = check_model(model_args.model_name_or_path, model_args.model_revision, args.trust_remote_code)
    if args.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError(f"{source}: use_vllm is true but vllm is not installed -- `pip install vllm` or drop it")
    push, args.push_to_hub = args.push_to_hub, False  # we push once, at the end, without the checkpoints
    if push:
        from huggingface_hub import get_token

        if not args.hub_model_id:
            raise UserError("push_to_hub needs hub_model_id (e.g. your-name/wildsci-qwen2.5-1.5b-grpo) -- add it")
        if not (args.hub_token or get_token()):
            raise UserError("push_to_hub needs a Hub token -- run `hf auth login` or set HF_TOKEN")

    from wildsci.metrics import Guards, RolloutCollector, WildSciMetricsCallback, final_summary, read_metrics
    from wildsci.rewards import REGISTRY, build_rewards

    train_ds = load_split(script, script.dataset_train_split, seed=args.seed)
    eval_ds = None
    if getattr(args.eval_strategy, "value", args.eval_strategy) != "no":
        if not script.dataset_test_split:
            raise UserError(f"{source}: eval_strategy is set but dataset_test_split is not -- e.g. validation")
        eval_ds = load_split(script, script.dataset_test_split, seed=args.seed)

    ours = [r for r in script.reward_funcs if r in REGISTRY]
    collector = RolloutCollector(ours, primary=ours[0] if ours else None)
    rewards = build_rewards(
        script.reward_funcs, args.reward_weights, collector, format_partial_credit=script.format_partial_credit
    )
    callback = WildSciMetricsCallback(
        collector,
        script.metrics_path or out / "wildsci_metrics.jsonl",
        reward_names=[getattr(f, "__name__", str(f)) for f in rewards],
        reward_weights=args.reward_weights,
        guards=Guards(
            script.clipped_ratio_threshold,
            script.zero_std_threshold,
            script.zero_std_patience,
            args.max_completion_length,
        ),
    )

    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(args.model_init_kwargs or {})
    args.model_init_kwargs = model_init_kwargs
    try:
        peft_config = get_peft_config(model_args)
    except ValueError as e:
        raise UserError(f"{source}: use_peft: {str(e).splitlines()[0]}") from None

    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=rewards,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        peft_config=peft_config,
    )
    # First in line, so the per-discipline scalars it adds to the logs reach trackio/tensorboard too.
    trainer.callback_handler.callbacks.insert(0, callback)
    if resume:
        import json

        step = json.loads((Path(resume) / "trainer_state.json").read_text()).get("global_step", "?")
        log.info("resuming from %s (global step %s)", resume, step)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out))
    if trainer.accelerator.is_main_process:
        # the final save's step (global_step): `wildsci eval` then knows it equals the last checkpoint
        trainer.state.save_to_json(str(Path(out) / "trainer_state.json"))

    final = {
        **final_summary(read_metrics(callback.path)),
        **{k: v for k, v in result.metrics.items() if k != "total_flos"},
    }
    if trainer.accelerator.is_main_process:
        recipe_text = Path(config_path).read_text(encoding="utf-8") if config_path else ""
        write_model_card(
            out,
            model_args.model_name_or_path,
            recipe_text,
            rest,
            dataset_provenance(script.dataset_name, script.dataset_revision),
            final,
            callback.all_warnings,
        )
        log.info("saved the policy and its model card to %s", out)
        if push:
            private = True if args.hub_private_repo is None else bool(args.hub_private_repo)
            url = push_model(out, args.hub_model_id, private=private, token=args.hub_token)
            log.info("pushed to %s (%s)", args.hub_model_id, "private" if private else "public")
            print(f"pushed: {url}")
    if hasattr(trainer, "end"):
        trainer.end()
    return final


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        run(list(sys.argv[1:] if argv is None else argv))
    except UserError as e:
        print(f"wildsci.grpo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wildsci.grpo: interrupted -- rerun with --resume_from_checkpoint to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
