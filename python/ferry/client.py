"""The calling side: send arrays to a model served on a channel and get arrays back."""
from __future__ import annotations

from ctypes import byref, c_int64, c_size_t, c_void_p
from typing import Any, Mapping

from ._handle import Handle, check
from ._lib import lib, raw
from .message import DEFAULT_INPUT, MessageReader, read_metadata, write_message


# Hot-path entry points called with prebuilt ctypes arguments (see _lib.raw).
_begin, _finish = raw("ferry_call_begin"), raw("ferry_call_finish")
_writer = raw("ferry_call_writer", c_void_p)
_DEFAULT_MS = c_int64(-1)


class Client(Handle):
    """A connection to `url` (e.g. "shm://digits"). Not thread-safe: one per thread.

    >>> with Client("shm://digits") as c:
    ...     labels = c.call(images)            # one array in, one array out
    ...     out = c.call({"a": x, "b": y})      # named arrays in, dict out if several
    """

    _free = lib.ferry_client_free

    def __init__(self, url: str):
        ptr = c_void_p()
        check(lib.ferry_client_new(url.encode(), None, byref(ptr)))
        super().__init__(ptr)
        self.url = url
        self._reader = MessageReader()
        # Out-parameters reused by every call (a client is used by one thread at a time).
        self._call, self._reply, self._count = c_void_p(), c_void_p(), c_size_t()
        self._call_ref, self._reply_ref, self._count_ref = byref(self._call), byref(self._reply), byref(self._count)

    def call_message(self, inputs: Any, metadata: Mapping[str, str] | None = None,
                     timeout: float | None = None, with_metadata: bool = True) -> tuple[dict, dict]:
        """Sends `inputs` (an array, or a dict of named arrays) and returns the reply as
        (tensors by name, metadata). Arrays are copied out of shared memory."""
        ms = _DEFAULT_MS if timeout is None else c_int64(max(0, int(timeout * 1000)))
        call, reply, count = self._call, self._reply, self._count
        rc = _begin(self._handle(), ms, self._call_ref)
        if rc:
            check(rc)
        try:
            write_message(_writer(call), inputs, DEFAULT_INPUT, metadata)
            reader = self._reader
            rc = _finish(call, ms, self._reply_ref, reader._tensors, reader._cap_c, self._count_ref)
            if rc:
                check(rc)
            n = count.value
            tensors = reader.convert(n) if n <= reader._cap else reader.read(reply.value)
            return tensors, (read_metadata(reply.value) if with_metadata else {})
        finally:
            lib.ferry_call_free(call)

    def call(self, inputs: Any, timeout: float | None = None, **metadata: str) -> Any:
        """Sends `inputs` and returns the reply: the array itself when the model returned
        one tensor, else a dict of arrays."""
        tensors, _ = self.call_message(inputs, metadata or None, timeout, with_metadata=False)
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        return tensors


__all__ = ["Client"]
