"""Keep tokens out of everything a GRPO run writes or prints: cards, checkpoints, pushed files, logs, errors.

A token can arrive as ``--hub_token v``, ``--hub-token=v``, a recipe key, a recipe ``env:`` entry or an
environment variable. :func:`secret_values` collects every such value once, from the raw inputs, before
anything is parsed (so even an error about the recipe itself is scrubbed); :func:`scrub` replaces them in
any text. Names follow transformers' own rule (a key ending in ``_token`` is a secret) widened to the usual
spellings of keys and passwords.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "<redacted>"
#: a key or variable holding a credential: hub_token, HF_TOKEN, WANDB_API_KEY, my-secret, db_password
SECRET_NAME = re.compile(r"(^|[_-])(token|secret|password|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
#: what a Hugging Face token looks like, caught even where it was not expected
HF_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")


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
    """``text`` with every secret value (longest first) and anything shaped like an HF token replaced."""
    for value in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return HF_TOKEN_PATTERN.sub(REDACTED, text)


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
