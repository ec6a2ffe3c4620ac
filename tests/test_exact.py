"""Exact or refused: property-based round trips through a real worker process. A value sent
by the client reaches the model and comes back (request and reply paths both) equal to what
was sent — `assert_frame_equal(check_exact=True)` for tables, bit-for-bit for arrays — or
the call is refused with a TypeError before anything is sent. Nothing else is allowed."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ferry
from conftest import MODELS

pd = pytest.importorskip("pandas")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

ECHO = os.path.join(MODELS, "exact_echo.py")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def echo(procs, name):
    """An echo worker (a real process, stopped by the test) and a client of it. Hypothesis
    runs every example of a test against the same worker."""
    url = f"shm://{name}"
    procs.worker(url, model=ECHO)
    with ferry.Client(url) as c:
        yield c


def same_array(a, b):
    assert type(b) is np.ndarray, type(b)
    # numpy's fixed-width strings cross in their own layout: the same dtype, width included.
    assert a.dtype.newbyteorder("<") == b.dtype or a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.dtype.kind in "biufmMUS":
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a  # arrives little-endian
        assert a.tobytes() == b.tobytes()  # bit for bit: -0.0, NaN payloads, NaT
    else:
        assert (a == b).all()


NUMERIC = st.sampled_from([np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                           np.uint64, np.float16, np.float32, np.float64]).map(np.dtype)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


@SETTINGS
@given(hnp.arrays(NUMERIC, SHAPES))
def test_numeric_arrays_cross_bit_for_bit(echo, arr):
    same_array(arr, echo.call(arr))


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)


@SETTINGS
@given(st.lists(st.lists(TEXT, min_size=0, max_size=6), min_size=1, max_size=5).filter(lambda rows: len({len(r) for r in rows}) == 1))
def test_str_arrays_cross_exactly(echo, rows):
    arr = np.array(rows, dtype=np.str_)
    same_array(arr, echo.call(arr))


def _fixed_width_arrays(dt: np.dtype):
    width = dt.itemsize // (4 if dt.kind == "U" else 1)
    # Characters of every plane (no surrogates: not text), NULs inside; bytes of any value.
    elements = (st.text(st.characters(codec="utf-8"), max_size=width) if dt.kind == "U" else st.binary(max_size=width))
    return hnp.arrays(dt, SHAPES, elements=elements.filter(lambda v: v[-1:] not in ("\x00", b"\x00")))


@SETTINGS
@given(st.sampled_from(["<U1", "<U3", ">U5", "<U17", "S1", "S4", "S9"]).map(np.dtype).flatmap(_fixed_width_arrays))
def test_fixed_width_string_arrays_cross_bit_for_bit(echo, arr):
    """`<U` and `S` arrays of any shape (0-d, empty, 4-d), big-endian too, with NULs inside,
    empty strings and characters of every plane: numpy's own bytes come back."""
    got = echo.call(arr)
    same_array(arr, got)
    assert got.tobytes() == arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def test_a_str_that_numpy_cannot_hold_is_refused_or_exact(echo):
    # A lone surrogate is not Unicode text: refused before sending, naming the string.
    with pytest.raises(ferry.InvalidArgument, match=r"tensor \"x\": string 1 .*U\+D800"):
        echo.call({"x": np.array(["ok", "\ud800"])})
    # One Python str crosses as UTF-8 exactly, a trailing NUL included (numpy's <U would drop it).
    got = echo.call("tail\x00")
    assert got.shape == () and got[()] == "tail\x00", repr(got)


# ---- DataFrames -------------------------------------------------------------------------

INT64_EDGES = st.sampled_from([0, 1, -1, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)]) | st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([-0.0, 0.0, float("nan")])


