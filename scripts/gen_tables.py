"""The one table of status codes and element types, and the code it generates in every
language: the C header, the C++ wrapper, Swift and Python. Each generated region sits between
`BEGIN GENERATED: <what>` and `END GENERATED` markers; nothing inside them is edited by hand.

    python3 scripts/gen_tables.py           # rewrite the regions
    python3 scripts/gen_tables.py --check   # exit 1 if any region is stale (make test runs it)
"""
from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# code, C suffix, Swift case, Python class (bases), C++ class, meaning
STATUS = [
    (0, "OK", None, None, None, "Success."),
    (1, "EINVAL", "invalidArgument", ("InvalidArgument", "ValueError"), "InvalidArgument",
     "An argument is invalid (NULL, out of range, inconsistent, or a call in the wrong order)."),
    (2, "EMALFORMED", "malformed", ("MalformedMessage", "ValueError"), "MalformedMessage",
     "A message or segment failed validation: bad magic, length, offset or value."),
    (3, "ETOOBIG", "tooLarge", ("PayloadTooLarge", None), "PayloadTooLarge",
     "The payload does not fit in a slot; the error names the setting to raise."),
    (4, "ETIMEDOUT", "timedOut", ("Timeout", "builtins.TimeoutError"), "Timeout",
     "The deadline passed (for ferry_worker_recv: no request came)."),
    (5, "EPEERDIED", "peerDied", ("WorkerDied", None), "WorkerDied",
     "The worker serving the request died before it replied."),
    (6, "ENOSERVER", "noServer", ("NoServer", "ConnectionError"), "NoServer",
     "Nothing serves the channel (never started, or gone)."),
    (7, "EBUSY", "busy", ("Busy", None), "Busy", "Every slot stayed in use until the deadline."),
    (8, "ECLOSED", "closed", ("ChannelClosed", "ConnectionError"), "ChannelClosed", "The channel was closed by its server."),
    (9, "ESYSTEM", "system", ("SystemError_", "OSError"), "SystemError",
     "A system call failed; the message carries the call and errno text."),
    (10, "EREMOTE", "remote", ("RemoteError", None), "RemoteError",
     "The model raised an error; its text, type and traceback come with it (ferry_call_error)."),
    (11, "EPERM", "permission", ("PermissionDenied", "PermissionError"), "PermissionDenied",
     "The operating system refused access (permissions, a segment of another user)."),
    (12, "EVERSION", "version", ("VersionMismatch", None), "VersionMismatch", "The peer speaks another version of the format."),
    (13, "EAGAIN", "again", ("Again", None), "Again",
     "Not yet: the call is still in flight (ferry_call_poll); not an error."),
    (14, "EDISCONNECTED", "disconnected", ("Disconnected", "ConnectionError"), "Disconnected",
     "The connection to a remote gateway was lost or refused; calls in flight on it failed, the next call reconnects."),
    (15, "EPROTOCOL", "protocolViolation", ("ProtocolError", None), "ProtocolError",
     "A remote peer broke the wire protocol (bad frame, failed authentication step); the connection was closed."),
]

# code, name, Swift case, C++ type, numpy dtype (little-endian), item size (None: variable)
DTYPES = [
    (1, "BOOL", "bool", "bool", "bool", 1), (2, "INT8", "int8", "int8_t", "<i1", 1),
    (3, "INT16", "int16", "int16_t", "<i2", 2), (4, "INT32", "int32", "int32_t", "<i4", 4),
    (5, "INT64", "int64", "int64_t", "<i8", 8), (6, "UINT8", "uint8", "uint8_t", "<u1", 1),
    (7, "UINT16", "uint16", "uint16_t", "<u2", 2), (8, "UINT32", "uint32", "uint32_t", "<u4", 4),
    (9, "UINT64", "uint64", "uint64_t", "<u8", 8), (10, "FLOAT16", "float16", None, "<f2", 2),
    (11, "FLOAT32", "float32", "float", "<f4", 4), (12, "FLOAT64", "float64", "double", "<f8", 8),
    (13, "BYTES", "bytes", None, None, 1), (14, "STRING", "string", None, None, None),
    # Fixed-width strings, numpy's own layouts (`<U` and `S` arrays), so they cross as views
    # like numbers: the last dimension is the width, each string is padded with NULs.
    (15, "UTF32", "utf32", None, None, 4), (16, "FIXED_BYTES", "fixedBytes", None, None, 1),
    # Brain floating point (the upper half of a float32): raw 2-byte values in C and Swift;
    # numpy has no such dtype, Python maps it to ml_dtypes.bfloat16 when that is installed.
    (17, "BFLOAT16", "bfloat16", None, None, 2),
]


