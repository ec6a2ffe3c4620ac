"""The systems Ferry is compared with, each as (worker process, client round trip).

Every peer moves the same numpy payload from a client pinned to CPU 0 to a worker pinned
to CPU 1, which views it as an array, reads every byte (the checksum of
bench/checksum_model.py) and answers [checksum, size] as 16 bytes that the client reads
back and run.py checks: what a user of each would write. Workers run in spawned processes
(`multiprocessing` spawn context) and are stopped by `Peer.close`. `waits` says how the
client waits for the reply: "sleeps" in the kernel or "spins" on memory.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time

import numpy as np

from checksum_model import answer

CTX = mp.get_context("spawn")


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class Peer:
    """Base: starts `worker(*args)` in a pinned process; `roundtrip(payload)` is per call."""

    name = "?"
    waits = "sleeps"

    def __init__(self, shape, dtype, worker_cpu: int | None):
        self.shape, self.dtype, self.worker_cpu = shape, np.dtype(dtype), worker_cpu
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.proc = None

    def start(self, target, *args):
        self.proc = CTX.Process(target=_run_pinned, args=(self.worker_cpu, target, *args), daemon=True)
        self.proc.start()

    def close(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()


def _run_pinned(cpu, target, *args):
    pin(cpu)
    target(*args)


# --- multiprocessing.Pipe --------------------------------------------------------------

def _pipe_worker(conn, shape, dtype):
    while True:
        data = conn.recv_bytes()
        a = np.frombuffer(data, dtype=dtype).reshape(shape)
        conn.send_bytes(answer(a))


class PipePeer(Peer):
    name = "multiprocessing.Pipe"

    def __init__(self, shape, dtype, worker_cpu):
        super().__init__(shape, dtype, worker_cpu)
        self.conn, child = CTX.Pipe()
        self.start(_pipe_worker, child, shape, self.dtype.str)

    def roundtrip(self, payload):
        self.conn.send_bytes(payload.data.cast("B"))  # send_bytes slices n-d views by rows
        return np.frombuffer(self.conn.recv_bytes(), dtype=np.uint64)


# --- multiprocessing.shared_memory + a pipe for signalling ------------------------------

def _shm_worker(shm_name, conn, shape, dtype, nbytes):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    a = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
    reply = np.ndarray(2, dtype=np.uint64, buffer=shm.buf, offset=nbytes)
    while True:
        conn.recv_bytes()
        reply[:] = answer(a)
        conn.send_bytes(b"d")


class SharedMemoryPeer(Peer):
    name = "shared_memory + Pipe"

    def __init__(self, shape, dtype, worker_cpu):
        from multiprocessing import shared_memory

        super().__init__(shape, dtype, worker_cpu)
        self.shm = shared_memory.SharedMemory(create=True, size=self.nbytes + 16)
        self.view = np.ndarray(shape, dtype=self.dtype, buffer=self.shm.buf)
        self.reply = np.ndarray(2, dtype=np.uint64, buffer=self.shm.buf, offset=self.nbytes)
        self.conn, child = CTX.Pipe()
        self.start(_shm_worker, self.shm.name, child, shape, self.dtype.str, self.nbytes)

    def roundtrip(self, payload):
        self.view[...] = payload
        self.conn.send_bytes(b"r")
        self.conn.recv_bytes()
        return self.reply.copy()

    def close(self):
        super().close()
        del self.view, self.reply
        self.shm.close()
        self.shm.unlink()


# --- pyzmq REQ/REP over ipc:// ------------------------------------------------------------

def _zmq_worker(addr, shape, dtype):
    import zmq

    sock = zmq.Context().socket(zmq.REP)
    sock.bind(addr)
    while True:
        msg = sock.recv(copy=False)
        a = np.frombuffer(msg.buffer, dtype=dtype).reshape(shape)
        sock.send(answer(a))


class ZmqPeer(Peer):
    name = "pyzmq REQ/REP ipc://"

    def __init__(self, shape, dtype, worker_cpu, client=True):
        import zmq

        super().__init__(shape, dtype, worker_cpu)
        self.path = f"/tmp/ferry-bench-zmq-{os.getpid()}"
        self.addr = f"ipc://{self.path}"
        self.start(_zmq_worker, self.addr, shape, self.dtype.str)
        self.sock = None
        if client:  # else a C client connects (bench/zmq_client.c)
            self.sock = zmq.Context.instance().socket(zmq.REQ)
            self.sock.connect(self.addr)

    def roundtrip(self, payload):
        self.sock.send(payload, copy=len(payload.data) < 65536)
        return np.frombuffer(self.sock.recv(copy=False).buffer, dtype=np.uint64)

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
        super().close()
        if os.path.exists(self.path):
            os.unlink(self.path)


# --- the seed's Redis recipe --------------------------------------------------------------

def _redis_worker(port, shape, dtype):
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    while True:
        _, job = r.brpop(["ferry:jobs"])
        data = r.getdel(b"ferry:payload:" + job)
        a = np.frombuffer(data, dtype=dtype).reshape(shape)
        r.lpush(b"ferry:reply:" + job, answer(a).tobytes())


class RedisPeer(Peer):
    """Payload under a key, job id on a list, worker BRPOP, reply on a per-job list (the
    seed's recipe, with blocking pops instead of polling a flag)."""

    name = "Redis lists (redis-py + hiredis)"

    def __init__(self, shape, dtype, worker_cpu, port):
        import redis

        super().__init__(shape, dtype, worker_cpu)
        self.r = redis.Redis(host="127.0.0.1", port=port)
        self.r.flushall()
        self.start(_redis_worker, port, shape, self.dtype.str)
        self.r.ping()
        self.n = 0

    def roundtrip(self, payload):
        self.n += 1
        job = str(self.n).encode()
        self.r.set(b"ferry:payload:" + job, payload.tobytes())
        self.r.lpush("ferry:jobs", job)
        _, data = self.r.brpop([b"ferry:reply:" + job], timeout=30)
        return np.frombuffer(data, dtype=np.uint64)


# --- iceoryx2 request-response: both sides polling, or sleeping on events -----------------

def _iox_services(node, prefix, events):
    import iceoryx2 as iox2

    rr = node.service_builder(iox2.ServiceName.new(prefix + "/rr")).request_response(
        iox2.Slice[ctypes.c_uint8], iox2.Slice[ctypes.c_uint8]).open_or_create()
    if not events:
        return rr, None, None
    req = node.service_builder(iox2.ServiceName.new(prefix + "/req-ev")).event().open_or_create()
    rep = node.service_builder(iox2.ServiceName.new(prefix + "/rep-ev")).event().open_or_create()
    return rr, req, rep


def _iox_worker(prefix, nbytes, shape, dtype, events):
    import iceoryx2 as iox2

    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    rr, req_ev, rep_ev = _iox_services(node, prefix, events)
    server = rr.server_builder().initial_max_slice_len(16).create()
    listener = req_ev.listener_builder().create() if events else None
    notifier = rep_ev.notifier_builder().create() if events else None
    while True:
        active = server.receive()
        if active is None:
            if listener is not None:
                listener.blocking_wait()  # sleeps until the client's notify
            continue
        a = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(active.payload_ptr), dtype).reshape(shape)
        reply = answer(a).tobytes()
        del a
        out = active.loan_slice_uninit(16)
        ctypes.memmove(out.payload_ptr, reply, 16)
        out.assume_init().send()
        active.delete()
        if notifier is not None:
            notifier.notify()


