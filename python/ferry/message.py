"""Numpy ⇄ Ferry tensors: the dtype table, writing arrays into a message in place, and
numpy views of a received message."""
from __future__ import annotations

import ctypes
import os
import threading
from ctypes import byref, c_char_p, c_int64, c_size_t, c_void_p
from typing import Any, Mapping

import numpy as np

from ._handle import Handle, check
from .errors import InvalidArgument
from ._lib import MAX_DIMS, FerryTensor, lib
from .table import TABLE, PackedStrings, arrow_to_tensors, is_arrow_table, is_dataframe, to_tensors

# BEGIN GENERATED: dtypes (scripts/gen_tables.py)
BOOL = 1
INT8 = 2
INT16 = 3
INT32 = 4
INT64 = 5
UINT8 = 6
UINT16 = 7
UINT32 = 8
UINT64 = 9
FLOAT16 = 10
FLOAT32 = 11
FLOAT64 = 12
BYTES = 13
STRING = 14
UTF32 = 15
FIXED_BYTES = 16
BFLOAT16 = 17
#: numpy dtype for each fixed-size wire code (little-endian).
NUMPY_DTYPES = {
    BOOL: np.dtype('bool'),
    INT8: np.dtype('<i1'),
    INT16: np.dtype('<i2'),
    INT32: np.dtype('<i4'),
    INT64: np.dtype('<i8'),
    UINT8: np.dtype('<u1'),
    UINT16: np.dtype('<u2'),
    UINT32: np.dtype('<u4'),
    UINT64: np.dtype('<u8'),
    FLOAT16: np.dtype('<f2'),
    FLOAT32: np.dtype('<f4'),
    FLOAT64: np.dtype('<f8'),
}
# END GENERATED
_CODES = {(dt.kind, dt.itemsize): code for code, dt in NUMPY_DTYPES.items()}
#: the same table keyed by (little-endian) dtype objects: one dict lookup per array
_CODES_BY_DTYPE = {dt: code for code, dt in NUMPY_DTYPES.items()}