def columns(n: int):
    nulls = st.booleans()
    opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
    return st.one_of(
        st.lists(INT64_EDGES, min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="int64")),
        st.lists(st.integers(-128, 127), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="int8")),
        st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="uint64")),
        st.lists(FLOATS, min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="float64")),
        st.lists(st.floats(width=32), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="float32")),
        st.lists(st.booleans(), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="bool")),
        st.lists(opt(INT64_EDGES), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="Int64")),
        st.lists(opt(st.integers(-(2**31), 2**31 - 1)), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="Int32")),
        st.lists(opt(st.floats(allow_nan=False)), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="Float64")),
        st.lists(opt(st.booleans()), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="boolean")),
        st.lists(opt(TEXT), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype="string")),
        st.lists(opt(TEXT), min_size=n, max_size=n).map(lambda v: pd.Series(v, dtype=object)),
        st.lists(TEXT, min_size=n, max_size=n).map(lambda v: pd.Series(v)),
        st.tuples(st.lists(opt(st.integers(-(2**62), 2**62)), min_size=n, max_size=n), st.sampled_from(["s", "ms", "us", "ns"]))
          .map(lambda a: pd.Series(np.array([np.datetime64("NaT") if x is None else x for x in a[0]], dtype=f"datetime64[{a[1]}]"))),
        st.tuples(st.lists(opt(st.integers(-(2**33), 2**33)), min_size=n, max_size=n), st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York"]))
          .map(lambda a: pd.Series(np.array([np.datetime64("NaT") if x is None else x for x in a[0]], dtype="datetime64[s]")).dt.tz_localize(a[1])),
        st.lists(opt(st.integers(-(2**62), 2**62)), min_size=n, max_size=n)
          .map(lambda v: pd.Series(np.array([np.timedelta64("NaT") if x is None else x for x in v], dtype="timedelta64[ns]"))),
    )


@st.composite
def frames(draw):
    n = draw(st.integers(0, 12))
    k = draw(st.integers(0, 5))
    names = draw(st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=6)
                          .filter(lambda s: not s.endswith(".valid") and s != "ferry.table"), min_size=k, max_size=k, unique=True))
    df = pd.DataFrame({c: draw(columns(n)) for c in names}) if names else pd.DataFrame(index=pd.RangeIndex(n))
    if draw(st.booleans()):
        df.index.name = draw(st.one_of(TEXT, st.integers(-5, 5)))
    if not names and draw(st.booleans()):
        df = df[[]] if n else pd.DataFrame()
    return df


@SETTINGS
@given(frames())
def test_dataframes_cross_exactly_both_ways(echo, df):
    back = echo.call(df)
    assert isinstance(back, pd.DataFrame), type(back)
    pd.testing.assert_frame_equal(back, df, check_exact=True)


@pytest.mark.parametrize("df", [pd.DataFrame(), pd.DataFrame(index=range(3)), pd.DataFrame({"a": [1, 2]})[[]],
                                pd.DataFrame({"a": [1, 2]}).rename_axis("rows"),
                                pd.DataFrame({"a": [1, 2]}).rename_axis(columns="fields")],
                         ids=["empty", "rows-no-columns", "columns-dropped", "index-name", "columns-name"])
def test_edge_shaped_frames_come_back_as_sent(echo, df):
    back = echo.call(df)
    assert isinstance(back, pd.DataFrame)
    pd.testing.assert_frame_equal(back, df, check_exact=True)


# ---- Arrow tables -----------------------------------------------------------------------

pa = pytest.importorskip("pyarrow")

ARROW_INTS = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def expected_pandas(table):
    """What Ferry documents a model receives for an Arrow table (docs/tables.md)."""
    data = {}
    for name, col in zip(table.column_names, table.columns):
        a = col.combine_chunks()
        t, nulls = a.type, a.null_count > 0
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            values = a.fill_null(False if pa.types.is_boolean(t) else 0).to_numpy(zero_copy_only=False)
            if nulls:
                dt = pd.api.types.pandas_dtype({"bool": "boolean", "float": "Float32", "double": "Float64"}.get(str(t), str(values.dtype).capitalize().replace("Uint", "UInt")))
                data[name] = pd.Series(dt.construct_array_type()(values, a.is_null().to_numpy(zero_copy_only=False)))
            else:
                data[name] = pd.Series(values)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            data[name] = pd.Series(a.to_pylist(), dtype="string" if nulls else "str")
        elif pa.types.is_date32(t):  # a date is midnight of that day, in seconds
            data[name] = a.cast(pa.timestamp("s")).to_pandas()
        elif pa.types.is_date64(t):
            data[name] = a.cast(pa.timestamp("ms")).to_pandas()
        else:
            data[name] = a.to_pandas()
    return pd.DataFrame(data) if data else pd.DataFrame(index=pd.RangeIndex(table.num_rows), columns=pd.Index([], dtype=object))


