"""Streams: one publisher (e.g. a camera) hands frames to any number of subscribers.

>>> with ferry.Publisher("cam0", slots=8, slot_size="8M") as pub:
...     pub.publish(frame, timestamp_ns=capture_ns)      # an array, or a dict of arrays
>>> with ferry.Subscriber("cam0") as sub:                # newest frame (latest wins)
...     for f in sub:                                   # until the stream ends
...         use(f.array, f.seq, f.age, f.dropped_before)

A received frame's arrays are read-only views of its slot in shared memory (zero copy). The
slot stays pinned — the publisher writes elsewhere — until the frame is released: by
`release()`, `with`, or the next `recv()`. Arrays still referenced then are preserved (their
pages become a private copy in this process), so a kept array never changes under you.
"""
from __future__ import annotations

import ctypes
import sys
import time
import weakref
from ctypes import POINTER, Structure, byref, c_double, c_int, c_size_t, c_uint64, c_void_p
from typing import Any, Iterator, Mapping

from ._handle import Handle, check
from ._lib import FerryOptions, lib, raw
from .errors import ChannelClosed, InvalidArgument
from .message import DEFAULT_INPUT, MessageReader, read_metadata, write_message

LATEST, EVERY = 0, 1


class FrameInfo(Structure):
    """Mirror of `ferry_frame_info` in include/ferry.h."""

    _fields_ = [("sequence", c_uint64), ("timestamp_ns", c_uint64), ("received_ns", c_uint64), ("age_ns", c_uint64),
                ("dropped_before", c_uint64), ("slot", c_uint64), ("reserved", c_uint64 * 2)]


class StreamStats(Structure):
    """Mirror of `ferry_stream_stats` in include/ferry.h."""

    _fields_ = [("received", c_uint64), ("dropped", c_uint64), ("fps", c_double), ("reserved", c_uint64 * 4)]


_recv = raw("ferry_subscriber_recv")
_describe = lib.ferry_frame_describe
_describe.argtypes = [c_void_p, POINTER(FrameInfo)]
lib.ferry_subscriber_stats.argtypes = [c_void_p, POINTER(StreamStats)]
_AGAIN_STEP_MS = 100
_TIMEOUT = 4  # FERRY_ETIMEDOUT


def _size(value: Any, what: str) -> int:
    if isinstance(value, str):
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        v = value.strip().upper().rstrip("B").rstrip("I")
        try:
            return int(float(v[:-1]) * units[v[-1]]) if v and v[-1] in units else int(v)
        except (ValueError, KeyError):
            raise InvalidArgument(f"{what}={value!r}: use bytes or a size like '8M'") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"{what}={value!r}: use a positive number of bytes or a size like '8M'")
    return value


def _timeout_ms(timeout: float | None) -> int:
    if timeout is None:
        return -1
    if not (0 <= timeout <= 30 * 86_400):
        raise InvalidArgument(f"timeout={timeout!r}: use seconds in 0...2592000 (30 days), or None for the default")
    return int(timeout * 1000)


def _url(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"stream name {name!r}: use a non-empty string")
    return name if "://" in name else "shm://" + name


