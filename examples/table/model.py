"""The table model: a table in (a DataFrame, from any language), a per-symbol summary table out;
or the seed's length-prefixed CSV / Arrow IPC bytes / bare columns in, a summary dict out."""
import numpy as np
import pandas as pd

import ferry.table


def to_frame(inputs) -> pd.DataFrame:
    if not isinstance(inputs, dict):  # a lone tensor arrives by itself: the CSV blob
        inputs = {"csv": inputs}
    if "csv" in inputs:  # seed 004: a 4-byte little-endian length, then CSV text
        return ferry.table.read_seed_csv(inputs["csv"])  # a bytes tensor, or uint8 from C/C++
    if "arrow" in inputs:  # Arrow IPC bytes from any Arrow writer
        return ferry.table.read_ipc(inputs["arrow"])
    return pd.DataFrame({name: column for name, column in inputs.items()})  # columns share the slot


def predict(inputs):
    if isinstance(inputs, pd.DataFrame):  # a table: answer with a table
        g = inputs.groupby("sym", sort=True)
        return pd.DataFrame({
            "sym": pd.Series(list(g.groups), dtype="string"),
            "rows": g.size().to_numpy().astype(np.int64),
            "mean_close": g["close"].mean().to_numpy(),
            "total_volume": g["volume"].sum().to_numpy().astype(np.int64),
        })
    df = to_frame(inputs)
    return {
        "rows": np.int64(len(df)),
        "mean_close": np.float64(df["close"].mean()),
        "total_volume": np.int64(df["volume"].sum()),
    }
