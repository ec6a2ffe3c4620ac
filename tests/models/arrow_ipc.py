"""Arrow IPC bytes in, Arrow IPC bytes out: the model reads a DataFrame from the bytes another
program sent, adds a column, and answers with IPC bytes (what an Arrow-speaking peer reads)."""
import ferry.table


def predict(inputs):
    df = ferry.table.read_ipc(inputs)
    df["total"] = df["qty"] * df["price"]
    return ferry.table.write_ipc(df)
