"""The calling side: send arrays to a model served on a channel and get arrays back."""
from __future__ import annotations

import os
import threading
import weakref
from ctypes import addressof, byref, c_char_p, c_int, c_int64, c_size_t, c_void_p
from typing import Any, Mapping

from ._handle import Handle, check
from numpy import ndarray

from ._lib import lib, raw
from .errors import Again, InvalidArgument, RemoteError
from .table import TABLE, from_tensors
from .message import _CODES_BY_DTYPE, _address, DEFAULT_INPUT, MAX_DIMS, OUTPUTS_KEY, OUTPUTS_TUPLE, MessageReader, fastcall as _fastcall, read_metadata, write_message

_INPUT = DEFAULT_INPUT.encode()

# Calls of plain messages in C when the compiled module is built (message.fastcall): one
# array, or a dict of arrays; the ctypes path below does the same otherwise.
_fast = _fastcall.call if _fastcall is not None else None
_fast_many = _fastcall.call_many if _fastcall is not None else None


# Hot-path entry points called with prebuilt ctypes arguments (see _lib.raw).
_begin, _poll, _call_array, _free = raw("ferry_call_begin"), raw("ferry_call_poll"), raw("ferry_call_array"), raw("ferry_call_free", None)
_AGAIN, _REMOTE = Again.code, RemoteError.code
#: How long one C wait may block: Ctrl-C (any signal handler) runs between two of them.
_STEP_MS = c_int64(100)


def _check_inputs(inputs: Any) -> None:
    """None is not a message (it would reach the model as an empty dict): a TypeError."""
    if inputs is None:
        raise TypeError("call(None): send an array, a dict of named arrays, a DataFrame, a scalar, str or bytes")


def _raise_call_error(call, rc: int) -> None:
    """Raises the exception for a failed call: a model's error with its type and traceback."""
    if rc != _REMOTE:
        check(rc)
    m, t, d = c_char_p(), c_char_p(), c_char_p()
    lib.ferry_call_error(call, byref(m), byref(t), byref(d))
    e = RemoteError((m.value or b"").decode("utf-8", "replace"))
    e.type = (t.value or b"").decode("utf-8", "replace") or None
    e.traceback = (d.value or b"").decode("utf-8", "replace") or None
    raise e
_writer = raw("ferry_call_writer", c_void_p)
_DEFAULT_MS = c_int64(-1)
_MAX_TIMEOUT_S = 30 * 86_400  # as the library: longer is surely a unit mistake


def _timeout_ms(timeout: float) -> c_int64:
    """A timeout in seconds as the C interface's milliseconds, checked (never wrapped)."""
    if not (0 <= timeout <= _MAX_TIMEOUT_S):  # also rejects NaN
        raise InvalidArgument(f"timeout={timeout!r}: use seconds in 0...{_MAX_TIMEOUT_S} (30 days), or None for the channel's default")
    return c_int64(int(timeout * 1000))


#: Every live client, so a forked child can reset their thread state (the library itself
#: re-attaches a client used in a child with a liveness of its own).
_CLIENTS: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _reset_clients_after_fork() -> None:
    for c in list(_CLIENTS):
        c._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_clients_after_fork)


class _CallScratch:
    """ctypes out-parameters and the reply reader of one thread's calls."""

    def __init__(self):
        self.reader = MessageReader()
        self.call, self.reply, self.count = c_void_p(), c_void_p(), c_size_t()
        self.call_ref, self.reply_ref, self.count_ref = byref(self.call), byref(self.reply), byref(self.count)
        self.shape = (c_int64 * MAX_DIMS)()
        self.call_at, self.reply_at, self.count_at = addressof(self.call), addressof(self.reply), addressof(self.count)
        self.tensors, self.tensors_at = None, 0


