"""``wildsci build --status``: what each rank and the merge are doing, read from the run's own records and Slurm.

Sources, in the order they are trusted: datatrove's completion files (a rank is done), the kit's failure records
(the one line that names why a rank failed, and its log), the attempts log (a rank started, where, as which
process), and Slurm's queue (pending with its reason, running). A rank that started, has neither a completion nor
a failure record, and is neither queued nor alive was killed from outside (SIGKILL, the OOM killer, a time limit,
``scancel``): Slurm's own record names which when the controller still remembers the job.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wildsci.builder.plan import STAGE_ORDER
from wildsci.cluster import slurm

#: a merge after a failed shard: Slurm's word for it, which squeue users know (said before Slurm's next pass says it)
NEVER = "waits on a build rank that failed: it can never start (DependencyNeverSatisfied)"
#: the states a rank or the merge can be in
STATES = ("done", "running", "pending", "blocked", "failed", "killed", "not started")


@dataclass
class RankView:
    """One row of the status table."""

    rank: int
    state: str
    stages: str = ""
    attempts: int = 0
    detail: str = ""  # the cause of a failure, Slurm's reason for a pending task, ...
    log: str = ""
    job: str = ""  # Slurm's <array job>_<task> (as squeue shows it), or the local process id


def classify(
    done: bool, failure: dict | None, attempt: dict | None, alive: bool, queued: slurm.JobTask | None
) -> tuple[str, str]:
    """A rank's state and the detail shown beside it, from what the records say about it."""
    if done:
        return "done", ""
    if failure is not None:  # a start removes the previous failure record: this one is the latest attempt's
        return "failed", failure.get("cause", "")
    if queued is not None and queued.state in ("RUNNING", "COMPLETING") or alive:
        return "running", ""
    if queued is not None and queued.state in slurm.ACTIVE:
        if queued.reason == "DependencyNeverSatisfied":
            return "blocked", NEVER
        return "pending", queued.reason
    if attempt is not None:
        return "killed", "started but neither finished nor recorded an error (SIGKILL, out of memory, time limit?)"
    return "not started", ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def latest_attempts(stage_dir: Path) -> dict[int, tuple[dict, int]]:
    """Per rank: its last start record and how many starts it has had."""
    out: dict[int, tuple[dict, int]] = {}
    path = stage_dir / "attempts.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        n = out.get(rec["rank"], ({}, 0))[1]
        out[rec["rank"]] = (rec, n + 1)
    return out


def pid_alive(attempt: dict | None) -> bool:
    """True when the attempt's process runs on this machine (a local-executor rank)."""
    if not attempt or attempt.get("slurm_job") or attempt.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(attempt["pid"]), 0)
    except (ProcessLookupError, PermissionError, ValueError, KeyError):
        return False
    return True


def stage_counts(shard_dir: Path) -> str:
    """``generate 6 > options 6 > vote 6 > ...``: the rows each finished per-paper stage kept, from its manifest."""
    manifest = _read_json(shard_dir / ".wildsci_build" / "manifest.json") or {}
    stages = manifest.get("stages", {})
    parts = [f"{name} {stages[name]['rows']}" for name in STAGE_ORDER if name in stages and "rows" in stages[name]]
    return " > ".join(parts)


def stage_views(
    stage_dir: Path, tasks: int, queued: dict[int, slurm.JobTask], shard_dir: Any = None
) -> list[RankView]:
    """One :class:`RankView` per rank of a stage folder (``build`` or ``merge``)."""
    done = {p.name for p in (stage_dir / "completions").glob("*")} if (stage_dir / "completions").is_dir() else set()
    attempts = latest_attempts(stage_dir)
    views = []
    for rank in range(tasks):
        failure = _read_json(stage_dir / "failures" / f"{rank:05d}.json")
        attempt, n = attempts.get(rank, (None, 0))
        state, detail = classify(f"{rank:05d}" in done, failure, attempt, pid_alive(attempt), queued.get(rank))
        log = stage_dir / "ranks" / f"{rank:05d}.log"
        q = queued.get(rank)
        if q is not None:
            job = f"{q.job_id}_{q.array_index}" if q.array_index is not None else q.job_id
        elif attempt and attempt.get("slurm_job"):
            job = (
                f"{attempt['slurm_job']}_{attempt.get('slurm_task')}"
                if attempt.get("slurm_task")
                else attempt["slurm_job"]
            )
        else:
            job = f"pid {attempt['pid']}" if attempt else ""
        views.append(
            RankView(
                rank,
                state,
                stage_counts(shard_dir(rank)) if shard_dir else "",
                n,
                detail,
                str(log) if log.is_file() else "",
                job,
            )
        )
    return views


def counts(views: list[RankView]) -> dict[str, int]:
    out = {s: 0 for s in STATES}
    for v in views:
        out[v.state] += 1
    return out


