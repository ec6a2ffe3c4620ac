"""asyncio: `await client.call(x)` from an event loop, many calls in flight, no thread per call.

    async with ferry.AsyncClient("shm://digits") as c:
        labels = await c.call(images)
        many = await asyncio.gather(*(c.call(x) for x in batches))

How it waits without blocking the loop. A call is begun without waiting for a free slot
(`ferry_call_try_begin`: when every slot is in use the task sleeps and tries again, up to the
call's deadline), written and sent at once; then one poller task per client looks at every
pending call with a zero-wait `ferry_call_poll` and resolves its future. The poller yields
to the loop between rounds (`asyncio.sleep(0)`) while replies keep coming or for `spin_us`
after the last one (a fast model's reply is picked up within a round of the loop), then
sleeps `max_sleep` between rounds (1 ms by default: the loop's own timer resolution), so a
slow call costs the loop one cheap round a millisecond and no thread. The same on every
transport (shm://, tcp://, redis://): the library's calls are the same.

Cancelling a task gives its call up (`ferry_call_free`: withdrawn if no worker took it, else
left to its worker, which frees the slot when done); a deadline ends a call with `Timeout`;
errors are the synchronous client's (`RemoteError` with the model's type and traceback, ...).
"""
from __future__ import annotations

import asyncio
import time
import urllib.parse
from ctypes import addressof, byref, c_int64, c_size_t, c_void_p
from typing import Any, Mapping

from ._handle import check
from ._lib import lib, raw
from .client import Client, _check_inputs, _raise_call_error, _result, _timeout_ms
from .errors import Again, Busy
from .message import DEFAULT_INPUT, MessageReader, fastcall as _fastcall, read_metadata, write_message

_try_begin, _poll, _free = raw("ferry_call_try_begin"), raw("ferry_call_poll"), raw("ferry_call_free", None)
_writer, _send = raw("ferry_call_writer", c_void_p), raw("ferry_call_send")
_AGAIN = Again.code
_ZERO = c_int64(0)
#: The library's default call deadline when the URL sets none (docs: timeout_ms).
_DEFAULT_TIMEOUT_S = 10.0


def _url_timeout(url: str) -> float:
    """The URL's `timeout_ms` in seconds, else the library's default."""
    query = urllib.parse.urlsplit(url).query
    for key, value in urllib.parse.parse_qsl(query):
        if key == "timeout_ms":
            try:
                return int(value) / 1000
            except ValueError:
                break  # the library refuses the URL first
    return _DEFAULT_TIMEOUT_S


class AsyncCall:
    """A call in flight from `AsyncClient.send`: `await call` (or `await call.result()`)
    gives its reply; `cancel()` gives it up."""

    def __init__(self, future: "asyncio.Future[Any]"):
        self._future = future

    def __await__(self):
        return self._future.__await__()

    async def result(self) -> Any:
        return await self._future

    def cancel(self) -> bool:
        return self._future.cancel()

    def done(self) -> bool:
        return self._future.done()