def _bfloat16() -> np.dtype | None:
    """ml_dtypes' bfloat16, the numpy dtype of BFLOAT16 tensors, when ml_dtypes is installed
    (imported on first use; also added to the tables above then)."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    dt = np.dtype(ml_dtypes.bfloat16)
    NUMPY_DTYPES[BFLOAT16] = dt
    _CODES_BY_DTYPE[dt] = BFLOAT16
    return dt


def _numpy_dtype(code: int, name: str) -> np.dtype:
    """The numpy dtype of a fixed-size wire code, or a clear error (bfloat16 without ml_dtypes)."""
    dt = NUMPY_DTYPES.get(code)
    if dt is None and code == BFLOAT16:
        dt = _bfloat16()
        if dt is None:
            raise TypeError(f"tensor {name!r} is bfloat16, which numpy has no dtype for: install ml_dtypes (pip install ml_dtypes) to read it")
    if dt is None:
        raise TypeError(f"tensor {name!r} has wire dtype {code}, which this version of Ferry does not know")
    return dt


def _load_fastcall():
    """The compiled calls (_fastcall.c, built by `make build`): the client's call and the
    worker's request and reply of plain messages (arrays, dicts and tuples of them), bound to
    the libferry functions ctypes loaded and to the dtype table above. None where it is absent or FERRY_PURE_PYTHON=1 asks
    for the ctypes paths (client.py and serving.py have both; tests run both)."""
    if os.environ.get("FERRY_PURE_PYTHON"):
        return None
    try:
        from . import _fastcall
    except ImportError:
        return None
    names = ("ferry_call_array", "ferry_call_begin", "ferry_call_writer", "ferry_writer_put_tensor", "ferry_writer_set_meta",
             "ferry_call_poll", "ferry_call_check", "ferry_call_free", "ferry_message_meta_count", "ferry_message_meta",
             "ferry_worker_next", "ferry_job_writer", "ferry_job_reply", "ferry_writer_put_tensor_ref")
    _fastcall.bind({n: ctypes.cast(getattr(lib, n), c_void_p).value for n in names},
                   tuple(NUMPY_DTYPES.get(code) for code in range(max(NUMPY_DTYPES) + 1)))
    return _fastcall


#: The compiled module, bound (see _load_fastcall), or None.
fastcall = _load_fastcall()

#: name of the tensor used when a single array is sent or returned
DEFAULT_INPUT = "input"
DEFAULT_OUTPUT = "output"


def dtype_code(dt: np.dtype) -> int:
    """Wire code of a numpy dtype; raises InvalidArgument-like ValueError for others."""
    code = _CODES.get((dt.kind, dt.itemsize))
    if code is None and dt.name == "bfloat16" and _bfloat16() == dt:
        return BFLOAT16
    if code is None:
        raise TypeError(f"numpy dtype {dt} has no Ferry equivalent (supported: bool, int8-64, uint8-64, float16/32/64, bfloat16 (ml_dtypes), str, bytes)")
    return code


def _address(arr: np.ndarray) -> int:
    """Data address of a contiguous array. `from_buffer` is ~3× cheaper than
    `__array_interface__` but needs a writable buffer."""
    if arr.flags.writeable and arr.nbytes and arr.dtype.kind != "V":  # (ml_dtypes' have no buffer format)
        return ctypes.addressof(ctypes.c_char.from_buffer(arr))
    return arr.__array_interface__["data"][0]


def _shape(shape) -> "ctypes.Array[c_int64]":
    if len(shape) > MAX_DIMS:
        raise ValueError(f"{len(shape)} dimensions; Ferry allows at most {MAX_DIMS}")
    return (c_int64 * MAX_DIMS)(*shape)


_TEXT_CACHE: dict = {}


def _c_text(text: str, what: str) -> bytes:
    cached = _TEXT_CACHE.get(text)
    if cached is not None:
        return cached
    if "\x00" in text:
        raise ValueError(f"{what} {text!r} contains a NUL character, which the C interface cannot carry")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} {text!r} is not valid Unicode text: {e}") from None
    if len(_TEXT_CACHE) < 4096:  # names repeat from call to call; keep the hot ones encoded
        _TEXT_CACHE[text] = encoded
    return encoded


class _Scratch:
    """ctypes out-parameters reused across calls (one set per thread)."""

    def __init__(self):
        self.ptr = c_void_p()
        self.nbytes = c_size_t()
        self.shape = (c_int64 * MAX_DIMS)()
        self.ptr_ref = byref(self.ptr)
        self.nbytes_ref = byref(self.nbytes)


_local = threading.local()


def _fill_shape(dst, shape):
    """Copies `shape` into a reusable c_int64[8] (entries past ndim are ignored by the C side)."""
    for i, d in enumerate(shape):
        dst[i] = d
    return dst


def _scratch() -> _Scratch:
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = _Scratch()
    return s


#: DLPack device types (dlpack.h DLDeviceType) by code, for errors that name the device.
_DL_DEVICES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 9: "vpi", 10: "rocm",
               11: "rocm_host", 13: "cuda_managed", 14: "oneapi", 15: "webgpu", 16: "hexagon", 17: "maia"}


def from_dlpack(name: str, value: Any) -> np.ndarray:
    """An object with `__dlpack__` (a torch, JAX or CuPy-on-host tensor, ...) as a numpy array
    of the same memory (no copy), or a clear error: a tensor on another device than the CPU
    names it (Ferry moves host memory). A torch tensor that requires grad is detached first."""
    device = value.__dlpack_device__() if hasattr(value, "__dlpack_device__") else (1, 0)
    kind, index = int(device[0]), int(device[1])
    if kind != 1:
        raise InvalidArgument(f"tensor {name!r} is on device {_DL_DEVICES.get(kind, f'type {kind}')}:{index}; Ferry sends host "
                              "memory (GPU transport is later work): copy it to the CPU first (e.g. t.cpu())")
    if getattr(value, "requires_grad", False) and hasattr(value, "detach"):
        value = value.detach()  # torch refuses to export a tensor that requires grad
    try:
        return np.from_dlpack(value)
    except (BufferError, TypeError, RuntimeError, ValueError) as e:
        raise TypeError(f"tensor {name!r}: its DLPack export failed ({type(e).__name__}: {e})") from None


def write_value(writer: int, name: str, value: Any, text: bool = False) -> None:
    """Writes one value (array, scalar, str, bytes) as a tensor through a C writer. numpy
    `<U`/`S` arrays cross in their own fixed-width layout (UTF32, FIXED_BYTES: a copy, read
    back as a view) unless `text` asks for the packed UTF-8 `string` layout (tables)."""
    key = _c_text(name, "tensor name")
    arr = value if type(value) is np.ndarray else None
    if arr is None and hasattr(value, "__dlpack__") and not isinstance(value, (np.ndarray, np.generic)):
        arr = from_dlpack(name, value)
    if arr is None and type(value) is PackedStrings:
        offsets, text = value.offsets, value.text
        if offsets.dtype != np.dtype("<u8") or not offsets.flags.c_contiguous:
            offsets = np.ascontiguousarray(offsets, dtype="<u8")
        check(lib.ferry_writer_put_strings_packed(writer, key, 1, _shape((len(value),)), offsets.ctypes.data,
                                                  text.ctypes.data if len(text) else None, len(text)))
        return
    if arr is None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            check(lib.ferry_writer_put_tensor(writer, key, BYTES, 1, _shape((len(data),)), data, len(data)))
            return
        if isinstance(value, str):
            # One string: packed UTF-8, exact (np.array would drop a trailing NUL).
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"tensor {name!r} holds a string that is not valid Unicode: {e}") from None
            check(lib.ferry_writer_put_strings(writer, key, 0, _shape(()), (c_char_p * 1)(data), (c_size_t * 1)(len(data)), 1))
            return
        elif isinstance(value, Mapping):
            raise TypeError(f"tensor {name!r} is a nested {type(value).__name__}; send flat named arrays (a dict of arrays)")
        elif value is None:
            raise TypeError(f"tensor {name!r} is None; send an array, a scalar, str or bytes")
        elif isinstance(value, (list, tuple)):
            _check_sequence(name, value)
        elif type(value).__module__.startswith("pandas"):
            # np.asarray(df) would silently drop column names and merge dtypes (an int64 id
            # of 2**53+1 becomes a float): refuse rather than lose data.
            what = "a DataFrame inside a message (send the DataFrame itself: it crosses as a table)" \
                if is_dataframe(value) else f"a pandas {type(value).__name__} (send s.to_numpy(), or a one-column DataFrame)"
            raise TypeError(f"tensor {name!r} is {what}; converting it with numpy would lose names and dtypes")
        elif not isinstance(value, (int, float, bool, complex, np.generic)) and not hasattr(value, "__array__"):
            raise TypeError(f"tensor {name!r} is a {type(value).__module__}.{type(value).__qualname__}, which Ferry cannot send faithfully; send a numpy array, a scalar, str or bytes")
        arr = np.asarray(value)
    kind = arr.dtype.kind
    if kind in "US" and not text:
        # numpy's own layout: UTF-32 code units (or bytes), the width as a last dimension.
        # The library refuses a code unit that is not a Unicode scalar before sending.
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.ndim >= MAX_DIMS:
            raise ValueError(f"tensor {name!r}: {arr.ndim} dimensions; a string array may have at most {MAX_DIMS - 1} (the width is one more)")
        unit = 4 if kind == "U" else 1
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        shape = arr.shape + (arr.dtype.itemsize // unit,)
        # Copied by the library, which checks the code units in the same pass.
        check(lib.ferry_writer_put_tensor(writer, key, UTF32 if kind == "U" else FIXED_BYTES, len(shape), _shape(shape),
                                          _address(arr) if arr.nbytes else None, arr.nbytes))
        return
    if kind == "U" and arr.size:
        packed = _pack_strings(arr)
        if packed is not None:
            offsets, text = packed
            check(lib.ferry_writer_put_strings_packed(writer, key, arr.ndim, _shape(arr.shape), offsets.ctypes.data,
                                                      text.ctypes.data if len(text) else None, len(text)))
            return
    if kind in "UO":
        flat = arr.reshape(-1).tolist()
        if kind == "O":
            bad = next((v for v in flat if not isinstance(v, str)), None)
            if bad is not None:
                raise TypeError(f"tensor {name!r} is an object array holding {type(bad).__name__}; only object arrays of str can be sent")
        try:
            encoded = [s.encode("utf-8") for s in flat]
        except UnicodeEncodeError as e:
            raise ValueError(f"tensor {name!r} holds a string that is not valid Unicode: {e}") from None
        n = len(encoded)
        ptrs = (c_char_p * max(n, 1))(*encoded)
        lens = (c_size_t * max(n, 1))(*[len(b) for b in encoded])
        check(lib.ferry_writer_put_strings(writer, key, arr.ndim, _shape(arr.shape), ptrs, lens, n))
        return
    code = _CODES_BY_DTYPE.get(arr.dtype)
    if code is None:  # big-endian (convert) or unsupported (dtype_code explains)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        code = dtype_code(arr.dtype)
    ndim = arr.ndim
    if ndim > MAX_DIMS:
        raise ValueError(f"{ndim} dimensions; Ferry allows at most {MAX_DIMS}")
    _write_fixed(writer, key, code, arr.shape, arr)


def _write_fixed(writer: int, key: bytes, code: int, shape: tuple, arr: np.ndarray) -> None:
    """Reserves the tensor in the message and copies `arr`'s bytes straight into it."""
    sc = _scratch()
    check(lib.ferry_writer_add_tensor(writer, key, code, len(shape), _fill_shape(sc.shape, shape), sc.ptr_ref, sc.nbytes_ref))
    nbytes = sc.nbytes.value
    if nbytes:
        if arr.flags.c_contiguous:
            ctypes.memmove(sc.ptr.value, _address(arr), nbytes)
        else:  # strided input: let numpy copy straight into the slot
            dst = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(sc.ptr.value))
            dst.view(arr.dtype).reshape(arr.shape)[...] = arr


