"""The fetch ranks on the builder's datatrove executors (``executor.kind: local | slurm``).

Each task runs :func:`wildsci.papers.run.fetch_rank` for its rank; the executors (``wildsci.cluster.executors``)
add per-rank logs, completion markers (a rerun runs only unfinished ranks) and the sbatch script. The executor's
folder is named by what the ranks fetch (the papers and the rank count), so completions of an earlier, smaller
fetch (``--max_papers``) never mark a larger one as done.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from wildsci.errors import UserError
from wildsci.papers.config import PapersRecipe


class FetchRank:
    """datatrove step: fetch rank ``rank`` of ``world_size`` (picklable: the recipe's values and a rate)."""

    def __init__(self, recipe: PapersRecipe, rate: float) -> None:
        self.recipe = recipe
        self.rate = rate

    def __repr__(self) -> str:
        return f"wildsci papers: fetch rank RANK of {self.recipe.name} at {self.rate:g} requests/s"

    def __call__(self, data: Any, rank: int, world_size: int) -> Any:
        from wildsci.papers.run import fetch_rank

        fetch_rank(self.recipe, rank, world_size, rate=self.rate)
        return data


def executor_dir(recipe: PapersRecipe, pmcids: list[str], tasks: int) -> Path:
    digest = hashlib.sha256(("\n".join(pmcids) + f"\n{tasks}").encode()).hexdigest()[:12]
    ex = recipe.executor
    root = Path(ex.logging_dir) if ex.logging_dir else recipe.state_dir / "executor"
    return root / f"fetch-{digest}"


def run_ranks(recipe: PapersRecipe, pmcids: list[str], rate: float) -> None:
    """Run every fetch rank on the recipe's executor: a local process pool (waits), or a Slurm array (submits)."""
    from wildsci.cluster.executors import LocalExecutor, SlurmExecutor, quiet_datatrove

    ex = recipe.executor
    root = executor_dir(recipe, pmcids, ex.tasks)
    quiet_datatrove()
    if ex.kind == "local":
        executor = LocalExecutor([FetchRank(recipe, rate)], tasks=ex.tasks, workers=ex.workers, logging_dir=str(root))
        todo = executor.get_incomplete_ranks()
        print(f"local executor: {len(todo)} of {ex.tasks} fetch ranks to run; logs in {root / 'ranks'}")
        executor.run()
        failed = executor.get_incomplete_ranks()
        if failed:
            raise UserError(
                f"fetch rank(s) {', '.join(map(str, failed))} failed -- see {root / 'ranks'}; rerun the same "
                "command: only those ranks run again"
            )
        return
    from wildsci.cluster import slurm

    slurm.require_slurm()
    submitted = root / "slurm_job_id"
    if submitted.is_file() and slurm.queued([submitted.read_text().strip()]):
        raise UserError(
            f"the fetch job {submitted.read_text().strip()} is still queued or running -- rerun this command when it "
            "has finished (squeue shows it)"
        )
    executor = SlurmExecutor(
        [FetchRank(recipe, rate)],
        tasks=ex.tasks,
        workers=ex.workers,
        cpus_per_task=ex.cpus_per_task,
        mem_per_cpu_gb=ex.mem_per_cpu_gb,
        time=ex.time,
        partition=ex.partition,
        qos=ex.qos or "",
        env_command=ex.env_command or slurm.default_env_command(),
        sbatch_args=dict(ex.sbatch_args),
        job_name=ex.job_name or f"wildsci-papers-{recipe.name}",
        logging_dir=str(root),
        requeue=False,
        mail_type="NONE",
    )
    executor.chdir = os.getcwd()
    if not executor.get_incomplete_ranks():
        return  # every rank finished: the caller writes the card
    executor.run()
    submitted.write_text(f"{executor.job_id}\n")
    raise SubmittedToSlurm(
        f"submitted {ex.tasks} fetch ranks as Slurm array job {executor.job_id} (script: "
        f"{root / 'launch_script.slurm'}); when it has finished, rerun the same command to write the card"
    )


class SubmittedToSlurm(Exception):
    """The ranks run later on the cluster: the command ends after submitting (the card is written by a rerun)."""