class AsyncClient:
    """A client for asyncio code (see the module's doc). `url` as for `Client`; `spin_us`:
    how long the poller keeps yielding to the loop after the last reply before it sleeps;
    `max_sleep`: its sleep between rounds then (seconds)."""

    def __init__(self, url: str, spin_us: float = 200.0, max_sleep: float = 0.001):
        if not (0 <= spin_us <= 1_000_000) or not (0 < max_sleep <= 1):
            raise ValueError(f"spin_us={spin_us!r}, max_sleep={max_sleep!r}: use 0...1e6 µs and 0 < max_sleep ≤ 1 s")
        self._client = Client(url)
        self.url = url
        self._default_timeout = _url_timeout(url)
        self._spin = spin_us / 1e6
        self._max_sleep = max_sleep
        self._pending: dict[int, tuple[c_void_p, asyncio.Future]] = {}
        self._poller: asyncio.Task | None = None
        self._reader = MessageReader()
        self._tensors_obj, self._tensors_addr = None, 0
        self._reply, self._count = c_void_p(), c_size_t()
        self._reply_ref, self._count_ref = byref(self._reply), byref(self._count)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._client.closed

    async def aclose(self) -> None:
        """Gives up every call in flight (their awaiters get CancelledError) and closes."""
        for _ptr, (call, fut) in list(self._pending.items()):
            fut.cancel()
        self._drop_cancelled()
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._client.close()

    def close(self) -> None:
        """Closes at once (from synchronous code); calls in flight are given up."""
        for _ptr, (call, fut) in list(self._pending.items()):
            fut.cancel()
        self._drop_cancelled()
        self._client.close()

    async def call(self, inputs: Any, timeout: float | None = None, **metadata: str) -> Any:
        """Sends `inputs` and returns the reply, as `Client.call` does, without blocking the
        event loop."""
        pending = await self.send(inputs, timeout, **metadata)
        return await pending

    async def send(self, inputs: Any, timeout: float | None = None, **metadata: str) -> AsyncCall:
        """Begins and sends a call; returns it in flight (await it for the reply). Waits
        (asynchronously) only while every slot is in use."""
        _check_inputs(inputs)
        seconds = self._default_timeout if timeout is None else timeout
        ms = _timeout_ms(seconds)
        deadline = time.monotonic() + seconds
        call = await self._begin(ms, deadline)
        try:
            rc = _fastcall.write(_writer(call), inputs) if _fastcall is not None and not metadata else None
            if rc is None:  # not plain: the general path
                write_message(_writer(call), inputs, DEFAULT_INPUT, metadata or None)
            elif rc:
                check(rc)
            check(_send(call))  # at once: the worker starts while this task goes on
        except BaseException:
            _free(call)
            raise
        fut = asyncio.get_running_loop().create_future()
        ptr = call.value
        self._pending[ptr] = (call, fut)
        fut.add_done_callback(lambda f: self._given_up(ptr) if f.cancelled() else None)
        self._wake()
        return AsyncCall(fut)

    def _given_up(self, ptr: int) -> None:
        """A cancelled call: freed at once, so its slot comes back (withdrawn if no worker
        took it, else left to its worker, which frees the slot when done)."""
        entry = self._pending.pop(ptr, None)
        if entry is not None:
            _free(entry[0])

    async def _begin(self, ms: c_int64, deadline: float) -> c_void_p:
        call = c_void_p()
        pause = 0.0
        while True:
            h = self._client._borrow()
            try:
                rc = _try_begin(h, ms, byref(call))
            finally:
                self._client._give_back()
            if rc == 0:
                return call
            if rc != _AGAIN:
                check(rc)
            # Every slot is in use: wait for one without blocking the loop.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Busy("every slot stayed in use until the deadline")
            pause = min(max(pause * 2, 50e-6), self._max_sleep, remaining)
            await asyncio.sleep(pause if pause >= self._max_sleep else 0)
            ms = c_int64(max(int(remaining * 1000), 0))

    def _tensors_at(self) -> int:
        """The address of the reader's descriptor array (it grows for big replies)."""
        reader = self._reader
        if reader._tensors is not self._tensors_obj:
            self._tensors_obj, self._tensors_addr = reader._tensors, addressof(reader._tensors)
        return self._tensors_addr

    def _wake(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    def _drop_cancelled(self) -> None:
        for ptr, (call, fut) in list(self._pending.items()):
            if fut.cancelled():
                del self._pending[ptr]
                _free(call)  # given up: withdrawn, or left to its worker

    async def _poll_loop(self) -> None:
        pending = self._pending
        last = time.monotonic()
        while pending:
            done = 0
            for ptr, (call, fut) in list(pending.items()):
                if fut.done():  # cancelled by its task
                    del pending[ptr]
                    _free(call)
                    continue
                reader = self._reader
                rc = _poll(call, _ZERO, self._reply_ref, reader._tensors, reader._cap_c, self._count_ref)
                if rc == _AGAIN:
                    continue
                del pending[ptr]
                done += 1
                try:
                    if rc:
                        _raise_call_error(call, rc)
                    reply, n = self._reply.value, self._count.value
                    out = None
                    if _fastcall is not None and n <= reader._cap:  # a plain reply, read in C
                        out = _fastcall.read(reply, self._tensors_at(), n)
                    if out is None:
                        out = _result(reader.convert(n) if n <= reader._cap else reader.read(reply), read_metadata(reply))
                    check(lib.ferry_call_check(call))
                    fut.set_result(out)
                except BaseException as e:  # noqa: BLE001 - the awaiting task gets it
                    fut.set_exception(e)
                finally:
                    _free(call)
            now = time.monotonic()
            if done:
                last = now
            await asyncio.sleep(0 if now - last < self._spin else self._max_sleep)


__all__ = ["AsyncClient", "AsyncCall"]
