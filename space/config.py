"""What the Space serves and its limits, read from ``WILDSCI_SPACE_*`` variables (Space variables or a shell).

One dataclass holds every knob so that the same ``app.py`` runs unchanged as a Hugging Face Space (where the
settings are Space variables) and locally; a value that means nothing (0 tokens, a temperature of 9) is
refused at start-up in one line rather than reinterpreted.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from wildsci.errors import UserError
from wildsci.models import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
HUB_DATASET = "JustinTX/WildSci"
#: where `make demo` writes its dataset: relative to the working directory, then to the checkout
LOCAL_DEMO_DATASETS = (Path("runs/demo/dataset"), HERE.parent / "runs" / "demo" / "dataset")
ALL = "All"
MAX_TEMPERATURE = 2.0
MAX_LISTED = 200  # questions listed in the picker per filter (random picks from all of them)


def _env(name: str, default: Any, help: str):
    return field(default=default, metadata={"env": f"WILDSCI_SPACE_{name}", "help": help})


@dataclass
class SpaceConfig:
    """What the Space serves and its limits; each field is read from the ``WILDSCI_SPACE_*`` variable it names."""

    model: str = _env("MODEL", "", "finetuned model (Hub id, folder, embedded:...); empty = the base model")
    base_model: str = _env("BASE_MODEL", DEFAULT_MODEL, "base model shown side by side with the finetuned one")
    dataset: str = _env("DATASET", "", f"WildSci-format data; empty = runs/demo/dataset if there, else {HUB_DATASET}")
    split: str = _env("SPLIT", "", "split to browse; empty = the first of test, validation, train")
    host: str = _env("HOST", "127.0.0.1", "address to listen on (Spaces set GRADIO_SERVER_NAME=0.0.0.0)")
    port: int = _env("PORT", 7860, "port to listen on (or GRADIO_SERVER_PORT)")
    max_new_tokens: int = _env("MAX_NEW_TOKENS", 256, "default generation length shown on the slider")
    max_new_tokens_limit: int = _env("MAX_NEW_TOKENS_LIMIT", 1024, "longest generation a user may ask for")
    max_question_chars: int = _env("MAX_QUESTION_CHARS", 2000, "longest typed question, in characters")
    max_option_chars: int = _env("MAX_OPTION_CHARS", 300, "longest typed option, in characters")
    max_prompt_tokens: int = _env("MAX_PROMPT_TOKENS", 2048, "longest prompt (question + options) in tokens")
    concurrency: int = _env("CONCURRENCY", 2, "generations running at once; more requests wait in the queue")
    queue_size: int = _env("QUEUE_SIZE", 64, "requests that may wait in the queue before new ones are refused")
    temperature: float = _env("TEMPERATURE", 0.0, "default temperature; 0 = greedy, as in the evaluation")
    preload: bool = _env("PRELOAD", True, "load the models at start-up (required on ZeroGPU) rather than on first use")

    def __post_init__(self) -> None:
        positive = (
            "max_new_tokens",
            "max_new_tokens_limit",
            "max_question_chars",
            "max_option_chars",
            "max_prompt_tokens",
            "concurrency",
            "queue_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)} -- set {_var(name)}")
        if not 0 < self.port < 65536:
            raise UserError(f"port must be between 1 and 65535, got {self.port} -- set {_var('port')}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise UserError(
                f"temperature must be between 0 and {MAX_TEMPERATURE}, got {self.temperature} "
                f"-- set {_var('temperature')}"
            )
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise UserError(
                f"max_new_tokens={self.max_new_tokens} is above max_new_tokens_limit={self.max_new_tokens_limit} -- "
                "raise WILDSCI_SPACE_MAX_NEW_TOKENS_LIMIT or lower WILDSCI_SPACE_MAX_NEW_TOKENS"
            )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SpaceConfig:
        """Read the config; Spaces set ``GRADIO_SERVER_NAME``/``PORT`` themselves, so those are honoured too."""
        env = dict(os.environ if env is None else env)
        env.setdefault("WILDSCI_SPACE_HOST", env.get("GRADIO_SERVER_NAME", "127.0.0.1"))
        env.setdefault("WILDSCI_SPACE_PORT", env.get("GRADIO_SERVER_PORT", env.get("PORT", "7860")))
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            if f.type in ("int", int, "float", float):
                kind = int if f.type in ("int", int) else float
                try:
                    values[f.name] = kind(raw)
                except ValueError:
                    what = "an integer" if kind is int else "a number"
                    raise UserError(f"{f.metadata['env']}={raw!r} is not {what} -- set a number") from None
            elif f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() not in ("0", "false", "no", "off")
            else:
                values[f.name] = raw.strip()
        return cls(**values)


def _var(name: str) -> str:
    """The environment variable that sets field ``name`` (for error messages that say how to fix)."""
    return next(f.metadata["env"] for f in fields(SpaceConfig) if f.name == name)


def check_number(value: Any, kind: type, name: str, lo: float, hi: float) -> Any:
    """A request's number (slider, row) as ``kind`` within ``[lo, hi]``, or :class:`UserError` saying so."""
    try:
        x = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a number between {lo} and {hi}, got {value!r}") from None
    if not lo <= x <= hi:
        raise UserError(f"{name} must be between {lo} and {hi}, got {value!r}")
    return x


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once (and let go) before anything loads, so each cause reads as itself.

    Why: Gradio tries the port on localhost and, when uvicorn then fails on ``host``, reports every failure as
    "Cannot find empty port" -- a host that is not an address of this machine read as a busy port.
    """
    host_var, port_var = _var("host"), _var("port")
    if not os.environ.get(host_var) and os.environ.get("GRADIO_SERVER_NAME"):
        host_var = "GRADIO_SERVER_NAME"  # where this host came from (from_env falls back to it)
    fix_host = f"set {host_var} to 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError, ValueError) as e:
        why = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise UserError(
            f"{host_var}={host!r} is not a host name or address this machine resolves ({why}) -- {fix_host}"
        ) from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no conflict
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is in use (another server?) -- stop it or set {port_var} to a free port"
                ) from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise UserError(
                    f"{host_var}={host!r} ({addr[0]}) is not an address of this machine -- {fix_host}"
                ) from None
            if e.errno == errno.EACCES:
                raise UserError(
                    f"port {port} needs administrator rights on this machine -- set {port_var} to a port above 1023"
                ) from None
            raise UserError(
                f"cannot listen on {host}:{port}: {e.strerror or e} -- check {host_var} and {port_var}"
            ) from None
