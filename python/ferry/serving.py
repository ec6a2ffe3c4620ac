"""The serving side: run a Python function of numpy arrays as a model on a channel."""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib
import importlib.util
import inspect
import os
import signal
import sys
import traceback
import urllib.parse
import weakref
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Mapping

import numpy as np

from ._handle import Handle, check
from ._lib import lib, raw
from .errors import ChannelClosed, FerryError, MalformedMessage, PayloadTooLarge, RemoteError, Timeout
from .table import TABLE, from_tensors
# The request and reply of plain messages (arrays, dicts and tuples of arrays) are made in C
# when the compiled module is built (message.fastcall: _fastcall.next, .reply); the ctypes
# path below does the same otherwise.
from .message import DEFAULT_OUTPUT, MessageReader, _scratch, fastcall as _fastcall, reply_array, write_message

_TIMEOUT, _CLOSED, _REMOTE = Timeout.code, ChannelClosed.code, RemoteError.code
#: Reply metadata naming the model that made the reply (its identity: file, function, hash, version).
MODEL_KEY = "ferry.model"
_malloc_tuned = False


def tune_malloc() -> bool:
    """Keeps a serving process's numpy temporaries off mmap. glibc serves allocations above
    128 KiB (its default threshold) with a fresh mmap and gives them back with munmap, so a
    model that makes a 200 KiB temporary per call page-faults it in every time — in a VM
    that made the digits model 6× slower on 72 images. Raising the mmap threshold (64 MiB)
    and the trim threshold (256 MiB) keeps such buffers in the heap for reuse. Once per
    process; skipped when MALLOC_MMAP_THRESHOLD_ is set or FERRY_MALLOC=default. Returns
    whether it changed anything."""
    global _malloc_tuned
    if _malloc_tuned or os.environ.get("FERRY_MALLOC") == "default" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 64 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 256 << 20))
#: errors a model's failure keeps as they are (the rest become RemoteError)
_KEPT_CODES = (MalformedMessage.code, PayloadTooLarge.code)


def failure(e: BaseException) -> tuple:
    """A model's exception as ferry_job_fail_ex's arguments: (status, type, message,
    traceback). Call it inside the `except` block (it reads the traceback there)."""
    code = e.code if isinstance(e, FerryError) and e.code in _KEPT_CODES else _REMOTE
    name = type(e).__name__
    return (code, name.encode(), f"{name}: {e}".encode("utf-8", "replace")[:4000],
            traceback.format_exc(limit=50).encode("utf-8", "replace"))


class _ErrorLog:
    """Model exceptions on stderr: each one (type, message, traceback) as one entry, at most
    `FERRY_MODEL_ERRORS_PER_S` (default 10) a second, then a count of those left out. Under
    `ferry serve` (FERRY_SUPERVISED=1) an entry is one `FERRY-LOG {json}` line, which the
    supervisor logs with this worker's pid (in its --log-format); alone, a readable block.
    FERRY_MODEL_ERRORS_PER_S=0 turns it off."""

    def __init__(self):
        try:
            self.rate = float(os.environ.get("FERRY_MODEL_ERRORS_PER_S", "10"))
        except ValueError:
            self.rate = 10.0
        self.structured = os.environ.get("FERRY_SUPERVISED") == "1"
        self.window, self.count, self.dropped = 0.0, 0, 0

    def __call__(self, url: str, error: tuple) -> None:
        if self.rate <= 0:
            return
        import json
        import time
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.dropped:
                self._write(url, "warning", f"{self.dropped} more model errors in the last second were not logged", None, json)
            self.window, self.count, self.dropped = now, 0, 0
        if self.count >= self.rate:
            self.dropped += 1
            return
        self.count += 1
        _code, _type, message, detail = error
        self._write(url, "error", "the model raised " + message.decode("utf-8", "replace"), detail.decode("utf-8", "replace"), json)

    def _write(self, url: str, level: str, message: str, detail: str | None, json) -> None:
        try:
            if self.structured:
                entry = {"level": level, "message": message, "url": url}
                if detail:
                    entry["traceback"] = detail
                sys.stderr.write("FERRY-LOG " + json.dumps(entry, ensure_ascii=False) + "\n")
            else:
                sys.stderr.write(f"ferry: {url}: {message}\n" + (detail or ""))
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: nothing to report to
            pass


#: Logs a model's failure (see _ErrorLog): called by the serving loops.
report_model_error = _ErrorLog()


