"""One real vLLM OpenAI server (the CPU build in ``.venv-vllm``) on the embedded SmolLM2, shared by a test session.

Starting vLLM costs ~50-90 s on 2 cores (eager mode, no torch compile), so the server is started once per
session by the ``vllm_server`` fixture and every test that needs it shares it; a test that must kill a server
starts its own with :func:`start_cpu_server`. Register the module once (``pytest_plugins = ["vllm_fixtures"]``)
so that all test modules share the same session fixture.

The server runs float32 (vLLM's CPU build would otherwise downcast to bfloat16), so its greedy answers can be
compared with the transformers backend's, which runs float32 on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import require

from wildsci.serving import CPU_COMMAND, CPU_ENV, VllmServer

ROOT = Path(__file__).resolve().parents[1]
#: The vLLM environment built by ``make vllm-env`` (override with WILDSCI_VLLM_PYTHON).
VLLM_PYTHON = Path(os.environ.get("WILDSCI_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
SERVER_ARGS = ["--dtype", "float32", "--max-model-len", "4096", "--seed", "0"]


def vllm_python() -> str:
    """The vLLM environment's interpreter; skipped locally (failed in CI) when it is not built."""
    ready = VLLM_PYTHON.is_file() and (VLLM_PYTHON.parents[1] / ".installed").is_file()
    require(ready, f"no vLLM environment at {VLLM_PYTHON.parents[1]} -- run `make vllm-env`")
    return str(VLLM_PYTHON)


def cpu_server(model: str, log_path: Path, extra_args: Sequence[str] = (), **kwargs) -> VllmServer:
    """A (not yet started) CPU vLLM server for ``model``, started the way the tests and docs start it
    (``extra_args`` go last, so they override the same flags before them)."""
    return VllmServer(
        model=model,
        command=[*CPU_COMMAND, *SERVER_ARGS, *extra_args],
        env={**CPU_ENV, "HF_HUB_OFFLINE": "1"},
        python=vllm_python(),
        startup_timeout=600,
        log_path=log_path,
        **kwargs,
    )


@pytest.fixture(scope="session")
def vllm_server(embedded_model, tmp_path_factory):
    """A running vLLM server on the embedded SmolLM2 (served as its folder path); stopped at the end."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = cpu_server(embedded_model, log)
    with server:
        yield server
