"""Tables: a DataFrame crosses exactly — names, order, dtypes, strings, datetimes with unit
and time zone, timedeltas and nulls — to a model that receives a DataFrame and may return one."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ferry
from conftest import MODELS

pd = pytest.importorskip("pandas")


def sample(rows: int = 5):
    rng = np.random.default_rng(3)
    return pd.DataFrame({
        "id": np.arange(rows, dtype=np.int64) + 2**53 + 1,  # not representable as float64
        "price": rng.standard_normal(rows),
        "qty": rng.integers(0, 100, rows).astype(np.int32),
        "ok": rng.integers(0, 2, rows).astype(bool),
        "name": pd.array([f"név-{i}" if i % 3 else None for i in range(rows)], dtype="string"),
        "n": pd.array([i if i % 2 else None for i in range(rows)], dtype="Int64"),
        "at": pd.date_range("2026-01-01", periods=rows, freq="37min").as_unit("ms"),
        "local": pd.date_range("2026-03-29 00:30", periods=rows, freq="h", tz="Europe/Paris"),
        "dur": pd.to_timedelta(np.arange(rows), unit="s"),
    })


def test_a_dataframe_round_trips_exactly_through_the_message_format():
    from ferry.table import from_tensors, to_tensors
    df = sample(50)
    tensors, _ = ferry.decode(ferry.encode(to_tensors(df)))
    pd.testing.assert_frame_equal(from_tensors(tensors), df)


def test_the_model_receives_a_dataframe_and_returns_one(procs, name):
    url = f"shm://{name}"
    procs.worker(url, model=os.path.join(MODELS, "tables.py"))
    df = sample(12)
    with ferry.Client(url) as c:
        out = c.call(df)
    assert isinstance(out, pd.DataFrame)
    expected = df.copy()
    expected["doubled"] = df["price"] * 2
    pd.testing.assert_frame_equal(out[list(df.columns) + ["doubled"]], expected)
    seen = dict(s.split(":", 1) for s in out["seen"] if s)
    assert seen["id"] == "int64" and seen["name"].startswith("string") and seen["n"] == "Int64"
    assert seen["at"] == "datetime64[ms]"
    assert seen["local"].startswith("datetime64[") and seen["local"].endswith(", Europe/Paris]")


def test_an_empty_dataframe_and_one_of_a_million_rows_cross(procs, name):
    url = f"shm://{name}?slot_size=256M"
    procs.worker(url, model=os.path.join(MODELS, "tables.py"))
    big = pd.DataFrame({"price": np.arange(1_000_000, dtype=np.float64), "sym": np.array(["ab", "cde"] * 500_000)})
    with ferry.Client(url) as c:
        out = c.call(big, timeout=60)
        assert (out["doubled"].to_numpy() == big["price"].to_numpy() * 2).all()
        assert (out["sym"].to_numpy() == big["sym"].to_numpy()).all()
        empty = c.call(pd.DataFrame({"price": np.array([], np.float64)}))
        assert len(empty) == 0 and list(empty.columns)[:2] == ["price", "doubled"]


KEEPER = r"""
import sys, threading, numpy as np, pandas as pd, ferry
url = sys.argv[1]
w = ferry.Worker(url)
kept, views = [], []
def model(df):
    a = df["price"].to_numpy()
    views.append(not (a.flags.owndata or a.base is None))   # a view of the request, not a copy
    if len(kept) < 5:
        kept.append(df)                                      # a model that keeps its input table
    return pd.DataFrame({"x": df["price"] * 2})
t = threading.Thread(target=w.serve, args=(model,), kwargs={"max_requests": 40})
t.start()
with ferry.Client(url) as c:
    for i in range(40):
        assert (c.call(pd.DataFrame({"price": np.full(100, float(i))}))["x"] == 2.0 * i).all()