def _release_kept(kept: int) -> None:
    lib.ferry_preserved_release(c_void_p(kept))


class Worker(Handle):
    """Serves `url`: creates the channel, or joins the processes already serving it (they
    share the load), or reclaims it from dead ones. The last one to close removes it.

    The model receives read-only numpy views of the request in its shared slot (zero copy).
    A model that keeps an input (or a view of it) past its call gets it preserved: after the
    call returns, the worker sees the extra references, and before replying replaces the
    request's pages, in this process only, by a private copy at the same addresses
    (`ferry_job_preserve`). The kept arrays keep their bytes forever after, also after
    `close()`; the slot goes on serving from a fresh mapping. That costs a copy of the
    request, so a model that keeps many inputs should copy them itself (`np.array(x)`)."""

    _free = lib.ferry_worker_free

    def __init__(self, url: str):
        ptr = c_void_p()
        check(lib.ferry_worker_new(url.encode(), None, byref(ptr)))
        super().__init__(ptr)
        self.url = url
        count, size = c_size_t(), c_size_t()
        check(lib.ferry_worker_slots(ptr, byref(count), byref(size)))
        self._slot_count, self._slot_size = count.value, size.value
        # One read-only view per slot; request tensors are slices of their slot's view.
        self._slot_base: list[int] = []
        self._slot_obj: list = []
        self._slot_view: list = []
        self._slot_rc: list[int] = []
        self._slot_owner: list = []
        for i in range(self._slot_count):
            self._slot_base.append(0)
            self._slot_obj.append(None)
            self._slot_view.append(None)
            self._slot_rc.append(0)
            self._slot_owner.append(None)
            self._map_slot(i)
        self._origin = self._slot_base[0]
        self._reader = MessageReader()
        #: The model identity this worker serves (the URL's model=), named in every reply's
        #: metadata as `ferry.model`; None when the URL gives none.
        self.model = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("model", [None])[0]
        self._stop = False
        self.preserved = 0  #: requests kept by the model and preserved (see the class doc)

    def _map_slot(self, i: int) -> None:
        data = c_void_p()
        check(lib.ferry_worker_slot(self._handle(), i, byref(data)))
        obj = (ctypes.c_uint8 * self._slot_size).from_address(data.value)
        self._slot_base[i] = data.value
        self._slot_obj[i] = obj
        self._slot_view[i] = memoryview(obj).cast("B").toreadonly()
        # What a request view's numpy base is (the C path gives its views the same one).
        self._slot_owner[i] = np.ndarray((0,), dtype=np.uint8, buffer=self._slot_view[i]).base
        self._fast_slots = (tuple(self._slot_base), tuple(self._slot_owner))  # for _fastcall.next
        # References to the slot object when no request array is alive (ours only; the
        # local `obj` does not count, getrefcount's own argument does, as in serve()).
        self._slot_rc[i] = sys.getrefcount(obj) - 1

    def _request_slot(self, addr: int, n: int) -> int:
        """The slot holding the request whose first tensor's data is at `addr` (-1: none,
        a request of strings only, whose data are private copies)."""
        slot = (addr - self._origin) // self._slot_size
        if 0 <= slot < self._slot_count and 0 <= addr - self._slot_base[slot] < self._slot_size:
            return slot
        return self._locate(n)

    def _locate(self, n: int) -> int:
        """The slot of a request whose first tensor is not where the arithmetic expects
        (a moved slot, or strings first)."""
        size = self._slot_size
        for k in range(n):
            addr = self._reader._tensors[k].data or 0
            for i, b in enumerate(self._slot_base):
                if b <= addr < b + size:
                    return i
        return -1

    def _preserve(self, job_ptr: int, i: int) -> None:
        kept, n = c_void_p(), c_size_t()
        check(lib.ferry_job_preserve(job_ptr, byref(kept), byref(n)))
        old = self._slot_obj[i]
        self._map_slot(i)
        # The kept arrays hold `old` (their numpy base): once the last one goes, so do the pages.
        weakref.finalize(old, _release_kept, kept.value)
        self.preserved += 1

    def close(self) -> None:
        self._slot_obj = self._slot_view = []  # views of non-kept requests: none can be alive
        super().close()

    def stop(self) -> None:
        """Makes `serve` return after the current request."""
        self._stop = True

    def serve(self, fn: Callable[[Any], Any], inputs: str = "auto", poll: float = 0.2,
              max_requests: int | None = None, max_batch: int = 1, max_delay_us: int = 0) -> int:
        """Answers requests with `fn` until stop(), a signal, or the channel closes.

        `fn` receives one read-only numpy array when the request holds one tensor
        (`inputs="auto"`), else a dict of them (`inputs="dict"` always gives a dict); it
        returns an array, a scalar, str, bytes, or a dict of those. An exception becomes
        an error reply (RemoteError at the client) and the worker goes on.
        With `max_batch` > 1, requests arriving within `max_delay_us` of each other are
        merged along axis 0 and `fn` runs once for them (ferry.batching).
        Returns the number of requests answered."""
        tune_malloc()
        fn = _synchronous(fn)
        if not isinstance(max_batch, int) or not 1 <= max_batch <= 4096:
            raise ValueError(f"max_batch={max_batch!r}: use an integer in 1...4096")
        if not isinstance(max_delay_us, int) or not 0 <= max_delay_us <= 10_000_000:
            raise ValueError(f"max_delay_us={max_delay_us!r}: use microseconds in 0...10000000")
        if max_batch > 1:
            from .batching import serve_batched
            return serve_batched(self, fn, inputs, max_batch, max_delay_us, poll, max_requests)
        w = self._handle()
        job, msg, count = c_void_p(), c_void_p(), c_size_t()
        job_ref, msg_ref, count_ref = byref(job), byref(msg), byref(count)
        reader = self._reader
        request, writer_of, reply = lib.ferry_job_request, lib.ferry_job_writer, lib.ferry_job_reply
        nxt = raw("ferry_worker_next")
        wait_c = ctypes.c_int64(int(poll * 1000))
        convert = reader.convert
        only_array, single = reader.only_array, inputs != "dict"
        descriptors = reader._tensors
        slot_base, slot_view, slot_obj, slot_rc = self._slot_base, self._slot_view, self._slot_obj, self._slot_rc
        origin, size, nslots = self._origin, self._slot_size, self._slot_count
        scratch = _scratch()  # this thread's reusable ctypes out-parameters
        output = DEFAULT_OUTPUT.encode()
        ndarray = np.ndarray
        refcount = sys.getrefcount
        fast_next = _fastcall.next if _fastcall is not None else None
        fast_reply = _fastcall.reply if _fastcall is not None else None
        held = _fastcall.held if _fastcall is not None else None
        model_c = self.model.encode() if self.model else None
        reply_meta = {MODEL_KEY: self.model} if self.model else None
        w_at, wait_ms, job_at, count_at = w.value, wait_c.value, ctypes.addressof(job), ctypes.addressof(count)
        tensors_obj = tensors_at = None
        served = 0
        while not self._stop and (max_requests is None or served < max_requests):
            # recv + validate + tensor descriptors in one C call, arguments prebuilt; in C
            # (_fastcall), that call also makes the views of a plain request (one array, or
            # a dict of them).
            arg = tensors = None
            if fast_next is not None:
                if reader._tensors is not tensors_obj:  # the reader grows its array for big requests
                    tensors_obj, tensors_at = reader._tensors, ctypes.addressof(reader._tensors)
                bases, owners = self._fast_slots
                rc = fast_next(w_at, wait_ms, job_at, tensors_at, reader._cap, count_at, origin, size, bases, owners, single)
                if type(rc) is tuple:
                    slot, arg = rc
                    rc = 0
                    if type(arg) is dict:
                        tensors = arg
            else:
                rc = nxt(w, wait_c, job_ref, reader._tensors, reader._cap_c, count_ref)
            if rc == _TIMEOUT:
                continue
            if rc == _CLOSED:
                # Closed by its server: done. Broken (another process truncated the
                # segment under us): an error the worker must not swallow.
                text = (lib.ferry_last_error() or b"").decode("utf-8", "replace")
                if "broken" in text:
                    raise ChannelClosed(text)
                break
            job_ptr = job.value
            if rc != 0 and not job_ptr:
                check(rc)
            error = general = None
            result = None
            if arg is None:
                slot = -1
            try:
                if rc != 0:
                    check(rc)  # a malformed request: the client gets the error
                if arg is None:  # not the C path's views of a plain request
                    n = count.value
                    if n > reader._cap:  # the descriptors did not fit: fetch them all
                        check(request(job_ptr, msg_ref))
                        reader.descriptors(msg.value)
                        descriptors = reader._tensors
                    if n:
                        # Which slot (and so which view) holds the request: where its data is.
                        t0 = descriptors[0]
                        addr = t0.data or 0
                        slot = (addr - origin) // size  # _request_slot, inlined on the hot path
                        if not (0 <= slot < nslots and 0 <= addr - slot_base[slot] < size):
                            slot = self._locate(n)
                        if slot >= 0:
                            sbase, sview = slot_base[slot], slot_view[slot]
                            arg = only_array(sbase, sview, t0) if (n == 1 and single) else None
                        else:
                            sbase, sview = 0, None
                    else:
                        sbase, sview = 0, None
                    if arg is None:
                        tensors = convert(n, sbase, sview, sview is None)
                        arg = tensors if (not single or n != 1) else next(iter(tensors.values()))
                        if TABLE in tensors:
                            arg = from_tensors(tensors)  # a table arrives as a DataFrame
                result = fn(arg)
            except BaseException as e:  # the client gets the error; KeyboardInterrupt still stops us
                error = failure(e)
                stop = type(e) if isinstance(e, (KeyboardInterrupt, SystemExit)) else None
                report_model_error(self.url, error)
            # Did the model keep its input? Our own references are: `arg` (+1 when `tensors`
            # holds it too, +1 when the result is it or a view of it), the dict, and the
            # slot's baseline. Anything more is the model's.
            kept = False
            if slot >= 0:
                if tensors is None:
                    of_arg = result is arg or (type(result) is ndarray and result.base is arg)
                    kept = refcount(arg) > 2 + of_arg or refcount(slot_obj[slot]) > slot_rc[slot] + 1 or \
                        (of_arg and result is not arg and refcount(result) > 2)
                elif held is not None:  # in C (_fastcall.held): the same count, ~10× faster
                    kept = refcount(tensors) > 2 + (arg is tensors) + (result is tensors) or \
                        held(tensors, arg, result, slot_obj[slot], slot_rc[slot])
                else:
                    arrays = [v for v in tensors.values() if type(v) is ndarray]
                    kept = refcount(slot_obj[slot]) > slot_rc[slot] + len(arrays) or refcount(tensors) > 2 + (arg is tensors) or \
                        any(refcount(v) > 3 + (v is arg) for v in arrays)
            if error is None:
                # The reply is written after the request in the slot (never over it), so a
                # result that is a view of the input is copied intact. Not kept: written and
                # sent in one C call. Kept, or not plain: written, then the request preserved
                # if the model still holds it, then sent.
                rc = None
                try:
                    if result is None:
                        raise TypeError("the model returned None; return an array, a scalar, str, bytes, a dict or a tuple of those")
                    if fast_reply is not None:
                        rc = fast_reply(job_ptr, result, not kept, model_c)
                        if rc:
                            check(rc)  # not written (e.g. too large for the slot): the job is still open
                    elif not kept and type(result) is ndarray and model_c is None:
                        rc = reply_array(job_ptr, output, result, scratch)  # written and sent, or None
                    if rc is None:
                        general = True
                        write_message(writer_of(job_ptr), result, DEFAULT_OUTPUT, reply_meta, several=True)
                    elif not kept:
                        served += 1
                        continue  # sent
                except BaseException as e:  # e.g. the reply does not fit: the client is told why
                    error = failure(e)
                    stop = None
            if slot >= 0 and (kept or general or error is not None):
                arg = tensors = result = arrays = None  # only the model can hold the input now
                if refcount(slot_obj[slot]) > slot_rc[slot]:
                    self._preserve(job_ptr, slot)
            if error is not None:
                lib.ferry_job_fail_ex(job_ptr, *error)
                if stop is not None:
                    raise stop()
                continue
            reply(job_ptr)
            # The job is answered and freed either way; a failed reply already reached the
            # client as an error (e.g. too large for the slot), so the worker goes on.
            served += 1
        return served