class Publisher(Handle):
    """Creates stream `name` and publishes frames into it. One publisher per stream; a
    stream left by a dead publisher is taken over. Closing ends the stream (subscribers get
    what is left, then `ChannelClosed`)."""

    _free = lib.ferry_publisher_free

    def __init__(self, name: str, slots: int = 8, slot_size: int | str = "4M", timeout: float | None = None):
        if isinstance(slots, bool) or not isinstance(slots, int) or not 2 <= slots <= 256:
            raise InvalidArgument(f"slots={slots!r}: use an integer in 2...256")
        opts = FerryOptions()
        lib.ferry_options_init(byref(opts))
        opts.slots = slots
        opts.slot_size = _size(slot_size, "slot_size")
        if timeout is not None:
            opts.timeout_ms = max(1, _timeout_ms(timeout))
        ptr = c_void_p()
        check(lib.ferry_publisher_new(_url(name).encode(), byref(opts), byref(ptr)))
        super().__init__(ptr)
        self.name = name
        self._writer = c_void_p()
        self._seq = c_uint64()

    def publish(self, frame: Any, timestamp_ns: int | None = None, timeout: float | None = None,
                metadata: Mapping[str, str] | None = None) -> int:
        """Writes `frame` (an array, or a dict of named arrays) into a free slot and
        publishes it; returns its sequence number. `timestamp_ns` is the capture time
        (`time.monotonic_ns()` clock; default: now). Waits up to `timeout` for a free slot
        when every-frame subscribers lag, then raises `Busy`."""
        h = self._handle()
        ts = 0 if timestamp_ns is None else int(timestamp_ns)
        if ts < 0:
            raise InvalidArgument(f"timestamp_ns={timestamp_ns!r} is negative")
        check(lib.ferry_publisher_loan(h, _timeout_ms(timeout), byref(self._writer)))
        try:
            write_message(self._writer.value, frame, "frame", metadata)
        except BaseException:
            lib.ferry_publisher_cancel(h)
            raise
        check(lib.ferry_publisher_publish(h, ts, byref(self._seq)))
        return self._seq.value

    @property
    def subscribers(self) -> int:
        """Live subscribers."""
        n = c_size_t()
        check(lib.ferry_publisher_subscribers(self._handle(), byref(n)))
        return n.value


def _release_kept(kept: int) -> None:
    lib.ferry_preserved_release(c_void_p(kept))


class Frame:
    """One received frame. `arrays` (dict) and `array` (the only, or the "frame", tensor)
    are read-only views of the slot until `release()`; see the module doc."""

    __slots__ = ("seq", "timestamp_ns", "received_ns", "age", "dropped_before", "arrays", "meta", "_sub", "_ptr", "_slot", "__weakref__")

    def __init__(self, sub: "Subscriber", ptr: int, info: FrameInfo, arrays: dict, meta: dict):
        self.seq: int = info.sequence
        self.timestamp_ns: int = info.timestamp_ns
        self.received_ns: int = info.received_ns
        self.age: float = info.age_ns / 1e9  #: end-to-end age when received, in seconds
        self.dropped_before: int = info.dropped_before
        self.arrays: dict = arrays
        self.meta: dict = meta
        self._sub, self._ptr, self._slot = sub, ptr, info.slot

    @property
    def array(self) -> Any:
        """The frame's array: its only tensor, or the one named "frame"."""
        if len(self.arrays) == 1:
            return next(iter(self.arrays.values()))
        if "frame" in self.arrays:
            return self.arrays["frame"]
        raise KeyError(f"the frame has {len(self.arrays)} tensors ({', '.join(self.arrays)}); use .arrays[name]")

    def release(self) -> None:
        """Gives the slot back to the publisher (idempotent). Arrays still referenced
        elsewhere are preserved first."""
        ptr, self._ptr = self._ptr, None
        if ptr:
            self.arrays = {}
            self._sub._release(ptr, self._slot)

    def __enter__(self) -> "Frame":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


