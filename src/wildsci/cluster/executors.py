"""The builder as datatrove pipeline steps, and datatrove's executors with the few things the kit adds.

A datatrove step is any callable ``step(data, rank, world_size)``; datatrove runs rank r of n on a local process
pool or as task r of a Slurm array job, writes ``completions/<rank>`` when the step returns, and on a rerun runs only
the ranks without one. One rank is one of the builder's shards (``--shard r/n``: the same hash partition by paper
id, its own folder, checkpoints and call cache); the merge (``merge_from``) is a second executor with one task. A
recipe with pool distractors adds a first executor that only generates (:attr:`BuildJob.phases`).

What the kit adds to datatrove 0.10.1's executors, and why:

- every rank writes its whole output (the builder's progress, datatrove's log, a traceback) to
  ``<logging_dir>/ranks/<rank>.log``, appended per attempt, and records each start in ``attempts.jsonl`` and, when
  it fails, the one line that names the cause in ``failures/<rank>.json``: ``wildsci build --status`` reads those
  instead of asking a person to grep Slurm logs;
- the local pool goes on with the other ranks when one fails (datatrove's pool stops at the first exception);
- sbatch lines without a value are left out (a null partition means the cluster's default, not ``--partition``),
  memory is given in MB, jobs run in the submission folder, and datatrove's extra ``merge_stats`` job is not
  submitted (the kit's status reads the shards' own counts).

This module imports the builder at call time only, so that unpickling an executor in a job is cheap and has no side
effects.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.executor.slurm import SlurmPipelineExecutor
from datatrove.utils.stats import PipelineStats
from loguru import logger


@dataclass
class BuildJob:
    """Everything a rank needs: pickled with the executor, so it holds paths and values only."""

    recipe: str  #: the recipe as submitted (overrides applied), snapshotted in the logging folder
    out: str  #: the dataset folder (absolute)
    tasks: int
    logging_dir: str
    push: bool = False
    command: str = ""  #: the user's command line, for the dataset card
    server: dict[str, Any] | None = None  #: a per-task model server (executor.server), or None
    pool: bool = False  #: the recipe draws distractors from the build's pool: every shard generates first
    shard_root: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.shard_root = str(Path(self.out) / ".wildsci_build" / "shards")

    def shard_dir(self, rank: int) -> Path:
        return Path(self.shard_root) / f"{rank:05d}-of-{self.tasks:05d}"

    @property
    def phases(self) -> tuple[str, ...]:
        """The shard executors, in order (each a folder of the logging dir): the merge comes after the last.

        Why two with a pool: a shard's options stage draws wrong options from every shard's generated questions, so
        all shards generate (``generate``) before any of them goes on (``build``), as one build would see them.
        """
        return ("generate", "build") if self.pool else ("build",)


def quiet_datatrove() -> None:
    """datatrove logs every rank's start, skip and stats at INFO to stderr; the kit prints its own progress line."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}")


def one_line(exc: BaseException) -> str:
    """The line that names a failure: the kit's own message for its errors, else the exception's type and text."""
    from wildsci.errors import UserError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGINT)"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, UserError) else f"{type(exc).__name__}: {first}".rstrip(": ")


