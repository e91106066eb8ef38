"""Errors a user can act on.

Anything raised as :class:`UserError` reaches the terminal as one line naming the problem and
the command exits non-zero, instead of a traceback. Raise it for bad input (a flag, a file, a
request) and for an environment that cannot do what was asked (a broker that does not answer).
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message is shown as is, on one line."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
