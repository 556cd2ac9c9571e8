"""The compiled core: ``ffi`` and ``lib`` of the cffi extension, nothing else."""

from pyengine._cengine import ffi, lib

__all__ = ["ffi", "lib"]
