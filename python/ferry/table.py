"""Tables: a pandas DataFrame crosses as its columns, each a named 1-D tensor, with a schema
that brings every column back exactly — names and order, numeric and bool dtypes, strings,
datetimes (with unit and time zone), timedeltas, and nulls (pandas nullable dtypes, or
None in a string column) as validity masks. What cannot come back exactly is refused with
an error that says why (categoricals, mixed object columns, a non-default index).

On the wire a table is an ordinary message: a column "c" is tensor "c", its validity mask
(when it has nulls) tensor "c.valid", and the 0-d string tensor "ferry.table" holds the
schema as JSON. Any client, in any language, can build or read one.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

#: Name of the tensor that marks a message as a table and holds its schema.
TABLE = "ferry.table"
VALID = ".valid"


class PackedStrings:
    """A string column in the wire's own layout — n+1 little-endian u64 offsets from 0 and
    the UTF-8 text — which is also Arrow's large_string layout: Arrow-backed pandas string
    columns cross both ways without a Python object per value."""

    __slots__ = ("offsets", "text")

    def __init__(self, offsets: np.ndarray, text: np.ndarray):
        self.offsets, self.text = offsets, text

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def shape(self) -> tuple:
        return (len(self),)

    def to_numpy(self) -> np.ndarray:
        """The strings as a numpy str array (no Python loop per value where possible)."""
        from .message import _unpack_strings
        n = len(self)
        fast = _unpack_strings(self.offsets, self.text.tobytes(), n)
        if fast is not None:
            return fast
        text = self.text.tobytes()
        o = self.offsets
        items = [text[o[i]:o[i + 1]].decode("utf-8") for i in range(n)]
        out = np.empty(n, dtype=object)
        out[:] = items
        return out

    def to_arrow(self, valid: np.ndarray | None = None):
        import pyarrow as pa
        validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
        return pa.LargeStringArray.from_buffers(len(self), pa.py_buffer(self.offsets.view(np.int64)), pa.py_buffer(self.text),
                                                validity, null_count=-1 if valid is None else int(len(valid) - valid.sum()))


def _arrow_strings(s):
    """(PackedStrings, null mask) of an Arrow-backed pandas string column, or None."""
    arr = getattr(s.array, "_pa_array", None)
    if arr is None:
        return None
    import pyarrow as pa
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return _packed_from_arrow(a) if pa.types.is_string(a.type) or pa.types.is_large_string(a.type) else None


def _packed_from_arrow(a):
    """(PackedStrings, null mask) of an Arrow string or large_string array: its own offsets
    (rebased to 0) and text, no Python object per value."""
    import pyarrow as pa
    if pa.types.is_string(a.type):
        a = a.cast(pa.large_string())
    _, obuf, dbuf = a.buffers()
    n = len(a)
    offsets = np.frombuffer(obuf, dtype="<i8", count=n + 1, offset=a.offset * 8) if n or obuf else np.zeros(1, "<i8")
    start, end = int(offsets[0]), int(offsets[-1])
    text = np.frombuffer(dbuf, dtype=np.uint8)[start:end] if dbuf is not None and end > start else np.zeros(0, np.uint8)
    rebased = (offsets - start).astype("<u8") if start else offsets.view("<u8")
    mask = a.is_null().to_numpy(zero_copy_only=False) if a.null_count else np.zeros(n, dtype=bool)
    return PackedStrings(rebased, text), mask


def is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _refuse(name: str, why: str) -> TypeError:
    return TypeError(f"column {name!r}: {why}")


_DTYPE_NAMES: dict = {}


def _dtype_name(dt: np.dtype) -> str:
    """str(dt), remembered (numpy 2 takes ~10 µs to make it)."""
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = str(dt)
    return name


def to_tensors(df) -> dict:
    """The tensors of a table (see the module's doc)."""
    import pandas as pd

    idx = df.index
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1):
        raise TypeError("a DataFrame with an index other than 0..n-1 would lose it; reset_index() first (it becomes a column)")
    if df.columns.has_duplicates:
        raise TypeError("a DataFrame with duplicate column names cannot be sent")
    frame: dict = {"rows": len(df)}
    for what, label in (("index_name", idx.name), ("columns_name", df.columns.name)):
        if label is not None:
            if type(label) not in (str, int, float, bool):
                raise TypeError(f"the DataFrame's {what.replace('_', ' ')} {label!r} is a {type(label).__name__}; only str, int, float or bool names cross exactly")
            frame[what] = label
    if len(df.columns) == 0:
        # pandas gives a frame without columns a RangeIndex of columns; one whose columns were
        # all dropped keeps an (object) Index. Either comes back as it was.
        frame["columns_index"] = "range" if isinstance(df.columns, pd.RangeIndex) else str(df.columns.dtype)
    out: dict = {}
    schema = []
    # A column's array without making a Series (pandas' df[name] costs ~40 µs a column); where
    # this pandas lacks it, the Series' own array.
    column_array = getattr(df, "_get_column_array", None)
    for i, name in enumerate(df.columns):
        if not isinstance(name, str):
            raise _refuse(str(name), f"column names must be str, not {type(name).__name__}")
        if name == TABLE or name.endswith(VALID):
            raise _refuse(name, f"the names {TABLE!r} and '*{VALID}' are reserved for the table's schema and masks")
        col = column_array(i) if column_array is not None else None
        if type(col) is np.ndarray and col.dtype.kind in "biuf":  # the common case: a plain numeric column
            out[name] = np.ascontiguousarray(col)
            schema.append({"name": name, "dtype": _dtype_name(col.dtype), "kind": "numpy"})
            continue
        s = df.iloc[:, i]
        dt = s.dtype
        entry: dict = {"name": name, "dtype": str(dt)}
        mask = None
        if isinstance(dt, pd.CategoricalDtype):
            raise _refuse(name, "categorical columns are not supported; send .cat.codes and the categories")
        if isinstance(dt, pd.DatetimeTZDtype):
            entry.update(kind="datetime", unit=dt.unit, tz=str(dt.tz))
            mask = s.isna().to_numpy()
            values = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().view(np.int64).copy()
        elif isinstance(dt, np.dtype) and dt.kind == "M":
            unit = np.datetime_data(dt)[0]
            entry.update(kind="datetime", unit=unit)
            mask = s.isna().to_numpy()
            values = s.to_numpy().view(np.int64)
        elif isinstance(dt, np.dtype) and dt.kind == "m":
            entry.update(kind="timedelta", unit=np.datetime_data(dt)[0])
            mask = s.isna().to_numpy()
            values = s.to_numpy().view(np.int64)
        elif isinstance(dt, np.dtype) and dt.kind in "biuf":
            entry["kind"] = "numpy"
            values = s.to_numpy()
        elif isinstance(dt, pd.api.extensions.ExtensionDtype) and getattr(dt, "numpy_dtype", None) is not None \
                and np.dtype(dt.numpy_dtype).kind in "biuf":  # Int64, Float64, boolean, …
            entry["kind"] = "masked"
            mask = s.isna().to_numpy()
            values = s.to_numpy(dtype=dt.numpy_dtype, na_value=0 if np.dtype(dt.numpy_dtype).kind != "b" else False)
        elif isinstance(dt, pd.StringDtype) and (packed := _arrow_strings(s)) is not None:
            entry["kind"] = "string"
            values, mask = packed
        elif isinstance(dt, pd.StringDtype) or (isinstance(dt, np.dtype) and dt.kind == "O"):
            objs = s.to_numpy(dtype=object)
            mask = s.isna().to_numpy()
            bad = next((v for v, m in zip(objs, mask) if not m and not isinstance(v, str)), None)
            if bad is not None:
                raise _refuse(name, f"an object column holding {type(bad).__name__} cannot be sent faithfully (only str, and nulls)")
            entry["kind"] = "string"
            objs = objs.copy()
            objs[mask] = ""
            values = np.array(objs.tolist(), dtype=np.str_) if len(objs) else np.array([], dtype=np.str_)
        else:
            raise _refuse(name, f"dtype {dt} is not supported")
        if mask is not None and mask.any():
            entry["nullable"] = True
            out[name + VALID] = ~mask
        out[name] = values if isinstance(values, PackedStrings) else np.ascontiguousarray(values)
        schema.append(entry)
    frame["columns"] = schema
    out[TABLE] = np.array(json.dumps(frame))
    return out


