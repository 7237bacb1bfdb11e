"""The GRPO entry point: one ``TrlParser``, the pre-launch checks, TRL's ``GRPOTrainer``, save, card, push.

    accelerate launch [--config_file recipes/accelerate/<x>.yaml] -m wildsci.grpo --config recipes/grpo/<name>.yaml

Flow (open-r1's shape): parse the flat recipe and the command-line overrides into the dataclasses of
:mod:`wildsci.grpo.config` (their ``__post_init__`` checks the values) -> :mod:`wildsci.grpo.checks` (model,
output folder, checkpoint, vLLM, Hub token) -> :mod:`wildsci.grpo.data` -> rewards (:mod:`wildsci.rewards`) and the
metrics callback (:mod:`wildsci.metrics`) -> train -> save, model card, optional push (:mod:`wildsci.grpo.hub`).
Every problem a user can fix is one line and exit code 2; tokens are taken out of the arguments before the
trainer sees them (:mod:`wildsci.redact`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from trl import GRPOTrainer, TrlParser, get_peft_config

from wildsci.errors import UserError, first_line, run_main
from wildsci.grpo.checks import (
    check_model,
    check_output_dir,
    check_push,
    check_rotations,
    check_vllm,
    resolve_resume,
)
from wildsci.grpo.config import PLANNING, enum_value, recipe_dataclasses
from wildsci.grpo.data import dataset_provenance, load_split
from wildsci.grpo.hub import push_model, write_model_card
from wildsci.grpo.launch import (
    check_precision,
    check_processes,
    rank_note,
    shape_from_config,
)
from wildsci.metrics import Guards, RolloutCollector, WildSciMetricsCallback, final_summary, read_metrics
from wildsci.recipes import check_flat, load_yaml
from wildsci.redact import REDACTED, is_secret_name, scrub, scrub_args, secret_values
from wildsci.rewards import REGISTRY, build_rewards

log = logging.getLogger("wildsci.grpo")
PROG = "python -m wildsci.grpo"


def _argparse_error(message: str):
    raise UserError(f"command line: {message} -- see `{PROG} --help`")


def config_path(argv: list[str]) -> str | None:
    if "--config" not in argv:
        return None
    i = argv.index("--config")
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise UserError("command line: --config needs a path, e.g. --config recipes/grpo/demo_cpu.yaml")
    return argv[i + 1]


def parse(argv: list[str], recipe: dict[str, Any], source: str) -> tuple[Any, Any, Any]:
    """The one parse: the recipe checked key by key (one line per mistake), then TRL's parser on recipe + argv."""
    if not isinstance(recipe.get("env", {}), dict):
        raise UserError(f"{source}: env must be a mapping of VARIABLE: value")
    flat = {k: v for k, v in recipe.items() if k != "env"}  # TrlParser sets env: as environment variables
    if isinstance(flat.get("resume_from_checkpoint"), bool):  # `true` means the last checkpoint
        flat["resume_from_checkpoint"] = str(flat["resume_from_checkpoint"]).lower()
    if recipe and not {"-h", "--help"} & set(argv):
        # a required key given on the command line only (--dataset_name x) is the parser's to check
        on_cli = {n for n, _ in overrides(argv)} & required_keys()
        check_flat({**dict.fromkeys(on_cli - set(flat), "(command line)"), **flat}, recipe_dataclasses(), source)
    PLANNING.set(planning_requested(argv, flat))
    parser = TrlParser(recipe_dataclasses(), prog=PROG)
    parser.error = _argparse_error  # type: ignore[method-assign]
    resume = parser._option_string_actions["--resume_from_checkpoint"]
    resume.nargs, resume.const = "?", "last"  # a bare --resume_from_checkpoint means the last checkpoint
    try:
        return parser.parse_args_and_config(argv)
    except UserError as e:
        raise UserError(str(e) if str(e).startswith(f"{source}:") else f"{source}: {e}") from None
    except ValueError as e:
        raise UserError(f"{source}: {first_line(e)}") from None