def _fixed_strings(code: int, shape: tuple, addr: int, nbytes: int, base, mapping, copy: bool) -> np.ndarray:
    """A UTF32/FIXED_BYTES tensor as numpy's `<U{w}`/`S{w}` array of shape[:-1]: a view of
    the message like any array (or a copy). Width 0 (only other languages send it) is an
    array of empty strings."""
    width = shape[-1]
    if width == 0:
        return np.zeros(shape[:-1], dtype="<U1" if code == UTF32 else "S1")
    dt = np.dtype(f"<U{width}" if code == UTF32 else f"S{width}")
    if mapping is not None and base is not None:
        arr = np.ndarray(shape[:-1], dtype=dt, buffer=mapping, offset=addr - base)
        return arr.copy() if copy else arr
    raw = (ctypes.c_uint8 * nbytes).from_address(addr) if nbytes else bytearray()
    return np.frombuffer(raw, dtype=dt).reshape(shape[:-1]).copy()


def _check_sequence(name: str, value) -> None:
    """A list numpy would convert unfaithfully (strings mixed with numbers become strings;
    dicts, None and ragged rows become objects) is an error instead."""
    stack, kinds = [value], set()
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, str):
            kinds.add("str")
        elif isinstance(v, (bool, int, float, complex, np.generic)):
            kinds.add("number")
        elif isinstance(v, np.ndarray):
            kinds.add("str" if v.dtype.kind == "U" else "number")
        else:
            raise TypeError(f"tensor {name!r} holds a {type(v).__name__}, which Ferry cannot send faithfully")
    if len(kinds) > 1:
        raise TypeError(f"tensor {name!r} mixes strings and numbers; numpy would turn the numbers into text")


