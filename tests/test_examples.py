"""examples/: every pattern, every language, end to end against a real Python worker. The C
and C++ clients are built against an *installed* Ferry (make install PREFIX=tmp), warnings
as errors, the C++ ones under AddressSanitizer and UBSan."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, env

# One xdist worker runs this whole module (`--dist loadgroup`), so `make install` and the
# sanitizer builds of the examples (module fixtures) happen once, not once per worker.
pytestmark = pytest.mark.xdist_group("examples")

EXAMPLES = os.path.join(ROOT, "examples")
RELEASE = os.path.join(ROOT, ".build", "release")


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefix")
    subprocess.run(["make", "-s", "install", f"PREFIX={p}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    yield p
    subprocess.run(["make", "-s", "uninstall", f"PREFIX={p}"], cwd=ROOT, check=True)
    left = [os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs]
    assert not left, f"make uninstall left {left}"


def installed_env(prefix) -> dict:
    e = env()
    e["PYTHONPATH"] = str(prefix / "share" / "ferry" / "python")  # the installed package only
    e["PKG_CONFIG_PATH"] = str(prefix / "lib" / "pkgconfig")
    return e


def pkg_config(prefix, *args) -> list:
    out = subprocess.run(["pkg-config", *args, "ferry"], env=installed_env(prefix), capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def binaries(prefix, tmp_path_factory):
    out = tmp_path_factory.mktemp("bin")
    cflags, libs = pkg_config(prefix, "--cflags"), pkg_config(prefix, "--libs")
    c_flags = ["gcc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", *cflags]
    cpp_flags = ["g++", "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Wconversion", "-Wsign-conversion", "-Werror",
                 "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *cflags]
    jobs, built = [], {}
    for pattern, c_src, cpp_src in [(p, "client.c", "client.cpp") for p in ("digits", "frames", "table")] + [("stream", "stream.c", "stream.cpp")]:
        c, cpp = out / f"{pattern}-c", out / f"{pattern}-cpp"
        jobs.append([*c_flags, "-o", str(c), os.path.join(EXAMPLES, pattern, c_src), *libs, "-lm"])
        jobs.append([*cpp_flags, "-o", str(cpp), os.path.join(EXAMPLES, pattern, cpp_src), *libs])
        # (The stream example has both roles in one program per language.)
        client = "stream.py" if pattern == "stream" else "client.py"
        built[pattern] = {"c": str(c), "cpp": str(cpp), "swift": os.path.join(RELEASE, f"example-{pattern}"),
                          "python": [sys.executable, os.path.join(EXAMPLES, pattern, client)]}
    # Compiled side by side (one compiler per core), not one after another.
    pending = list(jobs)
    running: list[subprocess.Popen] = []
    try:
        while pending or running:
            while pending and len(running) < max(2, os.cpu_count() or 2):
                running.append(subprocess.Popen(pending.pop(0)))
            p = running.pop(0)
            assert p.wait(timeout=300) == 0, f"compiling failed: {p.args}"
    finally:
        for p in running:
            p.kill()
            p.wait()
    return built


def serve(procs, prefix, pattern, url):
    """The pattern's Python model, run from the installed package (the first start may train)."""
    return procs.worker(url, model=os.path.join(EXAMPLES, pattern, "model.py"), env=installed_env(prefix), timeout=60)