def _synchronous(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An `async def` model as a plain function: each call runs to completion on one event
    loop that the worker keeps (so the model's own tasks, clients and connections made with
    it live across calls)."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)
    if not inspect.iscoroutinefunction(target):
        return fn
    import asyncio
    loop = asyncio.new_event_loop()

    def run(x):
        return loop.run_until_complete(fn(x))

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def with_tensors(fn: Callable[[Any], Any], tensors: str) -> Callable[[Any], Any]:
    """`fn` served with `tensors="torch"`: it receives torch tensors made zero-copy from the
    request's slot views (`torch.from_numpy`; read-only memory: do not modify them in place)
    and may return torch tensors (CPU; sent from their memory through DLPack, detached if
    they require grad), alone, in a dict or a tuple. "numpy" returns `fn` as it is."""
    if tensors == "numpy":
        return fn
    if tensors != "torch":
        raise ValueError(f"tensors={tensors!r}: use 'numpy' or 'torch'")
    try:
        import torch
    except ImportError:
        raise ImportError("tensors='torch' needs PyTorch (pip install torch)") from None
    import warnings

    from .message import from_dlpack

    def to_torch(v):
        if type(v) is np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "not writable": the slot view is read-only by contract
                return torch.from_numpy(v)
        if type(v) is dict:
            return {k: to_torch(x) for k, x in v.items()}
        return v

    def to_numpy(v):
        if isinstance(v, torch.Tensor):
            return from_dlpack("output", v)
        if type(v) is dict:
            return {k: to_numpy(x) for k, x in v.items()}
        if type(v) in (tuple, list):
            return type(v)(to_numpy(x) for x in v)
        return v

    def run(x):
        return to_numpy(fn(to_torch(x)))

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    return run


def serve(url: str, fn: Callable[[Any], Any], inputs: str = "auto", max_requests: int | None = None,
          max_batch: int = 1, max_delay_us: int = 0, model: str | None = None, tensors: str = "numpy") -> int:
    """Serves `fn` on `url` until SIGINT/SIGTERM or the channel closes; returns the count.
    `max_batch`/`max_delay_us` turn on dynamic batching (see `Worker.serve`).

    A channel is served by one model: `model` is this one's identity (by default the source
    file of `fn`, its name and a hash of the file's bytes; see `model_identity`), and a worker
    of another model is refused (`InvalidArgument` naming both) instead of answering some of
    the calls with its own results.

    `fn` may be an `async def` function (run on one event loop the worker keeps); with
    `tensors="torch"` it gets and may return torch tensors (see `with_tensors`).

    >>> ferry.serve("shm://digits", lambda images: model.predict(images))
    >>> ferry.serve("shm://digits", model.predict, max_batch=32, max_delay_us=500)
    """
    url = with_model(url, model if model is not None else identity_of(fn))
    fn = with_tensors(fn, tensors)
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
            return worker.serve(fn, inputs=inputs, max_requests=max_requests, max_batch=max_batch, max_delay_us=max_delay_us)
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


def model_path(target: str) -> str:
    """The file a model target (a path, or a module name) names, as load_model finds it."""
    if target.endswith(".py") or os.path.sep in target:
        return os.path.abspath(target)
    spec = importlib.util.find_spec(target)
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"no module named {target!r}")
    return os.path.abspath(spec.origin)


