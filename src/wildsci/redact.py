"""Keep credentials out of everything the kit writes or prints: cards, checkpoints, pushed files, pages, logs, errors.

One module for every stage (GRPO, the report, the Space, the LLM client, the vLLM server): depends on nothing else.

A token can arrive as ``--hub_token v``, ``--hub-token=v``, a recipe key, a recipe ``env:`` entry or an
environment variable. Two ways to remove it, used together where text comes from users:

- by value: :func:`secret_values` collects every credential from the raw inputs once, before anything is parsed
  (so even an error about the recipe itself is scrubbed); :func:`scrub` replaces those values in any text;
  :func:`scrub_env` does the same for the secret-named environment variables alone;
- by shape: :func:`redact_text` replaces token-shaped strings and whatever follows a secret-named flag or key in
  free text (commands and recipes quoted in a report), where the values are not known in advance.

Names follow transformers' own rule (a key ending in ``_token`` is a secret) widened to the usual spellings of
keys and passwords; ``max_new_tokens`` is not a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
#: a key or variable holding a credential: hub_token, HF_TOKEN, WANDB_API_KEY, my-secret, db_password
SECRET_NAME = re.compile(
    r"(^|[_-])(token|secret|password|passwd|api[_-]?key|access[_-]?key|credentials?)$", re.IGNORECASE
)
#: token-shaped values (Hugging Face, OpenAI-style, GitHub), caught even where they were not expected
TOKEN_SHAPES = re.compile(r"\b(?:hf_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})")
_NAME = r"[\w.-]*(?:token|api[_-]?key|secret|password|passwd|authorization)"  # ends so: not max_new_tokens
_FLAG_VALUE = re.compile(rf"(?i)((?<![\w-])--?{_NAME}(?:\s+|=))(?!-)[^\s\"',;`|)]+")
_ASSIGNED_VALUE = re.compile(rf"(?i)(\b{_NAME}[\"']?\s*[=:]\s*[\"']?)(?:bearer\s+)?[^\s\"',;`|)]+")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name.lstrip("-")))


def secret_values(argv: Iterable[str], recipe: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None):
    """Every credential value in the command line, the recipe (``env:`` included) and the environment."""
    found: set[str] = set()
    args = list(argv)
    for i, a in enumerate(args):
        if not a.startswith("--"):
            continue
        name, eq, value = a.partition("=")
        if is_secret_name(name):
            if eq:
                found.add(value)
            elif i + 1 < len(args):
                found.add(args[i + 1])

    def walk(mapping: Mapping[str, Any]) -> None:
        for k, v in mapping.items():
            if isinstance(v, Mapping):
                walk(v)
            elif is_secret_name(str(k)) and v not in (None, ""):
                found.add(str(v))

    walk(recipe or {})
    walk(os.environ if env is None else env)
    # a value like "1" or "true" is no credential, and blanking it everywhere would garble the text
    return {v for v in found if len(v) >= 8}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (longest first) and anything shaped like a token replaced."""
    for value in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return TOKEN_SHAPES.sub(REDACTED, text)


def scrub_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with the value of every secret-named environment variable (and any token shape) replaced.

    The last guard for messages that a library wrote (a URL with credentials, a header echoed in an error).
    """
    env = os.environ if env is None else env
    return scrub(text, {v for k, v in env.items() if is_secret_name(k) and len(v) >= 8})


def redact_text(text: str) -> str:
    """``text`` with every token-shaped value, and every value given to a secret-named key or flag, replaced.

    For commands, recipes and warnings that users typed and that a report or results page quotes: a token passed
    as ``--hub_token hf_...`` or ``api_key: sk-...`` must not travel on into a page that gets shared.
    """
    for pattern in (_FLAG_VALUE, _ASSIGNED_VALUE):
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return TOKEN_SHAPES.sub(REDACTED, text)


def scrub_args(*objs: Any) -> dict[str, str]:
    """Blank every secret-named attribute of the parsed arguments; returns what was removed (name -> value).

    Why: the Trainer pickles its arguments into every checkpoint's ``training_args.bin`` and reporters log
    them; a value that is gone cannot be written anywhere. The caller keeps the token for the push.
    """
    removed = {}
    for obj in objs:
        for name, value in list(vars(obj).items()):
            if is_secret_name(name) and isinstance(value, str) and value:
                removed[name] = value
                setattr(obj, name, None)
    return removed
