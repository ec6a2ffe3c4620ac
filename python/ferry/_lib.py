"""Loads libferry.so and declares every C function's signature — the only module that
touches ctypes declarations. Search order: $FERRY_LIBRARY, the package's own copy, the
repository's build folders, then the system (installed with `make install`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from ctypes import POINTER, Structure, c_char_p, c_int, c_int32, c_int64, c_size_t, c_void_p

MAX_DIMS = 8


class FerryTensor(Structure):
    """Mirror of `ferry_tensor` in include/ferry.h."""

    _fields_ = [
        ("name", c_void_p),
        ("name_len", c_size_t),
        ("dtype", c_int32),
        ("ndim", c_int32),
        ("shape", c_int64 * MAX_DIMS),
        ("data", c_void_p),
        ("nbytes", c_size_t),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class FerryOptions(Structure):
    """Mirror of `ferry_options` in include/ferry.h."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("slots", c_int32),
        ("slot_size", c_int64),
        ("wait", c_int32),
        ("spin_us", c_int64),
        ("timeout_ms", c_int64),
    ]


def _candidates():
    """Where libferry.so may be, most specific first. A generator: the system search
    (ctypes.util.find_library runs ldconfig and a compiler, ~0.1 s) only happens when nothing
    nearer loads, so it does not slow the start of every worker and client."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    if os.environ.get("FERRY_LIBRARY"):
        yield os.environ["FERRY_LIBRARY"]
    yield os.path.join(here, "libferry.so")
    for build in ("release", "debug"):
        yield os.path.join(root, ".build", build, "libferry.so")
    yield "libferry.so.0"  # the dynamic loader's own search (an installed library)
    found = ctypes.util.find_library("ferry")
    if found:
        yield found


def _load() -> ctypes.CDLL:
    errors = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:  # try the next one
            errors.append(f"{path}: {e}")
    raise ImportError(
        "cannot load libferry.so; build it with `make build` or set FERRY_LIBRARY\n  " + "\n  ".join(errors)
    )


lib = _load()

_P = POINTER
_pp = _P(c_void_p)
# name: (restype, argtypes)
_SIGNATURES = {
    "ferry_version": (c_char_p, []),
    "ferry_version_number": (c_int, []),
    "ferry_last_error": (c_char_p, []),
    "ferry_status_name": (c_char_p, [c_int]),
    "ferry_options_init": (None, [_P(FerryOptions)]),
    "ferry_client_new": (c_int, [c_char_p, _P(FerryOptions), _pp]),
    "ferry_client_free": (None, [c_void_p]),
    "ferry_call_begin": (c_int, [c_void_p, c_int64, _pp]),
    "ferry_call_try_begin": (c_int, [c_void_p, c_int64, _pp]),
    "ferry_client_server_info": (c_int, [c_void_p, c_int64, _P(c_char_p)]),
    "ferry_call_writer": (c_void_p, [c_void_p]),
    "ferry_call_send": (c_int, [c_void_p]),
    "ferry_call_wait": (c_int, [c_void_p, c_int64, _pp]),
    "ferry_call_finish": (c_int, [c_void_p, c_int64, _pp, _P(FerryTensor), c_size_t, _P(c_size_t)]),
    "ferry_call_free": (None, [c_void_p]),
    "ferry_call_check": (c_int, [c_void_p]),
    "ferry_call_poll": (c_int, [c_void_p, c_int64, _pp, _P(FerryTensor), c_size_t, _P(c_size_t)]),
    "ferry_call_error": (c_int, [c_void_p, _P(c_char_p), _P(c_char_p), _P(c_char_p)]),
    "ferry_client_error": (c_int, [c_void_p, _P(c_char_p)]),
    "ferry_worker_error": (c_int, [c_void_p, _P(c_char_p)]),
    "ferry_job_fail_ex": (c_int, [c_void_p, c_int, c_char_p, c_char_p, c_char_p]),
    "ferry_worker_new": (c_int, [c_char_p, _P(FerryOptions), _pp]),
    "ferry_worker_free": (None, [c_void_p]),
    "ferry_worker_slots": (c_int, [c_void_p, _P(c_size_t), _P(c_size_t)]),
    "ferry_worker_slot": (c_int, [c_void_p, c_size_t, _pp]),
    "ferry_job_preserve": (c_int, [c_void_p, _pp, _P(c_size_t)]),
    "ferry_preserved_release": (c_int, [c_void_p]),
    "ferry_worker_recv": (c_int, [c_void_p, c_int64, _pp]),
    "ferry_worker_pending": (c_int, [c_void_p, _P(c_size_t), _P(c_size_t)]),
    "ferry_worker_next_batch": (c_int, [c_void_p, c_int64, c_int64, c_size_t, _pp, _P(FerryTensor), _P(c_size_t), _P(c_size_t)]),
    "ferry_jobs_reply_rows": (c_int, [_pp, c_size_t, c_char_p, c_int, c_int, _P(c_int64), c_void_p, _P(c_int64)]),
    "ferry_job_request": (c_int, [c_void_p, _pp]),
    "ferry_worker_next": (c_int, [c_void_p, c_int64, _pp, _P(FerryTensor), c_size_t, _P(c_size_t)]),
    "ferry_job_reply_tensor": (c_int, [c_void_p, c_char_p, c_int, c_int, _P(c_int64), c_void_p, c_size_t]),
    "ferry_job_writer": (c_void_p, [c_void_p]),
    "ferry_job_reply": (c_int, [c_void_p]),
    "ferry_job_fail": (c_int, [c_void_p, c_int, c_char_p]),
    "ferry_writer_add_tensor": (c_int, [c_void_p, c_char_p, c_int, c_int, _P(c_int64), _pp, _P(c_size_t)]),
    "ferry_writer_put_tensor": (c_int, [c_void_p, c_char_p, c_int, c_int, _P(c_int64), c_void_p, c_size_t]),
    "ferry_writer_put_tensor_ref": (c_int, [c_void_p, c_char_p, c_int, c_int, _P(c_int64), c_void_p, c_size_t]),
    "ferry_writer_put_strings": (c_int, [c_void_p, c_char_p, c_int, _P(c_int64), _P(c_char_p), _P(c_size_t), c_size_t]),
    "ferry_writer_set_meta": (c_int, [c_void_p, c_char_p, c_char_p]),
    "ferry_writer_put_strings_packed": (c_int, [c_void_p, c_char_p, c_int, _P(c_int64), c_void_p, c_void_p, c_size_t]),
    "ferry_encoder_new": (c_int, [c_size_t, _pp]),
    "ferry_encoder_writer": (c_void_p, [c_void_p]),
    "ferry_encoder_finish": (c_int, [c_void_p, _pp, _P(c_size_t)]),
    "ferry_encoder_free": (None, [c_void_p]),
    "ferry_message_decode": (c_int, [c_void_p, c_size_t, _pp]),
    "ferry_message_free": (None, [c_void_p]),
    "ferry_message_tensor_count": (c_size_t, [c_void_p]),
    "ferry_message_tensor": (c_int, [c_void_p, c_size_t, _P(FerryTensor)]),
    "ferry_message_tensors": (c_int, [c_void_p, _P(FerryTensor), c_size_t, _P(c_size_t)]),
    "ferry_message_find": (c_int, [c_void_p, c_char_p, _P(FerryTensor)]),
    "ferry_message_meta_count": (c_size_t, [c_void_p]),
    "ferry_message_meta": (c_int, [c_void_p, c_size_t, _pp, _P(c_size_t), _pp, _P(c_size_t)]),
    "ferry_message_status": (c_int, [c_void_p]),
    "ferry_message_bytes": (c_int, [c_void_p, _pp, _P(c_size_t)]),
    "ferry_segment_validate": (c_int, [c_void_p, c_size_t, c_size_t]),
    "ferry_channel_reclaim": (c_int, [c_char_p, _P(c_int)]),
    "ferry_channel_census": (c_int, [c_char_p, c_int, _P(c_size_t)]),
    "ferry_publisher_new": (c_int, [c_char_p, _P(FerryOptions), _pp]),
    "ferry_publisher_free": (None, [c_void_p]),
    "ferry_publisher_loan": (c_int, [c_void_p, c_int64, _pp]),
    "ferry_publisher_publish": (c_int, [c_void_p, ctypes.c_uint64, _P(ctypes.c_uint64)]),
    "ferry_publisher_cancel": (c_int, [c_void_p]),
    "ferry_publisher_subscribers": (c_int, [c_void_p, _P(c_size_t)]),
    "ferry_subscriber_new": (c_int, [c_char_p, c_int, _pp]),
    "ferry_subscriber_free": (None, [c_void_p]),
    "ferry_subscriber_recv": (c_int, [c_void_p, c_int64, _pp, _pp, _P(FerryTensor), c_size_t, _P(c_size_t)]),
    "ferry_subscriber_slots": (c_int, [c_void_p, _P(c_size_t), _P(c_size_t)]),
    "ferry_subscriber_slot": (c_int, [c_void_p, c_size_t, _pp]),
    "ferry_frame_preserve": (c_int, [c_void_p, _pp, _P(c_size_t)]),
    "ferry_frame_free": (None, [c_void_p]),
}

for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args


def raw(name: str, restype=c_int):
    """A second pointer to `name` without argtypes, for hot loops whose arguments are all
    prebuilt ctypes objects: skipping per-call argument conversion halves the call cost."""
    fn = lib._FuncPtr((name, lib))
    fn.restype = restype
    fn.argtypes = None
    return fn


__all__ = ["lib", "raw", "FerryTensor", "FerryOptions", "MAX_DIMS"]
