"""The few things the kit asks Slurm itself: what is queued or running, how a job ended, and cancelling a job.

Only Slurm's own commands (``squeue``, ``scontrol``, ``scancel``, ``sbatch``) are used, so the kit works on any
cluster a user can submit to, with or without accounting (``sacct`` needs slurmdbd; ``scontrol show job`` keeps a
finished job for ``MinJobAge`` seconds, which is enough to name a time-out or an out-of-memory kill).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from wildsci.errors import UserError

#: states in which a job (or one of its array tasks) still holds a place in the queue
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


@dataclass(frozen=True)
class JobTask:
    """One job, or one task of an array job, as Slurm reports it."""

    job_id: str  # the array's id for an array task
    array_index: int | None
    state: str
    reason: str = ""
    start: str = ""
    end: str = ""
    elapsed: str = ""


def require_slurm() -> None:
    """Slurm's client commands must be on PATH before anything is written for a Slurm run."""
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise UserError(
            f"executor.kind slurm, but {', '.join(missing)} is not on PATH -- run on a Slurm login node "
            "(or use --executor.kind local on this machine)"
        )


def _run(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(cmd)}` did not answer in 60 s -- is slurmctld reachable?") from None
    if done.returncode != 0:
        msg = (done.stderr or done.stdout).strip().splitlines()
        raise UserError(f"`{' '.join(cmd)}` failed: {msg[-1] if msg else 'no output'}")
    return done.stdout


def queued(job_ids: list[str]) -> list[JobTask]:
    """Array tasks and jobs among ``job_ids`` that are still in the queue (pending, running, ...)."""
    ids = [j for j in job_ids if j]
    if not ids:
        return []
    # -r: one line per array task; a finished job is no longer listed (squeue then says "Invalid job id" for it)
    done = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i|%T|%r|%S|%M"], capture_output=True, text=True, timeout=60
    )
    out = []
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        jid, idx = _split_id(parts[0])
        out.append(JobTask(jid, idx, parts[1], "" if parts[2] == "None" else parts[2], parts[3], "", parts[4]))
    return out


def finished(job_id: str) -> list[JobTask]:
    """How the tasks of a job ended, while the controller still remembers it (``MinJobAge``); [] when it does not."""
    if not job_id:
        return []
    done = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    out = []
    for line in done.stdout.splitlines():
        f = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in f:
            continue
        jid = f.get("ArrayJobId") or f.get("JobId", "")
        idx = f.get("ArrayTaskId")
        out.append(
            JobTask(
                jid,
                int(idx) if idx and idx.isdigit() else None,
                f["JobState"],
                "" if f.get("Reason") in (None, "None") else f["Reason"],
                f.get("StartTime", ""),
                f.get("EndTime", ""),
                f.get("RunTime", ""),
            )
        )
    return out


def _split_id(raw: str) -> tuple[str, int | None]:
    if "_" in raw:
        jid, idx = raw.split("_", 1)
        return jid, int(idx) if idx.isdigit() else None
    return raw, None


def cancel(job_ids: list[str]) -> None:
    ids = [j for j in job_ids if j]
    if ids:
        _run(["scancel", *ids])


def default_env_command() -> str | None:
    """Activates the environment this wildsci runs from, in a job (None outside a venv: the job's PATH is used)."""
    if sys.prefix != sys.base_prefix:
        return f"source {os.path.join(sys.prefix, 'bin', 'activate')}"
    return None