@st.composite
def arrow_tables(draw):
    n = draw(st.integers(0, 10))
    k = draw(st.integers(0, 4))
    cols = {}
    for i in range(k):
        t = draw(st.sampled_from(ARROW_INTS + [pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.large_string(),
                                               pa.timestamp("ms", tz="Europe/Paris"), pa.timestamp("us"), pa.duration("ns"),
                                               pa.date32()]))
        if pa.types.is_integer(t):
            info = np.iinfo(t.to_pandas_dtype())
            elem = st.integers(int(info.min), int(info.max))
        elif pa.types.is_floating(t):
            elem = st.floats(width=32 if t == pa.float32() else 64)
        elif pa.types.is_boolean(t):
            elem = st.booleans()
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            elem = TEXT
        elif pa.types.is_date32(t):
            elem = st.integers(-100_000, 100_000)
        else:
            elem = st.integers(-(2**40), 2**40)
        values = draw(st.lists(st.one_of(st.none(), elem), min_size=n, max_size=n))
        cols[f"c{i}"] = pa.array(values, type=t if not (pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_date32(t)) else {
            True: pa.int64(), False: pa.int32()}[not pa.types.is_date32(t)]).cast(t)
    return pa.table(cols) if cols else pa.table({}).slice(0, 0)


@SETTINGS
@given(arrow_tables())
def test_arrow_tables_cross_exactly(echo, table):
    back = echo.call(table)
    assert isinstance(back, pd.DataFrame)
    pd.testing.assert_frame_equal(back, expected_pandas(table), check_exact=True)


def test_arrow_int64_with_nulls_keeps_every_bit(echo):
    t = pa.table({"id": pa.array([2**53 + 1, None, -(2**63)], pa.int64()), "ok": pa.array([True, None, False])})
    back = echo.call(t)
    assert str(back["id"].dtype) == "Int64" and back["id"][0] == 2**53 + 1 and back["id"][2] == -(2**63)
    assert back["id"].isna().tolist() == [False, True, False]
    assert str(back["ok"].dtype) == "boolean" and back["ok"].isna().tolist() == [False, True, False]


def test_a_nan_is_not_a_null(echo):
    t = pa.table({"x": pa.array([1.5, None, float("nan")], pa.float64())})
    back = echo.call(t)
    assert back["x"].isna().tolist() == [False, True, False]
    assert np.isnan(back["x"].array._data[2])


@pytest.mark.parametrize("typ,word", [
    (pa.decimal128(10, 2), "decimal"), (pa.dictionary(pa.int8(), pa.string()), "dictionary"),
    (pa.list_(pa.int64()), "nested"), (pa.struct([("a", pa.int64())]), "nested"), (pa.null(), "null"),
    (pa.binary(), "binary"), (pa.float16(), "halffloat"),
])
def test_arrow_types_that_cannot_cross_are_refused_by_name(echo, typ, word):
    values = {"decimal": [None], "dictionary": ["a"], "nested": [None], "null": [None], "binary": [b"x"], "halffloat": [None]}[word]
    if typ == pa.dictionary(pa.int8(), pa.string()):
        arr = pa.array(values).dictionary_encode()
    else:
        arr = pa.array(values, type=typ)
    with pytest.raises(TypeError, match="'bad'") as e:
        echo.call(pa.table({"ok": [1], "bad": arr}))
    assert word in str(e.value).lower() or str(typ) in str(e.value)