def reply_array(job: int, name: bytes, arr: np.ndarray, sc: "_Scratch | None" = None) -> int | None:
    """Replies to `job` with one plain array in a single C call; None when `arr` needs the
    general path (strings, big-endian, strided, too many dims)."""
    code = _CODES_BY_DTYPE.get(arr.dtype)
    if code is None or arr.ndim > MAX_DIMS or not arr.flags.c_contiguous:
        return None
    shape = _fill_shape((sc or _scratch()).shape, arr.shape)
    return lib.ferry_job_reply_tensor(job, name, code, arr.ndim, shape, _address(arr), arr.nbytes)


#: Reply metadata of a model that returned a tuple or list of outputs: the client gets a
#: tuple of the tensors in order (docs/protocol.md).
OUTPUTS_KEY, OUTPUTS_TUPLE = "ferry.outputs", "tuple"


def write_message(writer: int, value: Any, default_name: str, metadata: Mapping[str, str] | None = None,
                  several: bool = False) -> None:
    """Writes a single value under `default_name`, a mapping of named values, or a pandas
    DataFrame as a table (ferry.table). With `several` (a model's reply), a tuple or list
    holding arrays is several outputs: `output_0`, `output_1`, ... (a namedtuple's field
    names), in order, with metadata ferry.outputs=tuple."""
    if several and isinstance(value, (tuple, list)) and value and any(isinstance(v, np.ndarray) for v in value):
        names = value._fields if isinstance(value, tuple) and hasattr(value, "_fields") else None
        for i, v in enumerate(value):
            write_value(writer, names[i] if names else f"output_{i}", v)
        check(lib.ferry_writer_set_meta(writer, OUTPUTS_KEY.encode(), OUTPUTS_TUPLE.encode()))
        value = None
    if type(value) is not dict and is_arrow_table(value):
        value = arrow_to_tensors(value)
    if type(value) is not dict and is_dataframe(value):
        value = to_tensors(value)
    if type(value) is dict or isinstance(value, Mapping):
        table = TABLE in value  # a table's strings are packed UTF-8 (Arrow's layout)
        for name, v in value.items():
            write_value(writer, str(name), v, table)
    elif value is not None:
        write_value(writer, default_name, value)
    if metadata:
        for k, v in metadata.items():
            check(lib.ferry_writer_set_meta(writer, _c_text(str(k), "metadata key"), _c_text(str(v), "metadata value")))


