"""Dynamic batching in the worker: requests from several clients that arrive within
`max_delay_us` of the first are merged along axis 0 when their tensor names, dtypes and
trailing shapes agree, the model runs once, and each caller gets exactly its own rows back.

    ferry.serve("shm://digits", predict, max_batch=32, max_delay_us=500)
    ferry serve model.py --name digits --max-batch 32 --max-delay 500

Gathering stops early when no client is writing a request (the channel's slot words say
so): with every caller of the batch waiting for it, nothing more can come.

A request that does not fit the batch (other names, dtypes or trailing shapes; a 0-d
tensor; strings or bytes) runs alone. When the model fails on a merged batch, every request
of it is run again alone, so an error reaches only the callers whose input causes it. The
model sees a private, writable copy (merging copies); a model that returns something other
than arrays with one row per input row fails those callers with a clear error.
"""
from __future__ import annotations

import ctypes
import os
import time
import traceback
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable

import numpy as np

from ._handle import check
from ._lib import FerryTensor, lib, raw
from .errors import ChannelClosed, Timeout
from .message import _CODES_BY_DTYPE, DEFAULT_OUTPUT, _scratch, reply_array, write_message

from .serving import failure, report_model_error

_TIMEOUT, _CLOSED = Timeout.code, ChannelClosed.code
_RERUN = object()  # the merged call failed: run each request alone


class _Job:
    __slots__ = ("ptr", "tensors", "rows", "key")

    def __init__(self, ptr: int, tensors: dict):
        self.ptr = ptr
        self.tensors = tensors  # private copies: the batch is built from them anyway
        arrays = list(tensors.values())
        ok = arrays and all(type(a) is np.ndarray and a.ndim >= 1 and a.dtype.kind not in "US" for a in arrays)
        rows = {a.shape[0] for a in arrays} if ok else set()
        # Mergeable when every tensor is an array with the same number of rows.
        self.rows = rows.pop() if len(rows) == 1 else None
        self.key = tuple((k, a.dtype.str, a.shape[1:]) for k, a in tensors.items()) if self.rows is not None else None


def _fail(job: int, e: BaseException) -> None:
    lib.ferry_job_fail_ex(job, *failure(e))


def _reply(job: int, result: Any) -> None:
    try:
        if result is None:
            raise TypeError("the model returned None; return an array, a scalar, str, bytes, a dict or a tuple of those")
        write_message(lib.ferry_job_writer(job), result, DEFAULT_OUTPUT, several=True)
    except BaseException as e:  # noqa: BLE001 - the caller is told
        _fail(job, e)
        return
    lib.ferry_job_reply(job)


def _split(result: Any, counts: list[int]) -> list[Any]:
    """Cuts a batch result into one result per request (rows along axis 0)."""
    total = sum(counts)
    edges = np.cumsum([0] + counts)

    def rows_of(name: str, a):
        if type(a) is not np.ndarray or a.ndim == 0 or a.shape[0] != total:
            got = "a scalar" if type(a) is not np.ndarray or a.ndim == 0 else f"{a.shape[0]} rows"
            raise ValueError(f"the model returned {got} for {name!r} from a batch of {total} rows; "
                             "a batched model must return one row per input row")
        return [a[edges[i]:edges[i + 1]] for i in range(len(counts))]

    if isinstance(result, dict):
        parts = {k: rows_of(k, v) for k, v in result.items()}
        return [{k: parts[k][i] for k in result} for i in range(len(counts))]
    if isinstance(result, (tuple, list)) and result and any(isinstance(v, np.ndarray) for v in result):
        # several outputs (message.write_message): each cut, each request gets its tuple
        names = getattr(result, "_fields", None)
        outs = [rows_of(names[k] if names else f"output_{k}", v) for k, v in enumerate(result)]
        make = (lambda vs: type(result)(*vs)) if names else tuple
        return [make([o[i] for o in outs]) for i in range(len(counts))]
    return rows_of(DEFAULT_OUTPUT, result)


def _call(fn: Callable, tensors: dict, single: bool) -> Any:
    return fn(next(iter(tensors.values())) if single and len(tensors) == 1 else tensors)


