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
