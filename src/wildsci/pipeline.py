"""``wildsci pipeline RECIPE``: the paper's chain -- build, GRPO, eval, report -- from one pipeline recipe.

    wildsci pipeline recipes/pipeline/paper.yaml --dry-run         # every sbatch script, the job graph, the cost
    wildsci pipeline recipes/pipeline/paper.yaml --executor slurm  # submit the chain, print job ids and folders
    wildsci pipeline recipes/pipeline/paper.yaml --status          # stage, job, state, elapsed, failing line, log
    wildsci pipeline recipes/pipeline/demo.yaml                    # in process: what `make demo` runs

A pipeline recipe names the stage recipes, the extra arguments of each stage's command, and per stage the
resources a Slurm job asks for. In process, the chain is :func:`wildsci.demo.run_demo` (the same stages, outputs
and skip-on-rerun as ``make demo``); on Slurm each stage is one job, ``afterok`` on the one before
(:mod:`wildsci.cluster.chain`). Both run the same commands, from :func:`wildsci.demo.plan`.

The cost estimate takes its counts from the stages' own plans (the builder's LLM calls, the GRPO recipe's steps and
rollouts, the evaluation's generations) and turns them into GPU-hours only with throughput figures the pipeline
recipe states together with their source; a figure that is missing is named, never invented.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wildsci.cluster.config import _SLURM_TIME
from wildsci.errors import UserError
from wildsci.recipes import RecipeError, load_recipe, load_yaml, parse_overrides


@dataclass
class Resources:
    """What one stage's Slurm job asks for."""

    nodes: int = field(default=1, metadata={"help": "Nodes for the job."})
    gpus_per_node: int = field(default=0, metadata={"help": "GPUs per node (0 on CPU-only nodes)."})
    cpus_per_task: int = field(default=2, metadata={"help": "CPUs per node."})
    mem_gb: int = field(default=16, metadata={"help": "Memory per node, in GB."})
    time: str = field(default="4:00:00", metadata={"help": "Slurm time limit."})
    partition: str | None = field(default=None, metadata={"help": "Partition (null: the pipeline's slurm.partition)."})
    sbatch_args: dict[str, str] = field(default_factory=dict, metadata={"help": "Extra #SBATCH lines for this job."})
    processes_per_node: int = field(default=1, metadata={"help": "GRPO: training processes per node (one per GPU)."})
    accelerate_config: str | None = field(default=None, metadata={"help": "GRPO: accelerate config (ZeRO-3, FSDP)."})
    vllm_server_node: bool = field(
        default=False, metadata={"help": "GRPO: the last node runs `trl vllm-serve`, the others train."}
    )

    def __post_init__(self) -> None:
        for key in ("nodes", "cpus_per_task", "mem_gb", "processes_per_node"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"resources.{key} must be a whole number >= 1, got {getattr(self, key)!r}")
        if self.gpus_per_node < 0:
            raise ValueError(f"resources.gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if not _SLURM_TIME.match(str(self.time)):
            raise ValueError(f"resources.time {self.time!r} is not a Slurm time (e.g. 30, 4:00:00, 1-00:00:00)")
        if self.vllm_server_node and self.nodes < 2:
            raise ValueError("resources.vllm_server_node needs nodes >= 2 (one serves, the others train)")


@dataclass
class StageConfig:
    recipe: str | None = field(default=None, metadata={"help": "The stage's recipe (null: the demo's)."})
    args: list[str] = field(default_factory=list, metadata={"help": "Extra arguments of the stage's command."})
    resources: Resources = field(default_factory=Resources, metadata={"help": "The stage's Slurm job."})


@dataclass
class Figure:
    """A throughput figure for the cost estimate, with where it comes from."""

    value: float | None = field(default=None, metadata={"help": "The figure (null: unknown, named as missing)."})
    source: str = field(default="", metadata={"help": "Where it comes from: a bench/RESULTS.md section or yours."})

    def __post_init__(self) -> None:
        if self.value is not None and (self.value <= 0 or not self.source):
            raise ValueError("an estimate figure needs a value > 0 and its source (a RESULTS section or your own)")


@dataclass
class Estimates:
    build_calls_per_gpu_hour: Figure = field(
        default_factory=Figure, metadata={"help": "Builder LLM calls answered per GPU-hour."}
    )
    grpo_seconds_per_step: Figure = field(default_factory=Figure, metadata={"help": "Wall seconds per GRPO step."})


@dataclass
class SlurmSettings:
    partition: str | None = field(default=None, metadata={"help": "Default partition for every stage."})
    env_command: str | None = field(default=None, metadata={"help": "Activates the kit's env (default: this venv)."})
    sbatch_args: dict[str, str] = field(default_factory=dict, metadata={"help": "#SBATCH lines for every stage."})


@dataclass
class PipelineRecipe:
    """papers -> dataset -> policy -> scores -> report, as one chain of jobs."""

    name: str = field(metadata={"help": "The chain's name (job names: wildsci-<name>-<stage>)."})
    run_dir: str = field(default="runs/demo", metadata={"help": "Where every stage writes."})
    executor: str = field(default="inprocess", metadata={"help": "inprocess (one stage after the other) or slurm."})
    small: bool = field(
        default=False, metadata={"help": "Every stage shrunk (the tests' chain, wildsci demo --small)."}
    )
    build: StageConfig = field(default_factory=StageConfig, metadata={"help": "wildsci build."})
    grpo: StageConfig = field(default_factory=StageConfig, metadata={"help": "accelerate launch -m wildsci.grpo."})
    eval: StageConfig = field(default_factory=StageConfig, metadata={"help": "wildsci eval."})
    report: StageConfig = field(default_factory=StageConfig, metadata={"help": "wildsci report."})
    slurm: SlurmSettings = field(default_factory=SlurmSettings, metadata={"help": "Settings for every job."})
    estimates: Estimates = field(default_factory=Estimates, metadata={"help": "Throughput figures for the cost."})

    def __post_init__(self) -> None:
        if self.executor not in ("inprocess", "slurm"):
            raise ValueError(f"executor must be inprocess or slurm, got {self.executor!r}")

    def stages(self) -> dict[str, StageConfig]:
        return {"build": self.build, "grpo": self.grpo, "eval": self.eval, "report": self.report}


def _demo_inputs(recipe: PipelineRecipe) -> dict[str, Any]:
    """The demo runner's arguments for this pipeline: its stage recipes and extra arguments (the report takes none)."""
    stages = {k: c for k, c in recipe.stages().items() if k != "report"}
    return {
        "small": recipe.small,
        "recipes": {k: c.recipe for k, c in stages.items() if c.recipe},
        "args": {k: list(c.args) for k, c in stages.items()},
    }


def _stages(recipe: PipelineRecipe) -> list[Any]:
    from wildsci.demo import plan

    return plan(recipe.run_dir, **_demo_inputs(recipe))


def eval_models(stages: list[Any]) -> tuple[int, str]:
    """How many models the evaluation will find after training (base, kept checkpoints, final save), from the GRPO
    recipe's save schedule: the size of the per-model array job, known before training ends."""
    grpo = stages[1]
    g = {**load_yaml(grpo.recipe), **parse_overrides(_recipe_args(grpo, "--config"))}
    steps, every, keep = g.get("max_steps", -1), g.get("save_steps", 500), g.get("save_total_limit")
    if str(g.get("save_strategy", "steps")) == "no":
        return 2, "base + the final save (save_strategy: no)"
    if not isinstance(steps, int) or steps <= 0:
        n = int(keep) if keep else 8
        return 2 + n, f"base + up to {n} checkpoints + the final save (max_steps not set: bounded by save_total_limit)"
    n = steps // int(every) if isinstance(every, int) and every >= 1 else 1
    if keep:
        n = min(n, int(keep))
    return 2 + n, f"base + {n} checkpoint(s) + the final save, from max_steps {steps} / save_steps {every}"


def _layout(stages: list[Any]) -> dict[str, Any]:
    return {"eval_models": eval_models(stages)[0], "eval_command": stages[2].shown}


def _grpo_model(stage: Any) -> str:
    cfg = load_yaml(stage.recipe) if stage.recipe and Path(stage.recipe).is_file() else {}
    return str(cfg.get("model_name_or_path", ""))


def run_pipeline(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    dry_run: bool = False,
    status: bool = False,
    wait: bool = False,
) -> None:
    """What ``wildsci pipeline`` does (see the module docstring)."""
    from wildsci.cluster import chain

    recipe = load_recipe(path, PipelineRecipe, overrides or {})
    stages = _stages(recipe)
    run = Path(recipe.run_dir)
    missing = [s.recipe for s in stages if s.recipe and not Path(s.recipe).is_file()]
    if missing:
        raise UserError(f"{path}: stage recipe(s) {', '.join(missing)} not found -- fix the stage's recipe path")
    if status:
        show_status(recipe, stages)
        return
    if dry_run:
        print_plan(recipe, stages)
        return
    if recipe.executor == "inprocess":
        if wait:
            raise UserError("--wait follows Slurm jobs; the in-process chain runs in the foreground -- drop --wait")
        from wildsci.demo import run_demo

        run_demo(recipe.run_dir, **_demo_inputs(recipe))
        return
    resources = {k: c.resources for k, c in recipe.stages().items()}
    jobs = chain.submit(recipe.name, stages, resources, run, recipe.slurm, _grpo_model(stages[1]), _layout(stages))
    if not jobs:
        print(f"wildsci pipeline: nothing to do -- every stage of {recipe.name} is done (report: {run / 'report.md'})")
        return
    after = None
    for s in stages:
        if s.name in jobs:
            dep = f" after {after}" if after else ""
            script = chain.stage_dir(run) / f"{s.name}.sbatch"
            print(f"{s.name:<7} job {jobs[s.name]}{dep}  ->  {s.outputs[0].parent}  (script {script})")
            after = jobs[s.name]
        else:
            print(f"{s.name:<7} done before, not resubmitted  ->  {s.outputs[0].parent}")
    if wait:
        follow(recipe, stages)
    else:
        print(f"follow it: wildsci pipeline {path} --status   (add --wait to follow until it ends)")


def _table(views: list[dict[str, str]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("stage", "job", "state", "elapsed", "cause / reason", "log"):
        t.add_column(col, overflow="fold")
    for v in views:
        t.add_row(v["stage"], v["job"], v["state"], v["elapsed"], v["detail"], v["log"])
    return t


def show_status(recipe: PipelineRecipe, stages: list[Any]) -> None:
    from wildsci.cluster import chain

    run = Path(recipe.run_dir)
    state = chain.load_state(run)
    if not state.get("jobs"):
        raise UserError(f"no chain submitted from {run} -- submit it with `wildsci pipeline RECIPE --executor slurm`")
    views = chain.stage_views(run, stages, state, _layout(stages))
    con = Console(width=200)
    con.print(_table(views, f"{recipe.name}: {run}"))
    changed = [s.name for s in stages if state["jobs"].get(s.name, {}).get("fingerprint") not in (None, s.fingerprint)]
    if changed:
        con.print(
            f"note: {', '.join(changed)} as submitted differ from this recipe and these arguments (the table shows "
            "what was submitted); submitting them would run those stages again"
        )
    bad = next((v for v in views if v["state"] == "failed"), None)
    if bad:
        blocked = [v["stage"] for v in views if v["state"] == "blocked"]
        con.print(
            f"next: stage {bad['stage']} failed ({bad['detail']}); log: {bad['log']}"
            + (f"; blocked behind it: {', '.join(blocked)}" if blocked else "")
            + " -- fix the cause and rerun the command that submitted the chain: only unfinished stages are submitted"
        )
    elif all(v["state"] == "done" for v in views):
        con.print(f"complete: report in {run / 'report.md'}")


def follow(recipe: PipelineRecipe, stages: list[Any], poll_s: float = 5.0) -> None:
    """``--wait``: one line whenever a stage changes state, until the report is done or a stage failed."""
    from wildsci.cluster import chain

    run = Path(recipe.run_dir)
    last = ""
    try:
        while True:
            views = chain.stage_views(run, stages, chain.load_state(run), _layout(stages))
            line = ", ".join(f"{v['stage']} {v['state']}" for v in views)
            if line != last:
                print(f"wildsci pipeline: {line}", file=sys.stderr, flush=True)
                last = line
            if all(v["state"] == "done" for v in views):
                print(f"wildsci pipeline: complete -- report in {run / 'report.md'}", file=sys.stderr)
                return
            bad = next((v for v in views if v["state"] == "failed"), None)
            if bad:
                Console(stderr=True, width=200).print(_table(views, f"{recipe.name}: {run}"))
                raise UserError(
                    f"stage {bad['stage']} failed: {bad['detail'] or 'see its log'} -- log: {bad['log']}; fix the "
                    "cause and rerun the same command: only unfinished stages are submitted"
                )
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("wildsci pipeline: stopped following; the jobs keep running (--status)", file=sys.stderr)
        raise


# ------------------------------------------------------------------------------------------------ the plan
def _fmt(x: float | None) -> str:
    return "?" if x is None else (f"{x:,.0f}" if x >= 100 else f"{x:,.2f}")


def estimate(recipe: PipelineRecipe, stages: list[Any]) -> list[dict[str, str]]:
    """Per stage: what it does in counts, and GPU-hours from a stated figure (or which input is missing)."""
    from wildsci.builder.config import BuildRecipe
    from wildsci.builder.plan import build_plan
    from wildsci.eval.config import EvalRecipe
    from wildsci.eval.plan import plan_eval

    rows = []
    build, grpo, ev = stages[0], stages[1], stages[2]
    est = recipe.estimates
    # build: the builder's own plan (the stage's arguments applied)
    b_over = {k: v for k, v in parse_overrides(_recipe_args(build)).items() if k not in ("output_dir",)}
    b = load_recipe(build.recipe, BuildRecipe, b_over)
    plan = build_plan(b)
    calls = sum(plan["calls_max"].values())
    tokens = calls * b.generator.max_new_tokens
    res = recipe.build.resources
    fig = est.build_calls_per_gpu_hour
    hours = calls / fig.value if fig.value else None
    rows.append(
        {
            "stage": "build",
            "work": f"{plan['papers']:,} papers, {calls:,} LLM calls (at most), {tokens:,} generated tokens (at most)",
            "gpu_hours": _fmt(hours),
            "inputs": f"calls from the builder's plan; {fig.value:,.0f} calls/GPU-hour ({fig.source})"
            if fig.value
            else "missing: estimates.build_calls_per_gpu_hour (value + source)",
            "gpus": str(res.nodes * res.gpus_per_node),
        }
    )
    # GRPO: steps and rollouts from its recipe
    g = {**load_yaml(grpo.recipe), **parse_overrides(_recipe_args(grpo, "--config"))}
    gres = recipe.grpo.resources
    procs = (gres.nodes - (1 if gres.vllm_server_node else 0)) * gres.processes_per_node
    steps = g.get("max_steps")
    per_step = int(g.get("per_device_train_batch_size", 8)) * int(g.get("gradient_accumulation_steps", 1)) * procs
    fig = est.grpo_seconds_per_step
    gpus = gres.nodes * gres.gpus_per_node
    hours = steps * fig.value * gpus / 3600 if fig.value and steps and steps > 0 else None
    rows.append(
        {
            "stage": "grpo",
            "work": f"{f'{steps:,}' if steps and steps > 0 else '? (max_steps not set)'} steps x {per_step} "
            "completions "
            f"({per_step // max(1, int(g.get('num_generations', 8)))} prompts x {g.get('num_generations', 8)}) "
            f"on {procs} process(es)",
            "gpu_hours": _fmt(hours),
            "inputs": f"steps from {grpo.recipe}; {fig.value} s/step ({fig.source})"
            if fig.value
            else "missing: estimates.grpo_seconds_per_step (value + source)",
            "gpus": str(gpus),
        }
    )
    # evaluation: the evaluation's own plan (its recipe states its throughput figure and source)
    e_over = {k: v for k, v in parse_overrides(_recipe_args(ev)).items() if k != "output_dir"}
    eres = recipe.eval.resources
    try:
        ep = plan_eval(load_recipe(ev.recipe, EvalRecipe, e_over))
    except (UserError, RecipeError) as exc:
        rows.append({"stage": "eval", "work": "?", "gpu_hours": "?", "inputs": f"missing: {exc}", "gpus": "?"})
        ep = None
    if ep is not None:
        models, why = eval_models(stages)  # the models the evaluation will find once training has ended
        per_model_h = ep["hours"] / ep["models"] if ep["hours"] is not None else None
        rows.append(
            {
                "stage": "eval",
                "work": f"{models} model(s) ({why}) x {ep['generations_per_model']:,} generations "
                f"({int(ep['tokens_per_model']):,} tokens at most per model)",
                "gpu_hours": _fmt(per_model_h * models * ep["gpus"] if per_model_h is not None else None),
                "inputs": f"per model from `wildsci eval {ev.recipe} --dry-run`"
                + (f"; missing: {'; '.join(ep['missing'])}" if ep["missing"] else ""),
                "gpus": str(eres.nodes * eres.gpus_per_node),
            }
        )
    for r in rows:  # a job that asks for no GPU costs no GPU-hours, whatever its throughput
        if r["gpus"] == "0":
            r["gpu_hours"], r["inputs"] = "0", "CPU job: no GPU asked"
    rows.append({"stage": "report", "work": "tables and plots", "gpu_hours": "0", "inputs": "CPU only", "gpus": "0"})
    return rows


def _recipe_args(stage: Any, after: str | None = None) -> list[str]:
    """The ``--key value`` part of a stage's command (after its recipe path, or after ``after``)."""
    argv = stage.shown
    i = argv.index(after) + 2 if after else argv.index(stage.recipe) + 1
    return [a for a in argv[i:]]


def print_plan(recipe: PipelineRecipe, stages: list[Any]) -> None:
    """``--dry-run``: the sbatch scripts (on Slurm) or the commands (in process), the job graph and the cost."""
    from wildsci.cluster import chain, slurm

    con = Console(width=200)
    run = Path(recipe.run_dir)
    con.print(f"[bold]wildsci pipeline --dry-run[/]: {recipe.name} into {run}/ ({recipe.executor})")
    if recipe.executor == "slurm":
        env_command = recipe.slurm.env_command or slurm.default_env_command()
        model = _grpo_model(stages[1])
        for s in stages:
            res = recipe.stages()[s.name].resources
            con.print(f"\n[bold]{s.name}[/]: {chain.stage_dir(run) / (s.name + '.sbatch')}")
            script = chain.render_script(recipe.name, s, res, run, recipe.slurm, env_command, model, _layout(stages))
            con.print(script, markup=False)
        con.print(
            "\n[bold]job graph[/]: "
            + " -> ".join(f"{s.name} (afterok)" if i else s.name for i, s in enumerate(stages))
        )
    else:
        for i, s in enumerate(stages, 1):
            con.print(f"[{i}/{len(stages)}] {s.name}: $ {shlex.join(s.shown)}", markup=False)
    t = Table(title="cost estimate (upper bounds where marked)", title_justify="left")
    for col in ("stage", "work", "GPUs", "GPU-hours", "inputs"):
        t.add_column(col, overflow="fold")
    rows = estimate(recipe, stages)
    for r in rows:
        t.add_row(r["stage"], r["work"], r["gpus"], r["gpu_hours"], r["inputs"])
    con.print(t)
    known = [float(r["gpu_hours"].replace(",", "")) for r in rows if r["gpu_hours"] != "?"]
    unknown = [r["stage"] for r in rows if r["gpu_hours"] == "?"]
    con.print(
        f"total: {sum(known):,.1f} GPU-hours"
        + (f" plus the stages whose figures are missing ({', '.join(unknown)})" if unknown else "")
    )
    con.print("dry run: nothing was submitted or written.")