def planning_requested(argv: list[str], recipe: dict[str, Any]) -> bool:
    """``dry_run`` with ``plan_device`` (recipe or command line): a plan for a device this machine need not have."""
    values = {k: v for k, v in recipe.items() if k in ("dry_run", "plan_device")}
    for i, a in enumerate(argv):
        name, _, inline = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        name = name.replace("-", "_")
        if name == "plan_device":
            values[name] = inline or (argv[i + 1] if i + 1 < len(argv) else None)
        elif name == "dry_run":
            nxt = inline or (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else "true")
            values[name] = str(nxt).lower() in ("true", "1", "yes")
    return bool(values.get("dry_run")) and bool(values.get("plan_device"))


def required_keys() -> set[str]:
    return {
        f.name
        for cls in recipe_dataclasses()
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def overrides(argv: list[str], *parsed: Any) -> list[tuple[str, Any]]:
    """(name, parsed value) of every flag given on the command line, for the model card."""
    names = [a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--") and a != "--config"]
    out = []
    for name in dict.fromkeys(names):
        obj = next((p for p in parsed if hasattr(p, name)), None)
        value = getattr(obj, name) if obj is not None else None
        out.append((name, REDACTED if is_secret_name(name) else enum_value(value)))
    return out


def remove_if_empty(out: Path) -> None:
    """A folder this run created and left without a single non-empty file is removed (a failed run's litter)."""
    if out.is_dir() and all(p.is_dir() or p.stat().st_size == 0 for p in out.rglob("*")):
        shutil.rmtree(out, ignore_errors=True)


def train(argv: list[str], secrets: set[str]) -> dict[str, Any]:
    """Parse, check, train, save, card, push. Returns the final metrics record."""
    cfg = config_path(argv)
    if cfg:
        from wildsci.cli import RECIPE_KINDS
        from wildsci.recipes import expect_kind

        expect_kind(cfg, "grpo", RECIPE_KINDS)  # a data or eval recipe: say so, not "unknown key"
    recipe = load_yaml(cfg) if cfg else {}
    secrets |= secret_values([], recipe)
    script, args, model_args = parse(argv, recipe, cfg or "command line")
    over = overrides(argv, script, args, model_args)  # for the card, before the push flag is taken over below
    removed = scrub_args(script, args, model_args)  # before anything can write or log them
    secrets |= set(removed.values())
    if removed:
        log.warning(
            "a token given as %s is used only for the push and written nowhere; prefer `hf auth login` or HF_TOKEN "
            "(a command line is visible to other users of the machine and is repeated in accelerate's error report)",
            ", ".join(removed),
        )

    where = cfg or "command line"
    if enum_value(args.eval_strategy) != "no" and not script.dataset_test_split:
        raise UserError(f"{where}: eval_strategy is set but dataset_test_split is not -- add e.g. validation")
    out = check_output_dir(args.output_dir)
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    planning = script.dry_run and script.plan_device is not None  # planning for a device that is not here
    planned = shape_from_config(script.plan_launch) if planning and script.plan_launch else None
    sharding = planned.sharding if planned else None
    check_precision(args, model_args, script.allow_half_precision_optimizer, where, sharding)
    if not planning:  # the device and the sharding are checked in GRPOConfig.__post_init__
        check_processes(args)
    check_vllm(args, planning=planning)
    check_rotations(script.option_rotations, args, where)
    push, args.push_to_hub = args.push_to_hub, False  # we push once, at the end, without the checkpoints
    token = check_push(push, args.hub_model_id, removed.get("hub_token"))
    rewards_named(script, args)  # a reward that does not resolve fails here, before the data and the model
    model_path = check_model(model_args.model_name_or_path, model_args.model_revision, args.trust_remote_code)
    if not planning:
        log.info("%s: launched as %s", rank_note(args), describe(args))
    plan = memory_plan(script, args, model_args, model_path, where, planning)
    if script.dry_run:
        return {"dry_run": True, "fits": plan.fits if plan else None}

    created = not out.exists()
    try:
        return _train(script, args, model_args, model_path, out, resume, cfg, over, secrets, token if push else None)
    except BaseException:
        if created:
            remove_if_empty(out)
        raise


def rewards_named(script: Any, args: Any) -> None:
    """Resolve every reward (names, dotted paths, one weight each) without building the run's collector."""
    build_rewards(script.reward_funcs, args.reward_weights, format_partial_credit=script.format_partial_credit)


def describe(args: Any) -> str:
    """One phrase for the log: what accelerate set up, so a launch that did not do what was asked shows it."""
    kind = str(args.distributed_state.distributed_type).rsplit(".", 1)[-1]
    return f"{kind}, {args.world_size} process(es), device {args.device}"


def memory_plan(script: Any, args: Any, model_args: Any, model_path: str, where: str, planning: bool):
    """Print the memory plan (rank 0) and refuse one that does not fit; ``None`` where there is nothing to plan
    for (the CPU without --plan_device: RAM is not the limit a plan is for)."""
    from wildsci.grpo.memory import device_capacity, plan_for_run

    capacity = device_capacity(script.plan_device, args, planning)
    if capacity is None:
        if script.dry_run:
            log.info("dry run: no GPU to plan for -- add --plan_device h100-80gb (or another) to see the memory plan")
        return None
    plan = plan_for_run(script, args, model_args, model_path, capacity)
    if planning or args.process_index == 0:
        print(plan.table(), flush=True)
    plan.refuse_if_too_big(where)
    return plan


def _train(script, args, model_args, model_path, out, resume, cfg, over, secrets, token) -> dict[str, Any]:
    train_ds = load_split(script, script.dataset_train_split, seed=args.seed)
    eval_ds = None
    if enum_value(args.eval_strategy) != "no":
        eval_ds = load_split(script, script.dataset_test_split, seed=args.seed)

    ours = [r for r in script.reward_funcs if r in REGISTRY]
    collector = RolloutCollector(ours, primary=ours[0] if ours else None)
    rewards = build_rewards(
        script.reward_funcs,
        args.reward_weights,
        collector,
        format_partial_credit=script.format_partial_credit,
        format_warmup_steps=script.format_warmup_steps,
        letter_balance_window=script.letter_balance_window,
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
            letter_share_threshold=script.letter_share_threshold,
            letter_share_window=script.letter_share_window,
        ),
    )
    args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(args.model_init_kwargs or {}),
    }
    try:
        peft_config = get_peft_config(model_args)
    except ValueError as e:
        raise UserError(f"{cfg}: use_peft: {first_line(e)}") from None

    # device_map None: TRL's default ("auto" off the CPU) would spread one process's model over every visible GPU
    args.model_init_kwargs.setdefault("device_map", None)
    trainer = WildSciGRPOTrainer(
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
        step = json.loads((Path(resume) / "trainer_state.json").read_text()).get("global_step", "?")
        log.info("resuming from %s (global step %s)", resume, step)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out))
    final = {
        **final_summary(read_metrics(callback.path)),
        **{k: v for k, v in result.metrics.items() if k != "total_flos"},
    }
    if trainer.accelerator.is_main_process:
        # the final save's step (global_step): `wildsci eval` then knows it equals the last checkpoint
        trainer.state.save_to_json(str(out / "trainer_state.json"))
        write_model_card(
            out,
            model_args.model_name_or_path,
            Path(cfg).read_text(encoding="utf-8") if cfg else "",
            over,
            dataset_provenance(script.dataset_name, script.dataset_revision),
            final,
            callback.all_warnings,
            secrets,
        )
        log.info("saved the policy and its model card to %s", out)
        if token:
            private = True if args.hub_private_repo is None else bool(args.hub_private_repo)
            url = push_model(out, args.hub_model_id, private=private, token=token)
            log.info("pushed to %s (%s)", args.hub_model_id, "private" if private else "public")
            print(f"pushed: {url}")
    # transformers 5.17's Trainer has no end(): accelerate's end_training finishes its trackers and destroys the
    # process group (torch warns at exit about a group left behind)
    trainer.accelerator.end_training()
    return final


class WildSciGRPOTrainer(GRPOTrainer):
    """TRL's trainer without TRL's stock model card: it writes one at every checkpoint, so an interrupted run
    left a card "fine-tuned version of [None]" in output_dir. The kit writes its own card once, at the end."""

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    secrets = secret_values(argv)
    # Under `accelerate launch` a failure is followed by accelerate's own traceback, which only repeats the command.
    note = " (the cause; accelerate's report below only repeats the command)" if _under_accelerate() else ""

    def body() -> int:
        train(argv, secrets)
        return 0

    return run_main(
        "wildsci.grpo",
        body,
        interrupted="interrupted -- rerun with --resume_from_checkpoint to continue",
        clean=lambda line: scrub(line, secrets),
        note=note,
    )


def _under_accelerate() -> bool:
    return "ACCELERATE_MIXED_PRECISION" in os.environ
