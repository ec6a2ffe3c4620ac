"""The message format: every dtype and shape round-trips; bad bytes are rejected clearly."""
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import ferry

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64]
SHAPES = [(), (0,), (3,), (2, 3), (0, 5), (4, 0, 2), (1, 1, 1, 1, 1, 1, 1, 2)]


def sample(dtype, shape):
    rng = np.random.default_rng(1)
    return (rng.integers(0, 100, size=shape) % 2 if dtype is np.bool_ else rng.integers(0, 100, size=shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_dtype_and_shape_round_trips(dtype, shape):
    a = sample(dtype, shape)
    tensors, meta = ferry.decode(ferry.encode({"a": a}, {"k": "v"}))
    out = tensors["a"]
    assert out.dtype == a.dtype and out.shape == a.shape
    np.testing.assert_array_equal(out, a)
    assert meta == {"k": "v"}


def test_strings_bytes_and_unicode_names():
    msg = {"名前": np.array([["héllo", ""], ["😀", "x"]]), "raw": b"\x00\x01\xff", "s": "scalar"}
    tensors, _ = ferry.decode(ferry.encode(msg))
    np.testing.assert_array_equal(tensors["名前"], msg["名前"])
    assert tensors["raw"] == b"\x00\x01\xff"
    assert tensors["s"].shape == () and str(tensors["s"]) == "scalar"


def test_data_is_64_byte_aligned():
    data = ferry.encode({"a": np.arange(3, dtype=np.uint8), "b": np.arange(5, dtype=np.float64)})
    n_tensors = struct.unpack_from("<I", data, 16)[0]
    table = struct.unpack_from("<Q", data, 24)[0]
    for i in range(n_tensors):
        off = struct.unpack_from("<Q", data, table + 96 * i)[0]
        assert off % 64 == 0


def test_nul_in_metadata_is_rejected_clearly():
    with pytest.raises(ValueError, match="NUL"):
        ferry.encode({}, {"k": "a\x00b"})


def test_too_many_dimensions_is_rejected():
    with pytest.raises(ValueError, match="at most 8"):
        ferry.encode({"a": np.zeros((1,) * 9)})


def test_non_contiguous_and_big_endian_arrays_are_written_correctly():
    a = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    tensors, _ = ferry.decode(ferry.encode({"a": a}))
    np.testing.assert_array_equal(tensors["a"], a)


def corrupt(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


# Numbers, packed UTF-8 strings (an object array of str) and numpy's fixed-width UTF-32.
GOOD = ferry.encode({"a": np.arange(10, dtype=np.int32), "s": np.array(["x", "yz"], dtype=object),
                     "u": np.array(["é", "yz"])}, {"k": "v"})


@pytest.mark.parametrize("bad,match", [
    (b"", "shorter than the 64-byte header"),
    (GOOD[:63], "shorter"),
    (GOOD[:100], "total length"),
    (corrupt(GOOD, 0, "<I", 0xDEADBEEF), "bad magic"),
    (corrupt(GOOD, 8, "<Q", 1 << 40), "total length"),
    (corrupt(GOOD, 16, "<I", 70000), "exceeds the limit"),
    (corrupt(GOOD, 24, "<Q", 1 << 50), "tensor table"),
    (corrupt(GOOD, 32, "<Q", 1 << 50), "metadata"),
    (corrupt(GOOD, 20, "<I", 5), "metadata entry"),
])
def test_malformed_messages_are_rejected_with_a_reason(bad, match):
    with pytest.raises(ferry.MalformedMessage, match=match):
        ferry.decode(bad)


def test_other_version_is_a_version_error():
    with pytest.raises(ferry.VersionMismatch, match="version 2"):
        ferry.decode(corrupt(GOOD, 4, "<H", 2))


def test_bad_tensor_entries_are_rejected():
    table = struct.unpack_from("<Q", GOOD, 24)[0]
    cases = [
        (table + 28, "<B", 99, "unknown dtype"),
        (table + 29, "<B", 9, "dimensions exceeds"),
        (table + 32, "<q", -1, "negative dimension"),
        (table + 32, "<q", 11, "data bytes for 11 elements"),
        (table + 0, "<Q", 65, "aligned"),
        (table + 8, "<Q", 1 << 40, "outside the message"),
        (table + 16, "<Q", 1 << 40, "name"),
    ]
    for off, fmt, value, match in cases:
        with pytest.raises(ferry.MalformedMessage, match=match):
            ferry.decode(corrupt(GOOD, off, fmt, value))


TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
arrays = hnp.arrays(
    dtype=st.sampled_from([np.dtype(d) for d in DTYPES]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(TEXT, min_size=1, max_size=8), arrays, max_size=4),
       st.dictionaries(st.text(TEXT, max_size=8),
                       st.text(TEXT, max_size=16), max_size=3))
def test_encode_decode_identity(tensors, meta):
    out, meta_out = ferry.decode(ferry.encode(tensors, meta))
    assert list(out) == list(tensors)
    for k, a in tensors.items():
        assert out[k].dtype == a.dtype and out[k].shape == a.shape
        np.testing.assert_array_equal(out[k], a)
    assert meta_out == meta


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash(data):
    try:
        ferry.decode(data)
    except (ferry.MalformedMessage, ferry.VersionMismatch):
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255))
def test_single_byte_corruption_is_caught_or_harmless(pos, value):
    data = bytearray(GOOD)
    data[pos] = value
    try:
        tensors, meta = ferry.decode(bytes(data))
    except (ferry.MalformedMessage, ferry.VersionMismatch):
        return
    # Harmless means: what decodes is a well-formed message, which re-encodes to the same
    # content, and a change inside the first tensor's data changes nothing but its values.
    if any("\x00" in t for t in [*tensors, *meta, *meta.values()]):
        with pytest.raises(ValueError, match="NUL"):  # valid UTF-8, but no C string can hold it
            ferry.encode(tensors, meta)
        return
    again, meta_again = ferry.decode(ferry.encode(tensors, meta))
    assert list(again) == list(tensors) and meta_again == meta
    for k in tensors:
        assert again[k].dtype == tensors[k].dtype and again[k].shape == tensors[k].shape
        np.testing.assert_array_equal(again[k], tensors[k])
    table = struct.unpack_from("<Q", GOOD, 24)[0]
    a_off = struct.unpack_from("<Q", GOOD, table)[0]
    if a_off <= pos < a_off + 40:
        assert list(tensors) == ["a", "s", "u"] and tensors["a"].shape == (10,) and meta == {"k": "v"}
        assert (tensors["a"] != np.arange(10, dtype=np.int32)).sum() <= 1


def test_string_tensor_with_zero_elements_and_stray_text_is_rejected():
    # Found by fuzzing: a string tensor whose shape became empty used to trap the decoder.
    table = struct.unpack_from("<Q", GOOD, 24)[0]
    bad = corrupt(corrupt(GOOD, table + 96 + 29, "<B", 7), table + 96 + 40, "<q", 0)
    with pytest.raises(ferry.MalformedMessage, match="string"):
        ferry.decode(bad)


def test_zero_sized_shape_whose_other_dimensions_overflow_decodes_without_a_trap():
    # Found by fuzzing: dims (2**62, 2, 0) hold 0 elements, but their running product
    # overflows a signed integer before reaching 0.
    import struct
    msg = bytearray(ferry.encode({"s": np.zeros((0, 2, 1), np.uint8)}))
    table = struct.unpack_from("<Q", msg, 24)[0]
    struct.pack_into("<qqq", msg, table + 32, 2**31, 2, 0)
    tensors, _ = ferry.decode(bytes(msg))
    assert tensors["s"].shape == (2**31, 2, 0) and tensors["s"].size == 0
    # numpy cannot represent (2**62, 2, 0); the library must not trap on it (this process
    # survives), and the binding says why it cannot build the array.
    struct.pack_into("<qqq", msg, table + 32, 2**62, 2, 0)
    with pytest.raises(ValueError, match="shape"):
        ferry.decode(bytes(msg))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=1, max_size=30))
def test_string_columns_round_trip_exactly(items):
    # Packed in whole-array operations (no Python work per string) both ways; numpy's own
    # str arrays drop trailing NULs, so compare with what numpy holds.
    arr = np.array(items, dtype=np.str_)
    out, _ = ferry.decode(ferry.encode({"s": arr}))
    assert out["s"].shape == arr.shape
    assert list(out["s"]) == list(arr)


def test_a_million_strings_round_trip_through_the_packed_path():
    from ferry.message import _pack_strings
    arr = np.array([f"id-{i} é😀" for i in range(1_000_000)])
    assert _pack_strings(arr) is not None  # the whole-array route, not the per-string one
    out, _ = ferry.decode(ferry.encode({"s": arr}, capacity=64 << 20))
    assert (out["s"] == arr).all()
