"""``wildsci`` command line: parses arguments and calls one function per sub-command. No logic lives here."""

from __future__ import annotations

import argparse
import glob
import sys

from wildsci import __version__
from wildsci.errors import run_main
from wildsci.recipes import RecipeKind, check_accelerate_config, check_flat_recipe, check_nested
from wildsci.redact import scrub, secret_values


def _build_recipe_classes() -> tuple[type, ...]:
    from wildsci.builder.config import BuildRecipe

    return (BuildRecipe,)


def _grpo_recipe_classes() -> tuple[type, ...]:
    from wildsci.grpo import recipe_dataclasses  # TRL's dataclasses: imported only when a GRPO recipe is checked

    return tuple(recipe_dataclasses())


def _eval_recipe_classes() -> tuple[type, ...]:
    from wildsci.eval.config import EvalRecipe

    return (EvalRecipe,)


def _papers_recipe_classes() -> tuple[type, ...]:
    from wildsci.papers.config import PapersRecipe

    return (PapersRecipe,)


def _pipeline_recipe_classes() -> tuple[type, ...]:
    from wildsci.pipeline import PipelineRecipe

    return (PipelineRecipe,)


def _accelerate_classes() -> tuple[type, ...]:
    from accelerate.commands.config.config_args import ClusterConfig

    return (ClusterConfig,)


#: recipe kind (also the folder under recipes/) -> its dataclasses, checker and the command that runs it
RECIPE_KINDS: dict[str, RecipeKind] = {
    "data": RecipeKind(
        "data",
        _build_recipe_classes,
        lambda data, src: check_nested(_build_recipe_classes()[0])(data, src),
        "wildsci build RECIPE",
    ),
    "grpo": RecipeKind(
        "grpo",
        _grpo_recipe_classes,
        check_flat_recipe(_grpo_recipe_classes),
        "accelerate launch -m wildsci.grpo --config RECIPE",
    ),
    "eval": RecipeKind(
        "eval",
        _eval_recipe_classes,
        lambda data, src: check_nested(_eval_recipe_classes()[0])(data, src),
        "wildsci eval RECIPE",
    ),
    "papers": RecipeKind(
        "papers",
        _papers_recipe_classes,
        lambda data, src: check_nested(_papers_recipe_classes()[0])(data, src),
        "wildsci papers RECIPE",
    ),
    "pipeline": RecipeKind(
        "pipeline",
        _pipeline_recipe_classes,
        lambda data, src: check_nested(_pipeline_recipe_classes()[0])(data, src),
        "wildsci pipeline RECIPE",
    ),
    "accelerate": RecipeKind(
        "accelerate",
        _accelerate_classes,
        check_accelerate_config,
        "accelerate launch --config_file RECIPE -m wildsci.grpo --config <grpo recipe>",
    ),
}


