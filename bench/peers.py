"""The systems Ferry is compared with, each as (worker process, client round trip).

Every peer moves the same numpy payload from a client pinned to CPU 0 to a worker pinned
to CPU 1, which views it as an array and answers with a 16-byte reply that the client
reads back as an array: what a user of each would write. Workers run in spawned processes
(`multiprocessing` spawn context) and are stopped by `Peer.close`.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import time

import numpy as np

REPLY = np.arange(16, dtype=np.uint8)
CTX = mp.get_context("spawn")


def pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


class Peer:
    """Base: starts `worker(*args)` in a pinned process; `roundtrip(payload)` is per call."""

    name = "?"

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
        _ = a.flat[0] if a.size else 0
        conn.send_bytes(REPLY)


class PipePeer(Peer):
    name = "multiprocessing.Pipe"

    def __init__(self, shape, dtype, worker_cpu):
        super().__init__(shape, dtype, worker_cpu)
        self.conn, child = CTX.Pipe()
        self.start(_pipe_worker, child, shape, self.dtype.str)

    def roundtrip(self, payload):
        self.conn.send_bytes(payload.data.cast("B"))  # send_bytes slices n-d views by rows
        return np.frombuffer(self.conn.recv_bytes(), dtype=np.uint8)


# --- multiprocessing.shared_memory + a pipe for signalling ------------------------------

def _shm_worker(shm_name, conn, shape, dtype, nbytes):
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    a = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
    reply = np.ndarray(16, dtype=np.uint8, buffer=shm.buf, offset=nbytes)
    while True:
        conn.recv_bytes()
        _ = a.flat[0] if a.size else 0
        reply[:] = REPLY
        conn.send_bytes(b"d")


class SharedMemoryPeer(Peer):
    name = "shared_memory + Pipe"

    def __init__(self, shape, dtype, worker_cpu):
        from multiprocessing import shared_memory

        super().__init__(shape, dtype, worker_cpu)
        self.shm = shared_memory.SharedMemory(create=True, size=self.nbytes + 16)
        self.view = np.ndarray(shape, dtype=self.dtype, buffer=self.shm.buf)
        self.reply = np.ndarray(16, dtype=np.uint8, buffer=self.shm.buf, offset=self.nbytes)
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
        _ = a.flat[0] if a.size else 0
        sock.send(REPLY, copy=False)


class ZmqPeer(Peer):
    name = "pyzmq REQ/REP ipc://"

    def __init__(self, shape, dtype, worker_cpu):
        import zmq

        super().__init__(shape, dtype, worker_cpu)
        self.path = f"/tmp/ferry-bench-zmq-{os.getpid()}"
        addr = f"ipc://{self.path}"
        self.start(_zmq_worker, addr, shape, self.dtype.str)
        self.sock = zmq.Context.instance().socket(zmq.REQ)
        self.sock.connect(addr)

    def roundtrip(self, payload):
        self.sock.send(payload, copy=len(payload.data) < 65536)
        return np.frombuffer(self.sock.recv(copy=False).buffer, dtype=np.uint8)

    def close(self):
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
        _ = a.flat[0] if a.size else 0
        r.lpush(b"ferry:reply:" + job, REPLY.tobytes())


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
        self.n = 0

    def roundtrip(self, payload):
        self.n += 1
        job = str(self.n).encode()
        self.r.set(b"ferry:payload:" + job, payload.tobytes())
        self.r.lpush("ferry:jobs", job)
        _, data = self.r.brpop([b"ferry:reply:" + job], timeout=30)
        return np.frombuffer(data, dtype=np.uint8)


# --- iceoryx2: a pair of publish-subscribe services, both sides polling ------------------

def _iox_worker(prefix, nbytes, shape, dtype):
    import iceoryx2 as iox2

    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    req = node.service_builder(iox2.ServiceName.new(prefix + "/req")).publish_subscribe(iox2.Slice[ctypes.c_uint8]).open_or_create()
    rep = node.service_builder(iox2.ServiceName.new(prefix + "/rep")).publish_subscribe(iox2.Slice[ctypes.c_uint8]).open_or_create()
    sub = req.subscriber_builder().create()
    pub = rep.publisher_builder().initial_max_slice_len(16).create()
    reply = REPLY.copy()
    while True:
        s = sub.receive()
        if s is None:
            continue
        a = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(s.payload_ptr)).view(dtype).reshape(shape) if nbytes else None
        _ = a.flat[0] if a is not None and a.size else 0
        del a
        s.delete()
        out = pub.loan_slice_uninit(16)
        ctypes.memmove(out.payload_ptr, reply.ctypes.data, 16)
        out.assume_init().send()


class IceoryxPeer(Peer):
    name = "iceoryx2 pub/sub pair (polling)"

    def __init__(self, shape, dtype, worker_cpu):
        import iceoryx2 as iox2

        super().__init__(shape, dtype, worker_cpu)
        prefix = f"ferry-bench-{os.getpid()}-{time.monotonic_ns()}"
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        req = self.node.service_builder(iox2.ServiceName.new(prefix + "/req")).publish_subscribe(iox2.Slice[ctypes.c_uint8]).open_or_create()
        rep = self.node.service_builder(iox2.ServiceName.new(prefix + "/rep")).publish_subscribe(iox2.Slice[ctypes.c_uint8]).open_or_create()
        self.pub = req.publisher_builder().initial_max_slice_len(max(self.nbytes, 1)).create()
        self.sub = rep.subscriber_builder().create()
        self.start(_iox_worker, prefix, self.nbytes, shape, self.dtype.str)
        time.sleep(0.5)  # let the worker's ports connect

    def roundtrip(self, payload):
        s = self.pub.loan_slice_uninit(max(self.nbytes, 1))
        if self.nbytes:
            ctypes.memmove(s.payload_ptr, payload.ctypes.data, self.nbytes)
        s.assume_init().send()
        deadline = time.monotonic() + 30
        while True:
            r = self.sub.receive()
            if r is None and time.monotonic() > deadline:
                raise TimeoutError("iceoryx2 worker did not answer")
            if r is not None:
                out = np.ctypeslib.as_array((ctypes.c_uint8 * 16).from_address(r.payload_ptr)).copy()
                r.delete()
                return out

    def close(self):
        super().close()
        self.pub.delete()
        self.sub.delete()
        del self.node
