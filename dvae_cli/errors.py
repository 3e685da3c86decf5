"""The one exception type for mistakes a user can fix (bad input, missing files)."""


class DVAEError(Exception):
    """A user-facing error: the CLI prints its message (no traceback) and exits non-zero."""