def run(cmd, prefix, *args) -> str:
    cmd = cmd if isinstance(cmd, list) else [cmd]
    e = installed_env(prefix)
    e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    out = subprocess.run([*cmd, *args], env=e, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


LANGUAGES = ("python", "c", "cpp", "swift")


def test_digits_in_every_language(procs, prefix, binaries, name, tmp_path):
    url = f"shm://{name}"
    serve(procs, prefix, "digits", url)
    # Nine held-out digits and their true labels, from the demo's cached data set.
    from ferry.models.digits import prepare

    paths = prepare()
    images, labels = np.load(paths["images"])[:9], np.load(paths["labels"])[:9]
    raw = tmp_path / "nine.u8"
    images.astype(np.uint8).tofile(raw)
    outputs = {lang: run(binaries["digits"][lang], prefix, url, str(raw)).strip() for lang in LANGUAGES}
    assert len(set(outputs.values())) == 1, outputs
    predicted = [int(v) for v in outputs["c"].split(":")[1].split()]
    assert sum(p == t for p, t in zip(predicted, labels)) >= 8, (predicted, labels.tolist())


@pytest.mark.parametrize("transport", ["tcp", "redis"])
def test_digits_and_frames_remote_in_every_language(transport, prefix, binaries, name, tmp_path):
    """The same example binaries, given a tcp:// or redis:// URL and nothing else, through a
    gateway or a real redis-server and a node."""
    from test_conformance import Served
    from ferry.models.digits import prepare

    paths = prepare()
    images = np.load(paths["images"])[:9]
    raw = tmp_path / "nine.u8"
    images.astype(np.uint8).tofile(raw)
    s = Served(transport, name, tmp_path, model=os.path.join(EXAMPLES, "digits", "model.py"), workers=1)
    try:
        outputs = {lang: run(binaries["digits"][lang], prefix, s.url, str(raw)).strip() for lang in LANGUAGES}
        assert len(set(outputs.values())) == 1 and outputs["c"].startswith("labels:"), outputs
    finally:
        s.stop()
    s = Served(transport, name + "f", tmp_path, model=os.path.join(EXAMPLES, "frames", "model.py"), workers=1, slot_size="8M")
    try:
        for lang in LANGUAGES:
            out = run(binaries["frames"][lang], prefix, s.url, "10")
            assert "10 frames 1920x1080, fps:" in out, (lang, out)
    finally:
        s.stop()


def test_frames_in_every_language(procs, prefix, binaries, name):
    url = f"shm://{name}?slot_size=8M&slots=4"
    serve(procs, prefix, "frames", url)
    for lang in LANGUAGES:
        out = run(binaries["frames"][lang], prefix, url.split("?")[0], "30")
        assert "30 frames 1920x1080, fps:" in out, (lang, out)


def test_table_in_every_language(procs, prefix, binaries, name):
    pytest.importorskip("pandas")
    url = f"shm://{name}?slot_size=1M"
    serve(procs, prefix, "table", url)
    for lang in LANGUAGES:
        out = run(binaries["table"][lang], prefix, url.split("?")[0], "1000")
        # A table in, a per-symbol summary table out, read column by column in every language.
        assert "table: AAA=334 BBB=333 CCC=333" in out, (lang, out)
        if lang in ("python", "cpp"):
            assert "csv: rows=1000" in out, (lang, out)
        if lang == "python":
            assert "columns: rows=1000 mean_close=349.75 total_volume=1499500" in out, (lang, out)


def test_cmake_find_package(procs, prefix, name, tmp_path):
    if not shutil.which("cmake"):
        pytest.skip("cmake not installed")
    src = tmp_path / "proj"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(uses_ferry CXX)\nset(CMAKE_CXX_STANDARD 17)\n"
        "find_package(Ferry 0.1 REQUIRED)\n"
        f"add_executable(digits {os.path.join(EXAMPLES, 'digits', 'client.cpp')})\n"
        "target_link_libraries(digits PRIVATE Ferry::ferry)\n")
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build)], check=True, stdout=subprocess.DEVNULL)
    url = f"shm://{name}"
    serve(procs, prefix, "digits", url)
    e = installed_env(prefix)
    e["LD_LIBRARY_PATH"] = str(prefix / "lib")
    out = subprocess.run([str(build / "digits"), url], env=e, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("labels:")


def test_installed_library_has_a_soname_and_exports_only_ferry(prefix):
    lib = prefix / "lib" / "libferry.so.0.1.0"
    dyn = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libferry.so.0]" in dyn
    syms = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    globals_ = [l.split()[-1] for l in syms.splitlines() if " T " in l or " D " in l or " B " in l]
    assert globals_ and all(s.startswith("ferry_") for s in globals_), [s for s in globals_ if not s.startswith("ferry_")][:5]
    assert (prefix / "bin" / "ferry").exists() and (prefix / "include" / "ferry.hpp").exists()


def test_opencv_variant_builds_when_opencv_is_installed(prefix, tmp_path):
    e = installed_env(prefix)
    if subprocess.run(["pkg-config", "--exists", "opencv4"], env=e).returncode != 0:
        pytest.skip("OpenCV (opencv4) is not installed; the OpenCV variant is optional")
    cv = subprocess.run(["pkg-config", "--cflags", "--libs", "opencv4"], env=e, capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", *pkg_config(prefix, "--cflags"), "-o", str(tmp_path / "cv"),
                    os.path.join(EXAMPLES, "frames", "client_opencv.cpp"), *pkg_config(prefix, "--libs"), *cv], check=True)


