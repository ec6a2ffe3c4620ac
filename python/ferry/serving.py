"""The serving side: run a Python function of numpy arrays as a model on a channel."""
from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import os
import signal
import sys
import traceback
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Mapping

import numpy as np

from ._handle import Handle, check
from ._lib import lib, raw
from .errors import ChannelClosed, FerryError
from .message import DEFAULT_OUTPUT, MessageReader, _scratch, reply_array, write_message

_TIMEOUT = 4  # FERRY_ETIMEDOUT
_CLOSED = 8  # FERRY_ECLOSED
_REMOTE = 10  # FERRY_EREMOTE


class Worker(Handle):
    """Serves `url`: creates the channel, or joins the processes already serving it (they
    share the load), or reclaims it from dead ones. The last one to close removes it."""

    _free = lib.ferry_worker_free

    def __init__(self, url: str):
        ptr = c_void_p()
        check(lib.ferry_worker_new(url.encode(), None, byref(ptr)))
        super().__init__(ptr)
        self.url = url
        base, size = c_void_p(), c_size_t()
        check(lib.ferry_worker_mapping(ptr, byref(base), byref(size)))
        self._base = base.value
        # One view of the whole segment; every request tensor is a slice of it (zero copy).
        self._mapping = memoryview((ctypes.c_uint8 * size.value).from_address(base.value)).cast("B").toreadonly()
        self._reader = MessageReader()
        self._stop = False

    def stop(self) -> None:
        """Makes `serve` return after the current request."""
        self._stop = True

    def serve(self, fn: Callable[[Any], Any], inputs: str = "auto", poll: float = 0.2,
              max_requests: int | None = None) -> int:
        """Answers requests with `fn` until stop(), a signal, or the channel closes.

        `fn` receives one read-only numpy array when the request holds one tensor
        (`inputs="auto"`), else a dict of them (`inputs="dict"` always gives a dict); it
        returns an array, a scalar, str, bytes, or a dict of those. An exception becomes
        an error reply (RemoteError at the client) and the worker goes on.
        Returns the number of requests answered."""
        w = self._handle()
        job, msg, count = c_void_p(), c_void_p(), c_size_t()
        job_ref, msg_ref, count_ref = byref(job), byref(msg), byref(count)
        reader = self._reader
        request, writer_of, reply = lib.ferry_job_request, lib.ferry_job_writer, lib.ferry_job_reply
        nxt = raw("ferry_worker_next")
        wait_c = ctypes.c_int64(int(poll * 1000))
        convert, read, base, mapping = reader.convert, reader.read, self._base, self._mapping
        only_array, single = reader.only_array, inputs != "dict"
        scratch = _scratch()  # this thread's reusable ctypes out-parameters
        output = DEFAULT_OUTPUT.encode()
        ndarray = np.ndarray
        served = 0
        while not self._stop and (max_requests is None or served < max_requests):
            # recv + validate + tensor descriptors in one C call, arguments prebuilt.
            rc = nxt(w, wait_c, job_ref, reader._tensors, reader._cap_c, count_ref)
            if rc == _TIMEOUT:
                continue
            if rc == _CLOSED:
                break
            job_ptr = job.value
            if rc != 0 and not job_ptr:
                check(rc)
            try:
                if rc != 0:
                    check(rc)  # a malformed request: the client gets the error
                n = count.value
                arg = only_array(base, mapping) if (n == 1 and single) else None
                if arg is None:
                    if n <= reader._cap:
                        tensors = convert(n, base, mapping, False)
                    else:
                        check(request(job_ptr, msg_ref))
                        tensors = read(msg.value, base, mapping, copy=False)
                    arg = tensors if (not single or n != 1) else next(iter(tensors.values()))
                result = fn(arg)
                rc = reply_array(job_ptr, output, result, scratch) if type(result) is ndarray else None
                if rc is None:
                    write_message(writer_of(job_ptr), result, DEFAULT_OUTPUT)
            except BaseException as e:  # the client gets the error; KeyboardInterrupt still stops us
                text = f"{type(e).__name__}: {e}"
                code = e.code if isinstance(e, FerryError) and e.code in (2, 3) else _REMOTE
                lib.ferry_job_fail(job_ptr, code, text.encode("utf-8", "replace")[:4000])
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                if os.environ.get("FERRY_TRACEBACK"):
                    traceback.print_exc()
                continue
            if rc is None:
                rc = reply(job_ptr)
            # The job is answered and freed either way; a failed reply already reached the
            # client as an error (e.g. too large for the slot), so the worker goes on.
            served += 1
        return served


def serve(url: str, fn: Callable[[Any], Any], inputs: str = "auto", max_requests: int | None = None) -> int:
    """Serves `fn` on `url` until SIGINT/SIGTERM or the channel closes; returns the count.

    >>> ferry.serve("shm://digits", lambda images: model.predict(images))
    """
    with Worker(url) as worker:
        previous = {}

        def _stop(signum, frame):
            worker.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, _stop)
            except ValueError:  # not the main thread: the caller handles signals
                pass
        try:
            return worker.serve(fn, inputs=inputs, max_requests=max_requests)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def reclaim(url: str) -> bool:
    """Removes the segment of `url` if every process serving it died; True if one was removed."""
    removed = ctypes.c_int()
    check(lib.ferry_channel_reclaim(url.encode(), byref(removed)))
    return bool(removed.value)


SLOT_STATES = ("free", "claimed", "ready", "busy", "done", "abandoned")


def census(url: str, recover: bool = False) -> dict:
    """Slots of `url`'s channel by state, e.g. {"free": 8, "busy": 0, ...}. With `recover`,
    first frees what dead processes held, so the counts show what live processes hold."""
    counts = (c_size_t * len(SLOT_STATES))()
    check(lib.ferry_channel_census(url.encode(), int(recover), counts))
    return dict(zip(SLOT_STATES, counts))


def load_model(target: str, function: str = "predict") -> Callable[[Any], Any]:
    """Loads `function` from a file path or a module name; runs its `setup()` first."""
    if target.endswith(".py") or os.path.sep in target:
        path = os.path.abspath(target)
        if not os.path.exists(path):
            raise FileNotFoundError(f"model file {target} not found")
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(f"ferry_model_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = None
    if hasattr(module, "setup"):
        made = module.setup()
        if callable(made):
            fn = made
    if fn is None:
        fn = getattr(module, function, None)
    if not callable(fn):
        raise AttributeError(f"{target} defines no callable `{function}` (or setup() returning one)")
    return fn



__all__ = ["Worker", "serve", "load_model", "reclaim", "census"]
