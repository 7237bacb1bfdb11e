"""A model server per builder task (``executor.server``): each rank starts its own vLLM and talks only to it.

Why per task: on a GPU cluster a task owns its node's GPUs, so the simplest way to keep them busy is for the task
to serve the generator itself; no shared endpoint to size or to keep alive across jobs. The alternative, one shared
endpoint (``generator.base_url``), suits a standing inference service (docs/scale_out.md). The server is the kit's
:class:`wildsci.serving.VllmServer` (health-waited, reported while it stalls, stopped with its whole process group
when the rank ends, fails or is interrupted). Only the transport keys (``base_url``) change, so a shard built
against its own server has the recipe hash of one built against a shared endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wildsci.recipes import load_yaml

#: where the roles point when no task server runs (the checks before submission, and the merge, which calls no LLM)
PER_TASK_URL = "http://per-task-server/v1"


def merge_overrides_for(job: Any) -> dict[str, Any]:
    """The merge makes no LLM call, but the recipe's checks want a base_url for each openai role."""
    if not job.server:
        return {}
    data = load_yaml(job.recipe)
    return served_overrides(data, str((data.get("generator") or {}).get("model")), PER_TASK_URL)


@contextmanager
def task_server(job: Any, rank: int, phase: str = "build") -> Iterator[dict[str, Any]]:
    """Start the rank's server when the recipe asks for one; yields the overrides that point the roles at it."""
    if not job.server:
        yield {}
        return
    from wildsci.models import resolve_model
    from wildsci.serving import VllmServer

    data = load_yaml(job.recipe)
    gen = data.get("generator") or {}
    name = str(gen.get("model"))
    cfg = job.server
    command = list(cfg.get("command") or []) or None
    served = VllmServer(
        model=resolve_model(name),
        command=command,
        env=cfg.get("env") or {},
        python=cfg.get("python"),
        startup_timeout=float(cfg.get("startup_timeout", 900)),
        log_path=Path(job.logging_dir) / phase / "servers" / f"{rank:05d}.log",
    )
    # served under the recipe's own model name, so requests (and the recipe hash) are the same as with a shared server
    served.cmd += ["--served-model-name", name]
    with served:
        yield served_overrides(data, name, served.base_url)


def served_overrides(data: dict[str, Any], model: str, base_url: str) -> dict[str, Any]:
    """Point every openai-backend role that uses ``model`` at ``base_url`` (voters are a list: replaced whole)."""
    out: dict[str, Any] = {}
    for role in ("generator", "labeler"):
        cfg = data.get(role) or {}
        if cfg.get("backend") == "openai" and str(cfg.get("model")) == model:
            out[f"{role}.base_url"] = base_url
    voters = data.get("voters") or []
    if any(v.get("backend") == "openai" and str(v.get("model")) == model for v in voters):
        out["voters"] = [
            {**v, "base_url": base_url} if v.get("backend") == "openai" and str(v.get("model")) == model else v
            for v in voters
        ]
    return out
