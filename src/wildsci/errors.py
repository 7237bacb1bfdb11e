"""The one exception type users see as a single line (``wildsci: error: ...``), never as a traceback."""


class UserError(Exception):
    """Bad input, a bad recipe, a missing model or an unreachable Hub: the message says what, where and how to fix."""