def progress_line(views: list[RankView], merge: RankView | None, started: float) -> str:
    """``build 2/4 done, 1 running, 1 pending; merge waiting · 3m05s``: what ``--wait`` prints when it changes."""
    c = counts(views)
    parts = [f"{c['done']}/{len(views)} done"] + [f"{c[s]} {s}" for s in STATES[1:] if c[s]]
    line = "build ranks " + ", ".join(parts)
    if merge is not None:
        line += f"; merge {merge.state}" + (f" ({merge.detail})" if merge.detail and merge.state == "pending" else "")
    elapsed = int(time.time() - started)
    return f"{line} · {elapsed // 60}m{elapsed % 60:02d}s"


def slurm_queue(
    state: dict[str, Any], phases: tuple[str, ...] = ("build",)
) -> tuple[dict[str, dict[int, slurm.JobTask]], slurm.JobTask | None, list[slurm.JobTask]]:
    """Per shard phase its array tasks by rank, the merge job, and everything of this run still in Slurm's queue."""
    ids = {ph: str(state.get(ph, {}).get("job_id") or "") for ph in phases}
    merge_id = str(state.get("merge", {}).get("job_id") or "")
    tasks = slurm.queued([j for j in (*ids.values(), merge_id) if j and j != "-1"])
    by_phase: dict[str, dict[int, slurm.JobTask]] = {ph: {} for ph in phases}
    merge = None
    for t in tasks:
        for ph in phases:
            ranks = state.get(ph, {}).get("ranks", [])
            if t.job_id == ids[ph] and t.array_index is not None and t.array_index < len(ranks):
                by_phase[ph][ranks[t.array_index]] = t
        if t.job_id == merge_id:
            merge = t
    return by_phase, merge, tasks


def killed_detail(state: dict[str, Any], views: list[RankView], phase: str = "build") -> None:
    """Name how Slurm ended a killed rank (TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL) while it remembers."""
    job_id = str(state.get(phase, {}).get("job_id") or "")
    ranks = state.get(phase, {}).get("ranks", [])
    if not any(v.state == "killed" for v in views) or not job_id or job_id == "-1":
        return
    ended = {t.array_index: t for t in slurm.finished(job_id) if t.array_index is not None}
    for v in views:
        if v.state == "killed" and v.rank in ranks and ranks.index(v.rank) in ended:
            t = ended[ranks.index(v.rank)]
            v.detail = f"Slurm ended it: {t.state}" + (f" ({t.reason})" if t.reason else "")


def waits_on_dependency(v: RankView) -> bool:
    return v.state == "pending" and v.detail.startswith("Dependency")


def combine_phases(generate: list[RankView], build: list[RankView]) -> list[RankView]:
    """One row per rank of a two-phase shard: the generate phase's row until it is done, then the build phase's.

    A rank whose generation is done but whose build phase has not started waits for the others' generation (their
    questions are its distractor pool): it shows as the build phase's row (not started, or pending on Slurm's
    dependency).
    """
    out = []
    for g, b in zip(generate, build, strict=True):
        if g.state == "done" or b.state in ("done", "running", "failed", "killed"):
            out.append(b)
        else:
            if g.state in ("running", "pending"):  # a failure's cause stays as it is; its log names the phase
                g.detail = "generating" + (f" ({g.detail})" if g.detail else "")
            out.append(g)
    return out


def mark_blocked(views: list[RankView], merge: RankView) -> None:
    """After a failed rank, whatever waits on a dependency can never start: say so instead of 'pending'.

    Only once nothing is running or waiting for resources: until then, Slurm has not decided (the failed rank of a
    phase still blocks the next phase of every rank and the merge, as ``afterok`` does).
    """
    failed = any(v.state in ("failed", "killed") for v in views)
    live = any(v.state == "running" or (v.state == "pending" and not waits_on_dependency(v)) for v in views)
    if not failed:
        return
    for v in views:
        if waits_on_dependency(v) and not live:
            v.state, v.detail = "blocked", NEVER
    if merge.state == "not started":
        merge.state, merge.detail = "blocked", "a build rank failed: the merge cannot run until it is fixed"
    elif waits_on_dependency(merge) and not live:
        merge.state, merge.detail = "blocked", NEVER


def render(
    title: str, views: list[RankView], merge: RankView | None, console: Console, root: Path | None = None
) -> None:
    """The table; with ``root``, logs are shown relative to it (said once in the title), as squeue shows job ids."""
    t = Table(title=title + (f" -- logs under {root}" if root else ""), title_justify="left")
    for col in ("rank", "job", "state", "attempts", "rows kept per stage", "cause / reason", "log"):
        t.add_column(col, overflow="fold")
    style = {"done": "green", "failed": "red", "killed": "red", "running": "cyan", "pending": "yellow"}
    for v in [*views, *([merge] if merge else [])]:
        name = "merge" if v is merge else str(v.rank)
        s = style.get(v.state, "")
        log = v.log
        if root and log and Path(log).is_relative_to(root):
            log = str(Path(log).relative_to(root))
        t.add_row(name, v.job, f"[{s}]{v.state}[/]" if s else v.state, str(v.attempts), v.stages, v.detail, log)
    console.print(t)