def from_tensors(tensors: dict):
    """The DataFrame of a table's tensors (numeric columns keep their arrays where pandas lets them)."""
    import pandas as pd

    schema = json.loads(str(tensors[TABLE]))
    rows = schema["rows"]
    data = {}
    for c in schema["columns"]:
        name, kind = c["name"], c["kind"]
        v = tensors[name]
        valid = tensors.get(name + VALID)
        if kind == "numpy":
            col = v  # the array itself: pandas builds a frame of arrays ~2× faster than of Series
        elif kind == "masked":
            col = _masked_column(v, valid, c["dtype"])
        elif kind in ("datetime", "timedelta"):
            col = v.view(f"{'M' if kind == 'datetime' else 'm'}8[{c['unit']}]").copy()
            if valid is not None:
                col[~valid] = np.datetime64("NaT") if kind == "datetime" else np.timedelta64("NaT")
            col = pd.Series(col, copy=False)
            if c.get("tz"):
                col = col.dt.tz_localize("UTC").dt.tz_convert(c["tz"])
        elif kind == "string":
            col = _string_column(v, valid, c["dtype"])  # a Series: its dtype is kept as it is
        else:
            raise ValueError(f"column {name!r}: unknown kind {kind!r} in the table's schema")
        if len(col) != rows:
            raise ValueError(f"a table of {rows} rows has a column {name!r} of {len(col)}")
        data[name] = col
    index = pd.RangeIndex(rows, name=schema.get("index_name"))
    if data:
        # copy=False: numeric columns stay views of the message (zero copy; in a worker, of the slot).
        df = pd.DataFrame(data, index=index, copy=False)
    else:
        shape = schema.get("columns_index", "range")
        columns = pd.RangeIndex(0) if shape == "range" else pd.Index([], dtype=shape)
        df = pd.DataFrame(index=index, columns=columns)
    if "columns_name" in schema:
        df.columns.name = schema["columns_name"]
    return df