t.join()
w.close()
print(all(views), all((k["price"] == float(i)).all() for i, k in enumerate(kept)), w.preserved)
"""


def test_numeric_columns_are_zero_copy_views_and_a_kept_table_keeps_its_values(name):
    import subprocess
    import sys
    from conftest import env
    r = subprocess.run([sys.executable, "-c", KEEPER, f"shm://{name}?slots=2"], env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    views, intact, preserved = r.stdout.split()
    assert views == "True" and intact == "True"
    assert int(preserved) == 5  # exactly the kept ones paid for a copy


pa = None
try:
    import pyarrow as pa  # noqa: F811
except ImportError:  # Arrow interop is optional for the library
    pass
needs_arrow = pytest.mark.skipif(pa is None, reason="pyarrow is not installed")


@needs_arrow
def test_a_pyarrow_table_crosses_as_a_table_and_strings_stay_in_arrow(procs, name):
    url = f"shm://{name}"
    procs.worker(url, model=os.path.join(MODELS, "tables.py"))
    t = pa.table({"id": pa.array(np.arange(6, dtype=np.int64) + 2**53 + 1), "price": pa.array(np.linspace(0, 1, 6)),
                  "name": pa.array(["a", None, "ß", "😀", "", "x" * 1000])})
    with ferry.Client(url) as c:
        out = c.call(t)
    assert out["id"].tolist() == t["id"].to_pylist()
    assert out["doubled"].tolist() == [2 * v for v in t["price"].to_pylist()]
    got = [None if v is pd.NA or (isinstance(v, float) and v != v) else v for v in out["name"].tolist()]
    assert got == t["name"].to_pylist()
    seen = dict(s.split(":", 1) for s in out["seen"] if s)
    assert "pyarrow" in seen["name"] or seen["name"] in ("string", "str")


@needs_arrow
def test_arrow_ipc_bytes_in_and_out(procs, name):
    url = f"shm://{name}"
    procs.worker(url, model=os.path.join(MODELS, "arrow_ipc.py"))
    df = pd.DataFrame({"qty": np.arange(1000, dtype=np.int64), "price": np.linspace(1, 2, 1000),
                       "sym": pd.Series([f"S{i % 7}" for i in range(1000)], dtype="str")})
    with ferry.Client(url) as c:
        reply = c.call(ferry.table.write_ipc(df))  # bytes, as any Arrow writer would send them
    out = ferry.table.read_ipc(reply)
    assert (out["total"].to_numpy() == df["qty"].to_numpy() * df["price"].to_numpy()).all()
    assert out["sym"].tolist() == df["sym"].tolist()
    with pytest.raises(ferry.RemoteError):
        with ferry.Client(url) as c:
            c.call(b"not arrow")


def test_seed_004_length_prefixed_csv_is_accepted():
    df = pd.DataFrame({"date": [20260101, 20260102], "close": [1.5, 2.25], "sym": ["a", "b"]})
    blob = ferry.table.write_seed_csv(df)
    assert int.from_bytes(blob[:4], "little") == len(blob) - 4
    pd.testing.assert_frame_equal(ferry.table.read_seed_csv(blob), df, check_dtype=False)
    pd.testing.assert_frame_equal(ferry.table.read_seed_csv(np.frombuffer(blob, np.uint8)), df, check_dtype=False)
    with pytest.raises(ValueError, match="exceeds"):
        ferry.table.read_seed_csv(blob[:-3])


@needs_arrow
def test_a_million_row_string_column_costs_about_what_its_bytes_cost(procs, name):
    """Arrow-backed strings cross as their buffers: no Python object per value on either
    side. (Speed is measured by bench/tables.py; this checks the mechanism: the model gets an
    Arrow-backed column and the client one too, with every value intact.)"""
    url = f"shm://{name}?slot_size=64M"
    procs.worker(url, model=os.path.join(MODELS, "tables.py"))
    s = pd.Series([f"S{i % 5000}" for i in range(1_000_000)], dtype="str")
    df = pd.DataFrame({"price": np.zeros(len(s)), "sym": s})
    with ferry.Client(url) as c:
        out = c.call(df, timeout=60)
    assert type(out["sym"].array).__name__ == "ArrowStringArray"
    assert out["sym"].equals(s)
    seen = dict(v.split(":", 1) for v in out["seen"][:10] if v)
    assert seen["sym"] == "str"