def model_identity(target: str, function: str = "predict", version: str | None = None) -> str:
    """Who serves a channel (one model per channel): the model file's path and function, a
    SHA-256 of the file's bytes (so an edited model is another model), and the version
    given (`--model-version`). `ferry serve` and every worker of one model agree on it."""
    path = model_path(target)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    return f"{path}:{function} sha256={digest}" + (f" version={version}" if version else "")


def identity_of(fn: Callable[[Any], Any]) -> str | None:
    """`model_identity` of a function served directly (`ferry.serve(url, fn)`): its source
    file and name; None when it has no source file (a builtin)."""
    try:
        path = inspect.getsourcefile(fn)
    except TypeError:
        path = None
    if not path or not os.path.exists(path):
        return None
    return model_identity(path, getattr(fn, "__name__", type(fn).__name__))


def with_model(url: str, identity: str | None) -> str:
    """`url` with `model=identity` added (shm:// servers; kept when the URL names one)."""
    query = url.split("?", 1)[1] if "?" in url else ""
    if not identity or not url.startswith("shm://") or any(p.split("=", 1)[0] == "model" for p in query.split("&")):
        return url
    return url + ("&" if "?" in url else "?") + "model=" + urllib.parse.quote(identity, safe="")


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
    # A model file may ask for torch tensors: TENSORS = "torch" (see with_tensors).
    return with_tensors(fn, getattr(module, "TENSORS", "numpy"))



__all__ = ["Worker", "serve", "load_model", "reclaim", "census"]
