"""Managed handles: a C pointer freed exactly once by close(), `with`, or the finalizer."""
from __future__ import annotations

import ctypes

from ._lib import lib
from .errors import error_for


def check(rc: int) -> None:
    """Raises the exception for a non-zero status code."""
    if rc != 0:
        raise error_for(rc, (lib.ferry_last_error() or b"").decode("utf-8", "replace"))


class Handle:
    """Owns one C handle; subclasses name the `_free` function."""

    _free = None  # type: ignore[assignment]

    def __init__(self, ptr: ctypes.c_void_p):
        self._ptr = ptr

    @property
    def closed(self) -> bool:
        return not self._ptr

    def _handle(self) -> ctypes.c_void_p:
        if not self._ptr:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr and self._free is not None:
            type(self)._free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to report to
            pass
