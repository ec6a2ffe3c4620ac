"""Ferry: hand numpy arrays to a model in another process at shared-memory speed.

A thin ctypes binding of libferry (the Swift core); see README.md and docs/.
"""
from ._lib import lib as _lib
from .client import Call, Client
from .errors import (
    Again, Busy, ChannelClosed, Disconnected, FerryError, InvalidArgument, MalformedMessage, NoServer, PayloadTooLarge,
    PermissionDenied, ProtocolError, RemoteError, SystemCallError, SystemError_, Timeout, VersionMismatch, WorkerDied,
)
from .message import decode, encode
from .serving import Worker, census, load_model, model_identity, reclaim, serve
from .stream import Frame, Publisher, Subscriber

__version__ = _lib.ferry_version().decode()


def __getattr__(name: str):
    # The asyncio client is imported on first use: asyncio alone adds ~50 ms to the start of
    # every worker and client that never uses it.
    if name in ("AsyncClient", "AsyncCall"):
        from . import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'ferry' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"AsyncClient", "AsyncCall"})

__all__ = [
    "Client", "Call", "AsyncClient", "AsyncCall", "Worker", "Publisher", "Subscriber", "Frame", "serve", "load_model", "model_identity", "reclaim", "census", "encode", "decode", "FerryError", "InvalidArgument",
    "MalformedMessage", "PayloadTooLarge", "Timeout", "WorkerDied", "NoServer", "Busy", "ChannelClosed",
    "RemoteError", "PermissionDenied", "VersionMismatch", "Disconnected", "ProtocolError", "SystemError_",
    "SystemCallError", "Again", "__version__",
]
