"""The server's new_order and cancel requests in C (csrc/binding/intake.c)."""

from typing import final

from .server.session import Session

@final
class Intake:
    """Carries out the well-formed new orders and cancels of every session."""

    def __init__(self, tables: tuple[object, ...], /) -> None:
        """The server's tables, in the order of intake.c's enum intake_table
        (checked there: a ValueError for any other shape)."""

    def take(self, session: Session, frame: bytes | bytearray | memoryview | str, /) -> bool:
        """Carry out a new_order or cancel frame for `session` if it passes every
        check; True if it did, False (having changed nothing) if Session.handle must."""