class MessageReader:
    """Reads tensors of a C message view into numpy. Reuses its descriptor array."""

    def __init__(self, capacity: int = 16):
        self._cap = capacity
        self._cap_c = c_size_t(capacity)
        self._tensors = (FerryTensor * capacity)()
        self._count = c_size_t()

    def descriptors(self, msg: int):
        rc = lib.ferry_message_tensors(msg, self._tensors, self._cap, byref(self._count))
        if rc != 0 and self._count.value > self._cap:
            self._cap = self._count.value
            self._cap_c = c_size_t(self._cap)
            self._tensors = (FerryTensor * self._cap)()
            rc = lib.ferry_message_tensors(msg, self._tensors, self._cap, byref(self._count))
        check(rc)
        return self._tensors, self._count.value

    def read(self, msg: int, base: int | None = None, mapping: memoryview | None = None, copy: bool = True) -> dict:
        """Tensors of `msg` by name. With `mapping` (a read-only memoryview of the whole
        segment) and its `base` address, arrays are read-only views into shared memory."""
        tensors, n = self.descriptors(msg)
        return self.convert(n, base, mapping, copy)

    def only_array(self, base: int, mapping: memoryview, t=None):
        """The first descriptor (or `t`) as a read-only view when it is a plain array (the
        common single-input request), else None. Skips decoding a name nobody will read."""
        if t is None:
            t = self._tensors[0]
        dt = NUMPY_DTYPES.get(t.dtype)
        if dt is None:
            return None
        ndim = t.ndim
        return np.ndarray(tuple(t.shape[:ndim]) if ndim else (), dtype=dt, buffer=mapping, offset=(t.data or base) - base)

    def convert(self, n: int, base: int | None = None, mapping: memoryview | None = None, copy: bool = True) -> dict:
        """Turns the first `n` filled descriptors into arrays (see `read`)."""
        tensors = self._tensors
        out = {}
        strings = None  # string tensors, decoded at the end unless the message is a table
        for i in range(n):
            t = tensors[i]
            name = ctypes.string_at(t.name, t.name_len).decode() if t.name_len else ""
            ndim = t.ndim
            shape = tuple(t.shape[:ndim]) if ndim else ()
            code, nbytes, addr = t.dtype, t.nbytes, t.data or 0
            if code == BYTES:
                out[name] = ctypes.string_at(addr, nbytes) if nbytes else b""
                continue
            if code == UTF32 or code == FIXED_BYTES:
                out[name] = _fixed_strings(code, shape, addr, nbytes, base, mapping, copy)
                continue
            if code == STRING:
                if len(shape) == 1 and name != TABLE:
                    if strings is None:
                        strings = []
                    strings.append((name, addr, nbytes, shape))
                    out[name] = None
                else:
                    out[name] = _read_strings(addr, nbytes, shape)
                continue
            dt = NUMPY_DTYPES.get(code) or _numpy_dtype(code, name)
            if mapping is not None and base is not None:
                # One ndarray over the read-only segment view: no copy, not writable.
                arr = np.ndarray(shape, dtype=dt, buffer=mapping, offset=addr - base)
                if copy:
                    arr = arr.copy()
            else:
                raw = (ctypes.c_uint8 * nbytes).from_address(addr) if nbytes else bytearray()
                arr = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
            out[name] = arr
        if strings:
            table = TABLE in out
            for name, addr, nbytes, shape in strings:
                if not table:
                    out[name] = _read_strings(addr, nbytes, shape)
                    continue
                # A table's string column stays in the wire's layout (Arrow's). Its bytes are
                # the library's validated private copy, which lives as long as the message:
                # one memcpy makes them ours.
                count = shape[0]
                raw = np.frombuffer(ctypes.string_at(addr, nbytes), dtype=np.uint8)
                offsets = raw[: 8 * (count + 1)].view("<u8")
                out[name] = PackedStrings(offsets, raw[8 * (count + 1):])
        return out