def _masked_column(values, valid, dtype: str):
    """A pandas nullable column (Int64, Float64, boolean, …) straight from its values and
    validity: no copy, and a NaN stays a NaN, distinct from a null (pd.array would merge them)."""
    import pandas as pd
    dt = pd.api.types.pandas_dtype(dtype)
    mask = ~valid if valid is not None else np.zeros(len(values), dtype=bool)
    cls = dt.construct_array_type()
    if isinstance(dt, pd.api.extensions.ExtensionDtype) and issubclass(cls, pd.core.arrays.masked.BaseMaskedArray):
        return pd.Series(cls(np.asarray(values, dtype=dt.numpy_dtype), mask), copy=False)
    col = pd.Series(pd.array(values, dtype=dt), copy=False)  # e.g. pyarrow-backed dtypes
    if valid is not None and not valid.all():
        col[~valid] = pd.NA
    return col


def _string_column(v, valid, dtype: str):
    """A string column: Arrow-backed straight from the wire's buffers when pandas would
    store it in Arrow anyway (pyarrow installed, dtype str/string), else Python objects."""
    import pandas as pd
    if isinstance(v, PackedStrings) and dtype in ("str", "string"):
        target = pd.StringDtype() if dtype == "string" else pd.Series([], dtype="str").dtype
        if getattr(target, "storage", None) == "pyarrow":
            return pd.Series(v.to_arrow(valid), dtype=target, copy=False)
    if isinstance(v, PackedStrings):
        v = v.to_numpy()
    objs = v.astype(object)
    if valid is not None:
        objs[~valid] = None
    return pd.Series(objs, dtype=dtype if dtype != "object" else object)


def is_arrow_table(value: Any) -> bool:
    return type(value).__name__ in ("Table", "RecordBatch") and type(value).__module__.startswith("pyarrow")


#: pandas' nullable dtype for each Arrow integer, float and bool type: what a column with
#: nulls becomes (one without nulls becomes the plain numpy dtype).
_ARROW_MASKED = {"int8": "Int8", "int16": "Int16", "int32": "Int32", "int64": "Int64",
                 "uint8": "UInt8", "uint16": "UInt16", "uint32": "UInt32", "uint64": "UInt64",
                 "float": "Float32", "double": "Float64", "bool": "boolean"}


def _arrow_refusal(name: str, t) -> TypeError | None:
    """Why an Arrow column cannot cross exactly, or None when it can."""
    import pyarrow as pa
    types = pa.types
    if types.is_integer(t) or types.is_floating(t) or types.is_boolean(t) or types.is_string(t) \
            or types.is_large_string(t) or types.is_timestamp(t) or types.is_duration(t) or types.is_date(t):
        if types.is_float16(t):
            return _refuse(name, "Arrow halffloat has no pandas column type; cast it to float32")
        return None
    if types.is_decimal(t):
        why = f"Arrow {t} has no exact numpy type; cast it (to float64 if rounding is acceptable, or to string)"
    elif types.is_dictionary(t):
        why = f"Arrow {t} (categorical) is not supported; send the indices and the dictionary as columns, or decode it"
    elif types.is_null(t):
        why = "an Arrow column of type null has no values to send; give it a type"
    elif types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t) or types.is_struct(t) \
            or types.is_map(t) or types.is_union(t):
        why = f"nested Arrow type {t} is not supported; flatten it into columns"
    else:
        why = f"Arrow type {t} is not supported"
    return _refuse(name, why)


