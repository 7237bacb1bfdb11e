"""The one exception type users see as a single line (``wildsci: error: ...``), never as a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input, a bad recipe, a missing model or an unreachable Hub: the message says what, where and how to fix."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): third-party errors can span pages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