def _cmd_build(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.cluster.build import build_command
    from wildsci.recipes import expect_kind, parse_overrides

    expect_kind(args.recipe, "data", RECIPE_KINDS)
    build_command(
        args.recipe,
        output_dir=args.output_dir,
        dry_run=args.dry_run,
        push=args.push,
        overrides=parse_overrides(extra),
        overwrite=args.overwrite,
        status=args.status,
        wait=args.wait,
    )
    return 0


def _cmd_papers(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.papers.run import run_papers
    from wildsci.recipes import expect_kind, parse_overrides

    expect_kind(args.recipe, "papers", RECIPE_KINDS)
    run_papers(args.recipe, overrides=parse_overrides(extra), dry=args.dry_run, push=args.push)
    return 0


def _cmd_pipeline(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.pipeline import run_pipeline
    from wildsci.recipes import expect_kind, parse_overrides

    expect_kind(args.recipe, "pipeline", RECIPE_KINDS)
    overrides = parse_overrides(extra)
    if args.executor is not None:
        overrides["executor"] = args.executor
    run_pipeline(args.recipe, overrides, dry_run=args.dry_run, status=args.status, wait=args.wait)
    return 0


def _cmd_recipes_check(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.recipes import RecipeError, check_recipe_file

    paths = sorted({p for pattern in args.paths for p in (glob.glob(pattern, recursive=True) or [pattern])})
    failed = 0
    for path in paths:
        try:
            kind = check_recipe_file(path, RECIPE_KINDS, kind=args.kind)
            print(f"ok      {path} ({kind})")
        except RecipeError as e:
            failed += 1
            print(f"FAILED  {e}")
    print(f"{len(paths) - failed}/{len(paths)} recipes valid")
    return 1 if failed else 0


def _cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.eval.run import run_eval
    from wildsci.recipes import expect_kind, parse_overrides
    from wildsci.report import write_eval_outputs

    expect_kind(args.recipe, "eval", RECIPE_KINDS)
    overrides = parse_overrides(extra)
    if args.permutations is not None:
        overrides["permutations"] = args.permutations
    if args.output_dir is not None:
        overrides["output_dir"] = args.output_dir
    if args.dry_run:
        from wildsci.eval.plan import print_plan

        print_plan(args.recipe, overrides=overrides)
        return 0
    results = run_eval(args.recipe, overrides=overrides)
    if results is None:  # model_index: one model's run, saved for the matrix
        return 0
    md, _ = write_eval_outputs(results.parent)
    print(f"wildsci eval: tables in {md}")
    return 0


def _cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.report import write_report

    path = write_report(args.run_dir, dataset_dir=args.dataset, grpo_dir=args.grpo, eval_dir=args.eval)
    print(f"report: {path}")
    return 0


def _cmd_model(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.models import check_model, describe

    print(check_model(args.ref, where="model"))
    print(describe(args.ref), file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    from wildsci.demo import run_demo

    run_demo(run_dir=args.run_dir, plan_only=args.plan, small=args.small)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wildsci",
        description="WildSci reproducibility kit: build science MCQ datasets from papers, train with GRPO, "
        "evaluate, report.",
        epilog="Training runs through accelerate: accelerate launch -m wildsci.grpo --config recipes/grpo/X.yaml",
    )
    p.add_argument("--version", action="version", version=f"wildsci {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser(
        "build",
        help="build a WildSci-format dataset from papers (recipes/data/*.yaml)",
        description="Any recipe key can be overridden: --key value, --generator.model X. Past one machine: "
        "--executor.kind local|slurm --executor.tasks N (docs/scale_out.md).",
    )
    b.add_argument("recipe", help="path to a data recipe, e.g. recipes/data/demo.yaml")
    b.add_argument("--output-dir", default=None, help="where to write the dataset (default: the recipe's output_dir)")
    b.add_argument("--dry-run", action="store_true", help="print the plan, counts and estimated LLM calls; do nothing")
    b.add_argument("--push", action="store_true", help="push the built dataset to the Hub (recipe's hub_repo_id)")
    b.add_argument("--overwrite", action="store_true", help="write into an output folder that holds other files")
    b.add_argument(
        "--status", action="store_true", help="show the ranks and the merge of an executor run (local or Slurm)"
    )
    b.add_argument("--wait", action="store_true", help="with executor.kind slurm: follow the jobs until they end")
    b.set_defaults(func=_cmd_build)

    pa = sub.add_parser(
        "papers",
        help="fetch open-access full texts from Europe PMC into a papers dataset (recipes/papers/*.yaml)",
        description="Any recipe key can be overridden: --max_papers 20, --api.rate 2, --output_dir DIR.",
    )
    pa.add_argument("recipe", help="path to a papers recipe, e.g. recipes/papers/nature_communications.yaml")
    pa.add_argument(
        "--dry-run", action="store_true", help="print the query, the hit count and the plan; fetch nothing"
    )
    pa.add_argument("--push", action="store_true", help="push the papers dataset to the Hub (recipe's hub_repo_id)")
    pa.set_defaults(func=_cmd_papers)

    pl = sub.add_parser(
        "pipeline",
        help="the whole chain (build, GRPO, eval, report) in process or as Slurm jobs (recipes/pipeline/*.yaml)",
        description="Any recipe key can be overridden: --key value, --grpo.resources.nodes 2.",
    )
    pl.add_argument("recipe", help="path to a pipeline recipe, e.g. recipes/pipeline/paper.yaml")
    pl.add_argument("--executor", choices=("inprocess", "slurm"), default=None, help="override the recipe's executor")
    pl.add_argument("--dry-run", action="store_true", help="print the scripts or commands, the job graph and the cost")
    pl.add_argument("--status", action="store_true", help="the chain's stages: job, state, elapsed, failing line, log")
    pl.add_argument("--wait", action="store_true", help="on Slurm: follow the jobs until the chain ends")
    pl.set_defaults(func=_cmd_pipeline)

    r = sub.add_parser("recipes", help="recipe tools")
    rsub = r.add_subparsers(dest="recipes_command", required=True, metavar="ACTION")
    rc = rsub.add_parser(
        "check",
        help="validate recipes (kind from --kind, else the folder recipes/<kind>/, else the keys the recipe uses)",
    )
    rc.add_argument("paths", nargs="+", help="recipe files or globs, e.g. 'recipes/**/*.yaml'")
    rc.add_argument("--kind", choices=sorted(RECIPE_KINDS), help="the recipe kind, for files stored elsewhere")
    rc.set_defaults(func=_cmd_recipes_check)

    e = sub.add_parser(
        "eval",
        help="evaluate base + checkpoints on benchmark tasks (recipes/eval/*.yaml)",
        description="Any recipe key can be overridden: --key value.",
    )
    e.add_argument("recipe", help="path to an eval recipe, e.g. recipes/eval/demo.yaml")
    e.add_argument("--permutations", type=int, default=None, help="ask each question under K seeded option orders")
    e.add_argument("--output-dir", default=None, help="where to write results (default: the recipe's output_dir)")
    e.add_argument(
        "--dry-run", action="store_true", help="print the generations, tokens and time the run needs; start nothing"
    )
    e.set_defaults(func=_cmd_eval)

    rp = sub.add_parser("report", help="write report.md + PNG plots for a run directory")
    rp.add_argument("run_dir", help="a run directory, e.g. runs/demo")
    rp.add_argument("--dataset", default=None, help="dataset folder (default: <run_dir>/dataset)")
    rp.add_argument("--grpo", default=None, help="GRPO output folder (default: <run_dir>/grpo)")
    rp.add_argument("--eval", default=None, help="eval output folder (default: <run_dir>/eval)")
    rp.set_defaults(func=_cmd_report)

    m = sub.add_parser(
        "model",
        help="resolve a model reference (Hub id, folder, embedded:NAME, tiny:qwen2) and check that it loads "
        "(config, weights, tokenizer; the weights are not read)",
    )
    m.add_argument("ref", help="e.g. embedded:smollm2-135m-instruct")
    m.set_defaults(func=_cmd_model)

    d = sub.add_parser("demo", help="the whole chain offline on the embedded model (what `make demo` runs)")
    d.add_argument("--run-dir", default="runs/demo", help="where everything goes")
    d.add_argument("--plan", action="store_true", help="print what would run, resolve the model, and stop")
    d.add_argument("--small", action="store_true", help="a smaller, faster chain (used by the tests)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func not in (_cmd_build, _cmd_pipeline, _cmd_eval, _cmd_papers):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    secrets = secret_values(argv if argv is not None else sys.argv[1:])
    return run_main(
        "wildsci",
        lambda: args.func(args, extra),
        interrupted="interrupted -- rerun the same command to resume",
        clean=lambda line: scrub(line, secrets),  # the command line's and the environment's credentials
    )


if __name__ == "__main__":
    sys.exit(main())
