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


# BEGIN GENERATED: errors (scripts/gen_tables.py)
class InvalidArgument(FerryError, ValueError):
    """An argument is invalid (NULL, out of range, inconsistent, or a call in the wrong order). (FERRY_EINVAL)"""

    code = 1


class MalformedMessage(FerryError, ValueError):
    """A message or segment failed validation: bad magic, length, offset or value. (FERRY_EMALFORMED)"""

    code = 2


class PayloadTooLarge(FerryError):
    """The payload does not fit in a slot; the error names the setting to raise. (FERRY_ETOOBIG)"""

    code = 3


class Timeout(FerryError, builtins.TimeoutError):
    """The deadline passed (for ferry_worker_recv: no request came). (FERRY_ETIMEDOUT)"""

    code = 4


class WorkerDied(FerryError):
    """The worker serving the request died before it replied. (FERRY_EPEERDIED)"""

    code = 5


class NoServer(FerryError, ConnectionError):
    """Nothing serves the channel (never started, or gone). (FERRY_ENOSERVER)"""

    code = 6


class Busy(FerryError):
    """Every slot stayed in use until the deadline. (FERRY_EBUSY)"""

    code = 7


class ChannelClosed(FerryError, ConnectionError):
    """The channel was closed by its server. (FERRY_ECLOSED)"""

    code = 8


class SystemError_(FerryError, OSError):
    """A system call failed; the message carries the call and errno text. (FERRY_ESYSTEM)"""

    code = 9


class RemoteError(FerryError):
    """The model raised an error; its text, type and traceback come with it (ferry_call_error). (FERRY_EREMOTE)"""

    code = 10


class PermissionDenied(FerryError, PermissionError):
    """The operating system refused access (permissions, a segment of another user). (FERRY_EPERM)"""

    code = 11


class VersionMismatch(FerryError):
    """The peer speaks another version of the format. (FERRY_EVERSION)"""

    code = 12


class Again(FerryError):
    """Not yet: the call is still in flight (ferry_call_poll); not an error. (FERRY_EAGAIN)"""

    code = 13


class Disconnected(FerryError, ConnectionError):
    """The connection to a remote gateway was lost or refused; calls in flight on it failed, the next call reconnects. (FERRY_EDISCONNECTED)"""

    code = 14


class ProtocolError(FerryError):
    """A remote peer broke the wire protocol (bad frame, failed authentication step); the connection was closed. (FERRY_EPROTOCOL)"""

    code = 15
# END GENERATED

#: A readable name for SystemError_ (FERRY_ESYSTEM: a system call failed, e.g. /dev/shm full).
SystemCallError = SystemError_

# The model's error type and traceback, when the worker sent them (ferry_call_error).
RemoteError.type = None
RemoteError.traceback = None


_BY_CODE = {cls.code: cls for cls in FerryError.__subclasses__()}


def error_for(code: int, message: str) -> FerryError:
    """The exception for a status code."""
    return _BY_CODE.get(code, FerryError)(message, code)


__all__ = [
    "FerryError", "InvalidArgument", "MalformedMessage", "PayloadTooLarge", "Timeout", "WorkerDied",
    "NoServer", "Busy", "ChannelClosed", "SystemError_", "RemoteError", "PermissionDenied",
    "VersionMismatch", "Again", "Disconnected", "ProtocolError", "SystemCallError", "error_for",
]