def serve_batched(worker, fn: Callable[[Any], Any], inputs: str, max_batch: int, max_delay_us: int,
                  poll: float, max_requests: int | None) -> int:
    """The batching serve loop (see the module's doc); returns the number of requests answered.

    One C call takes a whole batch (`ferry_worker_next_batch`: the first request, then more
    while any is queued or being written, for at most `max_delay_us`), and for the common
    case — one array per request, the model returning one array — one C call answers every
    caller with its rows (`ferry_jobs_reply_rows`). Anything else takes the general path."""
    w = worker._handle()
    msg = c_void_p()
    reader = worker._reader
    next_batch, reply_rows = raw("ferry_worker_next_batch"), raw("ferry_jobs_reply_rows")
    wait_c = ctypes.c_int64(int(poll * 1000))
    gather_c = ctypes.c_int64(max_delay_us)
    max_c = c_size_t(max_batch)
    jobs = (c_void_p * max_batch)()
    descs = (FerryTensor * max_batch)()
    counts = (c_size_t * max_batch)()
    rows_c = (ctypes.c_int64 * max_batch)()
    shape_c = (ctypes.c_int64 * 8)()
    taken = c_size_t()
    taken_ref = byref(taken)
    single = inputs != "dict"
    slot_base, slot_view = worker._slot_base, worker._slot_view
    only_array = reader.only_array
    scratch = _scratch()
    output = DEFAULT_OUTPUT.encode()
    served = 0
    worker.batches = getattr(worker, "batches", [])

    def job_of(ptr: int) -> _Job | None:
        """The general path's view of a taken job (None: failed with the reason)."""
        try:
            check(lib.ferry_job_request(ptr, byref(msg)))
            _, n = reader.descriptors(msg.value)
            slot = worker._request_slot(reader._tensors[0].data or 0, n) if n else -1
            tensors = reader.convert(n, slot_base[slot], slot_view[slot], False) if slot >= 0 else reader.convert(n)
        except BaseException as e:  # noqa: BLE001
            _fail(ptr, e)
            return None
        return _Job(ptr, tensors)

    while not worker._stop and (max_requests is None or served < max_requests):
        rc = next_batch(w, wait_c, gather_c, max_c, jobs, descs, counts, taken_ref)
        if rc == _TIMEOUT:
            continue
        if rc == _CLOSED:
            break
        if rc:
            check(rc)
        n = taken.value
        served += n
        rerun = False
        # Fast path: one plain array per request, all with the same dtype and trailing shape.
        arrays = []
        if single and n > 1:
            for i in range(n):
                t = descs[i]
                if counts[i] != 1 or t.ndim == 0:
                    break
                addr = t.data or 0
                slot = worker._request_slot(addr, 1)
                a = only_array(slot_base[slot], slot_view[slot], t) if slot >= 0 else None
                if a is None or (arrays and (a.dtype != arrays[0].dtype or a.shape[1:] != arrays[0].shape[1:])):
                    break
                arrays.append(a)
        if len(arrays) == n > 1:
            worker.batches.append(n)
            merged = np.concatenate(arrays)
            try:
                result = fn(merged)
            except BaseException as e:  # noqa: BLE001 - run each alone below: only the guilty fail
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    for i in range(n):
                        _fail(jobs[i], e)
                    raise
                result = _RERUN
            if type(result) is np.ndarray and result.ndim >= 1 and result.shape[0] == len(merged) and result.flags.c_contiguous \
                    and result.ndim <= 8 and result.dtype in _CODES_BY_DTYPE:
                for i, a in enumerate(arrays):
                    rows_c[i] = a.shape[0]
                for d, v in enumerate(result.shape):
                    shape_c[d] = v
                reply_rows(jobs, c_size_t(n), output, ctypes.c_int(_CODES_BY_DTYPE[result.dtype]), ctypes.c_int(result.ndim),
                           shape_c, c_void_p(result.ctypes.data), rows_c)
                continue
            rerun = result is _RERUN
            if not rerun:
                try:
                    parts = _split(result, [a.shape[0] for a in arrays])
                except BaseException as e:  # noqa: BLE001
                    for i in range(n):
                        _fail(jobs[i], e)
                    continue
                for i, part in enumerate(parts):
                    if type(part) is np.ndarray and reply_array(jobs[i], output, part, scratch) is not None:
                        continue
                    _reply(jobs[i], part)
                continue
        # General path: per-request views, merged where names, dtypes and trailing shapes agree.
        batch = [j for j in (job_of(jobs[i]) for i in range(n)) if j is not None]
        if not batch:
            continue
        first = batch[0]
        mergeable = [j for j in batch if j.key is not None and j.key == first.key]
        alone = [j for j in batch if j not in mergeable] if len(mergeable) > 1 and not rerun else batch
        if len(mergeable) > 1 and not rerun:
            worker.batches.append(len(mergeable))
            counts_ = [j.rows for j in mergeable]
            merged_t = {k: np.concatenate([j.tensors[k] for j in mergeable]) for k in first.tensors}
            try:
                parts = _split(_call(fn, merged_t, single), counts_)
            except BaseException as e:  # noqa: BLE001 - run each alone: only the guilty fail
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    for j in mergeable:
                        _fail(j.ptr, e)
                    raise
                report_model_error(worker.url, failure(e))
                alone = batch
            else:
                for j, part in zip(mergeable, parts):
                    if type(part) is np.ndarray and reply_array(j.ptr, output, part, scratch) is not None:
                        continue
                    _reply(j.ptr, part)
        for j in alone:
            try:
                # The model gets its own copy: a request run alone is not preserved if kept.
                result = _call(fn, {k: v.copy() if type(v) is np.ndarray else v for k, v in j.tensors.items()}, single)
            except BaseException as e:  # noqa: BLE001
                _fail(j.ptr, e)
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                continue
            _reply(j.ptr, result)
    return served


__all__ = ["serve_batched"]