@contextmanager
def rank_io(stage_dir: Path, rank: int) -> Iterator[Path]:
    """Send this rank's stdout and stderr to its log file, and record its start and (if any) its failure."""
    for sub in ("ranks", "failures"):
        (stage_dir / sub).mkdir(parents=True, exist_ok=True)
    log_path = stage_dir / "ranks" / f"{rank:05d}.log"
    failure = stage_dir / "failures" / f"{rank:05d}.json"
    failure.unlink(missing_ok=True)
    attempt = {
        "rank": rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": time.time(),
        "slurm_job": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        "slurm_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }
    with open(stage_dir / "attempts.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(attempt) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    print(f"===== rank {rank}: attempt started {stamp} UTC on {attempt['host']} (pid {attempt['pid']})", flush=True)
    try:
        yield log_path
    except BaseException as e:  # datatrove has already logged the traceback into this log
        record = {"rank": rank, "cause": one_line(e), "time": time.time(), "log": str(log_path)}
        failure.write_text(json.dumps(record) + "\n", encoding="utf-8")
        print(f"===== rank {rank} failed: {record['cause']}", flush=True)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class BuildShard:
    """datatrove step: build shard ``rank`` of ``world_size`` (``wildsci build --shard r/n``) in one phase.

    ``build`` runs up to labelling (with a pool: from the generated checkpoint on, drawing from every shard's pool);
    ``generate`` stops after generation (``stop_after: generate``).
    """

    def __init__(self, job: BuildJob, phase: str = "build") -> None:
        self.job, self.phase = job, phase

    def __repr__(self) -> str:
        cmd = f"wildsci build {self.job.recipe} --shard RANK/{self.job.tasks}"
        if self.phase == "generate":
            return f"{cmd} --stop_after generate (one shard per task)"
        if self.job.pool:
            return f"{cmd} --pool_from [{self.job.tasks} shards] (one shard per task)"
        return f"{cmd} (one shard per task)"

    def __call__(self, data: Any, rank: int, world_size: int) -> Any:
        from wildsci.builder.pipeline import run_build
        from wildsci.cluster.server import task_server

        overrides: dict[str, Any] = {
            "shard": f"{rank}/{world_size}",
            "executor.kind": "inprocess",
            "executor.tasks": 1,
        }
        if self.phase == "generate":
            overrides["stop_after"] = "generate"
        elif self.job.pool:
            overrides["pool_from"] = [str(self.job.shard_dir(r)) for r in range(world_size)]
        with task_server(self.job, rank, self.phase) as server_overrides:
            run_build(
                self.job.recipe, output_dir=str(self.job.shard_dir(rank)), overrides={**overrides, **server_overrides}
            )
        return data


class MergeShards:
    """datatrove step: merge every shard, then dedup, decontaminate, split, save, card (and push)."""

    def __init__(self, job: BuildJob) -> None:
        self.job = job

    def __repr__(self) -> str:
        return f"wildsci build {self.job.recipe} --merge_from [{self.job.tasks} shards] --output-dir {self.job.out}"

    def __call__(self, data: Any, rank: int, world_size: int) -> Any:
        from wildsci.builder.pipeline import run_build
        from wildsci.cluster.server import merge_overrides_for

        shards = [str(self.job.shard_dir(r)) for r in range(self.job.tasks)]
        overrides = {"merge_from": shards, "executor.kind": "inprocess", "executor.tasks": 1}
        overrides.update(merge_overrides_for(self.job))
        run_build(
            self.job.recipe, output_dir=self.job.out, overrides=overrides, push=self.job.push, command=self.job.command
        )
        return data


class _RankRecords:
    """Wraps datatrove's ``_run_for_rank`` in :func:`rank_io` (a rank already completed is skipped as before)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1) -> PipelineStats:
        if self.is_rank_completed(rank):
            return PipelineStats()
        try:
            with rank_io(Path(self.logging_dir.path), rank):
                return super()._run_for_rank(rank, local_rank, node_rank)
        finally:
            quiet_datatrove()  # datatrove re-adds its DEBUG console logger after each rank


class LocalExecutor(_RankRecords, LocalPipelineExecutor):
    """datatrove's local pool; a failed rank is recorded and the pool goes on with the others."""

    def _launch_run_for_rank(self, rank: int, ranks_q: Any, completed: Any = None, completed_lock: Any = None):
        try:
            return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)
        except Exception:
            return PipelineStats()  # recorded in failures/<rank>.json; get_incomplete_ranks() still lists it


class SlurmExecutor(_RankRecords, SlurmPipelineExecutor):
    """datatrove's Slurm array executor with the kit's sbatch fix-ups; ``dry=True`` writes nothing."""

    dry = False
    chdir: str | None = None

    def get_sbatch_args(self, max_array: int = 1) -> dict:
        if self.dry:  # datatrove creates the Slurm log folder here; a dry run must not write anything
            real, os.makedirs = os.makedirs, lambda *a, **k: None
            try:
                args = super().get_sbatch_args(max_array)
            finally:
                os.makedirs = real
        else:
            args = super().get_sbatch_args(max_array)
        args = {k: v for k, v in args.items() if v is not None and not (k == "partition" and not v)}
        args["mem-per-cpu"] = f"{max(1, round(float(self.mem_per_cpu_gb) * 1024))}M"
        if self.chdir:
            args["chdir"] = self.chdir
        return args

    def launch_merge_stats(self) -> None:
        """Not submitted: the kit's status reads the shards' stage counts (``wildsci build --status``)."""

    def script(self, max_array: int) -> str:
        """The sbatch script this executor submits (what ``launch_job`` writes to ``launch_script.slurm``)."""
        pik = self.logging_dir.resolve_paths("executor.pik")
        srun = f"srun -l -n {self.nodes_per_task} launch_pickled_pipeline {pik}"
        return self.get_launch_file_contents(self.get_sbatch_args(max_array), srun)
