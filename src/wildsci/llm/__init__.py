"""LLM access for the dataset builder: local transformers or any OpenAI-compatible endpoint, every call cached."""

from wildsci.llm.backends import (
    BackendConfig,
    ChatRequest,
    ChatResult,
    LLMClient,
    OpenAIClient,
    TransformersClient,
    make_client,
)
from wildsci.llm.cache import CallCache, call_key

__all__ = [
    "BackendConfig",
    "CallCache",
    "ChatRequest",
    "ChatResult",
    "LLMClient",
    "OpenAIClient",
    "TransformersClient",
    "call_key",
    "make_client",
]
