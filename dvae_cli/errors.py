"""The one exception type for mistakes a user can fix (bad input, missing files).

Owns: the error type. Must not: print or exit (the CLI's user_errors does).
"""


class DVAEError(Exception):
    """A user-facing error: the CLI prints its message (no traceback) and exits non-zero."""