def _pack_strings(arr: np.ndarray):
    """A str array as the wire's (offsets, UTF-8 text) with whole-array operations (no
    Python work per string): numpy's UTF-32 code points → one codec call → UTF-8, and the
    per-string byte lengths from each code point's UTF-8 width. None when a string cannot
    take that route (a surrogate: the per-string path names the problem)."""
    flat = np.ascontiguousarray(arr.reshape(-1))
    if fastcall is not None and flat.dtype.byteorder != ">":
        packed = fastcall.pack_str(flat)  # one C pass to size, one to fill (_fastcall.c)
        if packed is not None:
            return packed
    n, width = len(flat), flat.dtype.itemsize // 4
    offsets = np.zeros(n + 1, dtype="<u8")
    if width == 0:
        return offsets, np.zeros(0, np.uint8)
    cps = flat.view(np.uint32).reshape(n, width)
    lens = np.char.str_len(flat)  # characters, embedded NULs included
    keep = np.arange(width) < lens[:, None]
    chars = cps[keep]  # every code point, string after string
    try:
        text = np.frombuffer(chars.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8"), dtype=np.uint8)
    except UnicodeError:
        return None
    # UTF-8 bytes per code point (1–4), summed per string over its characters.
    utf8_width = keep.astype(np.uint8) + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    utf8_width[~keep] = 0
    np.cumsum(utf8_width.sum(axis=1, dtype=np.uint64), out=offsets[1:])
    return offsets, text


def _read_strings(addr: int, nbytes: int, shape: tuple) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if fastcall is not None and nbytes >= 8 * (count + 1):
        # Straight from the message's validated copy of the strings, which lives as long as
        # the message does: no intermediate bytes object.
        fast = fastcall.unpack_str(addr, addr + 8 * (count + 1), nbytes - 8 * (count + 1), count)
        if fast is not None:
            return fast.reshape(shape)
    raw = ctypes.string_at(addr, nbytes)
    offsets = np.frombuffer(raw, dtype="<u8", count=count + 1)
    text = raw[8 * (count + 1) :]
    fast = _unpack_strings(offsets, text, count)
    if fast is not None:
        return fast.reshape(shape)
    items = [text[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    if any(s.endswith("\x00") for s in items):
        # numpy's fixed-width str drops trailing NULs: keep such strings exact as objects.
        out = np.empty(count, dtype=object)
        out[:] = items
        return out.reshape(shape)
    return np.array(items, dtype=np.str_).reshape(shape)


def _unpack_strings(offsets: np.ndarray, text: bytes, count: int):
    """The strings as a numpy str array with whole-array operations: one codec call to
    UTF-32 code points, scattered into a fixed-width matrix. None where that would not be
    exact or would use too much memory (a trailing NUL, which fixed-width strings drop; one
    very long string among many)."""
    if count == 0:
        return np.array([], dtype=np.str_)
    if fastcall is not None:
        o = np.ascontiguousarray(offsets, dtype="<u8")
        t = np.frombuffer(text, dtype=np.uint8) if not isinstance(text, np.ndarray) else np.ascontiguousarray(text, dtype=np.uint8)
        if len(o) == count + 1:
            fast = fastcall.unpack_str(o.ctypes.data, t.ctypes.data if len(t) else 0, len(t), count)
            if fast is not None:
                return fast
    buf = np.frombuffer(text, dtype=np.uint8)
    # Characters start at bytes that are not UTF-8 continuation bytes (10xxxxxx).
    starts = np.zeros(len(buf) + 1, dtype=np.int64)
    np.cumsum((buf & 0xC0) != 0x80, out=starts[1:])
    char_offsets = starts[offsets.astype(np.int64)]
    clens = np.diff(char_offsets)
    width = int(clens.max())
    if width == 0:
        return np.full(count, "", dtype=np.str_)
    if count * width * 4 > (256 << 20):
        return None
    cps = np.frombuffer(bytes(text).decode("utf-8").encode("utf-32-le"), dtype="<u4")
    ends = char_offsets[1:]
    if (cps[ends[clens > 0] - 1] == 0).any():
        return None
    rows = np.repeat(np.arange(count), clens)
    cols = np.arange(len(cps)) - np.repeat(char_offsets[:-1], clens)
    mat = np.zeros((count, width), dtype="<u4")
    mat[rows, cols] = cps
    return mat.view(f"<U{width}").reshape(count)


def read_metadata(msg: int) -> dict:
    out = {}
    k, v = c_void_p(), c_void_p()
    kl, vl = c_size_t(), c_size_t()
    for i in range(lib.ferry_message_meta_count(msg)):
        check(lib.ferry_message_meta(msg, i, byref(k), byref(kl), byref(v), byref(vl)))
        key = ctypes.string_at(k.value, kl.value).decode() if kl.value else ""
        out[key] = ctypes.string_at(v.value, vl.value).decode() if vl.value else ""
    return out


class Encoder(Handle):
    """Builds a standalone message in memory (for tests, files and other transports)."""

    _free = lib.ferry_encoder_free

    def __init__(self, capacity: int):
        ptr = c_void_p()
        check(lib.ferry_encoder_new(capacity, byref(ptr)))
        super().__init__(ptr)


def encode(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None, capacity: int | None = None) -> bytes:
    """Encodes named values to Ferry message bytes (docs/protocol.md)."""
    if capacity is None:
        capacity = 4096 + sum(
            (np.asarray(v).nbytes if not isinstance(v, (bytes, str)) else len(v) * 4) + 256 + 8 * (np.asarray(v).size + 1 if not isinstance(v, bytes) else 0)
            for v in tensors.values()
        ) + sum(len(k) + len(v) + 64 for k, v in (metadata or {}).items()) * 4
    with Encoder(capacity) as enc:
        write_message(lib.ferry_encoder_writer(enc._handle()), dict(tensors), DEFAULT_INPUT, metadata)
        data, n = c_void_p(), c_size_t()
        check(lib.ferry_encoder_finish(enc._handle(), byref(data), byref(n)))
        return ctypes.string_at(data.value, n.value)


def decode(data: bytes) -> tuple[dict, dict]:
    """Validates and decodes message bytes into (tensors, metadata). Raises MalformedMessage."""
    buf = ctypes.create_string_buffer(bytes(data), len(data)) if data else None
    msg = c_void_p()
    check(lib.ferry_message_decode(buf, len(data), byref(msg)))
    try:
        return MessageReader().read(msg.value), read_metadata(msg.value)
    finally:
        lib.ferry_message_free(msg)


__all__ = ["encode", "decode", "NUMPY_DTYPES", "dtype_code", "DEFAULT_INPUT", "DEFAULT_OUTPUT"]
