"""Writes the seed corpora (fuzz/corpus/*): valid messages of every dtype, shape, strings and
metadata, valid segment headers, and the same messages with a rewrite script (racing). Run once after a format change: python3 fuzz/make_corpus.py"""
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
import ferry  # noqa: E402

out = os.path.join(HERE, "corpus", "message")
os.makedirs(out, exist_ok=True)
samples = [
    {},
    {"a": np.arange(10, dtype=np.int32)},
    {"x": np.float64(3.5)},
    {"e": np.zeros((0, 3), np.uint8), "b": np.ones((2, 2), np.bool_)},
    {"s": np.array(["héllo", "", "x"]), "raw": b"\x00\x01"},
    {"img": np.zeros((2, 3, 4), np.uint8), "h": np.arange(3, dtype=np.float16)},
    {d: np.arange(4).astype(d) for d in ["int8", "int16", "int64", "uint16", "uint32", "uint64", "float32"]},
]
for i, tensors in enumerate(samples):
    with open(os.path.join(out, f"seed-{i}.bin"), "wb") as f:
        f.write(ferry.encode(tensors, {"k": "v", "error": "text"} if i % 2 else None))

out = os.path.join(HERE, "corpus", "segment")
os.makedirs(out, exist_ok=True)
for slots, slot_size in [(1, 4096), (8, 8 << 20), (1024, 4096)]:
    offset = (4096 + slots * 64 + 4095) // 4096 * 4096
    total = offset + slots * slot_size
    header = bytearray(4096)
    struct.pack_into("<QIIIIQQQ", header, 0, 0x4745535952524546, 2, 4096, slots, 1, slot_size, offset, total)
    with open(os.path.join(out, f"seed-{slots}.bin"), "wb") as f:
        f.write(struct.pack("<Q", total) + bytes(header[:128]))
# Racing: [u16 message length][message][rewrite script: (u16 offset, u8 xor) …]
out = os.path.join(HERE, "corpus", "racing")
os.makedirs(out, exist_ok=True)
for i, tensors in enumerate(samples):
    msg = ferry.encode(tensors, {"k": "v"} if i % 2 else None)
    script = b"".join(struct.pack("<HB", (off * 7 + 16) % len(msg), 0x80 >> (off % 8)) for off in range(8))
    with open(os.path.join(out, f"seed-{i}.bin"), "wb") as f:
        f.write(struct.pack("<H", len(msg)) + msg + script)
# Arguments: even first byte → a URL, odd → writer arguments (ndim, dims, dtype, name).
out = os.path.join(HERE, "corpus", "arguments")
os.makedirs(out, exist_ok=True)
urls = ["shm://digits", "shm://x?slots=8&slot_size=8M&wait=hybrid&spin_us=100&timeout_ms=10000&scope=shared",
        "shm://x?timeout_ms=18446744073709551615", "shm://x?slots=1&slots=2", "tcp://h:1/x", "shm://a?slot_size=64G"]
for i, u in enumerate(urls):
    with open(os.path.join(out, f"url-{i}.bin"), "wb") as f:
        f.write(b"\x00" + u.encode())
for i, (ndim, dims, dtype) in enumerate([(2, [3, 4], 6), (3, [2**40, 2**40, 0], 11), (1, [5], 14), (9, [1] * 9, 5)]):
    with open(os.path.join(out, f"writer-{i}.bin"), "wb") as f:
        f.write(b"\x01" + bytes([ndim]) + b"".join(struct.pack(">q", d) for d in dims) + bytes([dtype]) + b"name")
print("corpus written")
