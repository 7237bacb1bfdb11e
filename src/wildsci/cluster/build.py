"""``wildsci build`` on an executor: the shards as datatrove tasks (local pool or Slurm array job), then the merge.

    wildsci build RECIPE --executor.kind local --executor.tasks 4 --executor.workers 2
    wildsci build RECIPE --executor.kind slurm --executor.tasks 64 [--wait]      # submits, returns the job ids
    wildsci build RECIPE --status                                               # ranks, merge, causes, logs

One command, rerun to resume: datatrove runs only the ranks without a completion file, and inside a rank the
builder's checkpoints and call cache answer everything already done. Everything the run keeps lives in
``<output_dir>/.wildsci_build/executor/`` (``executor.logging_dir``): the recipe as submitted, ``state.json`` (the
recipe's hash, the task count, the Slurm job ids), and per stage (``build``, ``merge``, and ``generate`` first for a
recipe with pool distractors) datatrove's completions and sbatch script plus the kit's per-rank logs, attempts and
failure records (:mod:`wildsci.cluster.executors`).

``inprocess`` (the default) is :func:`wildsci.builder.pipeline.run_build`, unchanged.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from wildsci.builder.config import BuildRecipe
from wildsci.builder.console import log
from wildsci.builder.pipeline import run_build
from wildsci.builder.plan import build_plan, preflight
from wildsci.builder.state import STATE_DIR, base_hash, claim_output_dir, write_atomic
from wildsci.cluster import slurm
from wildsci.cluster.config import ExecutorConfig
from wildsci.cluster.server import PER_TASK_URL
from wildsci.cluster.status import (
    RankView,
    combine_phases,
    killed_detail,
    mark_blocked,
    progress_line,
    render,
    slurm_queue,
    stage_views,
    waits_on_dependency,
)
from wildsci.errors import UserError
from wildsci.recipes import from_dict, load_yaml, merge_overrides
from wildsci.redact import redact_text


def build_command(
    recipe_path: str | Path,
    output_dir: str | None = None,
    dry_run: bool = False,
    push: bool = False,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    status: bool = False,
    wait: bool = False,
) -> None:
    """What ``wildsci build`` does: in process, on a local pool, or on Slurm, as the recipe's ``executor`` says."""
    overrides = dict(overrides or {})
    data = load_yaml(recipe_path)
    merged = merge_overrides(data, {**overrides, **({"output_dir": output_dir} if output_dir else {})})
    recipe = from_dict(BuildRecipe, merged, str(recipe_path))
    ex = recipe.executor
    out = Path(recipe.output_dir).resolve()
    root = Path(ex.logging_dir).resolve() if ex.logging_dir else out / STATE_DIR / "executor"
    if status:
        show_status(recipe_path, root)
        return
    if ex.kind == "inprocess":
        if wait:
            raise UserError("--wait follows an executor's jobs, but executor.kind is inprocess -- drop --wait")
        run_build(
            recipe_path, output_dir=output_dir, dry_run=dry_run, push=push, overrides=overrides, overwrite=overwrite
        )
        return
    _preflight(recipe, push)
    command = redact_text("wildsci " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    job = _job(recipe, merged, out, root, push, command)
    if dry_run:
        print_plan(recipe, job, ex)
        return
    if ex.kind == "local" and wait:
        raise UserError("--wait follows Slurm jobs; the local executor already runs in the foreground -- drop --wait")
    claim_output_dir(out, overwrite)
    state = _prepare(recipe, merged, job, root)
    if ex.kind == "local":
        run_local(recipe, job, ex, root, state, recipe_path)
    else:
        submit_slurm(recipe, job, ex, root, state, recipe_path, wait)


def _preflight(recipe: BuildRecipe, push: bool) -> None:
    """The builder's own checks (files, models, keys, push) before anything is written or submitted."""
    if recipe.executor.kind == "slurm":
        slurm.require_slurm()
    if recipe.executor.server is not None:
        if recipe.generator.backend != "openai":
            raise UserError(
                "executor.server starts a model server per task, but generator.backend is "
                f"{recipe.generator.backend!r} -- set generator.backend: openai (its base_url is set per task)"
            )
        recipe.generator.base_url = recipe.generator.base_url or PER_TASK_URL
        for v in recipe.voters:
            if v.backend == "openai" and v.model == recipe.generator.model:
                v.base_url = v.base_url or PER_TASK_URL
        if recipe.labeler is not None and recipe.labeler.backend == "openai":
            recipe.labeler.base_url = recipe.labeler.base_url or PER_TASK_URL
    preflight(recipe, push)


def _job(recipe: BuildRecipe, merged: dict, out: Path, root: Path, push: bool, command: str):
    from wildsci.cluster.executors import BuildJob

    ex = recipe.executor
    return BuildJob(
        recipe=str(root / "recipe.yaml"),
        out=str(out),
        tasks=ex.tasks,
        logging_dir=str(root),
        push=push,
        command=command,
        server=asdict(ex.server) if ex.server else None,
        pool=recipe.uses_pool() and ex.tasks > 1,
    )


def _identity(recipe: BuildRecipe) -> dict[str, Any]:
    """What completed ranks depend on: the recipe's content (without the shard) and how the papers are split."""
    return {"base_hash": base_hash(recipe), "tasks": recipe.executor.tasks}


def _prepare(recipe: BuildRecipe, merged: dict, job: Any, root: Path) -> dict[str, Any]:
    """Snapshot the recipe for the ranks; forget completions made from another recipe or another task count."""
    root.mkdir(parents=True, exist_ok=True)
    state = _load_state(root)
    ident = _identity(recipe)
    if state and state.get("identity") != ident:
        old_jobs = [str(state.get(s, {}).get("job_id") or "") for s in STAGES]
        if state.get("kind") == "slurm" and slurm.queued([j for j in old_jobs if j and j != "-1"]):
            raise UserError(
                f"{root}: jobs of an earlier submission ({', '.join(j for j in old_jobs if j)}) are still queued, "
                "and the recipe or task count changed since -- scancel them first, then rerun"
            )
        what = (
            "the recipe changed"
            if state.get("identity", {}).get("base_hash") != ident["base_hash"]
            else (f"the task count changed ({state.get('identity', {}).get('tasks')} -> {ident['tasks']})")
        )
        dropped = 0
        for stage in STAGES:
            for p in (root / stage / "completions").glob("*"):
                p.unlink()
                dropped += 1
        log(
            f"{what} since the last run: all {ident['tasks']} ranks run again ({dropped} completions dropped; "
            "each shard's LLM call cache is kept)"
        )
        state = {}
    # the ranks read this copy, never the user's file: editing the recipe while jobs wait cannot change them
    snap = {k: v for k, v in merged.items() if k != "executor"}
    snap["output_dir"] = job.out
    write_atomic(root / "recipe.yaml", [yaml.safe_dump(snap, sort_keys=False, allow_unicode=True)])
    state.update(
        {
            "identity": ident,
            "kind": recipe.executor.kind,
            "tasks": recipe.executor.tasks,
            "out": job.out,
            "phases": list(job.phases),
        }
    )
    _save_state(root, state)
    return state


#: every executor folder a run can have, in the order they run
STAGES = ("generate", "build", "merge")


def _load_state(root: Path) -> dict[str, Any]:
    """What the last submission recorded (``{}`` before the first)."""
    path = root / "state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _save_state(root: Path, state: dict[str, Any]) -> None:
    write_atomic(root / "state.json", [json.dumps(state, indent=1) + "\n"])


# ---------------------------------------------------------------------------------------------------- local pool
class _Monitor(threading.Thread):
    """Prints the progress line while the local pool runs, and notices a rank whose process was killed.

    datatrove's pool waits forever for a task whose worker died (SIGKILL, the OOM killer): once no rank is running
    any more and one was killed, the monitor interrupts the main thread, which reports it instead of hanging.
    """

    def __init__(self, stage_dir: Path, job: Any, tty: Any) -> None:
        super().__init__(daemon=True)
        self.stage_dir, self.job, self.tty = stage_dir, job, tty
        self.stop = threading.Event()
        self.killed: list[int] = []
        self.t0 = time.time()

    def run(self) -> None:
        last, last_at, settled = "", 0.0, 0.0
        while not self.stop.wait(1.0):
            views = stage_views(self.stage_dir, self.job.tasks, {}, self.job.shard_dir)
            line = progress_line(views, None, self.t0)
            if line.split(" · ")[0] != last.split(" · ")[0] or time.time() - last_at > 30:
                print(f"wildsci build: {line}", file=self.tty, flush=True)
                last, last_at = line, time.time()
            killed = [v.rank for v in views if v.state == "killed"]
            if killed and not any(v.state == "running" for v in views):
                settled = settled or time.time()
                if time.time() - settled > 5:  # nothing else will finish: stop waiting on the lost task
                    self.killed = killed
                    os.kill(os.getpid(), signal.SIGINT)
                    return
            else:
                settled = 0.0


def run_local(
    recipe: BuildRecipe, job: Any, ex: ExecutorConfig, root: Path, state: dict, recipe_path: str | Path
) -> None:
    from wildsci.cluster.executors import BuildShard, LocalExecutor, MergeShards, quiet_datatrove

    quiet_datatrove()
    for phase in job.phases:
        executor = LocalExecutor(
            [BuildShard(job, phase)], tasks=ex.tasks, workers=ex.workers, logging_dir=str(root / phase)
        )
        todo = executor.get_incomplete_ranks()
        what = "generate" if phase == "generate" else "build"
        log(
            f"local executor: {len(todo)} of {ex.tasks} shards to {what} ({ex.tasks - len(todo)} done before), "
            f"{min(ex.concurrent, max(1, len(todo)))} at a time; per-rank logs in {root / phase / 'ranks'}"
            + (" (every shard generates before any draws from the pool of all)" if phase == "generate" else "")
        )
        tty = os.fdopen(os.dup(2), "w")  # ranks run with stderr sent to their logs; the progress line goes here
        monitor = _Monitor(root / phase, job, tty)
        monitor.start()
        try:
            executor.run()
        except KeyboardInterrupt:
            if not monitor.killed:
                raise
        finally:
            monitor.stop.set()
            monitor.join()
            tty.close()
        views = stage_views(root / phase, ex.tasks, {}, job.shard_dir)
        failed = [v for v in views if v.state != "done"]
        if failed:
            title = f"{recipe.name}: local executor, {ex.tasks} shards" + (
                ", generating" if what == "generate" else ""
            )
            render(title, views, None, Console(stderr=True), root)
            raise UserError(_failed_line(failed, recipe_path))
    log("all shards built; merging (dedup, decontamination, split, parquet, card)")
    merge = LocalExecutor([MergeShards(job)], tasks=1, workers=1, logging_dir=str(root / "merge"))
    merge.run()
    _merged_or_fail(root, job)


def _failed_line(failed: list[RankView], recipe_path: str | Path) -> str:
    v = failed[0]
    more = f" (and {len(failed) - 1} more rank(s), in the table above)" if len(failed) > 1 else ""
    return (
        f"rank {v.rank} {v.state}: {v.detail or 'see its log'} -- log: {v.log or '(none)'}{more}; fix the cause, "
        f"then rerun the same command: only the unfinished ranks run (`wildsci build {recipe_path} --status`)"
    )


def _merged_or_fail(root: Path, job: Any) -> None:
    (view,) = stage_views(root / "merge", 1, {})
    if view.state != "done":
        raise UserError(f"the merge {view.state}: {view.detail or 'see its log'} -- log: {view.log}")
    report = json.loads((Path(job.out) / "build_report.json").read_text(encoding="utf-8"))
    log(f"dataset: {sum(report['splits'].values())} questions {report['splits']} in {job.out}")


# ---------------------------------------------------------------------------------------------------- Slurm
def _slurm_executors(job: Any, ex: ExecutorConfig, root: Path, recipe: BuildRecipe, dry: bool = False):
    from wildsci.cluster.executors import BuildShard, MergeShards, SlurmExecutor

    common = {
        "time": ex.time,
        "partition": ex.partition,
        "qos": ex.qos or "",
        "env_command": ex.env_command or slurm.default_env_command(),
        "sbatch_args": dict(ex.sbatch_args),
        "requeue": False,  # a failed rank is rerun by the user's rerun, after the cause is fixed
        "mail_type": "NONE",
    }
    name = ex.job_name or f"wildsci-build-{recipe.name}"
    phases: list[Any] = []
    for phase in job.phases:
        phases.append(
            SlurmExecutor(
                [BuildShard(job, phase)],
                tasks=ex.tasks,
                workers=ex.workers,
                cpus_per_task=ex.cpus_per_task,
                mem_per_cpu_gb=ex.mem_per_cpu_gb,
                gpus_per_task=ex.gpus_per_task,
                job_name=name + ("-generate" if phase == "generate" else ""),
                logging_dir=str(root / phase),
                depends=phases[-1] if phases else None,
                **common,
            )
        )
    merge = SlurmExecutor(
        [MergeShards(job)],
        tasks=1,
        cpus_per_task=1,
        mem_per_cpu_gb=max(ex.mem_per_cpu_gb, 4),
        job_name=name + "-merge",
        logging_dir=str(root / "merge"),
        depends=phases[-1],
        **common,
    )
    for e in (*phases, merge):
        e.dry, e.chdir = dry, os.getcwd()
    return phases, merge


def submit_slurm(
    recipe: BuildRecipe, job: Any, ex: ExecutorConfig, root: Path, state: dict, recipe_path: str | Path, wait: bool
) -> None:
    from wildsci.cluster.executors import quiet_datatrove

    views, merge_v, active = _shard_views(root, job, state)
    # a job waiting on a dependency when nothing of this run is running or pending for resources waits on a failed
    # rank: it can never start (Slurm says DependencyNeverSatisfied on its next pass; the kit does not wait for it)
    live = [
        v for v in [*views, merge_v] if v.state == "running" or (v.state == "pending" and not waits_on_dependency(v))
    ]
    if live:
        ids = sorted({t.job_id for t in active})
        raise UserError(
            f"this build's jobs {', '.join(ids)} are still queued or running -- follow them with "
            f"`wildsci build {recipe_path} --status` (or --wait), or `scancel {' '.join(ids)}` to stop them"
        )
    if active:  # they wait on a rank that failed: they can never start; the rerun submits new ones
        ids = sorted({t.job_id for t in active})
        slurm.cancel(ids)
        log(f"cancelled job(s) {', '.join(ids)}, which waited on a failed rank (DependencyNeverSatisfied)")
    quiet_datatrove()
    phases, merge = _slurm_executors(job, ex, root, recipe)
    todo = {job.phases[i]: e.get_incomplete_ranks() for i, e in enumerate(phases)}
    if not any(todo.values()) and not merge.get_incomplete_ranks():
        log(f"nothing to do: every shard and the merge are complete -- the dataset is in {job.out}")
        return
    merge.run()  # submits the shards' array job(s) first (only the ranks without a completion), then the merge
    for phase, e in zip(job.phases, phases, strict=True):
        state[phase] = {"job_id": str(e.job_id), "ranks": todo[phase]}
    state["merge"] = {"job_id": str(merge.job_id)}
    state["submitted"] = time.time()
    _save_state(root, state)
    for phase, e in zip(job.phases, phases, strict=True):
        if e.job_id not in (None, -1):
            what = "generation of shards" if phase == "generate" else "shards"
            after = " (after every shard's generation)" if phase == "build" and job.pool else ""
            log(
                f"submitted {what} {_ranges(todo[phase])} of {ex.tasks} as Slurm array job {e.job_id}{after} "
                f"({min(ex.concurrent, len(todo[phase]))} at a time); script: {root / phase / 'launch_script.slurm'}"
            )
    log(
        f"submitted the merge as job {merge.job_id} (runs after every shard succeeds); script: "
        f"{root / 'merge' / 'launch_script.slurm'}"
    )
    ids = [str(e.job_id) if e.job_id not in (None, -1) else "-" for e in phases]
    print(" ".join([*ids, str(merge.job_id)]))  # stdout: for scripts
    if wait:
        follow(recipe, job, root, recipe_path)
    else:
        log(f"follow it with `wildsci build {recipe_path} --status` (add --wait to follow until it ends)")


def _ranges(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(str(start) if start == r else f"{start}-{r}")
            start = None
    return ",".join(out)


def _shard_views(
    root: Path, job: Any, state: dict | None = None
) -> tuple[list[RankView], RankView, list[slurm.JobTask]]:
    """One row per rank (over its phases), the merge's row and, with ``state`` (Slurm), the run's jobs still in
    Slurm's queue; Slurm's queue and records then fill in the rows too."""
    by_phase, merge_q, active = slurm_queue(state, job.phases) if state is not None else ({}, None, [])
    per_phase = []
    for phase in job.phases:
        views = stage_views(root / phase, job.tasks, by_phase.get(phase, {}), job.shard_dir)
        if state is not None:
            killed_detail(state, views, phase)
        per_phase.append(views)
    views = per_phase[0] if len(per_phase) == 1 else combine_phases(*per_phase)
    (merge,) = stage_views(root / "merge", 1, {0: merge_q} if merge_q else {})
    mark_blocked(views, merge)
    return views, merge, active


def follow(recipe: BuildRecipe, job: Any, root: Path, recipe_path: str | Path, poll_s: float = 3.0) -> None:
    """``--wait``: a progress line whenever something changes, until the merge is done or cannot run."""
    state = _load_state(root)
    t0, last = state.get("submitted", time.time()), ""
    try:
        while True:
            views, merge, _ = _shard_views(root, job, state)
            line = progress_line(views, merge, t0)
            if line.split(" · ")[0] != last.split(" · ")[0]:
                log(line)
                last = line
            if merge.state == "done":
                _merged_or_fail(root, job)
                return
            busy = any(v.state in ("running", "pending") for v in views)
            if merge.state in ("failed", "killed") or (merge.state == "blocked" and not busy):
                render(f"{recipe.name}: Slurm", views, merge, Console(stderr=True), root)
                bad = [v for v in views if v.state in ("failed", "killed")]
                raise UserError(_failed_line(bad, recipe_path) if bad else f"the merge {merge.state}: {merge.detail}")
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(
            f"wildsci build: stopped following; the jobs keep running -- `wildsci build {recipe_path} --status`",
            file=sys.stderr,
        )
        raise


def show_status(recipe_path: str | Path, root: Path) -> None:
    """``--status``: the table of ranks and the merge, then the one thing to do next."""
    from wildsci.cluster.executors import BuildJob

    if not (root / "state.json").is_file():
        raise UserError(
            f"no executor run recorded in {root} -- start one with `wildsci build {recipe_path} --executor.kind "
            "local|slurm` (an in-process build prints its stages as it runs)"
        )
    state = _load_state(root)
    job = BuildJob(
        recipe=str(root / "recipe.yaml"),
        out=state["out"],
        tasks=state["tasks"],
        logging_dir=str(root),
        pool="generate" in state.get("phases", []),
    )
    con = Console()
    if state["kind"] == "slurm":
        views, merge, _ = _shard_views(root, job, state)
        ids = ", ".join(
            f"{'generation' if k == 'generate' else k} job {state.get(k, {}).get('job_id', '-')}"
            for k in (*job.phases, "merge")
        )
    else:
        views, merge, _ = _shard_views(root, job)
        ids = "local executor"
    render(f"{Path(state['out']).name}: {job.tasks} shards ({ids})", views, merge, con, root)
    con.print(progress_line(views, merge, state.get("submitted", time.time())).split(" · ")[0])
    bad = [v for v in views if v.state in ("failed", "killed")]
    if merge.state == "done":
        con.print(f"complete: the dataset is in {state['out']}")
    elif bad:
        con.print(
            f"next: fix the cause of rank {bad[0].rank} (log: {bad[0].log}), then rerun the command that submitted "
            f"this build (`wildsci build {recipe_path} --executor.kind {state['kind']} --executor.tasks {job.tasks}`"
            "): only unfinished ranks run"
            + (", and the blocked merge job is replaced" if merge.state == "blocked" else "")
        )
    elif any(v.state in ("running", "pending") for v in [*views, merge]):
        con.print("next: nothing to do -- the jobs are queued or running (add --wait to follow them)")


# ---------------------------------------------------------------------------------------------------- the plan
def print_plan(recipe: BuildRecipe, job: Any, ex: ExecutorConfig) -> None:
    """``--dry-run`` with an executor: the tasks, what each runs, its papers and LLM calls, and the sbatch scripts."""
    import dataclasses

    from wildsci.cluster.executors import BuildShard

    con = Console()
    con.print(
        f"[bold]wildsci build --dry-run[/]: {recipe.name} -> {job.out} on the {ex.kind} executor: {ex.tasks} shard "
        f"tasks ({ex.concurrent} at a time), then 1 merge task"
    )
    if job.pool:
        con.print(f"each task first generates: {BuildShard(job, 'generate')!r}")
        con.print(
            "then, once every shard has generated, draws its distractors from all shards' questions (as one build "
            f"does) and goes on to labelling: {BuildShard(job)!r}"
        )
    else:
        con.print(f"each task runs: {BuildShard(job)!r}")
    con.print(
        "then the merge: global dedup, decontamination, split, parquet, card"
        + (", push" if job.push else "")
        + f" into {job.out}"
    )
    if ex.server is not None:
        con.print(
            "each task starts its own model server for the generator "
            f"({' '.join(ex.server.command) or 'vllm serve {model} --host {host} --port {port}'}) and stops it "
            "at the end"
        )
    from rich.table import Table

    t = Table(title="per task (upper bounds; the call cache answers calls already made)", title_justify="left")
    for col in ("task", "papers", "passages", "generate", "vote", "label", "LLM calls"):
        t.add_column(col, justify="right")
    shown = range(ex.tasks) if ex.tasks <= 32 else [*range(16), *range(ex.tasks - 16, ex.tasks)]
    totals = [0, 0, 0]
    for r in range(ex.tasks):
        p = build_plan(dataclasses.replace(recipe, shard=f"{r}/{ex.tasks}", executor=ExecutorConfig()))
        calls = p["calls_max"]
        total = sum(calls.values())
        totals = [totals[0] + p["papers"], totals[1] + p["passages"], totals[2] + total]
        if r in shown:
            t.add_row(
                str(r),
                f"{p['papers']:,}",
                f"{p['passages']:,}",
                f"{calls['generate']:,}",
                f"{calls['vote']:,}",
                f"{calls['label']:,}",
                f"{total:,}",
            )
        elif r == 16:
            t.add_row("...", "", "", "", "", "", "")
    t.add_row("all", f"{totals[0]:,}", f"{totals[1]:,}", "", "", "", f"{totals[2]:,}")
    con.print(t)
    if ex.kind == "slurm":
        phases, merge = _slurm_executors(job, ex, Path(job.logging_dir), recipe, dry=True)
        for i, (phase, e) in enumerate(zip(job.phases, phases, strict=True)):
            what = "the shards' generation" if phase == "generate" else "the shards"
            after = " (submitted with --dependency=afterok:<generation job id>)" if i else ""
            con.print(
                f"[bold]sbatch script for {what}[/] ({Path(job.logging_dir) / phase / 'launch_script.slurm'}){after}:"
            )
            con.print(e.script(ex.tasks), markup=False, highlight=False)
        con.print("[bold]sbatch script for the merge[/] (submitted with --dependency=afterok:<shards job id>):")
        con.print(merge.script(1), markup=False, highlight=False)
    con.print("dry run: nothing was submitted or written.")