class Subscriber(Handle):
    """Attaches to stream `name`. By default takes the newest frame each time (older unseen
    frames are dropped and counted); `every=True` takes every frame in order and makes the
    publisher wait for it. A subscriber gets the frames published after it attached: each is
    received or counted in `dropped` (so `received + dropped` is the number published since
    it attached, once it has caught up). Raises `NoServer` when nothing publishes the stream."""

    _free = lib.ferry_subscriber_free

    def __init__(self, name: str, every: bool = False, timeout: float = 10.0):
        _timeout_ms(timeout)
        self.timeout = timeout  #: default seconds `recv` waits for a frame
        ptr = c_void_p()
        check(lib.ferry_subscriber_new(_url(name).encode(), EVERY if every else LATEST, byref(ptr)))
        super().__init__(ptr)
        self.name = name
        count, size = c_size_t(), c_size_t()
        check(lib.ferry_subscriber_slots(ptr, byref(count), byref(size)))
        self._slot_size = size.value
        self._slot_base: list[int] = [0] * count.value
        self._slot_obj: list = [None] * count.value
        self._slot_rc: list[int] = [0] * count.value
        for i in range(count.value):
            self._map_slot(i)
        self._reader = MessageReader()
        self._frame, self._msg, self._count = c_void_p(), c_void_p(), c_size_t()
        self._info = FrameInfo()
        self._held: "weakref.ref[Frame] | None" = None
        self.preserved = 0  #: frames whose arrays outlived them and were preserved

    def _map_slot(self, i: int) -> None:
        data = c_void_p()
        check(lib.ferry_subscriber_slot(self._handle(), i, byref(data)))
        obj = (ctypes.c_uint8 * self._slot_size).from_address(data.value)
        self._slot_base[i], self._slot_obj[i] = data.value, obj
        self._slot_rc[i] = sys.getrefcount(obj) - 2  # less the local `obj` and the argument

    def recv(self, timeout: float | None = None) -> Frame:
        """Waits for a frame newer than the last one (up to `timeout` seconds; default the
        subscriber's `timeout`, 10 s) and returns it. Releases the previous frame first. Raises `Timeout`,
        `ChannelClosed` when the stream ended, `WorkerDied` when the publisher died."""
        h = self._handle()
        prev = self._held() if self._held else None
        if prev is not None:
            prev.release()
        reader = self._reader
        wait = self.timeout if timeout is None else timeout
        _timeout_ms(wait)
        deadline = time.monotonic() + wait
        while True:
            # Wait in steps so Ctrl-C (signal handlers) runs in between.
            step = max(0, min(_AGAIN_STEP_MS, int((deadline - time.monotonic()) * 1000)))
            rc = _recv(h, ctypes.c_int64(step), byref(self._frame), byref(self._msg), reader._tensors, reader._cap_c, byref(self._count))
            if rc != _TIMEOUT or time.monotonic() >= deadline:
                break
        check(rc)
        ptr = self._frame.value
        try:
            _describe(ptr, byref(self._info))
            slot = self._info.slot
            n = self._count.value
            mapping = memoryview(self._slot_obj[slot]).cast("B").toreadonly()
            base = self._slot_base[slot]
            if n > reader._cap:
                reader.descriptors(self._msg.value)
            arrays = reader.convert(n, base, mapping, copy=False)
            meta = read_metadata(self._msg.value)
        except BaseException:
            lib.ferry_frame_free(ptr)
            raise
        frame = Frame(self, ptr, self._info, arrays, meta)
        self._held = weakref.ref(frame)
        return frame

    def _release(self, ptr: int, slot: int) -> None:
        if self._ptr and 0 <= slot < len(self._slot_obj) and sys.getrefcount(self._slot_obj[slot]) - 1 > self._slot_rc[slot]:
            # A view of the frame is still alive: keep its bytes (private copy, same addresses).
            kept, n = c_void_p(), c_size_t()
            if lib.ferry_frame_preserve(ptr, byref(kept), byref(n)) == 0:
                old = self._slot_obj[slot]
                self._map_slot(slot)
                weakref.finalize(old, _release_kept, kept.value)
                self.preserved += 1
        lib.ferry_frame_free(ptr)

    def close(self) -> None:
        prev = self._held() if self._held else None
        if prev is not None and self._ptr:
            prev.release()
        super().close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the stream ends (the publisher closed it)."""
        while True:
            try:
                yield self.recv()
            except ChannelClosed:
                return

    @property
    def stats(self) -> StreamStats:
        s = StreamStats()
        check(lib.ferry_subscriber_stats(self._handle(), byref(s)))
        return s

    @property
    def received(self) -> int:
        """Frames received."""
        return self.stats.received

    @property
    def dropped(self) -> int:
        """Frames skipped because newer ones came first (latest mode)."""
        return self.stats.dropped

    @property
    def fps(self) -> float:
        """Frames per second over the last 30 received."""
        return self.stats.fps


__all__ = ["Publisher", "Subscriber", "Frame", "LATEST", "EVERY"]
