"""The one exception type users see as a single line (``wildsci: error: ...``), never as a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """Bad input, a bad recipe, a missing model or an unreachable Hub: the message says what, where and how to fix."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): third-party errors can span pages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_writable_dir(path: str | Path, key: str) -> Path:
    """Refuse, in one line and before any work, an output folder that cannot be created or written.

    Why up front: a stage that finds out when it writes its first file has already spent its minutes (models
    loaded, answers generated), and the write fails as ``OSError: [Errno 30] Read-only file system``. The folder
    is not created here. ``key`` names the setting to change (``output_dir``, ``run_dir``).
    """
    out = Path(path).expanduser()
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{key} {out}: {existing} is a file, not a folder -- choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key} {out} cannot be written ({existing} is read-only to you) -- choose another {key}")
    try:  # os.access ignores read-only mounts and some ACLs: try for real
        probe = existing / f".wildsci-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{key} {out} cannot be written ({existing}: {e.strerror}) -- choose another {key}") from None
    return out


def run_main(
    prog: str,
    body: Callable[[], int | None],
    interrupted: str = "interrupted",
    clean: Callable[[str], str] = str,
    note: str = "",
) -> int:
    """Run a command's body and map its ending to an exit code: 0, a ``UserError`` as one line and 2, Ctrl-C 130.

    One mapping for every entry point (``wildsci``, ``python -m wildsci.grpo``), so the same mistake reads the
    same way everywhere. ``clean`` filters the line (e.g. blanks tokens); ``note`` is appended to it (e.g. that a
    launcher's traceback after it only repeats the command).
    """
    try:
        return body() or 0
    except UserError as e:
        print(clean(f"{prog}: error: {e}{note}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
