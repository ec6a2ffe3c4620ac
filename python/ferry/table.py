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


def is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _refuse(name: str, why: str) -> TypeError:
    return TypeError(f"column {name!r}: {why}")


def to_tensors(df) -> dict:
    """The tensors of a table (see the module's doc)."""
    import pandas as pd

    idx = df.index
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1):
        raise TypeError("a DataFrame with an index other than 0..n-1 would lose it; reset_index() first (it becomes a column)")
    if df.columns.has_duplicates:
        raise TypeError("a DataFrame with duplicate column names cannot be sent")
    out: dict = {}
    schema = []
    for name in df.columns:
        if not isinstance(name, str):
            raise _refuse(str(name), f"column names must be str, not {type(name).__name__}")
        if name == TABLE or name.endswith(VALID):
            raise _refuse(name, f"the names {TABLE!r} and '*{VALID}' are reserved for the table's schema and masks")
        s = df[name]
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
        out[name] = np.ascontiguousarray(values)
        schema.append(entry)
    out[TABLE] = np.array(json.dumps({"rows": len(df), "columns": schema}))
    return out


def from_tensors(tensors: dict):
    """The DataFrame of a table's tensors (numeric columns keep their arrays where pandas lets them)."""
    import pandas as pd

    schema = json.loads(str(tensors[TABLE]))
    data = {}
    for c in schema["columns"]:
        name, kind = c["name"], c["kind"]
        v = tensors[name]
        valid = tensors.get(name + VALID)
        if kind == "numpy":
            col = pd.Series(v, copy=False)
        elif kind == "masked":
            col = pd.Series(pd.array(v, dtype=c["dtype"]), copy=False)
            if valid is not None:
                col[~valid] = pd.NA
        elif kind in ("datetime", "timedelta"):
            arr = v.view(f"{'M' if kind == 'datetime' else 'm'}8[{c['unit']}]").copy()
            if valid is not None:
                arr[~valid] = np.datetime64("NaT") if kind == "datetime" else np.timedelta64("NaT")
            col = pd.Series(arr, copy=False)
            if c.get("tz"):
                col = col.dt.tz_localize("UTC").dt.tz_convert(c["tz"])
        elif kind == "string":
            objs = v.astype(object)
            if valid is not None:
                objs[~valid] = None
            col = pd.Series(objs, dtype=c["dtype"] if c["dtype"] != "object" else object)
        else:
            raise ValueError(f"column {name!r}: unknown kind {kind!r} in the table's schema")
        data[name] = col
    # copy=False: numeric columns stay views of the message (zero copy; in a worker, of the slot).
    return pd.DataFrame(data, copy=False) if data else pd.DataFrame(index=pd.RangeIndex(schema["rows"]))


__all__ = ["TABLE", "is_dataframe", "to_tensors", "from_tensors"]