def c_status() -> str:
    return "\n".join(f"#define FERRY_{n} {c}".ljust(26) + f"/**< {doc} */" for c, n, *_, doc in STATUS)


def c_dtypes() -> str:
    return "\n".join(f"#define FERRY_DTYPE_{n} {c}" for c, n, *_ in DTYPES)


def swift_status() -> str:
    out = []
    for c, n, case, _py, _cpp, doc in STATUS[1:]:
        out += [f"        /// {doc}", f"        case {case} = {c}"]
    return "\n".join(out)


def swift_status_names() -> str:
    names = ", ".join(f'"FERRY_{n}"' for _, n, *_ in STATUS)
    return f"private let statusNames: [StaticString] = [{names}]"


def python_errors() -> str:
    out = []
    for c, n, _case, (cls, base), _cpp, doc in STATUS[1:]:
        bases = "FerryError" + (f", {base}" if base else "")
        out += [f"class {cls}({bases}):", f'    """{doc} (FERRY_{n})"""', "", f"    code = {c}", "", ""]
    return "\n".join(out).rstrip() + "\n"


def python_dtypes() -> str:
    lines = [f"{n} = {c}" for c, n, *_ in DTYPES]
    lines.append("#: numpy dtype for each fixed-size wire code (little-endian).")
    lines.append("NUMPY_DTYPES = {")
    for c, n, _s, _cpp, np_, _size in DTYPES:
        if np_:
            lines.append(f"    {n}: np.dtype({np_!r}),")
    lines.append("}")
    return "\n".join(lines)


def cpp_errors() -> str:
    out = [f"struct {cpp} : Error {{ using Error::Error; }};" for *_, cpp, _doc in STATUS[1:]]
    out += ["", "/// Throws the exception for a non-zero status, with ferry_last_error() as its text.",
            "inline void check(int rc) {", "    if (rc == FERRY_OK) return;", "    std::string text = ferry_last_error();",
            "    switch (rc) {"]
    out += [f"    case FERRY_{n}: throw {cpp}(rc, text);" for _c, n, *_x, cpp, _doc in STATUS[1:]]
    out += ["    default: throw Error(rc, text);", "    }", "}"]
    return "\n".join(out)


REGIONS = {
    "include/ferry.h": {"status": c_status, "dtypes": c_dtypes},
    "include/ferry.hpp": {"errors": cpp_errors},
    "Sources/FerryCore/FerryError.swift": {"status": swift_status},
    "Sources/FerryC/Exports.swift": {"status names": swift_status_names},
    "python/ferry/errors.py": {"errors": python_errors},
    "python/ferry/message.py": {"dtypes": python_dtypes},
}


def render(text: str, regions: dict, path: str) -> str:
    for what, fn in regions.items():
        pat = re.compile(r"(BEGIN GENERATED: " + re.escape(what) + r"[^\n]*\n)(.*?)(\n[^\n]*END GENERATED)", re.S)
        if not pat.search(text):
            raise SystemExit(f"{path}: no region 'BEGIN GENERATED: {what}'")
        text = pat.sub(lambda m: m.group(1) + fn().rstrip("\n") + m.group(3), text, count=1)
    return text


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for rel, regions in REGIONS.items():
        path = os.path.join(ROOT, rel)
        old = open(path, encoding="utf-8").read()
        new = render(old, regions, rel)
        if new != old:
            stale.append(rel)
            if not check:
                open(path, "w", encoding="utf-8").write(new)
    if check and stale:
        print("generated tables are stale in: " + ", ".join(stale) + " (run python3 scripts/gen_tables.py)")
        return 1
    if not check:
        print("updated: " + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