class IceoryxPeer(Peer):
    """iceoryx2's request-response pattern over one service: the client loans a request,
    copies the payload in, sends, and polls its pending response."""

    name = "iceoryx2 request-response (polling)"
    waits = "spins"
    events = False

    def __init__(self, shape, dtype, worker_cpu):
        import iceoryx2 as iox2

        super().__init__(shape, dtype, worker_cpu)
        prefix = f"ferry-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        rr, req_ev, rep_ev = _iox_services(self.node, prefix, self.events)
        self.client = rr.client_builder().initial_max_slice_len(max(self.nbytes, 1)).create()
        self.notifier = req_ev.notifier_builder().create() if self.events else None
        self.listener = rep_ev.listener_builder().create() if self.events else None
        self.step = iox2.Duration.from_millis(100)
        self.src, self.src_at = None, 0
        self.start(_iox_worker, prefix, self.nbytes, shape, self.dtype.str, self.events)
        deadline = time.monotonic() + 30
        while rr.dynamic_config.number_of_servers < 1:  # the worker's server port is up
            if time.monotonic() > deadline:
                raise TimeoutError("iceoryx2 worker did not start")
            time.sleep(0.01)

    def roundtrip(self, payload):
        if payload is not self.src:  # the harness reuses one array: find its address once
            self.src, self.src_at = payload, payload.__array_interface__["data"][0]
        req = self.client.loan_slice_uninit(max(self.nbytes, 1))
        if self.nbytes:
            ctypes.memmove(req.payload_ptr, self.src_at, self.nbytes)
        pending = req.assume_init().send()
        if self.notifier is not None:
            self.notifier.notify()
        polls, deadline = 0, None
        while True:
            r = pending.receive()
            if r is not None:
                out = np.frombuffer(ctypes.string_at(r.payload_ptr, 16), np.uint64)
                r.delete()
                pending.delete()
                return out
            if self.listener is not None:
                self.listener.timed_wait(self.step)
            polls += 1
            # A dead worker is an error, not a hang. A polling client reads the clock only
            # every 4096 polls, so the harness adds next to nothing to the peer's loop.
            if self.listener is not None or polls & 4095 == 0:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + 30
                elif now > deadline:
                    raise TimeoutError("iceoryx2 worker did not answer")

    def close(self):
        super().close()
        for port in (self.client, self.notifier, self.listener):
            if port is not None:
                port.delete()
        del self.node


