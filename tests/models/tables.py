"""Table test model: receives a DataFrame, returns one (every column back, plus a computed
column and the dtypes it saw, as strings)."""
import numpy as np
import pandas as pd


def predict(df):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a DataFrame, got {type(df).__name__}")
    out = df.copy()
    out["doubled"] = df["price"] * 2
    out["seen"] = [f"{c}:{df[c].dtype}" for c in df.columns][: len(df)] + [""] * max(0, len(df) - len(df.columns))
    return out
