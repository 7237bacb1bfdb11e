"""The one exception type users see as a single line (``wildsci: error: ...``), never as a traceback."""


class UserError(Exception):
    """Bad input, a bad recipe, a missing model or an unreachable Hub: the message says what, where and how to fix."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): third-party errors can span pages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
