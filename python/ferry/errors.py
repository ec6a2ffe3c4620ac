"""Ferry's exceptions, one per status code of include/ferry.h."""
from __future__ import annotations

import builtins


class FerryError(Exception):
    """Base of every Ferry error. `code` is the C status code."""

    code = 0

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(FerryError, ValueError):
    code = 1


class MalformedMessage(FerryError, ValueError):
    code = 2


class PayloadTooLarge(FerryError):
    code = 3


class Timeout(FerryError, builtins.TimeoutError):
    code = 4


class WorkerDied(FerryError):
    code = 5


class NoServer(FerryError, ConnectionError):
    code = 6


class Busy(FerryError):
    code = 7


class ChannelClosed(FerryError, ConnectionError):
    code = 8


class SystemError_(FerryError, OSError):
    code = 9


class RemoteError(FerryError):
    """The model raised an exception: the message carries its text, `type` its class name
    (e.g. "ValueError") and `traceback` the model-side traceback (its last 16 KiB), when the
    worker sent them."""

    code = 10
    type: str | None = None
    traceback: str | None = None


class PermissionDenied(FerryError, PermissionError):
    code = 11


class VersionMismatch(FerryError):
    code = 12


_BY_CODE = {cls.code: cls for cls in FerryError.__subclasses__()}


def error_for(code: int, message: str) -> FerryError:
    """The exception for a status code."""
    return _BY_CODE.get(code, FerryError)(message, code)


__all__ = [
    "FerryError", "InvalidArgument", "MalformedMessage", "PayloadTooLarge", "Timeout", "WorkerDied",
    "NoServer", "Busy", "ChannelClosed", "SystemError_", "RemoteError", "PermissionDenied",
    "VersionMismatch", "error_for",
]
