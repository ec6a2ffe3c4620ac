"""The table model: columns in (or the seed's length-prefixed CSV), a pandas DataFrame built
on the Python side, a summary out."""
import io
import struct

import numpy as np
import pandas as pd


def to_frame(inputs) -> pd.DataFrame:
    if not isinstance(inputs, dict):  # a lone tensor arrives by itself: the CSV blob
        inputs = {"csv": inputs}
    if "csv" in inputs:  # seed 004: a 4-byte little-endian length, then CSV text
        raw = bytes(inputs["csv"])  # a bytes tensor, or uint8 from C/C++
        (length,) = struct.unpack_from("<I", raw, 0)
        if length > len(raw) - 4:
            raise ValueError(f"CSV length {length} exceeds the {len(raw) - 4} bytes sent")
        return pd.read_csv(io.BytesIO(raw[4 : 4 + length]))
    return pd.DataFrame({name: column for name, column in inputs.items()})  # columns share the slot


def predict(inputs):
    df = to_frame(inputs)
    return {
        "rows": np.int64(len(df)),
        "mean_close": np.float64(df["close"].mean()),
        "total_volume": np.int64(df["volume"].sum()),
    }