@pytest.mark.parametrize("lang", ["c", "cpp"])
def test_native_worker_serves_a_python_client(prefix, name, tmp_path, lang):
    """The reverse direction: a C or C++ worker (built against the installed library; C++
    under ASan/UBSan) serves a Python client."""
    import ferry

    src = os.path.join(ROOT, "tests", "native", f"echo_worker.{lang}")
    exe = tmp_path / f"worker-{lang}"
    compiler = ["gcc", "-std=c11"] if lang == "c" else ["g++", "-std=c++17", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    subprocess.run([*compiler, "-O1", "-g", "-Wall", "-Wextra", "-Werror", *pkg_config(prefix, "--cflags"), "-o", str(exe), src,
                    *pkg_config(prefix, "--libs")], check=True)
    e = installed_env(prefix)
    e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    url = f"shm://{name}"
    worker = subprocess.Popen([str(exe), url], env=e, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "serving"
        with ferry.Client(url) as c:
            out = c.call({"img": np.arange(12, dtype=np.uint8).reshape(3, 4), "v": np.array([1.5, -2], np.float32)})
            np.testing.assert_array_equal(out["img"], np.arange(1, 13, dtype=np.uint8).reshape(3, 4))
            np.testing.assert_array_equal(out["v"], np.array([3, -4], np.float32))
            if lang == "cpp":  # numpy's fixed-width strings read one by one through ferry.hpp
                words = np.array([["héllo", ""], ["😀x", "abc"]])
                raw = np.array([b"ab\x00c", b"", b"xyz"], dtype="S4")
                got = c.call({"u": words, "s": raw})
                assert got["u"].dtype == words.dtype and got["s"].dtype == raw.dtype
                np.testing.assert_array_equal(got["u"], np.array([["HéLLO", ""], ["😀X", "ABC"]]))
                np.testing.assert_array_equal(got["s"], np.array([b"AB\x00C", b"", b"XYZ"], dtype="S4"))
            with pytest.raises(ferry.RemoteError, match="only uint8"):
                c.call(np.zeros(2, np.int64))
            c.call(np.zeros(1, np.uint8), stop="1")
        assert worker.wait(timeout=10) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_installed_ferry_command_runs_without_a_swift_toolchain(prefix, procs, name, tmp_path):
    ferry_bin = prefix / "bin" / "ferry"
    libs = subprocess.run(["ldd", str(ferry_bin)], capture_output=True, text=True).stdout
    assert "swift" not in libs.lower() and "foundation" not in libs.lower(), libs
    # With the toolchain's folder hidden (a private mount namespace), the command still runs.
    url = f"shm://{name}"
    serve(procs, prefix, "digits", url)
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28), np.uint8))
    script = f"mount -t tmpfs none /opt/swift && exec {ferry_bin} call {url} --input {tmp_path / 'x.npy'}"
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"})
    if "mount" in out.stderr and "ermission" in out.stderr:
        pytest.skip("mount namespaces not permitted here")
    assert out.returncode == 0, out.stderr
    assert "output:" in out.stdout


@pytest.mark.parametrize("publisher,subscriber", [(lang, "python") for lang in LANGUAGES] + [("python", lang) for lang in LANGUAGES[1:]])
def test_stream_in_every_language(procs, prefix, binaries, name, publisher, subscriber):
    """Each language's publisher with the Python subscriber, the Python publisher with each
    language's subscriber: every frame, in order, every byte checked (every mode)."""
    e = installed_env(prefix)
    e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    pub_cmd = binaries["stream"][publisher]
    pub_cmd = pub_cmd if isinstance(pub_cmd, list) else [pub_cmd]
    pub = procs.start([*pub_cmd, "publish", name, "45", "320", "240"], env=e, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(f"/dev/shm/ferry-stream.{os.geteuid()}.{name}") and time.monotonic() < deadline:
        time.sleep(0.01)
    every = run(binaries["stream"][subscriber], prefix, "subscribe", name, "45", "every")
    assert "received 45 frames, dropped 0" in every and "0 wrong" in every, every
    out, _ = pub.communicate(timeout=60)
    assert pub.returncode == 0 and "published 45 frames of 320x240" in out


def test_every_column_kind_from_c_to_pandas_and_back(procs, prefix, name, tmp_path):
    """A C client writes a table of every column kind (float, nullable int64 past 2**53, bool,
    a zoned datetime with nulls, a timedelta, strings with a null) column by column; the
    Python model gets a DataFrame with the pandas dtypes below and echoes it; the C program
    reads every kind back and compares values and nulls."""
    pytest.importorskip("pandas")
    exe = tmp_path / "table-kinds"
    subprocess.run(["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *pkg_config(prefix, "--cflags"), "-o", str(exe),
                    os.path.join(ROOT, "tests", "native", "table_kinds.c"), *pkg_config(prefix, "--libs")], check=True)
    url = f"shm://{name}"
    procs.worker(url, model=os.path.join(ROOT, "tests", "models", "tables.py"), env=installed_env(prefix))
    out = run(str(exe), prefix, url)
    seen = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert seen["price"] == "float64" and seen["n"] == "Int64" and seen["ok"] == "bool"
    assert seen["at"] == "datetime64[ms, Europe/Paris]" and seen["dur"] == "timedelta64[s]"