def arrow_to_tensors(value) -> dict:
    """The tensors of a pyarrow Table or RecordBatch, straight from its buffers (no pandas in
    between, which would turn an int64 column with nulls into float64 and a NaN into a null).
    Every column crosses exactly or the whole table is refused, naming the column:
    integers, floats and bools (with nulls: pandas' nullable Int64/Float64/boolean, NaN kept
    apart from null); strings and large strings (with nulls: pandas' string dtype, in Arrow);
    timestamps with unit and zone; durations; dates (as datetime64 at midnight: date32 in
    seconds, date64 in milliseconds). Decimals, dictionaries, nested, union and null-typed
    columns are refused."""
    import pyarrow as pa
    if isinstance(value, pa.RecordBatch):
        value = pa.Table.from_batches([value])
    names = value.column_names
    if len(set(names)) != len(names):
        raise TypeError("an Arrow table with duplicate column names cannot be sent")
    for name, field in zip(names, value.schema):
        if name == TABLE or name.endswith(VALID):
            raise _refuse(name, f"the names {TABLE!r} and '*{VALID}' are reserved for the table's schema and masks")
        why = _arrow_refusal(name, field.type)
        if why is not None:
            raise why
    out: dict = {}
    schema = []
    types = pa.types
    for name in names:
        col = value.column(name)
        a = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        t = a.type
        nulls = a.null_count > 0
        mask = a.is_null().to_numpy(zero_copy_only=False) if nulls else None
        entry: dict = {"name": name}
        if types.is_string(t) or types.is_large_string(t):
            entry.update(kind="string", dtype="string" if nulls else "str")
            values, _ = _packed_from_arrow(a)
        elif types.is_timestamp(t) or types.is_date(t):
            if types.is_date32(t):
                unit, ints = "s", a.cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64) * 86_400
            elif types.is_date64(t):
                unit, ints = "ms", a.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            else:
                unit, ints = t.unit, a.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            entry.update(kind="datetime", unit=unit)
            entry["dtype"] = f"datetime64[{unit}]" if not getattr(t, "tz", None) else f"datetime64[{unit}, {t.tz}]"
            if getattr(t, "tz", None):
                entry["tz"] = t.tz
            values = ints
        elif types.is_duration(t):
            entry.update(kind="timedelta", unit=t.unit, dtype=f"timedelta64[{t.unit}]")
            values = a.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        else:  # integers, floats, bool
            values = a.fill_null(False if types.is_boolean(t) else 0).to_numpy(zero_copy_only=False)
            if nulls:
                entry.update(kind="masked", dtype=_ARROW_MASKED[str(t)])
            else:
                entry.update(kind="numpy", dtype=str(values.dtype))
        if nulls:
            entry["nullable"] = True
            out[name + VALID] = ~mask
        out[name] = values if isinstance(values, PackedStrings) else np.ascontiguousarray(values)
        schema.append(entry)
    frame = {"rows": value.num_rows, "columns": schema}
    if not names:
        frame["columns_index"] = "object"
    out[TABLE] = np.array(json.dumps(frame))
    return out


def from_arrow(value):
    """A pyarrow Table or RecordBatch as the DataFrame a model receives for it (see
    `arrow_to_tensors` for the column types)."""
    return from_tensors(arrow_to_tensors(value))


def read_ipc(data) -> Any:
    """A DataFrame from Arrow IPC bytes (the stream or the file format), e.g. a bytes tensor
    another program sent. Needs pyarrow."""
    import pyarrow as pa
    buf = pa.py_buffer(data)
    try:
        table = pa.ipc.open_stream(buf).read_all()
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(buf).read_all()
    return from_arrow(table)


def write_ipc(df) -> bytes:
    """A DataFrame (or a pyarrow Table) as Arrow IPC stream bytes. Needs pyarrow."""
    import pyarrow as pa
    table = df if is_arrow_table(df) else pa.Table.from_pandas(df, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def read_seed_csv(blob) -> Any:
    """Seed 004's layout: a 4-byte little-endian length, then that many bytes of CSV text
    (a bytes tensor, or uint8 from C/C++). Lengths past the end are an error."""
    import io
    import struct

    import pandas as pd
    raw = bytes(blob)
    if len(raw) < 4:
        raise ValueError(f"a length-prefixed CSV needs at least 4 bytes, got {len(raw)}")
    (length,) = struct.unpack_from("<I", raw, 0)
    if length > len(raw) - 4:
        raise ValueError(f"CSV length {length} exceeds the {len(raw) - 4} bytes sent")
    return pd.read_csv(io.BytesIO(raw[4:4 + length]))


def write_seed_csv(df) -> bytes:
    """A DataFrame in seed 004's layout (4-byte length + CSV), for programs that expect it."""
    import struct
    text = df.to_csv(index=False).encode()
    if len(text) >= 1 << 32:
        raise ValueError("a length-prefixed CSV holds at most 4 GiB")
    return struct.pack("<I", len(text)) + text


__all__ = ["TABLE", "PackedStrings", "is_dataframe", "is_arrow_table", "to_tensors", "from_tensors", "from_arrow", "arrow_to_tensors",
           "read_ipc", "write_ipc", "read_seed_csv", "write_seed_csv"]
