"""The one error type of the devstack: its message is a single line meant for a person."""

from __future__ import annotations


class StackError(RuntimeError):
    """Something the local stack needs is missing or failed; ``str(exc)`` says what to do, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