class Client(Handle):
    """A connection to `url` (e.g. "shm://digits"). Safe to share across threads: each call
    claims its own slot, and each thread has its own scratch state.

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
        # Out-parameters reused call after call, one set per thread (the C calls release the
        # GIL, so threads sharing one set would read each other's replies).
        self._tls = threading.local()
        # close() from one thread while another is inside ferry_call_begin (which borrows
        # the handle) defers the free until that begin returns.
        self._lock = threading.Lock()
        self._begins = 0
        self._doomed = None
        _CLIENTS.add(self)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread survives a fork: a lock another thread held, its scratch
        # and its begins in progress are gone with it.
        self._lock = threading.Lock()
        self._begins = 0
        self._tls = threading.local()

    def close(self) -> None:
        with self._lock:
            ptr, self._ptr = self._ptr, None
            if ptr and self._begins:
                self._doomed = ptr
                return
        if ptr:
            lib.ferry_client_free(ptr)

    def _borrow(self):
        """The handle, for one C call that begins a call; pair with `_give_back`."""
        with self._lock:
            h = self._handle()
            self._begins += 1
        return h

    def _give_back(self) -> None:
        with self._lock:
            self._begins -= 1
            doomed = self._doomed if not self._begins else None
            if doomed:
                self._doomed = None
        if doomed:
            lib.ferry_client_free(doomed)

    def _begin(self, ms, ref) -> int:
        h = self._borrow()
        try:
            return _begin(h, ms, ref)
        finally:
            self._give_back()

    def call_message(self, inputs: Any, metadata: Mapping[str, str] | None = None,
                     timeout: float | None = None, with_metadata: bool = True) -> tuple[dict, dict]:
        """Sends `inputs` (an array, or a dict of named arrays) and returns the reply as
        (tensors by name, metadata). Arrays are copied out of shared memory."""
        _check_inputs(inputs)
        ms = _DEFAULT_MS if timeout is None else _timeout_ms(timeout)
        sc = self._tls.__dict__.get("s")
        if sc is None:
            sc = self._tls.s = _CallScratch()
        call, reply, count = sc.call, sc.reply, sc.count
        rc = self._begin(ms, sc.call_ref)
        if rc:
            check(rc)
        try:
            write_message(_writer(call), inputs, DEFAULT_INPUT, metadata)
            reader = sc.reader
            # Send, then wait in steps: the deadline is the call's, but between steps Python
            # runs its signal handlers (Ctrl-C), and freeing the call then gives it up properly.
            rc = _poll(call, _STEP_MS, sc.reply_ref, reader._tensors, reader._cap_c, sc.count_ref)
            while rc == _AGAIN:
                rc = _poll(call, _STEP_MS, sc.reply_ref, reader._tensors, reader._cap_c, sc.count_ref)
            if rc:
                _raise_call_error(call, rc)
            n = count.value
            tensors = reader.convert(n) if n <= reader._cap else reader.read(reply.value)
            meta = read_metadata(reply.value) if with_metadata else {}
            check(lib.ferry_call_check(call))  # copied out intact (not from a lost segment)
            return tensors, meta
        finally:
            lib.ferry_call_free(call)

    def call(self, inputs: Any, timeout: float | None = None, **metadata: str) -> Any:
        """Sends `inputs` and returns the reply: the array itself when the model returned
        one tensor, a tuple when it returned a tuple (or list) of arrays, a DataFrame for a
        table, else a dict of arrays by name."""
        if not metadata:
            kind = type(inputs)
            if kind is ndarray:
                code = _CODES_BY_DTYPE.get(inputs.dtype)
                if code is not None and inputs.flags.c_contiguous and inputs.ndim <= MAX_DIMS:
                    if _fast is None:
                        return self._call_array(inputs, code, _DEFAULT_MS if timeout is None else _timeout_ms(timeout))
                    # The common call, here rather than in a helper: each step of Python runs
                    # on a cold cache after the wait, so it takes as few frames as it can.
                    sc = self._tls.__dict__.get("s")
                    if sc is None:
                        sc = self._tls.s = _CallScratch()
                    reader = sc.reader
                    if reader._tensors is not sc.tensors:  # the reader grows its array for big replies
                        sc.tensors, sc.tensors_at = reader._tensors, addressof(reader._tensors)
                    ms = -1 if timeout is None else _timeout_ms(timeout).value
                    h = self._borrow()
                    try:
                        rc = _fast(h.value, ms, _INPUT, code, inputs, 100, sc.call_at, sc.reply_at, sc.tensors_at, reader._cap, sc.count_at)
                    finally:
                        self._give_back()
                    if type(rc) is not int:
                        return rc  # the reply array; the call is freed
                    return self._end_call(sc, rc)
            elif kind is dict and _fast_many is not None:
                out = self._call_many(inputs, _DEFAULT_MS if timeout is None else _timeout_ms(timeout))
                if out is not _GENERAL:
                    return out
        tensors, meta = self.call_message(inputs, metadata or None, timeout)
        return _result(tensors, meta)

    def _call_array(self, arr: ndarray, code: int, ms) -> Any:
        """One plain array in: begin, copy in, send and first wait in one C call (through
        ctypes, where the compiled _fastcall is not built; `call` uses it when it is)."""
        sc = self._tls.__dict__.get("s")
        if sc is None:
            sc = self._tls.s = _CallScratch()
        reader = sc.reader
        shape = sc.shape
        for i, d in enumerate(arr.shape):
            shape[i] = d
        addr = _address(arr)
        h = self._borrow()
        try:
            rc = _call_array(h, ms, _INPUT, c_int(code), c_int(arr.ndim), shape, c_void_p(addr),
                             c_size_t(arr.nbytes), _STEP_MS, sc.call_ref, sc.reply_ref, reader._tensors, reader._cap_c, sc.count_ref)
        finally:
            self._give_back()
        return self._end_call(sc, rc)

    def _call_many(self, inputs: dict, ms) -> Any:
        """A dict of plain arrays in one C call (_fastcall.call_many); _GENERAL when the dict
        is not plain (nothing was sent)."""
        sc = self._tls.__dict__.get("s")
        if sc is None:
            sc = self._tls.s = _CallScratch()
        reader = sc.reader
        if reader._tensors is not sc.tensors:
            sc.tensors, sc.tensors_at = reader._tensors, addressof(reader._tensors)
        h = self._borrow()
        try:
            rc = _fast_many(h.value, ms.value, inputs, 100, sc.call_at, sc.reply_at, sc.tensors_at, reader._cap, sc.count_at)
        finally:
            self._give_back()
        if rc is None:
            return _GENERAL
        if type(rc) is not int:
            return rc  # the reply's outputs; the call is freed
        return self._end_call(sc, rc)

    def _end_call(self, sc: _CallScratch, rc: int) -> Any:
        """The rest of a call the C path began (sc.call) but did not finish: wait, raise its
        error, or read a reply that is not plain; frees the call."""
        reader = sc.reader
        call = sc.call.value
        try:
            while rc == _AGAIN:  # sc.call, not the int: an int would cross as a 32-bit C int
                rc = _poll(sc.call, _STEP_MS, sc.reply_ref, reader._tensors, reader._cap_c, sc.count_ref)
            if rc:
                if not call:
                    check(rc)
                _raise_call_error(call, rc)
            n = sc.count.value
            tensors = reader.convert(n) if n <= reader._cap else reader.read(sc.reply.value)
            meta = read_metadata(sc.reply.value)
            check(lib.ferry_call_check(sc.call))
            return _result(tensors, meta)
        finally:
            if call:
                _free(c_void_p(call))
                sc.call.value = None

    def server_info(self, timeout: float | None = None) -> dict:
        """Who serves the channel: {"model": its identity (file, function, content hash,
        version)} — read from the channel (shm://), the gateway's handshake (tcp://) or Redis
        (redis://: the nodes' model and version). Each reply names its model too
        (`call_message(...)[1]["ferry.model"]`)."""
        text = c_char_p()
        check(lib.ferry_client_server_info(self._handle(), _DEFAULT_MS if timeout is None else _timeout_ms(timeout), byref(text)))
        return {"model": (text.value or b"").decode("utf-8", "replace")}

    def send(self, inputs: Any, timeout: float | None = None, **metadata: str) -> "Call":
        """Sends `inputs` without waiting: returns a `Call` whose `result()` waits for the
        reply. Several calls may be in flight at once (one slot each); `timeout` is the
        call's deadline, counted from now."""
        _check_inputs(inputs)
        ms = _DEFAULT_MS if timeout is None else _timeout_ms(timeout)
        ptr = c_void_p()
        rc = self._begin(ms, byref(ptr))
        if rc:
            check(rc)
        call = Call(ptr)
        try:
            write_message(_writer(ptr), inputs, DEFAULT_INPUT, metadata or None)
            check(lib.ferry_call_send(ptr))
        except BaseException:
            call.close()
            raise
        return call


#: _call_many's "not a plain dict: take the general path"
_GENERAL = object()


def _result(tensors: dict, meta: Mapping[str, str] | None = None) -> Any:
    """What a call returns: a tuple when the model returned one (metadata ferry.outputs=tuple;
    the tensors in order), the array of a one-tensor reply, a DataFrame for a table, else the
    dict of arrays."""
    if meta and meta.get(OUTPUTS_KEY) == OUTPUTS_TUPLE:
        return tuple(tensors.values())
    if TABLE in tensors:  # first: a table without columns is one tensor, its schema
        return from_tensors(tensors)
    if len(tensors) == 1:
        return next(iter(tensors.values()))
    return tensors


class Call(Handle):
    """A call in flight (from `Client.send`): `result()` waits for its reply. Free it with
    `close()` or `with`; it is freed when garbage-collected too."""

    _free = lib.ferry_call_free

    def result(self, timeout: float | None = None) -> Any:
        """Waits for the reply (up to `timeout` seconds more, else until the call's deadline)
        and returns it like `Client.call`; frees the call."""
        h = self._handle()
        reply, count = c_void_p(), c_size_t()
        try:
            if timeout is None:
                rc = lib.ferry_call_poll(h, _STEP_MS, byref(reply), None, 0, byref(count))
                while rc == _AGAIN:  # interruptible, up to the call's own deadline
                    rc = lib.ferry_call_poll(h, _STEP_MS, byref(reply), None, 0, byref(count))
            else:
                rc = lib.ferry_call_wait(h, _timeout_ms(timeout), byref(reply))
            if rc:
                _raise_call_error(h, rc)
            tensors = MessageReader().read(reply.value)
            meta = read_metadata(reply.value)
            check(lib.ferry_call_check(h))
        finally:
            self.close()
        return _result(tensors, meta)


__all__ = ["Client", "Call"]
