"""Exceptions raised by pyengine.

Every exception subclasses :class:`EngineError` and the builtin a caller would
expect (``ValueError`` for a bad value, ``TypeError`` for a wrong type, ...), so
both ``except pyengine.EngineError`` and ``except ValueError`` work.

A well-formed request that the market refuses (off tick, unknown order,
post-only would cross, ...) is not an exception: it is a ``Rejected`` event.
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "InvalidArgument",
    "InvalidArgumentType",
    "DuplicateSymbol",
    "ConcurrentUseError",
    "EngineClosed",
    "InvariantError",
    "EngineMemoryError",
    "EngineBufferError",
]


class EngineError(Exception):
    """Base class of every pyengine exception."""


class InvalidArgument(EngineError, ValueError):
    """An argument has a value the API does not accept."""


class InvalidArgumentType(EngineError, TypeError):
    """An argument has the wrong type. The message starts with the
    argument's name."""


class DuplicateSymbol(InvalidArgument):
    """An instrument with this symbol already exists."""


class ConcurrentUseError(EngineError, RuntimeError):
    """An Engine was used while a call held it: from another thread (an
    Engine is single-threaded), or from code that the call itself ran (an
    argument's ``__index__`` or ``__hash__``, a garbage collection's
    callbacks). The message says which."""


class EngineClosed(EngineError, RuntimeError):
    """The Engine was closed."""


class InvariantError(EngineError, AssertionError):
    """``Engine.verify()`` found a broken internal invariant (a bug in the core)."""


class EngineMemoryError(EngineError, MemoryError):
    """The C core could not allocate memory.

    From ``process_batch``, ``partial`` holds the ``BatchResult`` of the
    commands processed before memory ran out (None from other calls).
    """

    partial: object = None


class EngineBufferError(EngineError, BufferError):
    """``process_batch`` could not resize its ``out`` bytearray: a memoryview
    or numpy array of it is alive.

    Found before the batch, nothing ran and ``partial`` is None; if the view
    was made while the batch ran, ``partial`` holds the ``BatchResult`` of the
    commands that ran, as for ``EngineMemoryError``.
    """

    partial: object = None