class IceoryxEventsPeer(IceoryxPeer):
    """The same with event services both ways: each side sleeps in the kernel until notified."""

    name = "iceoryx2 request-response + events (sleeping)"
    waits = "sleeps"
    events = True


# --- doing it by hand: raw shared memory and a futex (the floor for C clients) ------------

RAW_HEADER = 64  # [u32 state][pad][u64 reply[2] at 8]; payload from 64


def _raw_worker(path, nbytes, shape, dtype):
    """Python side of bench/raw_client.c: waits on a futex word for state 1 (request), reads
    the payload in place, writes the reply, sets state 2 and wakes the client."""
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, RAW_HEADER + nbytes)
    os.close(fd)
    buf = np.frombuffer(mm, dtype=np.uint8)
    state = buf[:4].view(np.uint32)
    reply = buf[8:24].view(np.uint64)
    a = buf[RAW_HEADER:RAW_HEADER + nbytes].view(dtype).reshape(shape)
    addr = ctypes.c_void_p(buf.ctypes.data)
    SYS_futex, WAIT, WAKE = 202, 0, 1
    while True:
        while True:
            seen = int(state[0])  # read once: the value we sleep on is the value we checked
            if seen == 1:
                break
            libc.syscall(SYS_futex, addr, WAIT, ctypes.c_uint32(seen), None, None, 0)
        reply[:] = answer(a)
        state[0] = 2
        libc.syscall(SYS_futex, addr, WAKE, 1, None, None, 0)


class RawFutexPeer(Peer):
    """Shared memory and a futex word, by hand (no library): the C client is bench/raw_client.c."""

    name = "raw shared memory + futex (by hand)"

    def __init__(self, shape, dtype, worker_cpu):
        super().__init__(shape, dtype, worker_cpu)
        self.path = f"/dev/shm/ferry-bench-raw-{os.getpid()}"
        with open(self.path, "wb") as f:
            f.truncate(RAW_HEADER + self.nbytes)
        self.start(_raw_worker, self.path, self.nbytes, shape, self.dtype.str)

    def close(self):
        super().close()
        if os.path.exists(self.path):
            os.unlink(self.path)
